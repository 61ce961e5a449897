"""The on-disk dataset format (ARCHITECTURE §4), read and written in one place.

A dataset is a folder::

    DIR/index.csv        subject,slice,image,mask,split[,site]  (paths relative to DIR; ``site``: the
                         acquisition site of the subject, e.g. A or B; empty or absent = unknown)
    DIR/dataset.json     provenance: source, pixel spacing (mm), seed, counts, created_at
    DIR/images/<subject>/<slice:03d>.png   8-bit grayscale, 176 x 208 (H x W)
    DIR/masks/<subject>/<slice:03d>.png    uint8 labels 0..3 (contract.TISSUE_CLASSES), or 255
                                           (contract.IGNORE_LABEL: pixels that carry no label, e.g. regions
                                           a reviewer rejected in a retraining set)

Splits are by subject (`train`, `pool`, `val`, `test`), never by slice. `DatasetWriter` builds the folder
under a temporary name next to the target and renames it at the end, so a failed import leaves nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from qa_workflow import storage
from qa_workflow.contract import IGNORE_LABEL, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, SegqaError, utc_now_iso

INDEX_COLUMNS = ("subject", "slice", "image", "mask", "split")
#: Optional columns: written by `write_index`, accepted as absent by `read_index` (files written before sites).
INDEX_OPTIONAL_COLUMNS = ("site",)
#: Robust percentiles of a volume's voxels mapped to 0 and 255 when scaling intensities to 8 bit.
SCALE_PERCENTILES = (0.5, 99.5)
SPLITS = ("train", "pool", "val", "test")
INDEX_FILE = "index.csv"
META_FILE = "dataset.json"


@dataclass(frozen=True)
class SliceRecord:
    subject: str
    slice: int
    image: str  # relative to the dataset folder
    mask: str
    split: str
    site: str = ""  # acquisition site ("" = unknown: imports, datasets written before sites existed)

    @property
    def slice_id(self) -> str:
        return f"{self.subject}/{self.slice:03d}"


def read_index(root: str | os.PathLike[str], splits: Sequence[str] | None = None) -> list[SliceRecord]:
    """Read ``root/index.csv``; optionally keep only ``splits``. Raises SegqaError naming the row on bad input."""
    root = Path(root)
    path = root / INDEX_FILE
    if not path.is_file():
        raise SegqaError(f"{root}: not a segqa dataset (no {INDEX_FILE}); build one with 'segqa data synth' or "
                         "'segqa data import'")
    if splits is not None:
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise SegqaError(f"unknown split(s) {', '.join(sorted(unknown))}; expected {', '.join(SPLITS)}")
    records: list[SliceRecord] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SegqaError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(INDEX_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                rec = SliceRecord(row["subject"], int(row["slice"]), row["image"], row["mask"], row["split"],
                                  (row.get("site") or "").strip())
            except (TypeError, ValueError):
                raise SegqaError(f"{path}, line {line}: slice must be an integer, got {row['slice']!r}") from None
            if rec.split not in SPLITS:
                raise SegqaError(f"{path}, line {line}: split {rec.split!r} is not one of {', '.join(SPLITS)}")
            if splits is None or rec.split in splits:
                records.append(rec)
    return records


def sites_of(records: Iterable[SliceRecord]) -> list[str]:
    """The distinct non-empty sites of ``records``, sorted (empty when the dataset records no sites)."""
    return sorted({r.site for r in records if r.site})


def read_meta(root: str | os.PathLike[str]) -> dict:
    """``dataset.json`` (empty dict when absent: hand-made datasets may not have one)."""
    path = Path(root) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegqaError(f"{path}: not valid JSON ({exc.msg})") from None


def pixel_spacing_mm(root: str | os.PathLike[str]) -> tuple[float, float]:
    """In-plane pixel spacing (row, col) in mm; 1 mm when the dataset does not say."""
    spacing = read_meta(root).get("pixel_spacing_mm", [1.0, 1.0])
    return float(spacing[0]), float(spacing[1])


def load_png(path: str | os.PathLike[str], kind: str = "image") -> np.ndarray:
    """Load one 8-bit PNG as (H, W) uint8; ``kind`` ("image"/"mask") only shapes the error message."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im if im.mode in ("L", "P", "I;16", "I") else im.convert("L"))
    except FileNotFoundError:
        raise SegqaError(f"{path}: {kind} file missing") from None
    except OSError as exc:
        raise SegqaError(f"{path}: unreadable {kind} PNG ({exc})") from None
    if arr.ndim != 2:
        raise SegqaError(f"{path}: expected a single-channel {kind}, got shape {arr.shape}")
    return arr.astype(np.uint8, copy=False)


def load_slices(root: str | os.PathLike[str], records: Sequence[SliceRecord], masks: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack the records' images (N, H, W) uint8 and, if asked, masks (N, H, W) uint8.

    Mask values are tissue classes 0..3 or IGNORE_LABEL (255); anything else raises SegqaError naming the file.
    """
    root = Path(root)
    if not records:
        return np.zeros((0, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8), (
            np.zeros((0, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8) if masks else None)
    images = np.stack([load_png(root / r.image, "image") for r in records])
    if not masks:
        return images, None
    labels = np.stack([load_png(root / r.mask, "mask") for r in records])
    bad = invalid_label_mask(labels)
    if bad.any():
        i = int(np.argwhere(bad.reshape(len(records), -1).any(1))[0, 0])
        raise SegqaError(f"{root / records[i].mask}: {_bad_label_message(labels[i])}")
    return images, labels


def invalid_label_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean array, True where a label is neither a tissue class (0..3) nor IGNORE_LABEL (255)."""
    return (labels >= NUM_CLASSES) & (labels != IGNORE_LABEL)


def _bad_label_message(labels: np.ndarray) -> str:
    found = sorted(int(v) for v in np.unique(labels[invalid_label_mask(labels)]))
    shown = ", ".join(map(str, found[:5])) + (", ..." if len(found) > 5 else "")
    return f"mask values must be 0..{NUM_CLASSES - 1} (or {IGNORE_LABEL} = ignore), found {shown}"


def scale_to_uint8(volume: np.ndarray, percentiles: tuple[float, float] = SCALE_PERCENTILES) -> np.ndarray:
    """Scale a volume's intensities to 8 bit by robust percentiles over all its voxels.

    volume: any shape, any real dtype. The ``percentiles[0]``-th percentile maps to 0 and the
    ``percentiles[1]``-th to 255, linearly, clipped outside; one scale per volume (not per slice), so slices of
    one subject stay comparable. A constant volume maps to all zeros. Returns uint8 of the same shape.
    """
    vol = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(vol)
    if not finite.all():
        vol = np.where(finite, vol, 0.0).astype(np.float32)
    lo, hi = np.percentile(vol, percentiles)
    if not hi > lo:
        return np.zeros(vol.shape, np.uint8)
    scaled = (vol - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(path, optimize=False)


class DatasetWriter:
    """Build a dataset under a temporary folder and move it into place on `commit()`.

    Usage::

        with DatasetWriter(out, source="atlas-cohort", seed=11) as w:
            w.add("sub-001", 12, image, mask, "train")
        # committed here if no exception; removed otherwise
    """

    def __init__(self, out: str | os.PathLike[str], overwrite: bool = False, **meta) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite and any(self.out.iterdir()):
            raise SegqaError(f"{self.out}: exists and is not empty; choose another --out or pass --overwrite")
        self.tmp = storage.staging_folder(self.out)
        self.meta = dict(meta)
        self.records: list[SliceRecord] = []
        self._done = False

    def add(self, subject: str, slice_index: int, image: np.ndarray, mask: np.ndarray, split: str,
            site: str = "") -> SliceRecord:
        if split not in SPLITS:
            raise SegqaError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if image.shape != (IMAGE_HEIGHT, IMAGE_WIDTH) or mask.shape != image.shape:
            raise SegqaError(f"{subject}/{slice_index:03d}: expected image and mask of {IMAGE_HEIGHT}x{IMAGE_WIDTH}, "
                             f"got {image.shape} and {mask.shape}")
        if image.dtype != np.uint8:
            raise SegqaError(f"{subject}/{slice_index:03d}: image must be uint8, got {image.dtype}")
        if invalid_label_mask(mask).any():
            raise SegqaError(f"{subject}/{slice_index:03d}: {_bad_label_message(mask)}")
        rel_img = f"images/{subject}/{slice_index:03d}.png"
        rel_mask = f"masks/{subject}/{slice_index:03d}.png"
        save_png(self.tmp / rel_img, image)
        save_png(self.tmp / rel_mask, mask.astype(np.uint8))
        rec = SliceRecord(subject, int(slice_index), rel_img, rel_mask, split, site)
        self.records.append(rec)
        return rec

    def commit(self) -> Path:
        if not self.records:
            raise SegqaError(f"{self.out}: no slices were produced; nothing written")
        self.records.sort(key=lambda r: (r.subject, r.slice))
        write_index(self.tmp, self.records)
        counts = {s: sum(1 for r in self.records if r.split == s) for s in SPLITS}
        subjects = {s: sorted({r.subject for r in self.records if r.split == s}) for s in SPLITS}
        site_subjects = {site: sorted({r.subject for r in self.records if r.site == site})
                         for site in sites_of(self.records)}
        meta = {"format": "segqa.dataset/1", "created_at": utc_now_iso(),
                "image_shape": [IMAGE_HEIGHT, IMAGE_WIDTH], "pixel_spacing_mm": [1.0, 1.0],
                **self.meta, "slices": counts, "subjects": subjects}
        if site_subjects:
            meta["site_subjects"] = site_subjects
        (self.tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        storage.swap_folder(self.tmp, self.out)
        self._done = True
        return self.out

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_index(root: str | os.PathLike[str], records: Iterable[SliceRecord]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS + INDEX_OPTIONAL_COLUMNS)
    writer.writeheader()
    for r in records:
        writer.writerow(asdict(r))
    storage.atomic_write_text(Path(root) / INDEX_FILE, buf.getvalue())


def assign_splits(subjects: Sequence[str], seed: int,
                  fractions: tuple[float, float, float, float] = (0.2, 0.5, 0.1, 0.2)) -> dict[str, str]:
    """Assign subjects to train/pool/val/test (roughly 20/50/10/20 %), at least one each when N >= 4.

    Deterministic for a given seed and subject list. With N < 4 the order of priority is train, test, pool, val.
    """
    subjects = sorted(subjects)
    n = len(subjects)
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(n)]
    if n >= 4:
        counts = [max(1, int(round(f * n))) for f in fractions]
        while sum(counts) > n:  # trim the largest (pool first) until it fits
            counts[int(np.argmax(counts))] -= 1
        counts[1] += n - sum(counts)  # the rest goes to the pool
    else:
        priority = [0, 3, 1, 2][:n]
        counts = [1 if i in priority else 0 for i in range(4)]
    out: dict[str, str] = {}
    start = 0
    for split, c in zip(SPLITS, counts):
        for s in order[start:start + c]:
            out[s] = split
        start += c
    return out
