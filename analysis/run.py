"""The analysis end to end: review records in, tables + thresholds + report out (ARCHITECTURE §9).

`analyze` is pure (validated records in, an `AnalysisResult` out); `write_outputs` is the I/O edge that writes

- ``acceptance_by_class.csv``, ``acceptance_by_bucket.csv`` (the contract's tables),
- ``thresholds.json`` (schema `contract.THRESHOLDS_SCHEMA`, the chosen method),
- ``calibration.json`` (schema `contract.CALIBRATION_SCHEMA`: per class the isotonic curve of P(accept |
  confidence) on the unit scale, what `segqa select` routes verify vs adjust by),
- ``threshold_comparison.csv`` (every method, every class, side by side),
- ``reviewers.csv`` (when per-vote data was given),
- ``plots/*.png`` and ``report.html`` (self-contained: the same PNGs are embedded in it),

each file atomically (temporary name, then rename), to a local folder, ``file://`` or ``s3://`` prefix.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.agreement import agreement_from_counts, agreement_from_votes, load_votes, reviewer_table, validate_votes
from analysis.records import ReviewRecords, load_review_records, review_records_from_frame
from analysis.results import AnalysisOptions, AnalysisResult, ClassCalibration
from analysis.tables import (
    acceptance_by_bucket,
    acceptance_by_class,
    assign_buckets,
    default_bucket_edges,
    parse_bucket_edges,
)
from analysis.thresholds import METHODS, Selector, make_selector
from qa_workflow import storage
from qa_workflow.contract import REVIEW_RECORD_COLUMNS, SegqaError, utc_now_iso

__all__ = ["AnalysisOptions", "AnalysisResult", "ClassCalibration", "analyze", "write_outputs", "OUTPUT_FILES",
           "load_inputs", "read_store"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("acceptance_by_class.csv", "acceptance_by_bucket.csv", "thresholds.json", "report.html")


def _bucket_edges(records: ReviewRecords, options: AnalysisOptions) -> np.ndarray:
    if options.buckets is None or (isinstance(options.buckets, str) and not options.buckets.strip()):
        return default_bucket_edges(records.frame["confidence"].to_numpy(), records.scale_top, options.n_buckets)
    return parse_bucket_edges(options.buckets, records.scale_top)


def _by_class(records: ReviewRecords) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """class -> (confidence (n,), correct (n,)) without a pandas groupby per class."""
    frame = records.frame
    codes = pd.Categorical(frame["class_name"], categories=list(records.classes)).codes
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(records.classes) + 1))
    conf = frame["confidence"].to_numpy()[order]
    ok = frame["correct"].to_numpy()[order]
    return {name: (conf[bounds[i]:bounds[i + 1]], ok[bounds[i]:bounds[i + 1]])
            for i, name in enumerate(records.classes)}


# One shared default is safe: AnalysisOptions is a frozen dataclass.
_DEFAULT_OPTIONS = AnalysisOptions()


def analyze(records: ReviewRecords, options: AnalysisOptions = _DEFAULT_OPTIONS, votes: pd.DataFrame | None = None,
            *, calibration: bool = True, progress: Callable[[str], None] | None = None) -> AnalysisResult:
    """Tables, every method's thresholds per class, reviewer agreement and (``calibration``) the figures the
    report needs. ``votes``: validated per-vote data (`analysis.agreement.validate_votes`) or None."""
    options.check()
    step = progress or (lambda _msg: None)
    edges = _bucket_edges(records, options)
    frame = records.frame
    step("tables")
    class_table = acceptance_by_class(frame, records.classes)
    bucket_table = acceptance_by_bucket(frame, records.classes, edges)

    step("thresholds")
    per_class = _by_class(records)
    selectors: dict[str, dict[str, Selector]] = {}
    for method in METHODS:
        selectors[method] = {}
        for name, (conf, ok) in per_class.items():
            sel = make_selector(method, max_error=options.max_error, confidence=options.confidence,
                                max_error_ratio=options.max_error_ratio, edges=edges, top=records.scale_top,
                                start_coverage=options.start_coverage, min_above=options.min_above)
            selectors[method][name] = sel.fit(conf, ok)

    step("agreement")
    reviewers = None
    if votes is not None:
        agreement = agreement_from_votes(votes)
        reviewers = reviewer_table(votes)
    else:
        agreement = agreement_from_counts(frame["confirm_count"].to_numpy(), frame["disconfirm_count"].to_numpy())

    cal = None
    if calibration:
        from analysis.calibration import (
            binned_acceptance,
            cross_validated_ece,
            expected_calibration_error,
            reliability_table,
        )

        step("calibration")
        cal = {}
        top = records.scale_top
        for name, (conf, ok) in per_class.items():
            unit = conf / top
            cal[name] = ClassCalibration(
                ece_raw=expected_calibration_error(unit, ok), ece_isotonic_cv=cross_validated_ece(unit, ok),
                reliability=reliability_table(unit, ok, level=options.confidence),
                binned=binned_acceptance(conf, ok, n_bins=10, level=options.confidence))

    notes = _notes(records, options, edges, votes)
    created = utc_now_iso()
    return AnalysisResult(records, options, edges, class_table, bucket_table, selectors, agreement, reviewers,
                          cal, notes, created)


def _notes(records: ReviewRecords, options: AnalysisOptions, edges: np.ndarray, votes) -> list[str]:
    frame = records.frame
    scale = "unit [0, 1]" if records.scale == "unit" else "percent [0, 100]"
    how = (f"detected: the largest confidence is {frame['confidence'].max():g}" if records.scale_detected
           else "as given by --confidence-scale")
    notes = [f"Confidence scale: {scale} ({how}). Thresholds and bucket edges are on this scale; "
             f"thresholds.json also gives each threshold on [0, 1] as threshold_unit."]
    policy = ("count as incorrect (the bulk-QA study's rule)" if records.split_policy == "incorrect"
              else "count as correct when a strict majority accepted (a tie is incorrect)")
    n_split = int((frame["status"] == "split").sum())
    notes.append(f"Split items (reviewers disagree): {n_split:,}; they {policy}.")
    if records.n_unreviewed:
        notes.append(f"{records.n_unreviewed:,} row(s) had no votes (confirm_count + disconfirm_count = 0) and "
                     "were left out as unreviewed.")
    outside = int((assign_buckets(frame["confidence"].to_numpy(), edges) < 0).sum())
    if outside:
        notes.append(f"{outside:,} item(s) lie outside the bucket edges {edges[0]:g}..{edges[-1]:g}: they are in "
                     "no bucket and bucket-walk never looked at them.")
    if votes is None:
        notes.append("No per-vote data (--votes): reviewer agreement is measured from the vote counts alone; "
                     "per-reviewer agreement and gold accuracy need the votes.")
    notes.append("The guarantee holds for masks like the reviewed ones: it assumes the reviewed items of a class "
                 "are a random sample of the masks the threshold will be applied to at each confidence (review a "
                 "random or stratified sample, e.g. the audit arm, not only the most uncertain masks).")
    return notes


# --------------------------------------------------------------------------------------------------------
# I/O edge

def read_store(uri: str, *, round: str | None = None, split_policy: str = "incorrect", scale: str = "auto",
               implied: Sequence[Mapping[str, Any]] = (), model_version: str | None = None
               ) -> tuple[ReviewRecords, pd.DataFrame | None]:
    """Review records and per-vote data straight from the confirmation store (`qa_workflow.confirmations.store`).

    The records are the store's export (`qa_workflow.confirmations.export.export_review_records`: one row per
    item id, the latest round's mask when an item was reviewed in several rounds); the votes are those of exactly those
    (round, item) masks. A reviewer who voted on the same mask in two labeling jobs counts once here.
    ``implied``: review-record rows implied by corrections (`qa_workflow.loop.verdicts`), added for the item ids
    the export has no row for (a direct verdict wins); they carry no per-reviewer votes.
    ``model_version``: only the reviews of that model's masks (thresholds for that model, docs/analysis.md).
    """
    from qa_workflow.confirmations.export import export_review_records
    from qa_workflow.confirmations.store import open_store

    store = open_store(uri, create=False)
    try:
        rows, superseded = export_review_records(store, round=round)
        if implied and round is not None:
            implied = [r for r in implied if str(r["round"]) == str(round)]
        direct = {r["item_id"] for r in rows}
        extra = [{k: r[k] for k in REVIEW_RECORD_COLUMNS} for r in implied if r["item_id"] not in direct]
        if model_version is not None:
            rows = [r for r in rows if r.get("model_version") == model_version]
            extra = [r for r in extra if r.get("model_version") == model_version]
        if not rows and not extra:
            raise SegqaError(f"{store.uri}: no reviewed items" + (f" in round {round}" if round else "")
                             + (f" of model {model_version}" if model_version else "") + "; nothing to analyse")
        frame = pd.DataFrame(rows + extra)
        source = store.uri + (f" + {len(extra)} verdicts implied by corrections" if extra else "")
        records = review_records_from_frame(frame, source=source, split_policy=split_policy, scale=scale,
                                            first_line=1, row_word="export row")
        if superseded:
            log.info("%s: %d older-round rows of re-reviewed items left out", store.uri, superseded)
        exported = dict(zip(frame["item_id"], frame["round"].astype(str), strict=True))
        votes = []
        for rnd in sorted(set(exported.values())):
            for v in store.iter_votes(round=rnd):
                if exported.get(v.item_id) == rnd:
                    votes.append((v.item_id, v.worker_id, v.decision))
    finally:
        store.close()
    if not votes:
        return records, None
    vote_frame = pd.DataFrame(votes, columns=["item_id", "worker_id", "decision"])
    vote_frame = vote_frame.drop_duplicates(["item_id", "worker_id"], keep="first")
    return records, validate_votes(vote_frame, source=f"{uri} (votes)", first_line=1)


def load_inputs(*, reviews: str | None = None, store: str | None = None, votes: str | None = None,
                round: str | None = None, split_policy: str = "incorrect", scale: str = "auto",
                implied: Sequence[Mapping[str, Any]] = (), model_version: str | None = None
                ) -> tuple[ReviewRecords, pd.DataFrame | None]:
    """(records, votes or None) from exactly one of a review-record CSV (``reviews``) or a store URI; a
    ``votes`` CSV, when given, replaces the store's votes. ``implied``, ``model_version``: see `read_store`."""
    if (reviews is None) == (store is None):
        raise SegqaError("give exactly one of --reviews FILE (a review-record CSV) or --store URI")
    for name, value in (("--round", round), ("--model-version", model_version)):
        if value is not None and store is None:
            raise SegqaError(f"{name} filters the store; with --reviews, filter the CSV instead")
    if store is not None:
        records, vote_frame = read_store(store, round=round, split_policy=split_policy, scale=scale,
                                         implied=implied, model_version=model_version)
    else:
        if implied:
            raise SegqaError("verdicts implied by corrections join a store's records, not a review-record CSV")
        assert reviews is not None, "exactly one of reviews and store is given (checked above)"
        records, vote_frame = load_review_records(reviews, split_policy=split_policy, scale=scale), None
    if votes is not None:
        vote_frame = load_votes(votes)
    if vote_frame is not None:
        unknown = ~vote_frame["item_id"].isin(records.frame["item_id"])
        if unknown.all():
            raise SegqaError(f"{votes or store}: none of the votes' item ids is among the reviewed items; is it "
                             "the votes file of these reviews?")
        if unknown.any():
            log.info("%d vote(s) on items not in the review records left out", int(unknown.sum()))
            vote_frame = vote_frame.loc[~unknown].reset_index(drop=True)
    return records, vote_frame


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode("utf-8")


#: Every file write_outputs may write (plus plots/*.png): what a rerun into the same folder replaces or removes.
_ALL_OUTPUTS = ("acceptance_by_class.csv", "acceptance_by_bucket.csv", "threshold_comparison.csv", "reviewers.csv",
                "calibration.json", "report.html", "thresholds.json")


def write_outputs(result: AnalysisResult, out_dir: str | os.PathLike[str], *, report: bool = True,
                  progress: Callable[[str], None] | None = None) -> list[str]:
    """Write the analysis files under ``out_dir`` (local, file:// or s3://); returns the URIs written.

    Everything is rendered before the first file is written, and thresholds.json (what `segqa select` reads)
    is written last, so an interrupted run leaves the previous thresholds in force. In a local folder, the
    outputs of an earlier run that this one does not write (reviewers.csv without --votes, the report and plots
    with --no-report) are removed, so the folder never mixes two analyses; other files are left alone."""
    step = progress or (lambda _msg: None)
    out = os.fspath(out_dir)
    if not storage.is_s3(out):
        target = storage.local_path(out)
        if target.exists() and not target.is_dir():
            raise SegqaError(f"--out {out}: exists and is not a folder")
    files: list[tuple[str, bytes, str]] = [
        ("acceptance_by_class.csv", _csv_bytes(result.class_table), "text/csv"),
        ("acceptance_by_bucket.csv", _csv_bytes(result.bucket_table), "text/csv"),
        ("threshold_comparison.csv", _csv_bytes(result.comparison_table()), "text/csv"),
    ]
    if result.reviewers is not None:
        files.append(("reviewers.csv", _csv_bytes(result.reviewers), "text/csv"))
    files.append(("calibration.json", (json.dumps(result.calibration_document(), indent=2) + "\n").encode("utf-8"),
                  "application/json"))
    if report:
        from analysis.plots import render_plots
        from analysis.report import render_report

        step("plots")
        images = render_plots(result)
        files += [(f"plots/{name}.png", png, "image/png") for name, png in images.items()]
        step("report")
        files.append(("report.html", render_report(result, images).encode("utf-8"), "text/html; charset=utf-8"))
    files.append(("thresholds.json", (json.dumps(result.thresholds_document(), indent=2, ensure_ascii=False)
                                      + "\n").encode("utf-8"), "application/json"))
    step("writing tables")
    if not storage.is_s3(out):
        _remove_stale(storage.local_path(out), {name for name, _, _ in files})
    return [storage.write_bytes(storage.join(out, name), data, content_type) for name, data, content_type in files]


def _remove_stale(folder: Path, writing: set[str]) -> None:
    """Delete this folder's analysis outputs of an earlier run that the current one will not write again."""
    if not folder.is_dir():
        return
    stale = [folder / name for name in _ALL_OUTPUTS if name not in writing]
    stale += [p for p in (folder / "plots").glob("*.png") if f"plots/{p.name}" not in writing]
    for path in stale:
        if path.is_file():
            path.unlink()
