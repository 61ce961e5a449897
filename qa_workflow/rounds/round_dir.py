"""The round folder written by `segqa select` (layout in docs/review-work.md).

``round.json`` records the policy's parameters and the versions (sha256) of every input; ``assignments.csv``
holds the assignment of every scored item. A round is identified by its *fingerprint*: the sha256 of the policy
parameters and input hashes. Re-running `select` with the same inputs and parameters is idempotent (same
assignments, nothing rewritten); with different ones it refuses unless ``overwrite`` is set.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from qa_workflow import __version__, storage
from qa_workflow.contract import (
    CLASS_BY_NAME,
    LEGACY_VERIFY_ASSIGNMENT,
    REVIEW_CLASSES,
    SegqaError,
    parse_item_id,
    utc_now_iso,
)
from qa_workflow.rounds.predict import (
    REJECTS_FILE,
    RUN_FILE,
    Reject,
    absolute_uri,
    read_run,
    read_score_table,
    write_rejects,
)
from qa_workflow.rounds.selection import (
    ASSIGNMENT_COLUMNS,
    ASSIGNMENT_OPTIONAL_COLUMNS,
    CALIBRATION_FILE,
    Calibration,
    SelectionPolicy,
    Thresholds,
    assignment_counts,
    load_calibration,
    load_thresholds,
    route_seconds,
)

__all__ = ["RoundResult", "select_round", "read_round", "read_assignments", "round_fingerprint",
           "ROUND_FILE", "ASSIGNMENTS_FILE", "ROUND_SCHEMA", "round_id_from", "read_item_ids"]

log = logging.getLogger(__name__)

ROUND_FILE = "round.json"
ASSIGNMENTS_FILE = "assignments.csv"
#: What `segqa batch` wrote into the round (rounds.batching): destination, batches, routed adjust tasks.
BATCHES_FILE = "batches.json"
ROUND_SCHEMA = "segqa.round/1"
_ROUND_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


@dataclass
class RoundResult:
    out: str
    round_id: str
    fingerprint: str
    counts: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)  # planned human seconds per route
    calibration: str | None = None  # the calibration.json routing used
    unchanged: bool = False
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def round_id_from(out: str) -> str:
    """Default round id: the round folder's name (``rounds/r01`` -> ``r01``)."""
    name = PurePosixPath(str(out).rstrip("/")).name if storage.is_s3(out) else storage.local_path(out).resolve().name
    return name


def _check_round_id(round_id: str) -> str:
    if not _ROUND_ID_RE.match(round_id or ""):
        raise SegqaError(f"round id {round_id!r}: expected 1-48 letters, digits, '.', '_' or '-' starting with a "
                         "letter or digit (pass --round-id)")
    return round_id


def round_fingerprint(params: dict[str, Any], inputs: dict[str, Any], round_id: str) -> str:
    blob = json.dumps({"round": round_id, "policy": params, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_rows(frame, measure: str) -> tuple[Any, list[Reject]]:
    """Rows of a score table that select can use, and a Reject for each one it cannot."""
    rejects: list[Reject] = []
    bad = []
    for pos, row in enumerate(frame.itertuples(index=False)):
        reason = None
        try:
            iid = parse_item_id(str(row.item_id))
            if iid.class_name != row.class_name or CLASS_BY_NAME.get(row.class_name) is None:
                reason = f"class_name {row.class_name!r} does not match item id"
            elif iid.subject != str(row.subject) or iid.slice_index != int(row.slice):
                reason = "subject/slice do not match item id"
        except (SegqaError, ValueError, TypeError) as exc:
            reason = str(exc)
        if reason is None:
            v = getattr(row, measure)
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = math.inf
            if not (math.isnan(v) or 0.0 <= v <= 1.0):
                reason = f"{measure} {getattr(row, measure)!r} is not a number in [0, 1]"
        if reason is not None:
            bad.append(pos)
            rejects.append(Reject("scores", reason, str(row.subject), str(row.slice), str(row.item_id)))
    if bad:
        frame = frame.drop(frame.index[bad]).reset_index(drop=True)
    return frame, rejects


def _sibling(uri: str, name: str) -> str:
    """``name`` in the folder of ``uri`` (a local path, file:// or s3:// URI)."""
    if storage.is_s3(uri) or uri.startswith("file://"):
        return f"{uri.rsplit('/', 1)[0]}/{name}"
    return str(storage.local_path(uri).parent / name)


def _csv_bytes(frame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", float_format="%.6f")
    return buf.getvalue().encode("utf-8")


def select_round(predictions: str, out: str, policy: SelectionPolicy, thresholds: str | None = None,
                 round_id: str | None = None, overwrite: bool = False, exclude: Iterable[str] = (),
                 calibration: str | None = None) -> RoundResult:
    """Fit ``policy`` on the prediction folder's score table and the last analysis (thresholds file, calibration
    file) and write the round folder.

    ``calibration``: the analysis's calibration.json; when None and ``thresholds`` is given, a calibration.json
    next to the thresholds file is used if there is one (an analysis folder holds both).
    ``exclude``: item ids already reviewed in earlier rounds (skipped with that reason; part of the inputs).

    Idempotent: the same inputs and parameters leave an existing round untouched (``unchanged=True``).
    A thresholds file of another schema, or unusable, is rejected: the reason goes to ``out/rejects.csv``
    (unless ``out`` already holds a round) and SegqaError is raised.
    """
    policy.check_params()  # a bad option fails before anything is read or written
    predictions, out = absolute_uri(predictions), absolute_uri(out)
    thresholds = absolute_uri(thresholds) if thresholds else None
    round_id = _check_round_id(round_id or round_id_from(out))
    round_uri = storage.join(out, ROUND_FILE)
    existing = storage.read_json(round_uri) if storage.exists(round_uri) else None

    run = read_run(predictions)
    frame = read_score_table(predictions)
    def load_or_reject(kind: str, uri: str, loader: Callable[[str], Any]) -> Any:
        """An input file read by ``loader``; a bad one is recorded in rejects.csv (first run only) and refused."""
        try:
            return loader(uri)
        except SegqaError as exc:
            if existing is None:
                write_rejects(storage.join(out, REJECTS_FILE), [Reject(kind, str(exc), file=str(uri))])
            raise SegqaError(f"{kind} rejected: {exc}") from None

    th: Thresholds | None = load_or_reject("thresholds", thresholds, load_thresholds) if thresholds else None
    if calibration is None and thresholds:
        beside = _sibling(thresholds, CALIBRATION_FILE)
        calibration = beside if storage.exists(beside) else None
    calibration = absolute_uri(calibration) if calibration else None
    cal: Calibration | None = (load_or_reject("calibration", calibration, load_calibration) if calibration
                               else None)

    frame, rejects = _check_rows(frame, policy.measure)
    table_uri = storage.join(predictions, run["score_table"])
    inputs = {
        "predictions": str(predictions),
        "score_table_sha256": hashlib.sha256(storage.read_bytes(table_uri)).hexdigest(),
        "run_sha256": hashlib.sha256(storage.read_bytes(storage.join(predictions, RUN_FILE))).hexdigest(),
        "model_version": run.get("model_version"),
        "dataset_index_sha256": run.get("index_sha256"),
        "split": run.get("split"),
        "thresholds": str(thresholds) if thresholds else None,
        "thresholds_sha256": th.sha256 if th else None,
        "calibration": str(calibration) if calibration else None,
        "calibration_sha256": cal.sha256 if cal else None,
    }
    exclude = sorted({str(i) for i in exclude})
    inputs["excluded_items"] = len(exclude)
    inputs["excluded_sha256"] = hashlib.sha256("\n".join(exclude).encode()).hexdigest() if exclude else None
    params = policy.record_params()
    fingerprint = round_fingerprint(params, inputs, round_id)

    if existing is not None and not overwrite:
        if existing.get("fingerprint") != fingerprint:
            diff = [k for k in params if existing.get("policy", {}).get(k) != params[k]]
            diff += [k for k in inputs if existing.get("inputs", {}).get(k) != inputs[k]]
            raise SegqaError(f"{out}: already holds round {existing.get('round')!r} made with other "
                             f"{'/'.join(diff) or 'inputs'}; use another --out, or --overwrite to replace it")

    warnings = list(th.warnings) if th else []
    if th is not None:  # a threshold holds for the masks of the model whose reviews fitted it
        usable = th.for_model(run.get("model_version"))
        if usable is not th:
            warnings.append(f"{thresholds}: nothing auto-accepted: {next(iter(usable.reasons.values()))}")
        th = usable
    assigned = policy.fit(frame, th, cal).transform(frame, exclude=exclude)
    counts = assignment_counts(assigned)
    seconds = route_seconds(assigned)
    csv_bytes = _csv_bytes(assigned)
    assign_uri = storage.join(out, ASSIGNMENTS_FILE)
    unchanged = (existing is not None and existing.get("fingerprint") == fingerprint
                 and storage.exists(assign_uri) and storage.read_bytes(assign_uri) == csv_bytes)
    if not unchanged:
        same_round = existing if existing is not None and existing.get("fingerprint") == fingerprint else None
        meta = {
            "schema": ROUND_SCHEMA, "round": round_id, "fingerprint": fingerprint,
            "created_at": same_round.get("created_at") if same_round is not None
            else utc_now_iso(),
            "segqa_version": __version__, "policy": params, "inputs": inputs,
            "thresholds_in_use": policy.thresholds_, "cold_start": policy.cold_start_,
            "strata_edges": {k: [round(float(x), 6) for x in v] for k, v in policy.strata_edges_.items()}
            if policy.cold_start_ else None,
            "counts": counts, "planned_seconds": seconds, "site_weights": policy.site_weights_,
            "calibrated_classes": sorted(cal.curves) if cal else [],
            "rejects": len(rejects), "classes": [c.name for c in REVIEW_CLASSES],
        }
        # assignments first, round.json last: a round.json always describes the assignments next to it
        storage.write_bytes(assign_uri, csv_bytes, "text/csv")
        write_rejects(storage.join(out, REJECTS_FILE), rejects)
        storage.write_json(round_uri, meta)
    return RoundResult(out=out, round_id=round_id, fingerprint=fingerprint, counts=counts, seconds=seconds,
                       calibration=str(calibration) if calibration else None, unchanged=unchanged,
                       rejects=rejects, warnings=warnings)


def read_round(round_dir: str) -> dict[str, Any]:
    return storage.read_schema_json(
        storage.join(round_dir, ROUND_FILE), ROUND_SCHEMA,
        missing=f"{round_dir}: not a round folder (no {ROUND_FILE}); make one with 'segqa select'")


def read_assignments(round_dir: str):
    """``assignments.csv`` as a DataFrame (ASSIGNMENT_COLUMNS + ASSIGNMENT_OPTIONAL_COLUMNS).

    Rounds written before routing: the route ``review`` reads as ``verify``; the optional columns are filled in
    (site "", p_accept NaN, expected_seconds NaN)."""
    import pandas as pd

    uri = storage.join(round_dir, ASSIGNMENTS_FILE)
    data = storage.read_bytes(uri)
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={"subject": str, "reason": str, "image": str, "pred_mask": str,
                                                     "site": str},
                            keep_default_na=False, na_values={"confidence": [""], "review_rank": [""],
                                                              "p_accept": ["", "nan"], "expected_seconds": [""]})
    except Exception as exc:
        raise SegqaError(f"{uri}: unreadable ({exc})") from None
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise SegqaError(f"{uri}: missing column(s) {', '.join(missing)}")
    frame["review_rank"] = frame["review_rank"].astype("Int64")
    frame["assignment"] = frame["assignment"].replace(LEGACY_VERIFY_ASSIGNMENT, "verify")
    for col in ASSIGNMENT_OPTIONAL_COLUMNS:
        if col not in frame.columns:
            frame[col] = "" if col == "site" else float("nan")
    return frame


def read_item_ids(uri: str) -> list[str]:
    """Item ids from a file: a CSV with an ``item_id`` column (e.g. a review-record export) or one id per line.

    Raises SegqaError naming the line of a malformed id.
    """
    import csv

    text = storage.read_text(uri)
    lines = text.splitlines()
    if not lines:
        return []
    if "item_id" in next(csv.reader([lines[0]])):
        rows = csv.DictReader(io.StringIO(text))
        ids = [(n, r["item_id"]) for n, r in enumerate(rows, start=2)]
    else:
        ids = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    for n, iid in ids:
        try:
            parse_item_id(iid)
        except SegqaError as exc:
            raise SegqaError(f"{uri}, line {n}: {exc}") from None
    return [iid for _, iid in ids]
