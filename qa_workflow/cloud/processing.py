"""`segqa predict --sagemaker`: the prediction of a large pool as SageMaker Processing jobs, sharded by subject.

A plan (`plan_sharded_prediction`, pure: no AWS call) turns the split's rows of the dataset index into:

- *shards*: the subjects dealt into ``shards`` groups of about equal slice counts (a subject never straddles two
  shards, so a volume is predicted in one place); each shard's **manifest** is its rows of ``index.csv``
  (``subject,slice,image,mask,split``; ``image`` relative to the dataset's S3 folder);
- *jobs*: ``CreateProcessingJob`` requests of up to ``instances_per_job`` instances each. A job's input
  ``manifests`` is the S3 prefix holding its shards' manifests, with ``S3DataDistributionType=ShardedByS3Key``:
  SageMaker hands each instance a share of the manifest files, so an instance predicts whole shards. The
  inputs ``code`` (the source bundle, `bundle_files`) and ``model`` (the model or export folder) are replicated
  to every instance.

Each instance runs `qa_workflow.cloud.processing_entry` (the project's own `run_predictions`): it reads the
images its manifests name from the dataset folder on S3, and writes into the prediction folder ``OUT`` exactly
what a local ``segqa predict --out OUT`` writes per slice (``probs/<subject>/<slice:03d>.npz``,
``masks/<subject>/<slice:03d>.png``), and per shard ``shards/<shard>/`` with that shard's ``run.json``, score
table and ``rejects.csv``. ``segqa predict --probs OUT --data DATA --out OUT`` then scores the whole pool into
one table, as a local run would have.

Staging (code and manifests) goes under ``OUT/processing/<run id>/``; `upload_staging` writes it and
`start_jobs` calls ``create_processing_job`` for each request (boto3; see docs/DECISIONS.md for why not the
SDK's ``Processor``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.cloud.sagemaker import require_instance_type, require_role_arn
from qa_workflow.contract import DEFAULT_TTA, SegqaError, check_tta

__all__ = [
    "ShardedPrediction", "ProcessingPlan", "plan_shards", "plan_sharded_prediction", "bundle_files",
    "upload_staging", "start_jobs", "read_index_rows", "prepare_plan", "bundle_digest", "ENTRY_MODULE",
    "PROCESSING_ROOT", "SHARDS_FOLDER",
]

ROOT = Path(__file__).resolve().parents[2]
PROCESSING_ROOT = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING_ROOT}/input/code"
MODEL_DIR = f"{PROCESSING_ROOT}/input/model"
MANIFEST_DIR = f"{PROCESSING_ROOT}/input/manifests"
ENTRY_MODULE = "qa_workflow.cloud.processing_entry"
#: Per-shard run records inside the prediction folder.
SHARDS_FOLDER = "shards"
INDEX_COLUMNS = ("subject", "slice", "image", "mask", "split")
#: The qa_workflow modules the entry point imports (tests check the closure); training/ goes in whole.
BUNDLE_MODULES = (
    "qa_workflow/__init__.py", "qa_workflow/contract.py", "qa_workflow/storage.py", "qa_workflow/cloud/__init__.py",
    "qa_workflow/cloud/processing_entry.py", "qa_workflow/rounds/__init__.py", "qa_workflow/rounds/predict.py",
    "qa_workflow/rounds/scoring.py",
)
_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
MAX_INSTANCES_PER_JOB = 20  # SageMaker's default quota of instances per processing job


@dataclass(frozen=True)
class ShardedPrediction:
    """What the operator asks for; every URI an S3 folder (``s3://bucket/prefix``)."""

    model_uri: str
    data_uri: str
    out_uri: str
    role_arn: str
    image_uri: str
    split: str = "pool"
    shards: int = 4
    instances_per_job: int = 4
    instance_type: str = "ml.c5.xlarge"
    volume_gb: int = 30
    max_runtime_s: int = 6 * 3600
    batch_size: int = 8
    mc_samples: int = 0
    min_pixels: int = 30
    table_format: str = "parquet"
    runtime: str = "auto"
    tta: str = DEFAULT_TTA
    base_job_name: str = "segqa-predict"
    tags: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> ShardedPrediction:
        for name in ("model_uri", "data_uri", "out_uri"):
            storage.require_s3(f"--{name.removesuffix('_uri')}", getattr(self, name), "SageMaker Processing")
        require_role_arn("--role", self.role_arn,
                         "`segqa deploy --show-outputs` prints the stack's ProcessingRoleArn")
        if not self.image_uri:
            raise SegqaError("--image: a processing image URI is required (build docker/processing/Dockerfile; "
                             "see docs/aws.md)")
        require_instance_type("--instance-type", self.instance_type, "ml.c5.xlarge")
        if self.shards < 1:
            raise SegqaError(f"--shards must be at least 1, got {self.shards}")
        if not 1 <= self.instances_per_job <= MAX_INSTANCES_PER_JOB:
            raise SegqaError(f"--instances-per-job must be 1..{MAX_INSTANCES_PER_JOB}, got {self.instances_per_job}")
        if not 1 <= self.volume_gb <= 16384:
            raise SegqaError(f"--volume-gb must be 1..16384, got {self.volume_gb}")
        if not 60 <= self.max_runtime_s <= 5 * 24 * 3600:
            raise SegqaError(f"--max-runtime must be 60 s .. 5 days, got {self.max_runtime_s}")
        if self.mc_samples == 1 or self.mc_samples < 0:
            raise SegqaError(f"--mc-samples must be 0 (no MC-dropout) or at least 2, got {self.mc_samples}")
        check_tta(self.tta)
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", self.base_job_name):
            raise SegqaError(f"job name {self.base_job_name!r}: up to 32 letters, digits and '-'")
        return self


@dataclass(frozen=True)
class ProcessingPlan:
    """The requests and what they need in S3 before they start."""

    run_id: str
    requests: list[dict[str, Any]]
    manifests: dict[str, bytes]  # S3 URI -> manifest CSV
    shards: list[list[str]]  # the subjects of each shard
    slices: int
    code_uri: str


# --------------------------------------------------------------------------------------------------------
# Shards


def plan_shards(slices_by_subject: Mapping[str, int], shards: int) -> list[list[str]]:
    """Deal subjects into at most ``shards`` groups of about equal slice counts (largest subject first, each to
    the lightest group; ties broken by subject id, so the plan is deterministic). Empty groups are dropped;
    each group's subjects are sorted."""
    groups: list[tuple[int, int, list[str]]] = [(0, i, []) for i in range(max(1, shards))]
    for subject, n in sorted(slices_by_subject.items(), key=lambda kv: (-kv[1], kv[0])):
        load, i, members = min(groups)
        members.append(subject)
        groups[groups.index((load, i, members))] = (load + n, i, members)
    return [sorted(members) for _, _, members in sorted(groups, key=lambda g: g[1]) if members]


def read_index_rows(data: str) -> list[dict[str, str]]:
    """The rows of ``DATA/index.csv`` (local folder or S3), checked for the dataset columns."""
    uri = storage.join(data, "index.csv")
    try:
        text = storage.read_text(uri)
    except SegqaError:
        raise SegqaError(f"{data}: not a segqa dataset (no index.csv)") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SegqaError(f"{uri}: missing column(s) {', '.join(missing)}")
    return [{c: row[c] for c in INDEX_COLUMNS} for row in reader]


def _manifest(rows: Sequence[Mapping[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------------------------
# The code the instances run


def bundle_files(root: Path = ROOT) -> dict[str, bytes]:
    """``{relative path: bytes}``: training/ (Python files) and the qa_workflow modules of `BUNDLE_MODULES`."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "training").rglob("*.py"))
             if "__pycache__" not in p.parts}
    for rel in BUNDLE_MODULES:
        path = root / rel
        if not path.is_file():
            raise SegqaError(f"{path}: missing from the checkout; the processing bundle needs it")
        files[rel] = path.read_bytes()
    return dict(sorted(files.items()))


def bundle_digest(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------
# The requests


def _s3_input(name: str, uri: str, local: str, sharded: bool = False) -> dict[str, Any]:
    return {"InputName": name, "S3Input": {
        "S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated"}}


def plan_sharded_prediction(request: ShardedPrediction, index_rows: Sequence[Mapping[str, str]], run_id: str,
                            code_digest: str) -> ProcessingPlan:
    """The processing plan of ``request`` over ``index_rows`` (the dataset's index). ``run_id`` (e.g.
    ``20261201-170000``) names the jobs and the staging folder; ``code_digest`` names the code's S3 folder."""
    request.validate()
    rows = [r for r in index_rows if r["split"] == request.split]
    if not rows:
        raise SegqaError(f"{request.data_uri}: split {request.split!r} has no slices")
    by_subject: dict[str, list[Mapping[str, str]]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    shards = plan_shards({s: len(v) for s, v in by_subject.items()}, request.shards)
    staging = storage.join(request.out_uri, "processing", run_id)
    code_uri = storage.join(request.out_uri, "processing", "code", code_digest) + "/"
    per_job = request.instances_per_job
    manifests: dict[str, bytes] = {}
    requests = []
    for j in range(math.ceil(len(shards) / per_job)):
        job_shards = range(j * per_job, min((j + 1) * per_job, len(shards)))
        manifest_prefix = storage.join(staging, "manifests", f"job-{j:03d}") + "/"
        for k in job_shards:
            manifests[storage.join(manifest_prefix, f"shard-{k:05d}.csv")] = _manifest(
                [r for s in shards[k] for r in by_subject[s]])
        name = f"{request.base_job_name}-{run_id}-{j:03d}"
        if not _JOB_NAME.fullmatch(name):
            raise SegqaError(f"job name {name!r}: up to 63 letters, digits and '-'")
        arguments = ["--model", MODEL_DIR, "--manifests", MANIFEST_DIR, "--data", request.data_uri,
                     "--out", request.out_uri, "--split", request.split, "--batch-size", str(request.batch_size),
                     "--mc-samples", str(request.mc_samples), "--min-pixels", str(request.min_pixels),
                     "--table-format", request.table_format, "--runtime", request.runtime,
                     "--tta", request.tta]
        requests.append({
            "ProcessingJobName": name,
            "ProcessingResources": {"ClusterConfig": {
                "InstanceCount": len(job_shards), "InstanceType": request.instance_type,
                "VolumeSizeInGB": request.volume_gb}},
            "StoppingCondition": {"MaxRuntimeInSeconds": request.max_runtime_s},
            "AppSpecification": {"ImageUri": request.image_uri, "ContainerEntrypoint": ["python3", "-m", ENTRY_MODULE],
                                 "ContainerArguments": arguments},
            "Environment": {"PYTHONPATH": CODE_DIR, "PYTHONUNBUFFERED": "1"},
            "ProcessingInputs": [
                _s3_input("code", code_uri, CODE_DIR),
                _s3_input("model", request.model_uri.rstrip("/") + "/", MODEL_DIR),
                _s3_input("manifests", manifest_prefix, MANIFEST_DIR, sharded=True),
            ],
            "RoleArn": request.role_arn,
            "Tags": [{"Key": "segqa:run", "Value": run_id}, {"Key": "segqa:split", "Value": request.split},
                     *({"Key": k, "Value": v} for k, v in sorted(request.tags.items()))],
        })
    return ProcessingPlan(run_id=run_id, requests=requests, manifests=manifests, shards=shards, slices=len(rows),
                          code_uri=code_uri)


# --------------------------------------------------------------------------------------------------------
# Launch


def upload_staging(plan: ProcessingPlan, code: Mapping[str, bytes],
                   on_upload: Callable[[str], None] | None = None) -> None:
    """Write the code bundle (once per digest) and the manifests to S3."""
    if not storage.exists(storage.join(plan.code_uri, BUNDLE_MODULES[-1])):
        for rel, data in code.items():
            storage.write_bytes(storage.join(plan.code_uri, rel), data, "text/x-python")
        if on_upload:
            on_upload(plan.code_uri)
    for uri, data in plan.manifests.items():
        storage.write_bytes(uri, data, "text/csv")
    if on_upload and plan.manifests:
        on_upload(f"{len(plan.manifests)} shard manifest(s)")


def start_jobs(plan: ProcessingPlan, sagemaker_client: Any) -> list[str]:
    """``create_processing_job`` for each request; returns the job ARNs. A failure names the job and the reason
    (the jobs already started keep running: their shards are whole)."""
    from botocore.exceptions import ClientError

    arns = []
    for req in plan.requests:
        try:
            arns.append(sagemaker_client.create_processing_job(**req)["ProcessingJobArn"])
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise SegqaError(f"processing job {req['ProcessingJobName']}: {err.get('Code')}: {err.get('Message')} "
                             f"({len(arns)} of {len(plan.requests)} job(s) started before it)") from None
    return arns


def prepare_plan(request: ShardedPrediction, index_source: str | None = None, run_id: str | None = None,
                 root: Path = ROOT) -> tuple[ProcessingPlan, dict[str, bytes]]:
    """Read the index (from ``index_source``, default the request's dataset folder), bundle the code and plan.
    Returns the plan and the code bundle `upload_staging` needs."""
    from datetime import UTC, datetime

    rows = read_index_rows(index_source or request.data_uri)
    code = bundle_files(root)
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return plan_sharded_prediction(request, rows, run_id, bundle_digest(code)), code
