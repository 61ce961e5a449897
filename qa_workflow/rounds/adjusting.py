"""Adjust tasks: slices sent to correction, each pre-loaded in an editor (ARCHITECTURE §5, §6, §7).

Two ways in, one task format:

- **Routed** (`segqa select` routed the masks ``adjust``: likely to be rejected, so no verify step first):
  `segqa batch` writes them with the verify batches, one task per slice whose ``classes_to_check`` are the slice's
  adjust-routed classes, under ``adjust/routed/`` (``source_job`` absent, ``"origin": "routed"``).
- **Chained** (a verify job rejected the masks): the rejected items (`rejected_in_store` from the confirmation
  store, or `rejected_in_output_manifest` from a Ground Truth output manifest) are grouped by slice; every slice
  becomes one adjust task (`write_adjust_tasks`, ``"origin": "rejected"``, ``source_job`` = the verify job).

Under the destination (the round's batch destination by default)::

    images/<subject>/<slice:03d>.png         the plain slice (already there when verify batches were written)
    labels/<subject>/<slice:03d>.png         the model's label map, grey values 0..3 (the consolidation's tie-breaker)
    initial/<subject>/<slice:03d>.png        RGBA: each class in its colour, background transparent (editor start)
    adjust/<source job>/<task_id>.json       the task object (contract.validate_adjust_task); <source job> is
                                             ``routed`` for routed tasks
    adjust/<source job>/manifest.jsonl       one {"source-ref": <task URI>} per task: the adjust job's manifest

The three PNGs are in the display orientation (`contract.to_display`, as the verify objects): the editor, Ground
Truth's and the portal's, shows them anterior up, and every worker's answer comes back in that orientation, so
the consolidated label map does too; `contract.from_display` turns it back into the stored (model's) layout
where a correction enters the training set (`loop.retraining`).

Which items count as rejected: those whose reviewers in that job rejected the mask, and the split ones (some
accepted, some rejected), as the analysis counts a split as incorrect by default; with an escalation job
(`rounds.escalating`: the split items seen by more reviewers), the outcome of all their votes decides
(`contract.vote_outcome`). A slice's ``classes_to_check`` are the classes of its rejected items, and every
class stays editable.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.confirmations.records import Store, Vote
from qa_workflow.contract import (
    ACCEPT,
    ADJUST,
    REJECT,
    REVIEW_CLASSES,
    SegqaError,
    label_mappings,
    parse_item_id,
    to_display,
    validate_adjust_task,
    vote_outcome,
)

__all__ = ["AdjustTasks", "ROUTED", "routed_adjust_items", "rejected_in_store", "rejected_in_output_manifest",
           "decided_in_output_manifest", "vote_counts", "votes_of",
           "initial_overlay_png", "adjust_task_keys", "job_folder", "plan_adjust_tasks", "write_adjust_tasks",
           "ADJUST_DIR", "ADJUST_MANIFEST"]

ADJUST_DIR = "adjust"
ADJUST_MANIFEST = "manifest.jsonl"
#: The folder (under ``adjust/``) and ``origin`` of the tasks that routing sent straight to correction.
ROUTED = "routed"


@dataclass
class AdjustTasks:
    """What `write_adjust_tasks` wrote: the manifest, the task URIs and the slices they cover."""

    manifest: str
    task_uris: list[str]
    slices: list[str]
    items: int


def job_folder(job: str) -> str:
    """A labeling job's name as one folder name (letters, digits, ``-_.``; anything else ``_``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job) or "job"


def rejected_in_store(store: Store, job: str, *escalations: str) -> list[str]:
    """Item ids the verify ``job`` did not accept (rejected, or split on), sorted; from the votes in the store.

    ``escalations``: the jobs that gave ``job``'s split items a second opinion (`rounds.escalating`); their votes
    join ``job``'s, and each item's outcome is `contract.vote_outcome` of them all, so a split that the second
    opinion resolved as accepted is not sent to correction."""
    counts = vote_counts(store, job)
    for name in escalations:
        for vote in store.iter_votes(job=name):
            if vote.item_id in counts:
                counts[vote.item_id][vote.decision == REJECT] += 1
    return sorted(iid for iid, (accepts, rejects) in counts.items() if vote_outcome(accepts, rejects) != ACCEPT)


def votes_of(store: Store, job: str) -> list[Vote]:
    """The votes of the labeling ``job`` in the store; an error when it has none (a mistyped job name, or a store
    that does not hold that job's votes): what follows would otherwise act on nothing without a word."""
    votes = list(store.iter_votes(job=job))
    if not votes:
        raise SegqaError(f"{store.uri}: no votes of job {job!r}; is the job name right, and is this the store "
                         "that holds its votes (--store)?")
    return votes


def vote_counts(store: Store, job: str) -> dict[str, list[int]]:
    """Item id -> [accept votes, reject votes] of the labeling ``job`` in the store; an error when it has none."""
    counts: dict[str, list[int]] = {}
    for vote in votes_of(store, job):
        counts.setdefault(vote.item_id, [0, 0])[vote.decision == REJECT] += 1
    return counts


def rejected_in_output_manifest(uri: str, label_attribute_name: str) -> list[str]:
    """Item ids a Ground Truth output manifest marks rejected or split (the verify consolidation's ``items``)."""
    return sorted(iid for iid, decision in decided_in_output_manifest(uri, label_attribute_name).items()
                  if decision not in (ACCEPT, None))


def decided_in_output_manifest(uri: str, label_attribute_name: str) -> dict[str, str | None]:
    """Item id -> the consolidated decision (accept | reject | split | None) in a verify job's Ground Truth output
    manifest (the consolidation's ``items`` under ``label_attribute_name``)."""
    out: dict[str, str | None] = {}
    for lineno, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            label = json.loads(line).get(label_attribute_name)
        except (json.JSONDecodeError, AttributeError):
            raise SegqaError(f"{uri}, line {lineno}: not a JSON object") from None
        if not isinstance(label, dict) or not isinstance(label.get("items"), list):
            raise SegqaError(f"{uri}, line {lineno}: no verify result under {label_attribute_name!r} "
                             "(is --label-attribute-name the verify job's?)")
        out.update((it["item_id"], it.get("decision")) for it in label["items"] if isinstance(it, dict))
    return out


def routed_adjust_items(assignments) -> list[str]:
    """Item ids that `segqa select` routed ``adjust`` (an assignments DataFrame), sorted."""
    return sorted(assignments.loc[assignments["assignment"] == ADJUST, "item_id"].astype(str))


def adjust_task_keys(slice_id: str) -> dict[str, str]:
    """Relative keys of one slice's adjust objects: {"image", "labels", "initial"}."""
    return {"image": f"images/{slice_id}.png", "labels": f"labels/{slice_id}.png",
            "initial": f"initial/{slice_id}.png"}


def initial_overlay_png(labels: np.ndarray) -> bytes:
    """The editor's starting mask: (H, W) class ids -> RGBA PNG, each class opaque in its colour, background
    transparent (the editor sets the display opacity; the colours must be exactly the label mappings')."""
    from PIL import Image

    rgba = np.zeros((*labels.shape, 4), np.uint8)
    for cls in REVIEW_CLASSES:
        rgba[labels == cls.id] = [*(cls.rgb or (0, 0, 0)), 255]
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def plan_adjust_tasks(item_ids: Iterable[str], round_id: str, model_version: str, dest: str,
                      source_job: str | None) -> list[dict[str, Any]]:
    """One adjust task per slice of ``item_ids``, ordered by slice; ``classes_to_check`` = the items' classes.

    ``source_job``: the verify job whose rejections these are, or None for items routed ``adjust`` (task ids
    ``<round>-adjust-routed-<slice>``, so a slice corrected both ways in one round keeps two distinct tasks)."""
    by_slice: dict[str, list[str]] = {}
    for iid in sorted(set(item_ids)):
        by_slice.setdefault(parse_item_id(iid).slice_id, []).append(iid)
    tasks = []
    order = {c.name: c.id for c in REVIEW_CLASSES}
    for slice_id, ids in sorted(by_slice.items()):
        keys = adjust_task_keys(slice_id)
        classes = sorted({parse_item_id(i).class_name for i in ids}, key=order.__getitem__)
        tag = "adjust" if source_job is not None else f"adjust-{ROUTED}"
        task = {"task_id": f"{round_id}-{tag}-{slice_id.replace('/', '-')}", "kind": ADJUST, "round": round_id,
                "model_version": model_version, "slice_id": slice_id,
                "image_uri": storage.join(dest, keys["image"]), "mask_uri": storage.join(dest, keys["labels"]),
                "initial_overlay_uri": storage.join(dest, keys["initial"]), "label_mappings": label_mappings(),
                "classes_to_check": classes, "item_ids": ids,
                "origin": "rejected" if source_job is not None else ROUTED}
        if source_job is not None:
            task["source_job"] = source_job
        tasks.append(validate_adjust_task(task, where=f"adjust task {task['task_id']}"))
    return tasks


def write_adjust_tasks(round_dir: str, item_ids: Iterable[str], source_job: str | None, dest: str | None = None
                       ) -> AdjustTasks:
    """Write the adjust tasks of ``item_ids`` (items of this round) and their manifest; returns what was written.

    ``source_job``: the verify job that rejected them (tasks under ``adjust/<job>/``), or None for the items
    routing sent straight to correction (``adjust/routed/``).

    Images and label maps come from the round's prediction (``assignments.csv`` columns ``image`` and
    ``pred_mask``). Objects already at the destination are not written again (their keys are deterministic).
    """
    from qa_workflow.rounds.predict import decode_png, encode_png
    from qa_workflow.rounds.round_dir import BATCHES_FILE, read_assignments, read_round

    ids = sorted(set(item_ids))
    if not ids:
        raise SegqaError(f"job {source_job}: no rejected items, so no adjust tasks" if source_job is not None
                         else f"{round_dir}: no items routed to adjust, so no adjust tasks")
    meta = read_round(round_dir)
    state_uri = storage.join(round_dir, BATCHES_FILE)
    if dest is None:
        dest = storage.read_json(state_uri)["dest"] if storage.exists(state_uri) else round_dir
    dest = dest.rstrip("/")
    rows = read_assignments(round_dir).set_index("item_id")
    unknown = [i for i in ids if i not in rows.index]
    if unknown:
        raise SegqaError(f"{round_dir}/assignments.csv: item(s) not in this round: {', '.join(unknown[:5])}")
    model_version = str(meta.get("inputs", {}).get("model_version") or "unknown")
    folder = ROUTED if source_job is None else job_folder(source_job)
    tasks = plan_adjust_tasks(ids, str(meta["round"]), model_version, dest, source_job)
    task_uris = []
    for task in tasks:
        row = rows.loc[task["item_ids"][0]]
        keys = adjust_task_keys(task["slice_id"])
        if not storage.exists(storage.join(dest, keys["image"])):
            image = decode_png(storage.read_bytes(row["image"]), row["image"], "image")
            storage.write_bytes(storage.join(dest, keys["image"]), encode_png(to_display(image)), "image/png")
        if not storage.exists(task["mask_uri"]) or not storage.exists(task["initial_overlay_uri"]):
            labels = to_display(decode_png(storage.read_bytes(row["pred_mask"]), row["pred_mask"], "predicted mask"))
            storage.write_bytes(task["mask_uri"], encode_png(labels), "image/png")
            storage.write_bytes(task["initial_overlay_uri"], initial_overlay_png(labels), "image/png")
        uri = storage.join(dest, ADJUST_DIR, folder, f"{task['task_id']}.json")
        storage.write_json(uri, task)
        task_uris.append(uri)
    manifest = storage.join(dest, ADJUST_DIR, folder, ADJUST_MANIFEST)
    storage.write_text(manifest, "".join(json.dumps({"source-ref": u}) + "\n" for u in task_uris),
                       content_type="application/jsonl")
    return AdjustTasks(manifest=manifest, task_uris=task_uris, slices=[t["slice_id"] for t in tasks], items=len(ids))
