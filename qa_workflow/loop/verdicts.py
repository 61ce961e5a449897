"""Verdicts implied by corrections: what a corrected slice says about the masks the model had predicted there.

A person who corrects a slice (an adjust task, ARCHITECTURE §7) leaves a full label map. Each class mask the model
predicted on that slice can then be judged by the reviewers' own standard (§10: surface Dice at 1 px tolerance,
accepted at >= the bar ``tau``) against the correction, exactly as a verifier would have judged it against the
truth. Those verdicts are review records like the verifiers' (one implied vote each) and go into the analysis
beside them: the calibrator and the thresholds keep learning from the rounds that routing sends to correction.

Without them the loop traps itself: once the calibrator says a class is usually rejected, routing sends it
straight to ``adjust`` (§5), no verify outcome of that class is recorded again, and the calibration, hence the
routing, can never see the model improve. A direct verdict wins: an item that reviewers voted on keeps their
record, and the implied one is left out.

The rule is a pure function (`implied_verdict`); `implied_review_records` reads the rounds' assignment tables and
the consolidated corrections (the I/O edge). docs/DECISIONS.md says why the bar is the reviewers' one.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import REVIEW_RECORD_COLUMNS, SegqaError, from_display, round_sort_key

__all__ = ["IMPLIED_TOLERANCE_PX", "implied_verdict", "implied_review_records", "implied_records_csv"]

#: Boundary tolerance of the implied judgement, as the simulated reviewers' (ARCHITECTURE §10).
IMPLIED_TOLERANCE_PX = 1.0


def implied_verdict(predicted: np.ndarray, corrected: np.ndarray, tau: float,
                    tolerance_px: float = IMPLIED_TOLERANCE_PX) -> tuple[float, bool]:
    """(quality, accepted) of a predicted class mask against the corrected mask of the same class: surface Dice
    at ``tolerance_px`` (both (H, W) bool), accepted when it is at least ``tau``."""
    from training.metrics import surface_dice

    if predicted.shape != corrected.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, corrected {corrected.shape}")
    quality = float(surface_dice(predicted, corrected, tolerance_px))
    return quality, quality >= tau


def _label_png(uri: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
            return np.asarray(im).astype(np.uint8)
    except (OSError, ValueError) as exc:
        raise SegqaError(f"{uri}: not a readable label PNG ({exc})") from None


def implied_review_records(corrections: Iterable[Mapping[str, Any]], round_dirs: Mapping[str, str], tau: float,
                           *, skip_items: Iterable[str] = (), tolerance_px: float = IMPLIED_TOLERANCE_PX
                           ) -> list[dict[str, Any]]:
    """Review-record rows (ARCHITECTURE §9, keys `contract.REVIEW_RECORD_COLUMNS` plus ``quality``) implied by
    consolidated corrections.

    corrections: `loop.retraining.store_corrections` rows (``slice_id``, ``round``, ``mask_uri`` of the consolidated
    label map, drawn in the display orientation); round_dirs: round id -> that round's folder (its
    ``assignments.csv`` names every class mask the model predicted, with its confidence and predicted label map);
    skip_items: item ids that have a direct verdict (reviewers' votes), left out. A slice corrected in several
    jobs of one round (routed and chained) counts once, by its first consolidated mask. Every class mask with a
    confidence gets a row; ``confirm_count`` 1 when accepted, else ``disconfirm_count`` 1.
    """
    from qa_workflow.rounds.round_dir import read_assignments

    skip = set(skip_items)
    by_round: dict[str, dict[str, str]] = {}
    for row in corrections:
        if row.get("mask_uri"):
            by_round.setdefault(str(row["round"]), {}).setdefault(str(row["slice_id"]), str(row["mask_uri"]))
    rows: list[dict[str, Any]] = []
    for rid in sorted(by_round, key=round_sort_key):
        if rid not in round_dirs:
            raise SegqaError(f"corrections of round {rid!r} but no round folder given for it")
        frame = read_assignments(round_dirs[rid])
        frame = frame[frame["slice_id"].isin(by_round[rid].keys()) & frame["confidence"].notna()]
        for slice_id, items in frame.groupby("slice_id", sort=True):
            corrected = from_display(_label_png(by_round[rid][str(slice_id)]))
            predicted: np.ndarray | None = None
            for item in items.itertuples(index=False):
                if item.item_id in skip:
                    continue
                if predicted is None:
                    predicted = _label_png(str(item.pred_mask))
                    if predicted.shape != corrected.shape:
                        raise SegqaError(f"{by_round[rid][str(slice_id)]}: the corrected label map does not match "
                                         f"the predicted one ({item.pred_mask}) in shape")
                quality, accepted = implied_verdict(predicted == item.class_id, corrected == item.class_id, tau,
                                                    tolerance_px)
                rows.append({"item_id": item.item_id, "class_name": item.class_name,
                             "confidence": float(item.confidence), "confirm_count": int(accepted),
                             "disconfirm_count": int(not accepted), "round": rid, "model_version": "",
                             "subject": item.subject, "slice_id": str(slice_id), "quality": round(quality, 6)})
    return rows


def implied_records_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text of `implied_review_records` rows (review-record columns, then ``quality``)."""
    import csv

    columns = [*REVIEW_RECORD_COLUMNS, "quality"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buf.getvalue()
