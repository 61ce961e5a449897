"""The model card and the layout of a model folder: one place that knows where things are.

A model folder (written by `training.train.train_model` / ``segqa train``)::

    MODEL/model_card.json          what the model is (see `build_card`); rewritten after every epoch
    MODEL/metrics.json             per-epoch history (loss, learning rate, validation Dice, throughput)
    MODEL/config.json              the TrainConfig it was trained with
    MODEL/checkpoints/best.params  weights of the best validation epoch (what predictors load)
    MODEL/checkpoints/last.params  weights after the last finished epoch
    MODEL/checkpoints/last.states  optimizer state (Adam moments, update counts) after that epoch
    MODEL/checkpoints/last.json    epoch, best epoch and score, version: what ``--resume`` continues from

An export folder (``segqa export``) holds ``model-symbol.json``, ``model-0000.params``, ``model.onnx`` and
``model_card.json`` (the training card plus an ``export`` section with the parity check).

Intensity normalisation (the same for training, prediction, MXNet and ONNX inference)::

    x = (pixel / 255 - mean) / std        mean, std: of the training images (card "normalization")
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from qa_workflow.contract import TISSUE_CLASSES, SegqaError

CARD_FILE = "model_card.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_PARAMS = f"{CHECKPOINT_DIR}/best.params"
LAST_PARAMS = f"{CHECKPOINT_DIR}/last.params"
LAST_STATES = f"{CHECKPOINT_DIR}/last.states"
LAST_STATE_JSON = f"{CHECKPOINT_DIR}/last.json"
EXPORT_SYMBOL = "model-symbol.json"
EXPORT_PARAMS = "model-0000.params"
EXPORT_ONNX = "model.onnx"
CARD_SCHEMA = "segqa.model_card/1"


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(N, H, W) pixels on the 0..255 scale -> (N, 1, H, W) float32 ``(pixel/255 - mean) / std``."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    return ((x - np.float32(mean)) / np.float32(std))[:, None]


def classes_json() -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "color": c.color} for c in TISSUE_CLASSES]


def read_card(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of a model or export folder; SegqaError if the folder is not a segqa model."""
    model_dir = Path(model_dir)
    path = model_dir / CARD_FILE
    if not model_dir.is_dir():
        raise SegqaError(f"{model_dir}: " + ("a file, expected a model folder" if model_dir.exists()
                                             else "no such model folder"))
    if not path.is_file():
        raise SegqaError(f"{model_dir}: not a segqa model folder (no {CARD_FILE}); train one with 'segqa train' "
                         "or export one with 'segqa export'")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegqaError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    for field in ("network", "version", "architecture", "normalization"):
        if field not in card:
            raise SegqaError(f"{path}: missing field {field!r}; not a segqa model card")
    norm = card["normalization"]
    if not (isinstance(norm, dict) and float(norm.get("std", 0)) > 0 and "mean" in norm):
        raise SegqaError(f"{path}: normalization must give mean and a positive std, got {norm!r}")
    return card


def params_path(model_dir: str | os.PathLike[str], card: dict[str, Any]) -> Path:
    """The weights a predictor should load: the export's params, else the best checkpoint."""
    model_dir = Path(model_dir)
    if card.get("export") and (model_dir / EXPORT_PARAMS).is_file():
        return model_dir / EXPORT_PARAMS
    best = model_dir / BEST_PARAMS
    if best.is_file():
        return best
    raise SegqaError(f"{model_dir}: no weights found (expected {BEST_PARAMS} from training or {EXPORT_PARAMS} "
                     "from an export); has a training epoch finished?")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    from qa_workflow.storage import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
