"""Adjust answers as label maps (ARCHITECTURE §7, adjust): the pure part of consolidating an adjust task.

A worker's answer is the output of ``crowd-semantic-segmentation``: ``{"labeledImage": {"pngImageData": <base64
PNG>}, "labelMappings": {"<label>": {"color": "#rrggbb"}}, "initialValueModified": bool, "inputImageProperties":
{"height", "width"}}``. The PNG's colours are those of the answer's own ``labelMappings``; a pixel of no listed
colour (transparent, white, black, anything else) is background. Labels are the tissue class names (or their
display names, e.g. "Gray matter"); any other label fails the object, as does a PNG that cannot be decoded or
is not the size of the model's mask.

Label maps here are ``bytes``, one byte per pixel, row by row, values 0..3 (`contract.TISSUE_CLASSES` ids).
Standard library only (the Lambda zip carries it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qa_workflow.confirmations.png import decode_grey, decode_rgba
from qa_workflow.contract import BACKGROUND, NUM_CLASSES, TISSUE_CLASSES, ContractError

__all__ = ["MASK_FIELD", "WorkerCorrection", "read_worker_correction", "label_map_from_rgba", "model_label_map",
           "majority_label_map", "class_for_label", "seconds_on_task", "safe_name"]

#: The ``name`` of the ``crowd-semantic-segmentation`` element in the adjust template.
MASK_FIELD = "correctedMask"
_COLOR_RE = re.compile(r"^#?([0-9a-fA-F]{6})$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class WorkerCorrection:
    """One worker's corrected label map of a slice."""

    worker_id: str
    labels: bytes  # width * height label values 0..3
    modified: bool  # initialValueModified, as the editor reported it
    seconds: float | None = None
    submitted_at: str = ""


def class_for_label(label: str) -> int:
    """The class id a label mapping names: a tissue class name (``gray_matter``) or display name (``Gray matter``)."""
    key = label.strip().lower() if isinstance(label, str) else ""
    for cls in TISSUE_CLASSES:
        if cls is not BACKGROUND and key in (cls.name, cls.label.lower(), cls.name.replace("_", " ")):
            return cls.id
    raise ContractError(f"labelMappings: unknown label {label!r} (expected a tissue class)")


def _colour_table(mappings: Any) -> dict[tuple[int, int, int], int]:
    if not isinstance(mappings, Mapping) or not mappings:
        raise ContractError("labelMappings: expected an object {label: {color: #rrggbb}}")
    table: dict[tuple[int, int, int], int] = {}
    for label, entry in mappings.items():
        class_id = class_for_label(label)
        m = _COLOR_RE.match(str(entry.get("color", ""))) if isinstance(entry, Mapping) else None
        if not m:
            raise ContractError(f"labelMappings.{label}.color: expected #rrggbb")
        hex6 = m.group(1)
        rgb = (int(hex6[0:2], 16), int(hex6[2:4], 16), int(hex6[4:6], 16))
        if table.get(rgb, class_id) != class_id:
            raise ContractError(f"labelMappings: colour #{hex6} is given to two labels")
        table[rgb] = class_id
    return table


def label_map_from_rgba(rgba: bytes, mappings: Any) -> bytes:
    """RGBA pixels -> class ids by ``mappings`` (the answer's own); unlisted colours and transparent pixels -> 0."""
    table = _colour_table(mappings)
    return bytes(table.get((r, g, b), 0) if a else 0
                 for r, g, b, a in zip(rgba[0::4], rgba[1::4], rgba[2::4], rgba[3::4], strict=True))


def model_label_map(png: bytes, where: str) -> tuple[int, int, bytes]:
    """The model's label PNG (grey, values 0..3) as ``(width, height, labels)``."""
    width, height, labels = decode_grey(png)
    if labels and max(labels) >= NUM_CLASSES:
        raise ContractError(f"{where}: label value {max(labels)} out of range 0..{NUM_CLASSES - 1}")
    return width, height, labels


def seconds_on_task(value: Any) -> float | None:
    """A form's ``seconds`` field (number or numeric string) as seconds >= 0, else None (unknown)."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 7 * 24 * 3600 else None


def _mask_answer(content: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``crowd-semantic-segmentation`` output: the ``correctedMask`` field, else the one field shaped like it."""
    if isinstance(content.get(MASK_FIELD), Mapping):
        return content[MASK_FIELD]
    shaped = [v for v in content.values() if isinstance(v, Mapping) and "labeledImage" in v]
    if len(shaped) == 1:
        return shaped[0]
    raise ContractError(f"annotation: no '{MASK_FIELD}' (crowd-semantic-segmentation output) in the submitted form")


def read_worker_correction(worker_id: str, content: Mapping[str, Any], width: int, height: int) -> WorkerCorrection:
    """Decode one worker's answer into a label map of ``width`` x ``height``; raises ContractError when the PNG
    cannot be decoded, has another size, or names an unknown label."""
    answer = _mask_answer(content)
    image = answer.get("labeledImage")
    data = image.get("pngImageData") if isinstance(image, Mapping) else None
    if not isinstance(data, str) or not data:
        raise ContractError(f"worker {worker_id}: labeledImage.pngImageData must be a base64 PNG")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        png = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(f"worker {worker_id}: pngImageData is not base64 ({exc})") from None
    try:
        decoded = decode_rgba(png)
    except ContractError as exc:
        raise ContractError(f"worker {worker_id}: {exc}") from None
    if (decoded.width, decoded.height) != (width, height):
        raise ContractError(f"worker {worker_id}: mask is {decoded.width}x{decoded.height}, the slice is "
                            f"{width}x{height}")
    props = answer.get("inputImageProperties")
    if isinstance(props, Mapping) and {"width", "height"} <= set(props):
        if (props["width"], props["height"]) != (width, height):
            raise ContractError(f"worker {worker_id}: inputImageProperties {props['width']}x{props['height']} "
                                f"differ from the slice {width}x{height}")
    try:
        labels = label_map_from_rgba(decoded.rgba, answer.get("labelMappings"))
    except ContractError as exc:
        raise ContractError(f"worker {worker_id}: {exc}") from None
    modified = answer.get("initialValueModified")
    submitted = content.get("submitted_at")
    return WorkerCorrection(worker_id=worker_id, labels=labels, modified=modified is True,
                            seconds=seconds_on_task(content.get("seconds")),
                            submitted_at=submitted if isinstance(submitted, str) else "")


def majority_label_map(model: bytes, workers: Sequence[bytes]) -> bytes:
    """Per-pixel majority of the workers' label maps; where the top count is shared, the model's label stays.

    ``model`` and every worker map have the same length. With no workers the model's map is returned.
    """
    if not workers:
        return bytes(model)
    if any(len(w) != len(model) for w in workers):
        raise ValueError("label maps differ in size")
    if len(workers) == 1:
        return bytes(workers[0])
    decided: dict[tuple[int, ...], int] = {}  # (model label, worker labels...) -> label; few distinct keys

    def vote(key: tuple[int, ...]) -> int:
        counts = [0] * NUM_CLASSES
        for label in key[1:]:
            counts[label] += 1
        top = max(counts)
        winners = [c for c in range(NUM_CLASSES) if counts[c] == top]
        return winners[0] if len(winners) == 1 else key[0]

    out = bytearray(len(model))
    for i, key in enumerate(zip(model, *workers, strict=True)):
        label = decided.get(key)
        if label is None:
            label = decided[key] = vote(key)
        out[i] = label
    return bytes(out)


def safe_name(text: str) -> str:
    """A worker id or slice id as one path segment (``/`` and other odd characters become ``_``)."""
    return _SAFE_RE.sub("_", text).strip("._") or "_"
