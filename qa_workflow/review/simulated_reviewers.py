"""Simulated reviewers (ARCHITECTURE §10): fill a round's review job through the real Lambda handlers.

For an item (slice, class) with predicted mask M and truth T, the mask's quality q is what a reviewer sees on an
overlay: by default the surface Dice at 1 px tolerance (`training.metrics.surface_dice`: a boundary off by one
pixel is invisible, a missing gyrus is not); ``quality="dice"`` uses the volume Dice instead (1 when both are
empty in either case). Each simulated reviewer accepts with probability sigmoid((q − τ)/s) (τ = 0.90, s = 0.02), then
flips its answer with its own error rate (default 0.03). Reviewers are independent; every draw comes from a
random stream keyed by (seed, reviewer, item id), so a run is reproducible and does not depend on the order
in which items are visited.

They act exactly as Ground Truth workers would: for every manifest line the **pre-labeling** handler gets a
Ground Truth-shaped event and returns the task input (the batch); the reviewers fill in the form the review
template submits (``decisions`` as a JSON string, ``batch_id``, ``submitted_at``); the answers go into an
annotations file and the **post-labeling** handler consolidates them into the store named by ``SEGQA_STORE``.
Nothing here writes the store directly. Re-running with the same job name changes nothing in the store
(every vote is keyed by job, item and worker); use another ``job_name`` for a fresh set of reviews.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import (
    ACCEPT,
    REJECT,
    SURFACE_TOLERANCE_PX,
    SegqaError,
    parse_item_id,
    tissue_class,
    to_display,
    utc_now_iso,
)
from qa_workflow.review.portal import labeling
from qa_workflow.review.simulated_correctors import COST_MODEL

__all__ = [
    "DEFAULT_TAU", "DEFAULT_SLOPE", "DEFAULT_ERROR_RATE", "QUALITY_MEASURES", "DEFAULT_QUALITY", "dice_quality",
    "mask_quality", "accept_probability",
    "reviewer_decision", "reviewer_form", "SimulatedReviewer", "SimulationResult", "simulate_round", "load_truth",
    "load_truth_labels", "write_items_csv",
]

DEFAULT_TAU = 0.90
DEFAULT_SLOPE = 0.02
DEFAULT_ERROR_RATE = 0.03
#: How a simulated verifier judges a mask (ARCHITECTURE §10): surface Dice at 1 px tolerance, or volume Dice.
QUALITY_MEASURES = ("surface_dice", "dice")
DEFAULT_QUALITY = "surface_dice"


def dice_quality(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Volume Dice(M, T) of two boolean masks of the same shape (H, W); 1.0 when both are empty."""
    from training.metrics import volume_dice

    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    return float(volume_dice(predicted, truth))


def mask_quality(predicted: np.ndarray, truth: np.ndarray, measure: str = DEFAULT_QUALITY) -> float:
    """The quality a reviewer judges: ``measure`` (one of QUALITY_MEASURES) of two (H, W) masks; 1.0 when both
    are empty."""
    from training.metrics import surface_dice

    if measure == "dice":
        return dice_quality(predicted, truth)
    if measure != "surface_dice":
        raise SegqaError(f"unknown quality measure {measure!r}; expected one of {', '.join(QUALITY_MEASURES)}")
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    return float(surface_dice(predicted, truth, SURFACE_TOLERANCE_PX))


def accept_probability(quality: float | np.ndarray, tau: float = DEFAULT_TAU, slope: float = DEFAULT_SLOPE
                       ) -> float | np.ndarray:
    """sigmoid((q − τ)/s): the chance a careful reviewer accepts a mask of quality q."""
    from scipy.special import expit

    return expit((np.asarray(quality, dtype=float) - tau) / slope)


def _stream(seed: int, reviewer_index: int, item_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, reviewer_index, zlib.crc32(item_id.encode("utf-8"))])


def reviewer_decision(quality: float, *, seed: int, reviewer_index: int, item_id: str, error_rate: float,
                      tau: float = DEFAULT_TAU, slope: float = DEFAULT_SLOPE) -> bool:
    """True (accept) or False (reject) for one reviewer and one item; deterministic in its arguments."""
    u_accept, u_flip = _stream(seed, reviewer_index, item_id).random(2)
    accept = bool(u_accept < accept_probability(quality, tau, slope))
    if u_flip < error_rate:
        accept = not accept
    return accept


@dataclass(frozen=True)
class SimulatedReviewer:
    index: int  # 1..N
    error_rate: float

    @property
    def worker_id(self) -> str:
        return f"private.local.sim-reviewer-{self.index}"


@dataclass
class SimulationResult:
    job_name: str
    store_uri: str
    quality: str = DEFAULT_QUALITY  # the quality measure the reviewers judged by
    objects: int = 0
    failed_objects: list[tuple[str, str]] = field(default_factory=list)  # (source, error)
    # item_id, class_name, confidence, quality, accepts, rejects
    items: list[dict[str, Any]] = field(default_factory=list)
    invocations: int = 0

    @property
    def votes(self) -> int:
        return sum(r["accepts"] + r["rejects"] for r in self.items)

    def acceptance_by_class(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.items:
            c = out.setdefault(r["class_name"], {"items": 0, "votes": 0, "accepts": 0})
            c["items"] += 1
            c["votes"] += r["accepts"] + r["rejects"]
            c["accepts"] += r["accepts"]
        for c in out.values():
            c["accept_rate"] = c["accepts"] / c["votes"] if c["votes"] else float("nan")
        return out


def load_truth_labels(truth_dir: str | Path) -> Callable[[str], np.ndarray]:
    """``truth(slice_id) -> label map (H, W), values 0..3`` from a dataset folder (ARCHITECTURE §4)."""
    from PIL import Image

    from training.dataset import read_index

    root = Path(truth_dir)
    records = {r.slice_id: r for r in read_index(root)}

    def truth(slice_id: str) -> np.ndarray:
        rec = records.get(slice_id)
        if rec is None:
            raise SegqaError(f"{root}: slice {slice_id} is not in the truth dataset's index.csv")
        return np.asarray(Image.open(root / rec.mask)).astype(np.uint8)

    return truth


def load_truth(truth_dir: str | Path) -> Callable[[str, str], np.ndarray]:
    """``truth(slice_id, class_name) -> bool mask (H, W)`` from a dataset folder (ARCHITECTURE §4)."""
    labels = load_truth_labels(truth_dir)

    def truth(slice_id: str, class_name: str) -> np.ndarray:
        return labels(slice_id) == tissue_class(class_name).id

    return truth


def _predicted_mask(uri: str) -> np.ndarray:
    """The predicted mask of one class (docs/review-work.md: binary PNG, 0 = not the class, >0 = the class)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(im.convert("L")) > 0


def reviewer_form(batch: Mapping[str, Any], qualities: Mapping[str, float], reviewer: SimulatedReviewer, *,
                  seed: int, tau: float, slope: float, areas: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """The crowd form output of one simulated reviewer for one batch (what the review template submits).

    A rejection gives the reason a person would see: under-segmented when the mask is smaller than the truth,
    over-segmented otherwise."""
    decisions = []
    for item in batch["items"]:
        iid = item["item_id"]
        accept = reviewer_decision(qualities[iid], seed=seed, reviewer_index=reviewer.index, item_id=iid,
                                   error_rate=reviewer.error_rate, tau=tau, slope=slope)
        if accept:
            decisions.append({"item_id": iid, "decision": ACCEPT})
        else:
            pred_area, truth_area = areas[iid]
            decisions.append({"item_id": iid, "decision": REJECT,
                              "reason": "under_segmented" if pred_area < truth_area else "over_segmented"})
    # Seconds on the screen by the cost model (§10), so every vote books its verify seconds in the store.
    return {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"],
            "submitted_at": utc_now_iso("milliseconds"), "seconds": str(COST_MODEL.verify_s * len(decisions))}


def simulate_round(round_uri: str, truth_dir: str | Path, *, store_uri: str, reviewers: int = 3,
                   error_rate: float = DEFAULT_ERROR_RATE, seed: int = 0, job_name: str | None = None,
                   tau: float = DEFAULT_TAU, slope: float = DEFAULT_SLOPE, objects_per_invocation: int = 10,
                   work_dir: str | Path | None = None, quality: str = DEFAULT_QUALITY,
                   on_object: Callable[[int, int], None] | None = None, first_reviewer: int = 1) -> SimulationResult:
    """Review every batch of a round with ``reviewers`` simulated reviewers, through the real handlers.

    ``store_uri`` is where the post-labeling handler writes (it is put into ``SEGQA_STORE`` for the calls).
    Annotation files go to ``work_dir`` (a temporary folder, removed afterwards, when None).
    ``quality``: what the reviewers judge, "surface_dice" (1 px tolerance, default) or "dice" (volume).
    ``on_object(done, total)`` reports progress. Objects whose pre-labeling fails are listed in
    ``failed_objects`` and skipped, as Ground Truth would. ``first_reviewer``: the first reviewer's number
    (worker ``sim-reviewer-<n>``, and its own random draws); an escalation job (`rounds.escalating`) starts after
    the verify job's reviewers, so its reviewers are other people.
    """
    if not 1 <= reviewers <= 50:
        raise SegqaError(f"--reviewers must be between 1 and 50, got {reviewers}")
    if first_reviewer < 1:
        raise SegqaError(f"--first-reviewer must be 1 or more, got {first_reviewer}")
    if not 0.0 <= error_rate <= 1.0:
        raise SegqaError(f"--error-rate must be in [0, 1], got {error_rate}")
    if slope <= 0:
        raise SegqaError(f"slope must be positive, got {slope}")
    if quality not in QUALITY_MEASURES:
        raise SegqaError(f"--quality must be one of {', '.join(QUALITY_MEASURES)}, got {quality!r}")
    manifest = labeling.resolve_manifest(round_uri)
    data_objects = labeling.read_manifest(manifest)
    name = labeling.check_job_name(job_name) if job_name else labeling.job_name_for(manifest, prefix="segqa-sim")
    arn = labeling.labeling_job_arn(name)
    truth = load_truth(truth_dir)
    team = [SimulatedReviewer(first_reviewer + i, error_rate) for i in range(reviewers)]
    result = SimulationResult(job_name=name, store_uri=store_uri, quality=quality)

    with tempfile.TemporaryDirectory(prefix="segqa-sim-") as tmp, labeling.store_env(store_uri):
        folder = Path(work_dir) if work_dir is not None else Path(tmp)
        pending: list[dict[str, Any]] = []
        item_rows: dict[str, dict[str, Any]] = {}

        def flush() -> None:
            if not pending:
                return
            payload = labeling.write_annotations_file(folder, pending)
            event = labeling.post_labeling_event(arn, labeling.DEFAULT_LABEL_ATTRIBUTE, payload)
            out = labeling.call_post_labeling(event, [e["datasetObjectId"] for e in pending])
            result.invocations += 1
            for consolidated in out.values():
                for content in consolidated.get("content", {}).values():
                    if content.get("error"):
                        raise SegqaError(f"post-labeling could not use a batch: {content['error']}")
                    for it in content.get("items", []):
                        row = item_rows.get(it["item_id"])
                        if row is not None:
                            row["accepts"], row["rejects"] = it["confirm_count"], it["disconfirm_count"]
            pending.clear()

        for object_id, data_object in enumerate(data_objects):
            try:
                task = labeling.call_pre_labeling(labeling.pre_labeling_event(arn, data_object))
            except SegqaError as exc:
                result.failed_objects.append((json.dumps(data_object), str(exc)))
                continue
            batch = task["taskInput"]
            qualities: dict[str, float] = {}
            areas: dict[str, tuple[int, int]] = {}
            for item in batch["items"]:
                iid = item["item_id"]
                pred = _predicted_mask(item["mask_uri"])
                # the batch's masks are in the display orientation (contract.to_display); the truth is as stored
                true = to_display(truth(parse_item_id(iid).slice_id, item["class_name"]))
                if pred.shape != true.shape:
                    raise SegqaError(f"{item['mask_uri']}: mask is {pred.shape[1]}x{pred.shape[0]}, the truth "
                                     f"slice {parse_item_id(iid).slice_id} is {true.shape[1]}x{true.shape[0]}")
                qualities[iid] = mask_quality(pred, true, quality)
                areas[iid] = (int(pred.sum()), int(true.sum()))
                item_rows[iid] = {"item_id": iid, "class_name": item["class_name"], "confidence": item["confidence"],
                                  "quality": qualities[iid], "accepts": 0, "rejects": 0}
            answers = [(r.worker_id, reviewer_form(batch, qualities, r, seed=seed, tau=tau, slope=slope, areas=areas))
                       for r in team]
            pending.append(labeling.annotation_entry(object_id, data_object, answers))
            result.objects += 1
            if len(pending) >= objects_per_invocation:
                flush()
            if on_object is not None:
                on_object(object_id + 1, len(data_objects))
        flush()
    result.items = list(item_rows.values())
    return result


def write_items_csv(result: SimulationResult, path: str | Path) -> None:
    """Per item: id, class, model confidence, true quality (the run's measure, ``result.quality``), accept and
    reject votes of this run."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["item_id", "class_name", "confidence", "quality", "accepts", "rejects"],
                            lineterminator="\n")
    writer.writeheader()
    for row in result.items:
        writer.writerow({**row, "quality": f"{row['quality']:.6f}"})
    storage.write_text(str(path), buf.getvalue(), "text/csv")

