"""`segqa predict`: run a segmenter over a dataset split, store its probability maps and score every item.

The prediction folder (``PRED_DIR``, a local folder or ``s3://bucket/prefix``; layout in docs/review-work.md)::

    run.json                         model version, inputs, options, counts, the score table's name
    scores.parquet | scores.csv      one row per (slice, tissue class): SCORE_COLUMNS
    rejects.csv                      every slice or item that could not be scored, with the reason
    probs/<subject>/<slice:03d>.npz  "probs" float16 (4, H, W); "mutual_info" float16 (H, W) nats, when T > 1
    masks/<subject>/<slice:03d>.png  predicted label map (argmax), uint8 values 0..3

Scores are computed on the float32 model output, before the maps are rounded to float16 for storage (a
re-score of the stored maps agrees to ~1e-3).

Nothing is dropped silently: a slice whose image cannot be read, whose probability file is missing or
unreadable, has the wrong class count or non-finite values is written to ``rejects.csv`` with the reason, and
counted in the returned summary. Items with a predicted region below ``min_pixels`` stay in the score table
with ``reviewable = False`` and the reason in ``skip_reason``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import (
    DEFAULT_MIN_PIXELS,
    NUM_CLASSES,
    REVIEW_CLASSES,
    SegqaError,
    format_item_id,
    format_slice_id,
    utc_now_iso,
)
from qa_workflow.rounds.scoring import check_probabilities, predicted_labels, score_probabilities

__all__ = [
    "Reject", "PredictionSummary", "run_predictions", "score_probability_files", "read_score_table",
    "read_run", "write_rejects", "REJECT_COLUMNS", "SCORE_COLUMNS", "RUN_FILE", "REJECTS_FILE",
    "prob_file", "mask_file", "load_probability_file", "encode_png", "decode_png", "absolute_uri",
]

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
REJECTS_FILE = "rejects.csv"
RUN_SCHEMA = "segqa.prediction-run/1"
REJECT_COLUMNS = ("stage", "subject", "slice", "item_id", "file", "reason")
SCORE_COLUMNS = (
    "item_id", "subject", "slice", "slice_id", "class_id", "class_name", "pixel_count", "mean_prob",
    "soft_dice", "entropy", "mutual_info", "reviewable", "skip_reason", "model_version", "image", "pred_mask",
    "prob_file",
)
#: Optional score columns: written from now on, filled in when an older table lacks them ("" = unknown site,
#: NaN = no surface_agreement: predict again to route on it).
SCORE_OPTIONAL_COLUMNS = ("site", "surface_agreement")
TABLE_FORMATS = ("parquet", "csv")


class ProbabilityModel(Protocol):
    """What `run_predictions` needs of a model (``training.predict.Predictor`` has it)."""

    version: str

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray: ...

    def predict_mc(self, images: np.ndarray, samples: int, seed: int = 0, batch_size: int = 8) -> Any: ...


@dataclass(frozen=True)
class Reject:
    """One thing that could not be used, and why. ``stage``: image | probabilities | run | thresholds | batch."""

    stage: str
    reason: str
    subject: str = ""
    slice: int | str = ""
    item_id: str = ""
    file: str = ""


@dataclass
class PredictionSummary:
    out: str
    model_version: str
    split: str
    slices: int = 0
    slices_scored: int = 0
    items: int = 0
    reviewable: int = 0
    rejects: list[Reject] = field(default_factory=list)
    score_table: str = ""
    rejects_file: str = ""


# ------------------------------------------------------------------------------------------- file names

def prob_file(subject: str, slice_index: int) -> str:
    """``probs/<subject>/<slice:03d>.npz``, relative to the prediction folder."""
    return f"probs/{format_slice_id(subject, slice_index)}.npz"


def mask_file(subject: str, slice_index: int) -> str:
    """``masks/<subject>/<slice:03d>.png``, relative to the prediction folder."""
    return f"masks/{format_slice_id(subject, slice_index)}.png"


def decode_png(data: bytes, uri: str, kind: str) -> np.ndarray:
    """PNG bytes as a (H, W) array; a clear error naming ``uri`` and the ``kind`` of image otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im)
    except OSError as exc:
        raise SegqaError(f"{uri}: unreadable {kind} PNG ({exc})") from None
    if arr.ndim != 2:
        raise SegqaError(f"{uri}: expected a single-channel {kind}, got shape {arr.shape}")
    return arr


def encode_png(array: np.ndarray) -> bytes:
    """A (H, W) uint8 array as PNG bytes (mode L)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _encode_npz(probs: np.ndarray, mutual_info: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    arrays = {"probs": probs.astype(np.float16)}
    if mutual_info is not None:
        arrays["mutual_info"] = mutual_info.astype(np.float16)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_probability_file(uri: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one ``.npz`` probability file -> (probs (K, H, W) float32, mutual_info (H, W) float32 or None).

    Raises SegqaError ("missing", "unreadable", "no 'probs' array", wrong rank) naming the file.
    """
    data = storage.read_bytes(uri)  # SegqaError "no such file" when missing
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "probs" not in npz.files:
                raise SegqaError(f"{uri}: no 'probs' array (found {', '.join(npz.files) or 'nothing'})")
            probs = np.asarray(npz["probs"], dtype=np.float32)
            mi = np.asarray(npz["mutual_info"], dtype=np.float32) if "mutual_info" in npz.files else None
    except SegqaError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SegqaError(f"{uri}: unreadable probability file ({exc})") from None
    if probs.ndim != 3:
        raise SegqaError(f"{uri}: 'probs' must have shape ({NUM_CLASSES}, H, W), got {probs.shape}")
    if mi is not None and mi.shape != probs.shape[1:]:
        raise SegqaError(f"{uri}: 'mutual_info' shape {mi.shape} does not match probs {probs.shape}")
    return probs, mi


# ------------------------------------------------------------------------------------------ the run

def absolute_uri(uri: str | os.PathLike[str]) -> str:
    """S3 URIs as they are; local paths and file:// URIs as absolute paths (the score table stores them)."""
    s = os.fspath(uri)
    return s if storage.is_s3(s) else str(storage.local_path(s).resolve())


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _score_rows(records: Sequence[Any], probs: np.ndarray, mutual_info: np.ndarray | None, data_dir: Path,
                out: str, model_version: str, min_pixels: int) -> list[dict[str, Any]]:
    """Score rows for valid slices; probs (n, 4, H, W) float32."""
    scores = score_probabilities(probs, mutual_info)
    rows = []
    for i, rec in enumerate(records):
        for j, cls in enumerate(REVIEW_CLASSES):
            n_px = int(scores.pixel_count[i, j])
            reviewable = n_px >= min_pixels
            rows.append({
                "item_id": format_item_id(rec.subject, rec.slice, cls.name),
                "subject": rec.subject, "slice": int(rec.slice),
                "slice_id": format_slice_id(rec.subject, rec.slice),
                "class_id": cls.id, "class_name": cls.name, "pixel_count": n_px,
                "mean_prob": float(scores.mean_prob[i, j]), "soft_dice": float(scores.soft_dice[i, j]),
                "entropy": float(scores.entropy[i, j]), "mutual_info": float(scores.mutual_info[i, j]),
                "surface_agreement": float(scores.surface_agreement[i, j]),
                "reviewable": bool(reviewable),
                "skip_reason": "" if reviewable else
                f"predicted {cls.name} region has {n_px} px, fewer than min_pixels {min_pixels}",
                "model_version": model_version,
                "image": str((data_dir / rec.image).resolve()),
                "pred_mask": storage.join(out, mask_file(rec.subject, rec.slice)),
                "prob_file": prob_file(rec.subject, rec.slice),
                "site": getattr(rec, "site", ""),
            })
    return rows


def _write_table(out: str, rows: list[dict[str, Any]], table_format: str) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS + SCORE_OPTIONAL_COLUMNS))
    frame = frame.astype({"slice": "int64", "class_id": "int64", "pixel_count": "int64", "reviewable": "bool"})
    name = f"scores.{table_format}"
    if table_format == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, engine="pyarrow")
        storage.write_bytes(storage.join(out, name), buf.getvalue(), "application/vnd.apache.parquet")
    else:
        storage.write_text(storage.join(out, name), frame.to_csv(index=False), "text/csv")
    return name


def write_rejects(uri: str, rejects: Iterable[Reject]) -> str:
    """Write ``rejects`` as CSV (REJECT_COLUMNS); a header-only file when there are none. Returns the URI."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REJECT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rejects:
        writer.writerow(asdict(r))
    return storage.write_text(uri, buf.getvalue(), "text/csv")


class _Writer:
    """Writes the per-slice files in a few threads (each write is atomic); errors surface on `close`."""

    def __init__(self, threads: int = 4) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.futures: list[Any] = []

    def put(self, uri: str, data: bytes, content_type: str) -> None:
        self.futures.append(self.pool.submit(storage.write_bytes, uri, data, content_type))
        if len(self.futures) > 256:
            self.drain()

    def drain(self) -> None:
        for f in self.futures:
            f.result()
        self.futures = []

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True)


def _finish(summary: PredictionSummary, rows: list[dict[str, Any]], out: str, table_format: str,
            run_meta: dict[str, Any]) -> PredictionSummary:
    summary.rejects_file = write_rejects(storage.join(out, REJECTS_FILE), summary.rejects)
    summary.items = len(rows)
    summary.reviewable = sum(1 for r in rows if r["reviewable"])
    if rows:
        summary.score_table = storage.join(out, _write_table(out, rows, table_format))
    meta = {
        "schema": RUN_SCHEMA, **run_meta,
        "created_at": utc_now_iso(),
        "score_table": Path(summary.score_table).name if rows else None,
        "counts": {"slices": summary.slices, "slices_scored": summary.slices_scored, "items": summary.items,
                   "reviewable": summary.reviewable, "rejects": len(summary.rejects)},
    }
    storage.write_json(storage.join(out, RUN_FILE), meta)
    if not rows:
        first = summary.rejects[0].reason if summary.rejects else "the split has no slices"
        raise SegqaError(f"no slice could be scored ({len(summary.rejects)} rejected, first: {first}); "
                         f"see {summary.rejects_file}")
    return summary


def _select_records(data_dir: Path, split: str, limit: int | None):
    from training.dataset import read_index

    records = read_index(data_dir, [split])
    if not records:
        raise SegqaError(f"{data_dir}: split {split!r} has no slices")
    return records[:limit] if limit else records


def _load_images(data_dir: Path, records: Sequence[Any], rejects: list[Reject]) -> tuple[list[Any], np.ndarray]:
    from training.dataset import load_png

    ok: list[Any] = []
    images: list[np.ndarray] = []
    for rec in records:
        try:
            img = load_png(data_dir / rec.image, "image")
        except SegqaError as exc:
            rejects.append(Reject("image", str(exc), rec.subject, rec.slice, file=str(data_dir / rec.image)))
            continue
        if images and img.shape != images[0].shape:
            rejects.append(Reject("image", f"image of shape {img.shape}, expected {images[0].shape} like the "
                                  "other slices", rec.subject, rec.slice, file=str(data_dir / rec.image)))
            continue
        ok.append(rec)
        images.append(img)
    return ok, (np.stack(images) if images else np.zeros((0, 0, 0), np.uint8))


def _read_chunk(data_dir: Path, records: Sequence[Any]) -> tuple[list[Any], np.ndarray, list[Reject]]:
    rejects: list[Reject] = []
    ok, images = _load_images(data_dir, records, rejects)
    return ok, images, rejects


def _accept_valid(records: Sequence[Any], probs: np.ndarray, mi: np.ndarray | None, rejects: list[Reject],
                  files: Sequence[str]) -> tuple[list[Any], np.ndarray, np.ndarray | None]:
    reasons = check_probabilities(probs)
    keep = [i for i, r in enumerate(reasons) if r is None]
    for i, r in enumerate(reasons):
        if r is not None:
            rejects.append(Reject("probabilities", r, records[i].subject, records[i].slice, file=files[i]))
    return [records[i] for i in keep], probs[keep], (mi[keep] if mi is not None else None)


def _store_scored(writer: _Writer, out: str, records: Sequence[Any], probs: np.ndarray, mi: np.ndarray | None,
                  data_dir: Path, version: str, min_pixels: int, write_probs: bool = True) -> list[dict[str, Any]]:
    """Queue each slice's probability map (unless it already lies there) and predicted label map for writing,
    and return the slices' score rows."""
    labels = predicted_labels(probs)
    for i, rec in enumerate(records):
        if write_probs:
            writer.put(storage.join(out, prob_file(rec.subject, rec.slice)),
                       _encode_npz(probs[i], mi[i] if mi is not None else None), "application/octet-stream")
        writer.put(storage.join(out, mask_file(rec.subject, rec.slice)), encode_png(labels[i]), "image/png")
    return _score_rows(records, probs, mi, data_dir, out, version, min_pixels)


def run_predictions(
    predictor: ProbabilityModel, data_dir: str | os.PathLike[str], out: str, *, split: str = "pool",
    mc_samples: int = 0, batch_size: int = 8, min_pixels: int = DEFAULT_MIN_PIXELS, seed: int = 0,
    table_format: str = "parquet", limit: int | None = None, model_path: str | None = None,
    progress: Callable[[int], None] | None = None, table_out: str | None = None,
) -> PredictionSummary:
    """Predict every slice of ``split`` with ``predictor``, store maps + masks, score, write the table.

    ``mc_samples`` T > 1 runs T MC-dropout passes (their mean is stored and scored; mutual information is
    added); 0 runs one deterministic pass. ``progress(n)`` is called with the number of slices just done.
    ``table_out`` puts ``run.json``, the score table and ``rejects.csv`` elsewhere than the per-slice files
    (default ``out``): a shard of a sharded run writes its maps into the shared folder and its table apart.
    The next chunk's images are read while the model runs on the current one, and the files are written in
    background threads, so the model is rarely left waiting for I/O.
    """
    if table_format not in TABLE_FORMATS:
        raise SegqaError(f"table format {table_format!r}: expected one of {', '.join(TABLE_FORMATS)}")
    if mc_samples == 1 or mc_samples < 0:
        raise SegqaError(f"--mc-samples must be 0 (no MC-dropout) or at least 2, got {mc_samples}")
    data_dir = Path(data_dir)
    out = absolute_uri(out)
    records = _select_records(data_dir, split, limit)
    version = str(getattr(predictor, "version", "unknown"))
    summary = PredictionSummary(out=out, model_version=version, split=split, slices=len(records))
    rows: list[dict[str, Any]] = []
    writer = _Writer()
    reader = ThreadPoolExecutor(max_workers=1)
    chunks = list(_chunks(records, max(batch_size, 1) * 4))
    try:
        pending = reader.submit(_read_chunk, data_dir, chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            assert pending is not None
            ok, images, image_rejects = pending.result()
            pending = reader.submit(_read_chunk, data_dir, chunks[k + 1]) if k + 1 < len(chunks) else None
            summary.rejects.extend(image_rejects)
            if ok:
                if mc_samples > 1:
                    mc = predictor.predict_mc(images, samples=mc_samples, seed=seed, batch_size=batch_size)
                    probs, mi = np.asarray(mc.mean, np.float32), np.asarray(mc.mutual_info, np.float32)
                else:
                    probs, mi = np.asarray(predictor.predict_proba(images, batch_size=batch_size), np.float32), None
                if probs.ndim != 4 or len(probs) != len(ok) or probs.shape[2:] != images.shape[1:]:
                    raise SegqaError(f"the model returned probabilities of shape {probs.shape} for {len(ok)} "
                                     f"slices of {images.shape[1:]}; expected ({len(ok)}, {NUM_CLASSES}, "
                                     f"{images.shape[1]}, {images.shape[2]})")
                ok, probs, mi = _accept_valid(ok, probs, mi, summary.rejects, [f"model {version}"] * len(ok))
                if ok:
                    rows.extend(_store_scored(writer, out, ok, probs, mi, data_dir, version, min_pixels))
                    summary.slices_scored += len(ok)
            if progress:
                progress(len(chunk))
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.close()
    meta = {
        "model_version": version, "network": getattr(predictor, "network", None), "model": model_path,
        "data": str(data_dir.resolve()), "split": split, "index_sha256": _sha256_file(data_dir / "index.csv"),
        "mc_samples": mc_samples, "seed": seed, "min_pixels": min_pixels, "batch_size": batch_size,
        "source": "model", "runtime": getattr(predictor, "runtime", None), "tta": getattr(predictor, "tta", "none"),
    }
    if table_out is not None:
        meta["maps"] = out
    return _finish(summary, rows, absolute_uri(table_out) if table_out is not None else out, table_format, meta)


def _holds_probs_folder(folder: str) -> bool:
    """A prediction folder (``run.json``, or a ``probs/`` folder as a sharded SageMaker run leaves) rather than
    a bare ``<subject>/<slice>.npz`` tree."""
    return storage.exists(storage.join(folder, RUN_FILE)) or storage.any_under(storage.join(folder, "probs"))


def score_probability_files(
    probs_dir: str, data_dir: str | os.PathLike[str], out: str, *, model_version: str, split: str = "pool",
    min_pixels: int = DEFAULT_MIN_PIXELS, table_format: str = "parquet", limit: int | None = None,
    progress: Callable[[int], None] | None = None, chunk: int = 32,
) -> PredictionSummary:
    """Score probability maps that already exist (another model's output, or an earlier ``PRED_DIR``).

    ``probs_dir`` holds ``<subject>/<slice:03d>.npz`` (or ``probs/<subject>/<slice:03d>.npz``) per slice of
    the split, each with ``probs`` (4, H, W) and optionally ``mutual_info`` (H, W, nats). Missing or unreadable
    files, class-count mismatches and non-finite values are rejected per slice with the reason.
    """
    if table_format not in TABLE_FORMATS:
        raise SegqaError(f"table format {table_format!r}: expected one of {', '.join(TABLE_FORMATS)}")
    data_dir = Path(data_dir)
    out, probs_dir = absolute_uri(out), absolute_uri(probs_dir)
    records = _select_records(data_dir, split, limit)
    base = storage.join(probs_dir, "probs") if _holds_probs_folder(probs_dir) else probs_dir
    summary = PredictionSummary(out=out, model_version=model_version, split=split, slices=len(records))
    rows: list[dict[str, Any]] = []
    writer = _Writer()
    same_place = storage.join(out, "probs") == base
    try:
        for recs in _chunks(records, chunk):
            ok: list[Any] = []
            probs: list[np.ndarray] = []
            mis: list[np.ndarray | None] = []
            files: list[str] = []
            for rec in recs:
                uri = storage.join(base, f"{format_slice_id(rec.subject, rec.slice)}.npz")
                try:
                    p, mi = load_probability_file(uri)
                except SegqaError as exc:
                    reason = str(exc).removeprefix(f"{uri}: ")
                    if "no such" in reason:
                        reason = "probability file missing"
                    summary.rejects.append(Reject("probabilities", reason, rec.subject, rec.slice, file=uri))
                    continue
                if p.shape[0] != NUM_CLASSES:
                    summary.rejects.append(Reject(
                        "probabilities", f"class-count mismatch: {p.shape[0]} probability channels, expected "
                        f"{NUM_CLASSES}", rec.subject, rec.slice, file=uri))
                    continue
                if probs and p.shape != probs[0].shape:
                    summary.rejects.append(Reject("probabilities", f"shape {p.shape} differs from {probs[0].shape}",
                                                  rec.subject, rec.slice, file=uri))
                    continue
                ok.append(rec)
                probs.append(p)
                mis.append(mi)
                files.append(uri)
            if ok:
                stack = np.stack(probs)
                present = [m for m in mis if m is not None]
                mi_stack = np.stack(present) if len(present) == len(mis) else None
                ok, stack, mi_stack = _accept_valid(ok, stack, mi_stack, summary.rejects, files)
                if ok:
                    rows.extend(_store_scored(writer, out, ok, stack, mi_stack, data_dir, model_version, min_pixels,
                                              write_probs=not same_place))
                    summary.slices_scored += len(ok)
            if progress:
                progress(len(recs))
    finally:
        writer.close()
    meta = {
        "model_version": model_version, "network": None, "model": None, "probs": probs_dir,
        "data": str(data_dir.resolve()), "split": split, "index_sha256": _sha256_file(data_dir / "index.csv"),
        "mc_samples": None, "seed": None, "min_pixels": min_pixels, "source": "probability files",
    }
    return _finish(summary, rows, out, table_format, meta)


# ------------------------------------------------------------------------------------------ reading

def read_run(pred_dir: str) -> dict[str, Any]:
    """``PRED_DIR/run.json``; SegqaError when the folder is not a prediction run."""
    return storage.read_schema_json(
        storage.join(pred_dir, RUN_FILE), RUN_SCHEMA,
        missing=f"{pred_dir}: not a prediction folder (no {RUN_FILE}); make one with 'segqa predict'")


def read_score_table(pred_dir: str):
    """The score table of a prediction folder as a pandas DataFrame (SCORE_COLUMNS), checked."""
    import pandas as pd

    meta = read_run(pred_dir)
    name = meta.get("score_table")
    if not name:
        raise SegqaError(f"{pred_dir}: the prediction run scored no slice (see its {REJECTS_FILE})")
    uri = storage.join(pred_dir, name)
    data = storage.read_bytes(uri)
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        else:
            frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""],
                                dtype={"subject": str, "skip_reason": str, "site": str})
    except Exception as exc:  # any parser failure is an unreadable user file
        raise SegqaError(f"{uri}: unreadable score table ({exc})") from None
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise SegqaError(f"{uri}: missing column(s) {', '.join(missing)}")
    frame["skip_reason"] = frame["skip_reason"].fillna("").astype(str)
    frame["site"] = frame["site"].fillna("").astype(str) if "site" in frame.columns else ""
    if "surface_agreement" not in frame.columns:
        frame["surface_agreement"] = np.nan
    frame["reviewable"] = frame["reviewable"].astype(str).str.lower().isin(["true", "1"])
    if frame["item_id"].duplicated().any():
        dup = frame.loc[frame["item_id"].duplicated(), "item_id"].iloc[0]
        raise SegqaError(f"{uri}: item {dup} appears more than once")
    return frame
