"""What is read out of the confirmation store: review-record rows and CSV (ARCHITECTURE §9), the corrections
CSV (§8), the per-class summary. Works on any `Store`; rounds are ordered by `contract.round_sort_key`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from qa_workflow.confirmations.records import ItemState, Store
from qa_workflow.contract import ACCEPT, CORRECTION_COLUMNS, REJECT, REVIEW_RECORD_COLUMNS, SPLIT, round_sort_key

__all__ = ["review_record", "export_review_records", "review_records_csv", "summarize", "export_corrections",
           "corrections_csv"]


def review_record(state: ItemState) -> dict[str, Any]:
    """One row of the review-record CSV (ARCHITECTURE §9), keys = contract.REVIEW_RECORD_COLUMNS."""
    it = state.item
    row = {"item_id": it.item_id, "class_name": it.class_name, "confidence": it.confidence,
           "confirm_count": state.confirm_count, "disconfirm_count": state.disconfirm_count,
           "round": it.round, "model_version": it.model_version, "subject": it.subject, "slice_id": it.slice_id}
    return {k: row[k] for k in REVIEW_RECORD_COLUMNS}


def export_review_records(store: Store, *, round: str | int | None = None, class_name: str | None = None
                          ) -> tuple[list[dict[str, Any]], int]:
    """Review-record rows (ARCHITECTURE §9), one per ``item_id``, sorted by (round, item_id).

    The analysis needs each item id once; when an item was reviewed in several rounds (a new mask each time)
    the latest round's row is kept. Returns ``(rows, superseded)`` where ``superseded`` counts the older-round
    rows left out. ``round`` / ``class_name`` restrict the export.
    """
    latest: dict[str, ItemState] = {}
    superseded = 0
    for state in store.iter_items(class_name=class_name, round=round):
        if state.confirm_count + state.disconfirm_count == 0:
            continue
        prev = latest.get(state.item.item_id)
        if prev is not None:
            superseded += 1
            if round_sort_key(prev.item.round) > round_sort_key(state.item.round):
                continue
        latest[state.item.item_id] = state
    ordered = sorted(latest.values(), key=lambda s: (round_sort_key(s.item.round), s.item.item_id))
    return [review_record(s) for s in ordered], superseded


def review_records_csv(rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    """The CSV text (header `contract.REVIEW_RECORD_COLUMNS`, then the ``extra`` columns the rows carry, ``\n``
    line ends) of review-record rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*REVIEW_RECORD_COLUMNS, *extra], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if k == "confidence" else v for k, v in row.items()})
    return buf.getvalue()


def review_records_csv_from(store_uri: str, *, round: str | int | None = None, class_name: str | None = None
                            ) -> tuple[str, int]:
    """The review-record CSV of the store at ``store_uri`` (which must exist) and how many older-round rows it left
    out: what `segqa store export`, the demo and the portal's operator export write."""
    from qa_workflow.confirmations.store import open_store

    store = open_store(store_uri, create=False)
    try:
        rows, superseded = export_review_records(store, round=round, class_name=class_name)
    finally:
        store.close()
    return review_records_csv(rows), superseded


def export_corrections(store: Store, *, round: str | int | None = None, job: str | None = None,
                       recorded_at: bool = False) -> list[dict[str, Any]]:
    """One row per corrected slice per adjust job (`contract.CORRECTION_COLUMNS`), sorted by (round, slice, job).

    ``workers`` are the worker ids joined by ``;``; ``mask_uri`` is the consolidated mask (empty until the
    post-labeling step stored one); ``modified`` is true when any worker changed the model's mask; ``seconds``
    sums the workers' known seconds on task (empty when none is known). ``recorded_at=True`` adds when the
    slice's last correction of the job was recorded (ISO 8601, "" when unknown): not a CSV column, it is what
    `loop.retraining.latest_corrections` orders a twice-corrected slice by.
    """
    groups: dict[tuple[str, str], list[Any]] = {}
    for c in store.iter_corrections(job=job, round=round):
        groups.setdefault((c.job, c.slice_id), []).append(c)
    masks = {(m.job, m.slice_id): m.mask_uri for m in store.iter_consolidated_masks(job=job, round=round)}
    rows = []
    for (job_name, slice_id), corrections in groups.items():
        known = [c.seconds for c in corrections if c.seconds is not None]
        rows.append({"slice_id": slice_id, "round": corrections[0].round, "job": job_name,
                     "workers": ";".join(sorted(c.worker_id for c in corrections)),
                     "mask_uri": masks.get((job_name, slice_id), ""),
                     "modified": any(c.modified for c in corrections),
                     "seconds": round_seconds(sum(known)) if known else ""})
        if recorded_at:
            rows[-1]["recorded_at"] = max(c.recorded_at or "" for c in corrections)
    rows.sort(key=lambda r: (round_sort_key(r["round"]), r["slice_id"], r["job"]))
    return rows


def round_seconds(seconds: float) -> float:
    """Seconds as the exports print them: to the millisecond."""
    return float(f"{seconds:.3f}")


def corrections_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The CSV text (header `contract.CORRECTION_COLUMNS`) of `export_corrections` rows; booleans as true/false."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CORRECTION_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "modified": "true" if row["modified"] else "false"})
    return buf.getvalue()


def summarize(store: Store) -> list[dict[str, Any]]:
    """Counts per (class_name, round): items, votes, confirmations, rejections, and accept/reject/split items."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for state in store.iter_items():
        key = (state.item.class_name, state.item.round)
        g = groups.setdefault(key, {"class_name": key[0], "round": key[1], "items": 0, "votes": 0,
                                    "confirm_votes": 0, "disconfirm_votes": 0, "reviewers": set(),
                                    ACCEPT: 0, REJECT: 0, SPLIT: 0})
        g["items"] += 1
        g["confirm_votes"] += state.confirm_count
        g["disconfirm_votes"] += state.disconfirm_count
        g["votes"] += state.confirm_count + state.disconfirm_count
        g["reviewers"].update(state.reviewers)
        if state.outcome:
            g[state.outcome] += 1
    out = []
    for key in sorted(groups, key=lambda k: (k[0], round_sort_key(k[1]))):
        g = groups[key]
        g["reviewers"] = len(g["reviewers"])
        out.append(g)
    return out


