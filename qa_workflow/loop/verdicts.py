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

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import SegqaError, from_display, round_sort_key

__all__ = ["implied_verdict", "implied_review_records"]


def implied_verdict(predicted: np.ndarray, corrected: np.ndarray, tau: float) -> tuple[float, bool]:
    """(quality, accepted) of a predicted class mask against the corrected mask of the same class (both (H, W)
    bool): the simulated reviewers' quality measure (`review.simulated_reviewers.mask_quality`, surface Dice at
    1 px), accepted when it is at least ``tau``."""
    from qa_workflow.review.simulated_reviewers import mask_quality

    quality = mask_quality(predicted, corrected)
    return quality, quality >= tau


def _label_map(uri: str, kind: str) -> np.ndarray:
    from qa_workflow.rounds.predict import decode_png

    return decode_png(storage.read_bytes(uri), uri, kind)


def implied_review_records(corrections: Iterable[Mapping[str, Any]], round_dirs: Mapping[str, str], tau: float,
                           *, skip_items: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Review-record rows (ARCHITECTURE §9, keys `contract.REVIEW_RECORD_COLUMNS` plus ``quality``; CSV text:
    `confirmations.export.review_records_csv` with ``extra=("quality",)``) implied by consolidated corrections.

    corrections: `loop.retraining.store_corrections` rows (``slice_id``, ``round``, ``mask_uri`` of the consolidated
    label map, drawn in the display orientation); round_dirs: round id -> that round's folder (its
    ``assignments.csv`` names every class mask the model predicted, with its confidence and predicted label map);
    skip_items: item ids that have a direct verdict (reviewers' votes), left out. A slice corrected in several
    jobs of one round (routed and chained) counts once, by the correction retraining uses
    (`retraining.latest_corrections`). Every class mask with a
    confidence gets a row; ``confirm_count`` 1 when accepted, else ``disconfirm_count`` 1.
    """
    from qa_workflow.loop.retraining import latest_corrections
    from qa_workflow.rounds.round_dir import read_assignments, read_round

    skip = set(skip_items)
    by_round: dict[str, dict[str, str]] = {}
    for (round_id, slice_id), mask_uri in latest_corrections(corrections).items():
        by_round.setdefault(round_id, {})[slice_id] = mask_uri
    rows: list[dict[str, Any]] = []
    for rid in sorted(by_round, key=round_sort_key):
        if rid not in round_dirs:
            raise SegqaError(f"corrections of round {rid!r} but no round folder given for it")
        frame = read_assignments(round_dirs[rid])
        version = str(read_round(round_dirs[rid]).get("inputs", {}).get("model_version") or "")
        frame = frame[frame["slice_id"].isin(by_round[rid].keys()) & frame["confidence"].notna()]
        for slice_id, items in frame.groupby("slice_id", sort=True):
            corrected = from_display(_label_map(by_round[rid][str(slice_id)], "corrected label map"))
            predicted: np.ndarray | None = None
            for item in items.itertuples(index=False):
                if item.item_id in skip:
                    continue
                if predicted is None:
                    predicted = _label_map(str(item.pred_mask), "predicted mask")
                    if predicted.shape != corrected.shape:
                        raise SegqaError(f"{by_round[rid][str(slice_id)]}: the corrected label map does not match "
                                         f"the predicted one ({item.pred_mask}) in shape")
                quality, accepted = implied_verdict(predicted == item.class_id, corrected == item.class_id, tau)
                rows.append({"item_id": item.item_id, "class_name": item.class_name,
                             "confidence": float(item.confidence), "confirm_count": int(accepted),
                             "disconfirm_count": int(not accepted), "round": rid, "model_version": version,
                             "subject": item.subject, "slice_id": str(slice_id), "quality": round(quality, 6)})
    return rows

