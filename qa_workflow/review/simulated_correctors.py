"""Simulated correctors and the cost model (ARCHITECTURE §10): fill an adjust job through the real handlers.

A simulated corrector returns the truth label map of the slice, degraded by its own boundary noise (each
boundary pixel takes the label of a random 4-neighbour with probability ``boundary_noise``, default 0.1: a
boundary moved by at most one pixel), and reports ``initialValueModified`` honestly (its answer differs from
the model's mask). Its answer is what ``crowd-semantic-segmentation`` submits: an RGBA PNG in the task's label
mapping colours (background transparent), base64, with the label mappings and the image size; the form also
carries ``seconds`` from the cost model. Every draw comes from a stream keyed by (seed, corrector, slice id).

Like the simulated reviewers they act as Ground Truth workers would: pre-labeling handler per manifest line,
annotations file, post-labeling handler into the store named by ``SEGQA_STORE``; nothing writes the store here.

Cost model (seconds of one person; Bearman et al. 2016, Fluid Annotation, Papadopoulos et al. 2016): verifying
a mask 3 s, correcting a slice 60 s, drawing a slice's three tissues from scratch 240 s.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import CLASS_BY_NAME, CostModel, SegqaError, to_display, utc_now_iso
from qa_workflow.review.portal import labeling

__all__ = ["COST_MODEL", "DEFAULT_BOUNDARY_NOISE", "boundary_noise", "segmentation_answer",
           "SimulatedCorrector", "AdjustSimulation", "simulate_adjust", "ADJUST_LABEL_ATTRIBUTE"]

DEFAULT_BOUNDARY_NOISE = 0.1
ADJUST_LABEL_ATTRIBUTE = "segqa-adjust"


#: The cost model's defaults (`contract.CostModel`, ARCHITECTURE §10): what simulated people book per answer.
COST_MODEL = CostModel()


def boundary_noise(labels: np.ndarray, rng: np.random.Generator, p: float = DEFAULT_BOUNDARY_NOISE) -> np.ndarray:
    """(H, W) label map -> a copy whose boundary pixels (a 4-neighbour has another label) each take, with
    probability ``p``, the label of one random 4-neighbour: every boundary moves by at most one pixel."""
    labels = np.asarray(labels)
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    shifts = [padded[0:h, 1:w + 1], padded[2:h + 2, 1:w + 1], padded[1:h + 1, 0:w], padded[1:h + 1, 2:w + 2]]
    neighbours = np.stack(shifts)  # (4, H, W): up, down, left, right
    boundary = (neighbours != labels).any(axis=0)
    move = boundary & (rng.random(labels.shape) < p)
    pick = rng.integers(0, 4, labels.shape)
    out = labels.copy()
    out[move] = np.take_along_axis(neighbours, pick[None], axis=0)[0][move]
    return out


def segmentation_answer(labels: np.ndarray, mappings: Mapping[str, Mapping[str, str]], modified: bool
                        ) -> dict[str, Any]:
    """What ``crowd-semantic-segmentation`` submits for the label map ``labels`` (values = class ids), drawn in
    the colours of ``mappings`` (class name -> {color}), background transparent."""
    from PIL import Image

    rgba = np.zeros((*labels.shape, 4), np.uint8)
    for name, entry in mappings.items():
        colour = str(entry["color"]).lstrip("#")
        rgba[labels == CLASS_BY_NAME[name].id] = [int(colour[i:i + 2], 16) for i in (0, 2, 4)] + [255]
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return {"labeledImage": {"pngImageData": base64.b64encode(buf.getvalue()).decode("ascii")},
            "labelMappings": {k: {"color": v["color"]} for k, v in mappings.items()},
            "initialValueModified": bool(modified),
            "inputImageProperties": {"height": int(labels.shape[0]), "width": int(labels.shape[1])}}


@dataclass(frozen=True)
class SimulatedCorrector:
    index: int  # 1..N
    noise: float = DEFAULT_BOUNDARY_NOISE

    @property
    def worker_id(self) -> str:
        return f"private.local.sim-corrector-{self.index}"

    def form(self, task: Mapping[str, Any], truth: np.ndarray, model: np.ndarray, seed: int,
             cost: CostModel = COST_MODEL) -> dict[str, Any]:
        """The adjust template's form output for ``task`` (truth and model: (H, W) label maps)."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, self.index, zlib.crc32(task["slice_id"].encode())])
        answer = boundary_noise(truth, rng, self.noise)
        return {"correctedMask": segmentation_answer(answer, task["label_mappings"],
                                                     modified=bool((answer != model).any())),
                "task_id": task["task_id"], "submitted_at": utc_now_iso("milliseconds"),
                "seconds": str(cost.adjust_s)}


@dataclass
class AdjustSimulation:
    job_name: str
    store_uri: str
    slices: list[str] = field(default_factory=list)  # slices with a consolidated mask
    failed_objects: list[tuple[str, str]] = field(default_factory=list)  # (slice or source, error)
    answers: int = 0


def _label_png(uri: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(im).astype(np.uint8)


def simulate_adjust(manifest_uri: str, truth: Callable[[str], np.ndarray], *, store_uri: str, job_name: str,
                    correctors: int = 1, noise: float = DEFAULT_BOUNDARY_NOISE, seed: int = 0,
                    cost: CostModel = COST_MODEL, objects_per_invocation: int = 10) -> AdjustSimulation:
    """Correct every adjust task of a manifest with ``correctors`` simulated correctors, through the handlers.

    ``truth(slice_id)`` gives the slice's true label map (H, W) as stored; it is compared with the task's label
    PNG in the display orientation (`contract.to_display`). A task whose consolidation fails is listed in
    ``failed_objects``, as Ground Truth would leave it unlabelled.
    """
    if not 1 <= correctors <= 9:
        raise SegqaError(f"correctors must be 1..9 (Ground Truth's workers per object), got {correctors}")
    data_objects = labeling.read_manifest(manifest_uri)
    arn = labeling.labeling_job_arn(labeling.check_job_name(job_name))
    team = [SimulatedCorrector(i + 1, noise) for i in range(correctors)]
    result = AdjustSimulation(job_name=job_name, store_uri=store_uri)
    with tempfile.TemporaryDirectory(prefix="segqa-adjust-") as tmp, labeling.store_env(store_uri):
        pending: list[dict[str, Any]] = []

        def flush() -> None:
            if not pending:
                return
            payload = labeling.write_annotations_file(Path(tmp), pending)
            event = labeling.post_labeling_event(arn, ADJUST_LABEL_ATTRIBUTE, payload)
            out = labeling.call_post_labeling(event, [e["datasetObjectId"] for e in pending])
            for consolidated in out.values():
                for content in consolidated.get("content", {}).values():
                    if content.get("error"):
                        result.failed_objects.append((str(content.get("slice_id")), content["error"]))
                    elif content.get("mask_uri"):
                        result.slices.append(content["slice_id"])
            pending.clear()

        for object_id, data_object in enumerate(data_objects):
            try:
                task = labeling.call_pre_labeling(labeling.pre_labeling_event(arn, data_object))["taskInput"]
            except SegqaError as exc:
                result.failed_objects.append((json.dumps(data_object), str(exc)))
                continue
            true = to_display(truth(task["slice_id"]))  # the task's PNGs are in the display orientation
            model = _label_png(task["mask_uri"])
            if true.shape != model.shape:
                raise SegqaError(f"{task['mask_uri']}: the model's mask is {model.shape[1]}x{model.shape[0]}, the "
                                 f"truth of slice {task['slice_id']} is {true.shape[1]}x{true.shape[0]}")
            answers = [(c.worker_id, c.form(task, true, model, seed, cost)) for c in team]
            result.answers += len(answers)
            pending.append(labeling.annotation_entry(object_id, data_object, answers))
            if len(pending) >= objects_per_invocation:
                flush()
        flush()
    result.slices.sort()
    return result
