"""`segqa batch`: overlays, review batches, adjust tasks and the manifests of a round (ARCHITECTURE §6).

Every verified item of the round (route ``verify``, ``audit`` or ``random_arm``; ``review`` in rounds written
before routing) gets three objects
under the destination (a local folder or ``s3://bucket/prefix``)::

    images/<subject>/<slice:03d>.png              the plain slice
    masks/<subject>/<slice:03d>/<class_name>.png  the predicted mask of that class: 0 = not the class, 255 = class
    overlays/<subject>/<slice:03d>/<class_name>.png  plain slice | slice with fill + contour
                                                     (qa_workflow.rounds.overlays)

Every one of them is written in the display orientation (`contract.to_display`: radiological, anterior up, the
patient's left on the viewer's right; 208 rows x 176 columns), so Ground Truth, the portal and any image viewer
show what a radiologist expects without rotating anything; stored slices lie on their side (docs/data.md).

Items are grouped into batches of one class (default 25, in ``review_rank`` order, so the most uncertain
batches come first and audit items sit blind among the others), written as ``batches/<batch_id>.json`` and
checked with `contract.validate_batch`; ``manifest.jsonl`` (one ``{"source-ref": <batch URI>}`` per batch) is
written last, so a manifest only ever points at complete batches. The round folder gets ``batches.json`` (the
state and the batch list), a copy of the manifest, and ``batch_rejects.csv`` for items whose image or predicted
mask could not be read.

Items routed ``adjust`` (likely to be rejected, so sent straight to correction) become adjust tasks beside the
batches, one per slice with the slice's adjust-routed classes to check (`rounds.adjusting.write_adjust_tasks`
with no source job): ``adjust/routed/<task_id>.json`` and their own ``adjust/routed/manifest.jsonl`` (the adjust
job's input; the verify manifest lists verify batches only). ``batches.json`` records them under ``adjust``.
A round with adjust tasks and no verify items gets an empty verify manifest.

Uploads run in parallel threads. They are resumable: ``batches.json`` records a fingerprint of the round and
the options with ``status: in-progress`` before the first upload; a re-run with the same fingerprint lists the
destination once and skips every object already there (writes are atomic: S3 PUTs, local temp-and-rename, so
an existing object is complete). Keys are deterministic, so a re-run never creates a second copy of anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    SegqaError,
    format_slice_id,
    tissue_class,
    to_display,
    utc_now_iso,
    validate_batch,
)
from qa_workflow.rounds.overlays import DEFAULT_SCALE, overlay_png
from qa_workflow.rounds.predict import Reject, decode_png, encode_png, write_rejects
from qa_workflow.rounds.round_dir import BATCHES_FILE, read_assignments, read_round

__all__ = ["BatchResult", "write_batches", "plan_batches", "read_manifest", "BATCHES_FILE", "MANIFEST_FILE",
           "BATCH_REJECTS_FILE", "REVIEWED_ASSIGNMENTS", "ADJUST_ASSIGNMENTS", "object_keys"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
BATCH_REJECTS_FILE = "batch_rejects.csv"
BATCHES_SCHEMA = "segqa.batches/1"
REVIEWED_ASSIGNMENTS = ("verify", "audit", "random_arm")
#: Routes that need no review work (``skip``, ``auto_accept``).
_NO_WORK = ("skip", "auto_accept")
#: Routes written as adjust tasks (ARCHITECTURE §6) rather than verify batches.
ADJUST_ASSIGNMENTS = ("adjust",)
#: Bump when the rendering or the object layout changes, so resumed runs do not mix old and new objects.
_LAYOUT_VERSION = 3  # 2: objects in the display orientation; 3: routed adjust tasks beside the batches


@dataclass
class BatchResult:
    dest: str
    manifest: str
    batches: list[dict[str, Any]]
    items: int
    uploaded: int = 0
    skipped_existing: int = 0
    unchanged: bool = False
    rejects: list[Reject] = field(default_factory=list)
    not_batched: dict[str, int] = field(default_factory=dict)  # route -> items of no known kind of work
    adjust: dict[str, Any] | None = None  # the routed adjust tasks: {"manifest", "tasks", "slices", "items"}


def object_keys(subject: str, slice_index: int, class_name: str) -> dict[str, str]:
    """Relative keys of one item's objects: {"image", "mask", "overlay"}."""
    sid = format_slice_id(subject, slice_index)
    return {"image": f"images/{sid}.png", "mask": f"masks/{sid}/{class_name}.png",
            "overlay": f"overlays/{sid}/{class_name}.png"}


def _dest_uri(dest: str) -> str:
    if storage.is_s3(dest):
        storage.split_s3(dest)  # validates
        return dest.rstrip("/")
    return str(storage.local_path(dest).resolve())


def plan_batches(items, round_id: str, model_version: str, dest: str, batch_size: int = DEFAULT_BATCH_SIZE
                 ) -> list[dict[str, Any]]:
    """Batch objects (ARCHITECTURE §6) for the reviewed items of an assignments table (pandas DataFrame).

    One class per batch, items in ``review_rank`` order, ``batch_size`` per batch; batches ordered by their
    first item's rank (most uncertain first). Batch ids: ``<round>-<class_name>-<nnn>``.
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise SegqaError(f"--batch-size must be an integer in 1..{MAX_BATCH_SIZE}, got {batch_size!r}")
    batches: list[tuple[int, dict[str, Any]]] = []
    for cls_name, group in items.groupby("class_name", sort=True):
        cls = tissue_class(str(cls_name))
        group = group.sort_values(["review_rank", "item_id"], kind="stable")
        rows = list(group.itertuples(index=False))
        for k, start in enumerate(range(0, len(rows), batch_size), start=1):
            chunk = rows[start:start + batch_size]
            entries = []
            for r in chunk:
                keys = object_keys(str(r.subject), int(r.slice), cls.name)
                entries.append({
                    "item_id": r.item_id, "slice_id": r.slice_id, "class_name": cls.name,
                    "confidence": round(float(r.confidence), 6),
                    "overlay_uri": storage.join(dest, keys["overlay"]),
                    "image_uri": storage.join(dest, keys["image"]),
                    "mask_uri": storage.join(dest, keys["mask"]),
                })
            batch = {"batch_id": f"{round_id}-{cls.name}-{k:03d}", "round": round_id,
                     "model_version": model_version, "class_id": cls.id, "class_name": cls.name,
                     "color": cls.color, "items": entries}
            validate_batch(batch, f"batch {batch['batch_id']}")
            batches.append((int(chunk[0].review_rank), batch))
    batches.sort(key=lambda t: (t[0], t[1]["batch_id"]))
    return [b for _, b in batches]


class _Uploader:
    """Counts writes and skips objects already at the destination (when resuming)."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.lock = threading.Lock()
        self.claimed: set[str] = set()
        self.uploaded = 0
        self.skipped = 0

    def needed(self, uri: str) -> bool:
        """True once per URI that is not at the destination yet (the caller then writes it)."""
        with self.lock:
            if uri in self.existing:
                if uri not in self.claimed:
                    self.claimed.add(uri)
                    self.skipped += 1
                return False
            if uri in self.claimed:
                return False
            self.claimed.add(uri)
            return True

    def put(self, uri: str, data: bytes, content_type: str) -> None:
        storage.write_bytes(uri, data, content_type)
        with self.lock:
            self.uploaded += 1


def _render_slice(rows: list[Any], dest: str, up: _Uploader, scale: int) -> list[Reject]:
    """Write the image, masks and overlays of one slice's reviewed items; returns rejects."""
    first = rows[0]
    uris = {r.class_name: {k: storage.join(dest, v) for k, v in
                           object_keys(str(r.subject), int(r.slice), r.class_name).items()} for r in rows}
    todo = {c: {k: u for k, u in d.items() if up.needed(u)} for c, d in uris.items()}
    if not any(todo.values()):
        return []
    try:
        image = decode_png(storage.read_bytes(first.image), first.image, "image")
        labels = decode_png(storage.read_bytes(first.pred_mask), first.pred_mask, "predicted mask")
        if labels.shape != image.shape:
            raise SegqaError(f"{first.pred_mask}: predicted mask {labels.shape} does not match image {image.shape}")
        image, labels = to_display(image), to_display(labels)
    except SegqaError as exc:
        return [Reject("batch", str(exc), str(r.subject), int(r.slice), r.item_id) for r in rows]
    for r in rows:
        t = todo[r.class_name]
        cls = tissue_class(r.class_name)
        mask = labels == cls.id
        if "image" in t:  # one image per slice: `needed` hands its URI to one class only
            up.put(t["image"], encode_png(image), "image/png")
        if "mask" in t:
            up.put(t["mask"], encode_png(mask.astype(np.uint8) * 255), "image/png")
        if "overlay" in t:
            up.put(t["overlay"], overlay_png(image, mask, cls.name, scale=scale), "image/png")
    return []


def write_batches(round_dir: str, dest: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  workers: int = 8, scale: int = DEFAULT_SCALE,
                  progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Render, batch and upload the round's review work to ``dest`` (default: the round folder).

    ``progress(done, total)`` is called after each slice. Resumes an interrupted run with the same options;
    a completed run with the same options changes nothing (``unchanged=True``).
    """
    meta = read_round(round_dir)
    dest_uri = _dest_uri(dest or round_dir)
    items = read_assignments(round_dir)
    known = REVIEWED_ASSIGNMENTS + ADJUST_ASSIGNMENTS + _NO_WORK
    other = items.loc[~items["assignment"].isin(known), "assignment"]
    not_batched = {str(k): int(v) for k, v in other.value_counts().sort_index().items()}
    if not_batched:
        log.warning("%s: routes with no kind of review work left out: %s", round_dir,
                    ", ".join(f"{v} {k}" for k, v in not_batched.items()))
    adjust_ids = sorted(items.loc[items["assignment"].isin(ADJUST_ASSIGNMENTS), "item_id"].astype(str))
    items = items[items["assignment"].isin(REVIEWED_ASSIGNMENTS)].copy()
    if items.empty and not adjust_ids:
        raise SegqaError(f"{round_dir}: the round has no items to verify or adjust (every item is auto-accepted "
                         "or skipped)")
    if items["review_rank"].isna().any():
        bad = items.loc[items["review_rank"].isna(), "item_id"].iloc[0]
        raise SegqaError(f"{round_dir}/assignments.csv: reviewed item {bad} has no review_rank")
    round_id = meta["round"]
    model_version = str(meta.get("inputs", {}).get("model_version") or "unknown")
    fingerprint = hashlib.sha256(json.dumps({
        "round": meta.get("fingerprint"), "dest": dest_uri, "batch_size": batch_size, "scale": scale,
        "layout": _LAYOUT_VERSION}, sort_keys=True).encode()).hexdigest()

    state_uri = storage.join(round_dir, BATCHES_FILE)
    state = storage.read_json(state_uri) if storage.exists(state_uri) else None
    manifest_uri = storage.join(dest_uri, MANIFEST_FILE)
    same = state if state is not None and state.get("fingerprint") == fingerprint else None
    if same is not None and same.get("status") == "complete" and storage.exists(manifest_uri):
        return BatchResult(dest_uri, manifest_uri, same["batches"], same["items"], unchanged=True,
                           not_batched=not_batched, adjust=same.get("adjust"))
    existing = set(storage.list_uris(dest_uri)) if same is not None else set()
    storage.write_json(state_uri, {"schema": BATCHES_SCHEMA, "round": round_id, "fingerprint": fingerprint,
                                   "status": "in-progress", "dest": dest_uri,
                                   "started_at": utc_now_iso()})

    up = _Uploader(existing)
    slices: dict[tuple[str, int], list[Any]] = {}
    for r in items.itertuples(index=False):
        slices.setdefault((str(r.subject), int(r.slice)), []).append(r)
    rejects: list[Reject] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_render_slice, rows, dest_uri, up, scale) for rows in slices.values()]
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                rejects.extend(fut.result())
                if progress:
                    progress(done, len(futures))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise

    rejected = {r.item_id for r in rejects}
    batches = plan_batches(items[~items["item_id"].isin(rejected)], round_id, model_version, dest_uri, batch_size)
    listing = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futs = []
        for b in batches:
            uri = storage.join(dest_uri, f"batches/{b['batch_id']}.json")
            listing.append({"batch_id": b["batch_id"], "uri": uri, "class_name": b["class_name"],
                            "items": [i["item_id"] for i in b["items"]]})
            if up.needed(uri):
                data = (json.dumps(b, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
                futs.append(pool.submit(up.put, uri, data, "application/json"))
        for f in futs:
            f.result()
    adjust = None
    if adjust_ids:  # routed adjust tasks: written before the state says complete, so a resumed run redoes them
        from qa_workflow.rounds.adjusting import write_adjust_tasks

        tasks = write_adjust_tasks(round_dir, adjust_ids, None, dest=dest_uri)
        adjust = {"manifest": tasks.manifest, "tasks": tasks.task_uris, "slices": tasks.slices, "items": tasks.items}
    manifest = "".join(json.dumps({"source-ref": b["uri"]}) + "\n" for b in listing).encode("utf-8")
    up.put(manifest_uri, manifest, "application/jsonl")
    local_copy = storage.join(round_dir, MANIFEST_FILE)
    if local_copy != manifest_uri:
        storage.write_bytes(local_copy, manifest, "application/jsonl")
    write_rejects(storage.join(round_dir, BATCH_REJECTS_FILE), rejects)
    n_items = sum(len(b["items"]) for b in listing)
    storage.write_json(state_uri, {
        "schema": BATCHES_SCHEMA, "round": round_id, "fingerprint": fingerprint, "status": "complete",
        "dest": dest_uri, "manifest": manifest_uri, "batch_size": batch_size, "model_version": model_version,
        "items": n_items, "rejects": len(rejects), "batches": listing, "adjust": adjust,
        "completed_at": utc_now_iso(),
    })
    return BatchResult(dest_uri, manifest_uri, listing, n_items, up.uploaded, up.skipped, rejects=rejects,
                       not_batched=not_batched, adjust=adjust)


def read_manifest_objects(manifest_uri: str) -> list[dict[str, Any]]:
    """The data objects of a manifest, in order (their index is Ground Truth's ``datasetObjectId``).

    Each line must be a JSON object with a string ``source-ref`` (a URI) or ``source`` (inline data); blank
    lines are skipped. Relative ``source-ref`` paths in a local manifest are resolved against its folder.
    SegqaError names the line of malformed content, or says the manifest is empty.
    """
    text = storage.read_text(manifest_uri)
    base = None if storage.is_s3(manifest_uri) else storage.local_path(manifest_uri).resolve().parent
    objects: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SegqaError(f"{manifest_uri}, line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not (isinstance(obj.get("source-ref"), str)
                                             or isinstance(obj.get("source"), str)):
            raise SegqaError(f"{manifest_uri}, line {lineno}: expected an object with a string \"source-ref\" "
                             "(or \"source\")")
        ref = obj.get("source-ref")
        if ref and base is not None and "://" not in ref and not os.path.isabs(ref):
            obj = {**obj, "source-ref": str(base / ref)}
        objects.append(obj)
    if not objects:
        raise SegqaError(f"{manifest_uri}: the manifest lists no data objects")
    return objects


def read_manifest(uri: str) -> list[str]:
    """The batch URIs (``source-ref``) of a manifest.jsonl, in order; SegqaError for a line without one."""
    out = []
    for n, obj in enumerate(read_manifest_objects(uri), start=1):
        if not isinstance(obj.get("source-ref"), str):
            raise SegqaError(f"{uri}: data object {n} has no \"source-ref\" (a batch URI)")
        out.append(obj["source-ref"])
    return out
