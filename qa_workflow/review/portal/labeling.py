"""What Ground Truth does around a custom labeling job, done locally with the same Lambda code.

Shared by the review portal (`qa_workflow.review.portal.app`) and the simulated reviewers
(`qa_workflow.review.simulated_reviewers`):

- read a round's input manifest (JSON Lines, one ``{"source-ref": …}`` or ``{"source": …}`` per data object);
- build the **pre-labeling** event (ARCHITECTURE §7) and call ``lambdas/pre_labeling/handler.py``;
- write the **annotations file** Ground Truth hands to consolidation (a JSON list of
  ``{datasetObjectId, dataObject, annotations: [{workerId, annotationData: {content}}]}``), build the
  **post-labeling** event with ``payload.s3Uri`` pointing to it, and call ``lambdas/post_labeling/handler.py``.

The handlers are imported and called in-process, exactly as the Lambda runtime would call them:
``lambda_handler(event, context)``, with the store chosen by the ``SEGQA_STORE`` environment variable.
No FastAPI here: the simulator imports this module without the web stack.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import SegqaError

__all__ = [
    "MANIFEST_NAME", "LOCAL_ROLE_ARN", "DEFAULT_LABEL_ATTRIBUTE", "LambdaContext",
    "resolve_manifest", "read_manifest", "job_name_for", "labeling_job_arn", "pre_labeling_event",
    "post_labeling_event", "annotation_entry", "write_annotations_file", "call_pre_labeling",
    "call_post_labeling", "store_env",
]

MANIFEST_NAME = "manifest.jsonl"
LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"
LOCAL_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/segqa-local-review"
#: The label attribute name the portal and the simulator use unless told otherwise.
DEFAULT_LABEL_ATTRIBUTE = "segqa-review"

_JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass
class LambdaContext:
    """The parts of the AWS Lambda context object a handler may read (ids for its structured logs)."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    timeout_s: float = 300.0
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


# -- the manifest ------------------------------------------------------------------------------------------

def resolve_manifest(round_uri: str | os.PathLike[str]) -> str:
    """The manifest of a round: the URI itself if it names a ``.jsonl``/``.manifest`` file, else
    ``<round>/manifest.jsonl``. Raises SegqaError naming what was looked for."""
    s = os.fspath(round_uri)
    if s.endswith((".jsonl", ".manifest")):
        if not storage.exists(s):
            raise SegqaError(f"{s}: no such manifest")
        return s
    candidate = storage.join(s, MANIFEST_NAME)
    if storage.exists(candidate):
        return candidate
    raise SegqaError(f"{s}: no {MANIFEST_NAME} there; pass the folder that 'segqa batch' wrote (it holds "
                     f"{MANIFEST_NAME}) or the manifest file itself")


def read_manifest(manifest_uri: str) -> list[dict[str, Any]]:
    """The data objects of a manifest, in order (their index is Ground Truth's ``datasetObjectId``)."""
    from qa_workflow.rounds.batching import read_manifest_objects

    return read_manifest_objects(manifest_uri)


def job_name_for(manifest_uri: str, prefix: str = "segqa-review") -> str:
    """A Ground Truth-valid job name (≤ 63 characters: letters, digits, hyphens) for a manifest.

    ``<prefix>-<parent folder>-<folder>-<6 hex>``, e.g. ``segqa-review-r2-round-3f9a2c``: readable, and unique
    per manifest location (the hex is a hash of its absolute path), so two rounds never share a job name — votes
    are keyed by (job, item, worker), and a later round's vote on the same item must not look like a replay.
    The same folder always gets the same name, so a restarted portal resumes its job.
    """
    import hashlib

    s = os.fspath(manifest_uri)
    canonical = s if "://" in s else str(Path(s).resolve())
    digest = hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:6]
    parts = [p for p in re.split(r"[/\\]", canonical.rstrip("/")) if p and p not in ("s3:", "file:")]
    folders = parts[-3:-1] if len(parts) >= 3 else parts[:-1] or ["round"]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(folders)).strip("-").lower() or "round"
    head = f"{prefix}-{slug}"[: 63 - len(digest) - 1].rstrip("-")
    name = f"{head}-{digest}"
    if not _JOB_NAME_RE.match(name):
        raise SegqaError(f"cannot derive a job name from {manifest_uri!r}; pass --job-name")
    return name


def check_job_name(name: str) -> str:
    if not _JOB_NAME_RE.match(name or ""):
        raise SegqaError(f"invalid job name {name!r}: 1-63 letters, digits and hyphens, starting and ending with "
                         "a letter or digit (Ground Truth's rule)")
    return name


def labeling_job_arn(job_name: str) -> str:
    return f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:labeling-job/{check_job_name(job_name).lower()}"


# -- events (the builders live in qa_workflow.confirmations.consolidate: one definition of each shape) ---------------

def pre_labeling_event(job_arn: str, data_object: Mapping[str, Any]) -> dict[str, Any]:
    """The event Ground Truth sends the pre-labeling Lambda for one data object (a manifest line)."""
    from qa_workflow.confirmations import consolidate

    if "source-ref" in data_object:
        return consolidate.pre_labeling_event(job_arn, data_object["source-ref"])
    return {"version": consolidate.GT_EVENT_VERSION, "labelingJobArn": job_arn,
            "dataObject": {"source": data_object["source"]}}


def annotation_entry(dataset_object_id: int | str, data_object: Mapping[str, Any],
                     answers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One object of the annotations file; ``answers`` are ``(workerId, form output object)``."""
    from qa_workflow.confirmations import consolidate

    if "source-ref" in data_object:
        data = {"s3Uri": data_object["source-ref"]}
    else:
        data = {"content": data_object["source"]}
    return {"datasetObjectId": str(dataset_object_id), "dataObject": data,
            "annotations": [consolidate.annotation_entry(worker, form) for worker, form in answers]}


def write_annotations_file(folder: str | os.PathLike[str], entries: Sequence[Mapping[str, Any]]) -> str:
    """Write the consolidation payload atomically; returns its ``file://`` URI (what ``payload.s3Uri`` holds)."""
    now_ns = time.time_ns()  # names sort in the order the files were written
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9)) + f"{now_ns % 1_000_000_000:09d}"
    name = f"consolidation-{stamp}-{uuid.uuid4().hex[:8]}.json"
    path = Path(folder) / name
    storage.atomic_write_bytes(path, json.dumps(list(entries), ensure_ascii=False).encode("utf-8"))
    return path.resolve().as_uri()


def post_labeling_event(job_arn: str, label_attribute_name: str, payload_uri: str) -> dict[str, Any]:
    """The event Ground Truth sends the annotation-consolidation (post-labeling) Lambda."""
    from qa_workflow.confirmations import consolidate

    return consolidate.post_labeling_event(job_arn, payload_uri, label_attribute_name=label_attribute_name,
                                           role_arn=LOCAL_ROLE_ARN)


# -- calling the handlers ----------------------------------------------------------------------------------

class store_env:
    """Context manager: run handlers with ``SEGQA_STORE=<uri>`` (as the Lambda's environment would hold it)."""

    def __init__(self, store_uri: str) -> None:
        self.store_uri = store_uri
        self._old: str | None = None

    def __enter__(self) -> store_env:
        self._old = os.environ.get("SEGQA_STORE")
        os.environ["SEGQA_STORE"] = self.store_uri
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is None:
            os.environ.pop("SEGQA_STORE", None)
        else:
            os.environ["SEGQA_STORE"] = self._old


def call_pre_labeling(event: Mapping[str, Any]) -> dict[str, Any]:
    """Invoke ``lambdas/pre_labeling/handler.py`` and check the shape of its answer."""
    from lambdas.pre_labeling import handler

    out = handler.lambda_handler(dict(event), LambdaContext("segqa-SageMaker-pre-labeling"))
    if not isinstance(out, dict) or not isinstance(out.get("taskInput"), dict):
        raise SegqaError("pre-labeling handler returned no taskInput object")
    return out


def call_post_labeling(event: Mapping[str, Any], expected_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Invoke ``lambdas/post_labeling/handler.py``; returns ``{datasetObjectId: consolidatedAnnotation}``.

    Ground Truth requires exactly one entry per object it sent; anything else is an error here too.
    """
    from lambdas.post_labeling import handler

    out = handler.lambda_handler(dict(event), LambdaContext("segqa-SageMaker-post-labeling"))
    if not isinstance(out, list):
        raise SegqaError("post-labeling handler did not return a list")
    by_id: dict[str, dict[str, Any]] = {}
    for entry in out:
        if not isinstance(entry, dict) or "datasetObjectId" not in entry:
            raise SegqaError("post-labeling handler returned an entry without datasetObjectId")
        oid = str(entry["datasetObjectId"])
        if oid in by_id:
            raise SegqaError(f"post-labeling handler returned object {oid} twice")
        by_id[oid] = entry.get("consolidatedAnnotation", {})
    missing = [i for i in expected_ids if i not in by_id]
    if missing:
        raise SegqaError(f"post-labeling handler returned no entry for object(s) {', '.join(missing)}")
    return by_id
