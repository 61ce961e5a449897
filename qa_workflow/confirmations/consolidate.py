"""Ground Truth pre- and post-labeling logic for the mask review tasks, verify and adjust (ARCHITECTURE §7-§8).

Standard library only (plus `qa_workflow.storage` / `qa_workflow.confirmations.store`, which import boto3 lazily); `make
lambdas` copies this module into both Lambda zips. The handlers in ``lambdas/*/handler.py`` are thin shells
around `pre_labeling` and `post_labeling`; the local review portal and the simulated reviewers call the same
handlers with the same, documented event shapes.

Post-labeling, in order, for every data object of the payload:

1. read its batch (``dataObject.s3Uri``, ``source-ref`` or inline ``content``) and validate it;
2. for every worker, read ``annotationData.content`` (a JSON string) or the file at ``annotationData.s3Uri``;
   the crowd form puts its named fields at the top level of that JSON, so ``decisions`` (a JSON array as a
   string) sits there, next to ``batch_id`` and ``submitted_at``;
3. match decisions to the batch's items by ``item_id`` only; unknown ids, malformed entries and undecided items
   are logged (structured JSON, with the job and object ids) and skipped — one bad annotation or object never
   affects another;
4. write every valid vote at most once (`qa_workflow.confirmations.store`), then return one consolidated entry per
   ``datasetObjectId`` keyed by ``labelAttributeName``.

An adjust task (``"kind": "adjust"``, one slice) is consolidated instead by `consolidate_adjust`: every worker's
``crowd-semantic-segmentation`` PNG is decoded by the answer's own label mappings (`qa_workflow.confirmations.
adjust`), each worker's label map is written once under ``<corrections prefix>/<job>/<slice>/<worker>.png``,
the per-pixel majority (ties keep the model's label) becomes ``.../consolidated.png``, and the store gets one
correction per (job, slice, worker) plus the consolidated mask. A worker PNG that cannot be decoded, has the
wrong size or an unknown label fails that object alone. The corrections prefix is ``SEGQA_CORRECTIONS_PREFIX``,
else the folder ``corrections/`` beside the task object.

Store failures are not swallowed: the invocation fails and Ground Truth retries it, which is safe because every
vote is written at most once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qa_workflow import storage
from qa_workflow.confirmations.adjust import (
    WorkerCorrection,
    majority_label_map,
    model_label_map,
    read_worker_correction,
    safe_name,
    seconds_on_task,
)
from qa_workflow.confirmations.png import encode_png
from qa_workflow.confirmations.records import ConsolidatedMask, Correction
from qa_workflow.confirmations.store import ItemRecord, Store, Vote, open_store, store_uri_from_env
from qa_workflow.contract import (
    ACCEPT,
    ADJUST,
    REJECT,
    REJECT_REASONS,
    SPLIT,
    ContractError,
    Decision,
    SegqaError,
    decisions_array,
    parse_decisions,
    task_kind,
    validate_task,
    vote_outcome,
)

__all__ = [
    "log_json", "job_name", "load_batch", "pre_labeling", "WorkerDecisions", "read_worker_decisions",
    "consolidate_item", "consolidate_object", "post_labeling", "pre_labeling_event", "post_labeling_event",
    "annotation_entry", "DECISIONS_FIELD", "GT_EVENT_VERSION", "consolidate_adjust", "data_object_uri",
    "corrections_prefix", "CORRECTIONS_PREFIX_ENV",
]

LOG = logging.getLogger("segqa.lambdas")
#: The form field of the review template that carries the decisions array.
DECISIONS_FIELD = "decisions"
GT_EVENT_VERSION = "2018-10-16"
#: Where the post-labeling step writes adjust label maps (default: ``corrections/`` beside the task object).
CORRECTIONS_PREFIX_ENV = "SEGQA_CORRECTIONS_PREFIX"

ReadJson = Callable[[str], Any]
ReadText = Callable[[str], str]


def log_json(level: int, event: str, **fields: Any) -> None:
    """One structured log line: a JSON object with ``event`` and the given fields (CloudWatch Insights-friendly)."""
    if LOG.isEnabledFor(level):
        LOG.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=True))


def job_name(labeling_job_arn: object) -> str:
    """``arn:aws:sagemaker:…:labeling-job/<name>`` -> ``<name>`` (anything else is used as it is)."""
    if not isinstance(labeling_job_arn, str) or not labeling_job_arn.strip():
        raise ContractError("event: labelingJobArn must be a non-empty string")
    arn = labeling_job_arn.strip()
    return arn.rsplit("/", 1)[-1] if ":labeling-job/" in arn else arn


# --------------------------------------------------------------------------------------------------------
# Batches


def load_batch(data_object: Any, read_json: ReadJson = storage.read_json, where: str = "dataObject") -> dict[str, Any]:
    """The validated data object (a verify batch or an adjust task, `contract.validate_task`) it points to.

    Accepts the pre-labeling shape (``{"source-ref": uri}`` or ``{"source": uri-or-JSON}``) and the
    post-labeling shape (``{"s3Uri": uri}`` or ``{"content": uri-or-JSON}``). Raises ContractError/SegqaError.
    """
    if not isinstance(data_object, Mapping):
        raise ContractError(f"{where}: expected an object with source-ref, source, s3Uri or content")
    for key in ("source-ref", "s3Uri"):
        uri = data_object.get(key)
        if isinstance(uri, str) and uri:
            return validate_task(read_json(uri), where=uri)
    for key in ("source", "content"):
        text = data_object.get(key)
        if isinstance(text, str) and text.strip():
            text = text.strip()
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ContractError(f"{where}.{key}: not valid JSON ({exc.msg})") from None
                return validate_task(obj, where=f"{where}.{key}")
            return validate_task(read_json(text), where=text)
        if isinstance(text, Mapping):
            return validate_task(text, where=f"{where}.{key}")
    raise ContractError(f"{where}: expected source-ref, source, s3Uri or content naming the batch JSON")


def data_object_uri(data_object: Any) -> str | None:
    """The URI a data object names (``source-ref`` / ``s3Uri``, or ``source`` / ``content`` holding a URI), or None
    when the object is inline JSON."""
    if not isinstance(data_object, Mapping):
        return None
    for key in ("source-ref", "s3Uri", "source", "content"):
        value = data_object.get(key)
        if isinstance(value, str) and value.strip() and not value.strip().startswith("{"):
            return value.strip()
    return None


def pre_labeling(event: Any, read_json: ReadJson = storage.read_json) -> dict[str, Any]:
    """Pre-labeling: ``{"taskInput": <validated batch>, "isHumanAnnotationRequired": true}``.

    An unreadable or invalid batch raises (Ground Truth then marks the object failed); never a half task.
    """
    if not isinstance(event, Mapping):
        raise ContractError("pre-labeling event: expected a JSON object")
    job = job_name(event.get("labelingJobArn") or "unknown-job")
    data_object = event.get("dataObject")
    try:
        batch = load_batch(data_object, read_json)
    except SegqaError as exc:
        log_json(logging.ERROR, "pre_labeling.invalid_batch", job=job, data_object=data_object, error=str(exc))
        raise
    if task_kind(batch) == ADJUST:
        log_json(logging.INFO, "pre_labeling.task", job=job, kind=ADJUST, task_id=batch["task_id"],
                 slice_id=batch["slice_id"], items=len(batch["item_ids"]))
    else:
        log_json(logging.INFO, "pre_labeling.task", job=job, batch_id=batch["batch_id"], items=len(batch["items"]))
    return {"taskInput": batch, "isHumanAnnotationRequired": True}


# --------------------------------------------------------------------------------------------------------
# One worker's annotation -> decisions


@dataclass
class WorkerDecisions:
    """The usable decisions of one worker on one data object, and what was wrong with the rest."""

    worker_id: str
    decisions: dict[str, Decision] = field(default_factory=dict)  # item_id -> Decision
    submitted_at: str | None = None
    seconds: float | None = None  # the worker's seconds on the whole screen, when the form reports them
    problems: list[str] = field(default_factory=list)


def _iso_or_none(value: Any) -> str | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value


def _content_object(annotation_data: Any, read_text: ReadText) -> dict[str, Any]:
    if not isinstance(annotation_data, Mapping):
        raise ContractError("annotationData: expected an object with content or s3Uri")
    content = annotation_data.get("content")
    if content is None and isinstance(annotation_data.get("s3Uri"), str) and annotation_data["s3Uri"]:
        content = read_text(annotation_data["s3Uri"])
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except json.JSONDecodeError as exc:
            raise ContractError(f"annotationData.content: not valid JSON ({exc.msg})") from None
    if not isinstance(content, Mapping):
        raise ContractError("annotationData: expected content (a JSON object as a string) or s3Uri")
    return dict(content)


def _decisions_field(content: Mapping[str, Any]) -> Any:
    """The ``decisions`` form field: top level (the crowd-form output), else one level down."""
    if DECISIONS_FIELD in content:
        return content[DECISIONS_FIELD]
    nested = [v[DECISIONS_FIELD] for v in content.values() if isinstance(v, Mapping) and DECISIONS_FIELD in v]
    if len(nested) == 1:
        return nested[0]
    raise ContractError(f"annotation: no '{DECISIONS_FIELD}' field in the submitted form")


def read_worker_decisions(annotation: Any, item_ids: Sequence[str], read_text: ReadText = storage.read_text
                          ) -> WorkerDecisions:
    """Parse one entry of ``annotations`` into decisions matched to ``item_ids`` (by id, never by position).

    Never raises for bad data: every problem is recorded in ``problems`` and only the offending entries are
    dropped. Raises ContractError only when the entry has no usable worker id (there is no one to credit).
    """
    if not isinstance(annotation, Mapping):
        raise ContractError("annotation: expected an object with workerId and annotationData")
    worker = annotation.get("workerId")
    if not isinstance(worker, str) or not worker.strip():
        raise ContractError("annotation: workerId must be a non-empty string")
    out = WorkerDecisions(worker_id=worker.strip())
    try:
        content = _content_object(annotation.get("annotationData"), read_text)
        raw = decisions_array(_decisions_field(content))
    except SegqaError as exc:
        out.problems.append(str(exc))
        return out
    out.submitted_at = _iso_or_none(content.get("submitted_at"))
    out.seconds = seconds_on_task(content.get("seconds"))
    item_ids = list(item_ids)
    wanted = set(item_ids)
    conflicting: set[str] = set()
    for i, entry in enumerate(raw):
        try:
            (decision,) = parse_decisions([entry])
        except ContractError as exc:
            out.problems.append(f"decisions[{i}]: {str(exc).split(': ', 1)[-1]}")
            continue
        iid = decision.item_id
        if iid not in wanted:
            out.problems.append(f"decisions[{i}]: unknown item {iid} (not in this batch)")
            continue
        if iid in conflicting:
            continue
        previous = out.decisions.get(iid)
        if previous is not None and previous != decision:
            out.problems.append(f"decisions[{i}]: item {iid} decided twice, differently; both dropped")
            del out.decisions[iid]
            conflicting.add(iid)
            continue
        out.decisions[iid] = decision
    missing = [iid for iid in item_ids if iid not in out.decisions and iid not in conflicting]
    if missing:
        out.problems.append(f"no decision for {len(missing)} item(s): {', '.join(missing[:5])}"
                            + (" ..." if len(missing) > 5 else ""))
    return out


# --------------------------------------------------------------------------------------------------------
# Consolidation (pure)


def consolidate_item(item_id: str, decisions: Sequence[Decision]) -> dict[str, Any]:
    """Consolidate the decisions of several reviewers on one item.

    ``decision`` is `contract.vote_outcome` of their votes (``accept`` or ``reject`` when all agree, ``split``
    when they disagree without a majority of two, ``None`` when nobody decided); ``reasons`` counts the reject
    reasons given.
    """
    accepts = sum(d.decision == ACCEPT for d in decisions)
    rejects = sum(d.decision == REJECT for d in decisions)
    reasons: dict[str, int] = {}
    for d in decisions:
        if d.decision == REJECT and d.reason:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
    outcome = vote_outcome(accepts, rejects)
    return {"item_id": item_id, "decision": outcome, "confirm_count": accepts, "disconfirm_count": rejects,
            "reasons": {r: reasons[r] for r in REJECT_REASONS if r in reasons},
            "comments": sum(1 for d in decisions if d.comment)}


def consolidate_object(batch: Mapping[str, Any], workers: Sequence[WorkerDecisions], job: str) -> dict[str, Any]:
    """The label content for one data object: per-item consolidated decisions, in the batch's item order."""
    items = []
    summary = {ACCEPT: 0, REJECT: 0, SPLIT: 0, "undecided": 0}
    for item in batch["items"]:
        iid = item["item_id"]
        row = consolidate_item(iid, [w.decisions[iid] for w in workers if iid in w.decisions])
        summary[row["decision"] or "undecided"] += 1
        items.append(row)
    return {"job": job, "batch_id": batch["batch_id"], "round": batch["round"],
            "model_version": batch["model_version"], "class_name": batch["class_name"],
            "workers": [w.worker_id for w in workers], "items": items, "summary": summary}


# --------------------------------------------------------------------------------------------------------
# Post-labeling (I/O at the edges: reads through storage, writes through the store)


def _parse_post_event(event: Any) -> tuple[str, str, str]:
    if not isinstance(event, Mapping):
        raise ContractError("post-labeling event: expected a JSON object")
    job = job_name(event.get("labelingJobArn"))
    label = event.get("labelAttributeName")
    if not isinstance(label, str) or not label:
        raise ContractError("post-labeling event: labelAttributeName must be a non-empty string")
    payload = event.get("payload")
    uri = payload.get("s3Uri") if isinstance(payload, Mapping) else None
    if not isinstance(uri, str) or not uri:
        raise ContractError("post-labeling event: payload.s3Uri must name the annotations file")
    return job, label, uri


def _object_votes(batch: Mapping[str, Any], workers: Sequence[WorkerDecisions], job: str
                  ) -> list[tuple[ItemRecord, Vote]]:
    records = {it["item_id"]: ItemRecord.from_batch_item(dict(batch), it) for it in batch["items"]}
    votes = []
    for w in workers:
        # A screen's seconds are shared equally by the masks decided on it, so a round's cost is a plain sum.
        each = w.seconds / len(w.decisions) if w.seconds is not None and w.decisions else None
        for iid, d in w.decisions.items():
            votes.append((records[iid], Vote(job=job, item_id=iid, worker_id=w.worker_id, decision=d.decision,
                                             reason=d.reason, comment=d.comment,
                                             submitted_at=w.submitted_at or "", seconds=each)))
    return votes


# --------------------------------------------------------------------------------------------------------
# Adjust tasks: every worker's label map, their per-pixel majority, the corrections in the store


def corrections_prefix(task_uri: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Where adjust label maps go: ``SEGQA_CORRECTIONS_PREFIX``, else ``corrections/`` beside the task object."""
    env = os.environ if environ is None else environ
    prefix = env.get(CORRECTIONS_PREFIX_ENV, "").strip()
    if prefix:
        return prefix
    if task_uri:
        parent = task_uri.rstrip("/").rsplit("/", 1)[0] if "/" in task_uri else "."
        return storage.join(parent, "corrections")
    return None


def consolidate_adjust(task: Mapping[str, Any], annotations: Sequence[Any], job: str, prefix: str | None,
                       store: Store, *, read_bytes: Callable[[str], bytes] = storage.read_bytes,
                       read_text: ReadText = storage.read_text) -> dict[str, Any]:
    """Consolidate one adjust object: the label content ``{"kind": "adjust", "slice_id", "mask_uri", "workers",
    "modified", ...}``. Raises SegqaError when the object fails (a bad worker PNG, an unreadable model mask)."""
    width, height, model = model_label_map(read_bytes(task["mask_uri"]), where=task["mask_uri"])
    corrections: list[WorkerCorrection] = []
    problems: list[dict[str, Any]] = []
    for k, annotation in enumerate(annotations):
        worker = annotation.get("workerId") if isinstance(annotation, Mapping) else None
        if not isinstance(worker, str) or not worker.strip():
            problems.append({"annotation": k, "problems": ["annotation: workerId must be a non-empty string"]})
            continue
        if any(c.worker_id == worker.strip() for c in corrections):
            continue  # the same worker twice in one payload: the first counts
        content = _content_object(annotation.get("annotationData"), read_text)
        corrections.append(read_worker_correction(worker.strip(), content, width, height))
    content_out: dict[str, Any] = {"kind": ADJUST, "job": job, "task_id": task["task_id"],
                                   "slice_id": task["slice_id"], "round": task["round"], "mask_uri": None,
                                   "workers": [c.worker_id for c in corrections],
                                   "modified": any(c.modified for c in corrections)}
    if problems:
        content_out["problems"] = problems
    if not corrections:
        return content_out
    if prefix is None:
        raise ContractError(f"task {task['task_id']}: inline task object and no {CORRECTIONS_PREFIX_ENV}: "
                            "nowhere to write the corrected masks")
    folder = storage.join(prefix, safe_name(job), *(safe_name(part) for part in task["slice_id"].split("/")))
    records = []
    for c in corrections:
        uri = storage.join(folder, f"{safe_name(c.worker_id)}.png")
        # Never replaced: the bytes derive from the annotation, so a replay has the same. On S3 a conditional
        # put (no HeadObject first, which without s3:ListBucket answers 403 for a missing key).
        storage.create_once(uri, encode_png(width, height, c.labels), content_type="image/png")
        records.append(Correction(job=job, slice_id=task["slice_id"], worker_id=c.worker_id, round=str(task["round"]),
                                  mask_uri=uri, modified=c.modified, seconds=c.seconds, task_id=task["task_id"],
                                  model_version=str(task.get("model_version") or ""), submitted_at=c.submitted_at))
    consolidated = majority_label_map(model, [c.labels for c in corrections])
    mask_uri = storage.join(folder, "consolidated.png")
    storage.write_bytes(mask_uri, encode_png(width, height, consolidated), content_type="image/png")
    store.record_corrections(records)
    store.put_consolidated_mask(ConsolidatedMask(job=job, slice_id=task["slice_id"], round=str(task["round"]),
                                                 mask_uri=mask_uri))
    content_out["mask_uri"] = mask_uri
    content_out["changed_pixels"] = sum(a != b for a, b in zip(model, consolidated, strict=True))
    return content_out


def post_labeling(event: Any, store: Store, *, read_json: ReadJson = storage.read_json,
                  read_text: ReadText = storage.read_text, request_id: str | None = None,
                  environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Post-labeling: record every valid vote once and return one consolidated entry per ``datasetObjectId``.

    A malformed event (no job, label attribute or payload URI) or an unreadable payload raises; a malformed
    annotation is logged and affects only itself (its entry carries ``problems``); a data object whose batch
    cannot be read is logged and left out of the response, so Ground Truth counts it failed.
    """
    job, label, payload_uri = _parse_post_event(event)
    ctx = {"job": job, "request_id": request_id}
    payload = read_json(payload_uri)
    if not isinstance(payload, list):
        raise ContractError(f"{payload_uri}: expected a JSON list of data objects")

    # Group by datasetObjectId (it should be unique; if repeated, the annotations are merged).
    order: list[str] = []
    objects: dict[str, dict[str, Any]] = {}
    for n, obj in enumerate(payload):
        if not isinstance(obj, Mapping) or not isinstance(obj.get("datasetObjectId"), (str, int)):
            log_json(logging.ERROR, "post_labeling.bad_object", index=n, error="no datasetObjectId", **ctx)
            continue
        oid = str(obj["datasetObjectId"])
        if oid not in objects:
            order.append(oid)
            objects[oid] = {"dataObject": obj.get("dataObject"), "annotations": []}
        annotations = obj.get("annotations")
        if isinstance(annotations, list):
            objects[oid]["annotations"].extend(annotations)
        else:
            log_json(logging.WARNING, "post_labeling.no_annotations", object_id=oid, **ctx)

    totals = {"objects": len(order), "written": 0, "duplicates": 0, "problems": 0, "failed_objects": 0}
    response = []
    for oid in order:
        entry = objects[oid]
        octx = {**ctx, "object_id": oid}
        try:
            batch = load_batch(entry["dataObject"], read_json, where=f"object {oid}: dataObject")
        except SegqaError as exc:
            # No entry for it: Ground Truth then counts the object failed, never labeled (an entry, even one
            # carrying an error, would put it in the output manifest as reviewed).
            log_json(logging.ERROR, "post_labeling.bad_batch", error=str(exc), **octx)
            totals["failed_objects"] += 1
            continue
        if task_kind(batch) == ADJUST:
            prefix = corrections_prefix(data_object_uri(entry["dataObject"]), environ)
            try:
                content = consolidate_adjust(batch, entry["annotations"], job, prefix, store, read_text=read_text)
            except SegqaError as exc:
                log_json(logging.ERROR, "post_labeling.adjust_failed", task_id=batch["task_id"], error=str(exc),
                         **octx)
                totals["failed_objects"] += 1
                content = {"kind": ADJUST, "job": job, "task_id": batch["task_id"], "slice_id": batch["slice_id"],
                           "error": str(exc), "mask_uri": None, "workers": []}
            else:
                log_json(logging.INFO, "post_labeling.adjust", task_id=batch["task_id"],
                         workers=len(content["workers"]), mask_uri=content["mask_uri"], **octx)
            response.append({"datasetObjectId": oid, "consolidatedAnnotation": {"content": {label: content}}})
            continue
        item_ids = [it["item_id"] for it in batch["items"]]
        workers: list[WorkerDecisions] = []
        problems: list[dict[str, Any]] = []
        seen_workers: set[str] = set()
        for k, annotation in enumerate(entry["annotations"]):
            try:
                wd = read_worker_decisions(annotation, item_ids, read_text)
            except SegqaError as exc:
                problems.append({"annotation": k, "problems": [str(exc)]})
                log_json(logging.WARNING, "post_labeling.bad_annotation", annotation=k, error=str(exc), **octx)
                continue
            if wd.problems:
                problems.append({"worker_id": wd.worker_id, "problems": wd.problems})
                log_json(logging.WARNING, "post_labeling.annotation_problems", worker_id=wd.worker_id,
                         batch_id=batch["batch_id"], problems=wd.problems, **octx)
            if wd.worker_id in seen_workers:  # same worker twice in one payload: the first counts
                log_json(logging.WARNING, "post_labeling.repeated_worker", worker_id=wd.worker_id, **octx)
                continue
            if wd.decisions:
                seen_workers.add(wd.worker_id)
                workers.append(wd)
        result = store.record_votes(_object_votes(batch, workers, job))
        totals["written"] += result.written
        totals["duplicates"] += result.duplicates
        totals["problems"] += len(problems)
        content = consolidate_object(batch, workers, job)
        if problems:
            content["problems"] = problems
        log_json(logging.INFO, "post_labeling.object", batch_id=batch["batch_id"], workers=len(workers),
                 votes_written=result.written, votes_already_recorded=result.duplicates, **octx)
        response.append({"datasetObjectId": oid, "consolidatedAnnotation": {"content": {label: content}}})
    log_json(logging.INFO, "post_labeling.done", store=store.uri, **totals, **ctx)
    return response


def handle_post_labeling(event: Any, request_id: str | None = None, environ: Mapping[str, str] | None = None
                         ) -> list[dict[str, Any]]:
    """One post-labeling Lambda invocation: `post_labeling` on the store named by ``SEGQA_STORE``, opened once
    per process and kept across warm invocations."""
    store = open_store(store_uri_from_env(None if environ is None else dict(environ)), cached=True)
    return post_labeling(event, store, request_id=request_id, environ=environ)


# --------------------------------------------------------------------------------------------------------
# Event builders (the documented shapes), for the local portal and the simulated reviewers


def pre_labeling_event(labeling_job_arn: str, source_ref: str) -> dict[str, Any]:
    """The pre-labeling request Ground Truth sends for a manifest line ``{"source-ref": source_ref}``."""
    return {"version": GT_EVENT_VERSION, "labelingJobArn": labeling_job_arn, "dataObject": {"source-ref": source_ref}}


def annotation_entry(worker_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """One ``annotations`` entry: the crowd form's fields as a JSON string in ``annotationData.content``.

    ``form`` is what the template submits, e.g. ``{"decisions": "[...]", "batch_id": ..., "submitted_at": ...}``.
    """
    return {"workerId": worker_id, "annotationData": {"content": json.dumps(dict(form))}}


def post_labeling_event(labeling_job_arn: str, payload_uri: str, label_attribute_name: str = "segqa-review",
                        role_arn: str = "", label_categories: Sequence[str] | None = None) -> dict[str, Any]:
    """The post-labeling request Ground Truth sends once the annotations file is at ``payload_uri``."""
    return {"version": GT_EVENT_VERSION, "labelingJobArn": labeling_job_arn,
            "labelCategories": list(label_categories) if label_categories is not None else None,
            "labelAttributeName": label_attribute_name, "roleArn": role_arn, "payload": {"s3Uri": payload_uri}}
