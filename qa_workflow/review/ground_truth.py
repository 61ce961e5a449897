"""Ground Truth labeling-job client for a round: build, check, create, follow and sync a custom labeling job.

- `build_create_request` turns `JobSettings` + the round's batches into a ``CreateLabelingJob`` request for a
  custom task (our Liquid template, pre-labeling and consolidation Lambdas); `check_request` enforces the
  API's naming rules and returns warnings for settings that would break Ground Truth's managed execution
  policy (ARCHITECTURE §7: Lambda names containing ``SageMaker``/``sagemaker``/``Sagemaker``/``GtRecipe``/
  ``LabelingFunction``, bucket names containing ``sagemaker``/``SageMaker``/``Sagemaker``/``groundtruth``/
  ``GroundTruth``/``Groundtruth``) or expose medical images to the public workforce.
- `validate_against_service_model` checks any request against botocore's own service model, including the
  length limits and patterns that botocore's client-side validation skips.
- `create_job` uploads the template, calls the API and records ``ROUND_DIR/job/``; `create_adjust_job` chains
  a verify job to an adjust job: the items it rejected become adjust tasks (`qa_workflow.rounds.adjusting`) and
  a second job with its own ``LabelAttributeName`` (default ``segqa-adjust``) and the adjust template, recorded
  in ``ROUND_DIR/job/adjust-<verify job>.json``; `describe_job` reads the
  ``DescribeLabelingJob`` counters; `sync_job` downloads the output manifest and every worker response and
  consolidation file under the job's output prefix into ``ROUND_DIR/job/output/`` (resumable).

The SageMaker client is passed in (tests use botocore's Stubber, which validates every request against the
service model); S3 goes through `qa_workflow.storage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import SegqaError, utc_now_iso
from qa_workflow.review.templates import expand_includes

__all__ = [
    "JobSettings", "build_create_request", "check_request", "validate_against_service_model", "create_job",
    "describe_job", "sync_job", "job_name_default", "check_job_name", "check_label_attribute_name",
    "JOB_DIR", "DEFAULT_LABEL_ATTRIBUTE", "DEFAULT_TEMPLATE", "GT_LAMBDA_MARKERS", "GT_BUCKET_MARKERS",
    "summarize_status", "load_round_job_inputs", "create_adjust_job", "ADJUST_LABEL_ATTRIBUTE", "ADJUST_TEMPLATE",
    "adjust_settings", "create_escalation_job",
]

log = logging.getLogger(__name__)

JOB_DIR = "job"
DEFAULT_LABEL_ATTRIBUTE = "segqa-review"
DEFAULT_JOB_NAME_PREFIX = "segqa"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "mask_review.liquid.html"
ADJUST_LABEL_ATTRIBUTE = "segqa-adjust"
ADJUST_TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "mask_adjust.liquid.html"
ADJUST_TITLE = "Correct brain-tissue masks"
ADJUST_DESCRIPTION = ("Reviewers rejected the model's mask on these MRI slices: paint and erase the highlighted "
                      "tissue classes until the mask is right, then submit.")
GT_LAMBDA_MARKERS = ("GtRecipe", "LabelingFunction", "SageMaker", "sagemaker", "Sagemaker")
GT_BUCKET_MARKERS = ("GroundTruth", "Groundtruth", "groundtruth", "SageMaker", "Sagemaker", "sagemaker")
PUBLIC_WORKTEAM_MARK = ":workteam/public-crowd/"
_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_LABEL_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}")
_KEYWORD_RE = re.compile(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*")
_TAG_RE = re.compile(r"[\w\s.:/=+\-@]*")
MAX_TASK_TIME_S = 8 * 3600  # Ground Truth's limit for TaskTimeLimitInSeconds
MAX_LIFETIME_S = 30 * 24 * 3600  # private / vendor workforces
MAX_PUBLIC_LIFETIME_S = 12 * 3600  # Mechanical Turk


# ------------------------------------------------------------------------------------------ names

def check_job_name(name: str) -> str:
    """LabelingJobName rule: 1-63 letters, digits and hyphens, starting and ending with a letter or digit."""
    if not isinstance(name, str) or len(name) > 63 or not _NAME_RE.fullmatch(name):
        raise SegqaError(f"job name {name!r}: expected 1-63 letters, digits or hyphens, starting and ending with "
                         "a letter or digit (Ground Truth's LabelingJobName rule)")
    return name


def check_label_attribute_name(name: str) -> str:
    """LabelAttributeName rule: 1-127 letters, digits, hyphens (not at the ends), not ending in ``-metadata``."""
    if not isinstance(name, str) or len(name) > 127 or not _LABEL_RE.fullmatch(name):
        raise SegqaError(f"label attribute name {name!r}: expected 1-127 letters, digits or hyphens, starting and "
                         "ending with a letter or digit")
    if name.endswith("-metadata"):
        raise SegqaError(f"label attribute name {name!r}: must not end with '-metadata' (Ground Truth reserves it "
                         "for the label's metadata attribute)")
    return name


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9]+", "-", text)).strip("-")


def job_name_default(round_id: str, batches_fingerprint: str, prefix: str = DEFAULT_JOB_NAME_PREFIX) -> str:
    """``<prefix>-<round>-<8 hex of the batches' fingerprint>``, trimmed to 63 characters.

    Ground Truth job names are unique per account and region forever, so a new batch run gets a new name. The
    prefix is the stack's ``<NamePrefix>-<Environment>`` (its labeling-job-completed rule matches on it)."""
    head = f"{prefix}-{_slug(round_id) or 'round'}"[:54].rstrip("-")
    return check_job_name(f"{head}-{batches_fingerprint[:8]}")


# ------------------------------------------------------------------------------------------ settings

@dataclass
class JobSettings:
    """Everything a labeling job needs besides the round. ARNs may come from options or the environment."""

    role_arn: str
    workteam_arn: str
    pre_lambda_arn: str
    consolidation_lambda_arn: str
    output_s3: str | None = None  # default: <batch dest>/gt-output
    template_s3_uri: str | None = None  # default: <output>/templates/mask_review-<sha12>.liquid.html
    template_path: str = str(DEFAULT_TEMPLATE)
    job_name: str | None = None
    label_attribute_name: str = DEFAULT_LABEL_ATTRIBUTE
    title: str = "Review brain-tissue masks"
    description: str = ("Accept or reject the model's brain-tissue mask on each MRI slice: every card shows one "
                        "tissue class; reject masks that miss tissue, cover other tissue, or sit on a bad image.")
    keywords: tuple[str, ...] = ("MRI", "segmentation", "quality review", "brain tissue")
    workers_per_object: int = 3
    task_time_limit_s: int = 3600
    task_lifetime_s: int = 10 * 24 * 3600
    max_concurrent_tasks: int | None = 1000
    kms_key_id: str | None = None
    sns_topic_arn: str | None = None
    price_usd: float | None = None  # public workforce only
    tags: dict[str, str] = field(default_factory=dict)
    job_name_prefix: str = DEFAULT_JOB_NAME_PREFIX
    allow_public_workforce: bool = False  # MRI data goes to anonymous workers only when the operator says so


def load_round_job_inputs(round_dir: str) -> dict[str, Any]:
    """The round's id, fingerprints, model version and batch state needed for a job (batches.json)."""
    from qa_workflow.rounds.batching import BATCHES_FILE, MANIFEST_FILE, read_manifest
    from qa_workflow.rounds.round_dir import read_round

    meta = read_round(round_dir)
    state_uri = storage.join(round_dir, BATCHES_FILE)
    if not storage.exists(state_uri):
        raise SegqaError(f"{round_dir}: no batches yet ({BATCHES_FILE} missing); run 'segqa batch --round "
                         f"{round_dir} --dest s3://bucket/prefix' first")
    state = storage.read_json(state_uri)
    if state.get("status") != "complete":
        raise SegqaError(f"{state_uri}: the batch upload did not finish; re-run 'segqa batch' (it resumes)")
    manifest = state["manifest"]
    refs = read_manifest(storage.join(round_dir, MANIFEST_FILE))
    return {"round": meta["round"], "round_fingerprint": meta.get("fingerprint"),
            "batches_fingerprint": state["fingerprint"], "model_version": state.get("model_version"),
            "dest": state["dest"], "manifest": manifest, "batch_refs": refs, "items": state.get("items")}


def _job_output_and_template(settings: JobSettings, inputs: dict[str, Any], kind: str) -> tuple[str, str, bytes]:
    """The job's output prefix, the S3 URI its UI template goes to, and the template (``kind`` names the template
    in the error when its file is missing)."""
    template_path = Path(settings.template_path)
    try:
        template = expand_includes(template_path.read_text(encoding="utf-8")).encode("utf-8")
    except (OSError, UnicodeDecodeError):
        raise SegqaError(f"{template_path}: {kind} template not found (pass --template)") from None
    output = settings.output_s3 or f"{inputs['dest'].rstrip('/')}/gt-output"
    return output, _template_s3_uri(settings, output, template), template


def _template_s3_uri(settings: JobSettings, output: str, template: bytes) -> str:
    if settings.template_s3_uri:
        return settings.template_s3_uri
    digest = hashlib.sha256(template).hexdigest()[:12]
    stem = Path(settings.template_path).name.split(".", 1)[0] or "template"
    return f"{output.rstrip('/')}/templates/{stem}-{digest}.liquid.html"


def _tag_value(value: str) -> str:
    return re.sub(r"[^\w\s.:/=+\-@]", "-", str(value))[:256]


def build_create_request(settings: JobSettings, round_inputs: dict[str, Any], template_s3_uri: str) -> dict[str, Any]:
    """The ``CreateLabelingJob`` request (a dict of the API's parameters) for a round's batches.

    Raises SegqaError for a request the API would refuse (names, non-S3 manifest or output, bad numbers).
    """
    manifest = round_inputs["manifest"]
    if not storage.is_s3(manifest):
        raise SegqaError(f"the round's manifest is {manifest}; Ground Truth reads the manifest, batches and images "
                         "from S3: run 'segqa batch --round ROUND_DIR --dest s3://bucket/prefix' first")
    output = settings.output_s3 or f"{round_inputs['dest'].rstrip('/')}/gt-output"
    if not storage.is_s3(output):
        raise SegqaError(f"--output {output!r}: expected s3://bucket/prefix")
    name = check_job_name(settings.job_name or job_name_default(round_inputs["round"],
                                                                round_inputs["batches_fingerprint"],
                                                                settings.job_name_prefix))
    label = check_label_attribute_name(settings.label_attribute_name)
    if not isinstance(settings.workers_per_object, int) or not 1 <= settings.workers_per_object <= 9:
        raise SegqaError(f"--workers must be 1..9 (Ground Truth's limit), got {settings.workers_per_object!r}")
    if settings.task_time_limit_s < 30 or settings.task_time_limit_s > MAX_TASK_TIME_S:
        raise SegqaError(f"--task-time-limit must be 30..{MAX_TASK_TIME_S} seconds, got {settings.task_time_limit_s}")
    if settings.task_lifetime_s < 60 or settings.task_lifetime_s > MAX_LIFETIME_S:
        raise SegqaError(f"--task-lifetime must be 60..{MAX_LIFETIME_S} seconds, got {settings.task_lifetime_s}")
    if settings.max_concurrent_tasks is not None and not 1 <= settings.max_concurrent_tasks <= 5000:
        raise SegqaError(f"--max-concurrent-tasks must be 1..5000, got {settings.max_concurrent_tasks}")
    keywords = [k.strip() for k in settings.keywords if k.strip()]
    for k in keywords:
        if len(k) > 30 or not _KEYWORD_RE.fullmatch(k):
            raise SegqaError(f"keyword {k!r}: expected up to 30 letters/digits, single spaces between words")
    if not 1 <= len(keywords) <= 5:
        raise SegqaError(f"expected 1-5 keywords, got {len(keywords)}")
    if not 1 <= len(settings.title) <= 128:
        raise SegqaError("--title must be 1-128 characters")
    if not 1 <= len(settings.description) <= 255:
        raise SegqaError(f"--description must be 1-255 characters, got {len(settings.description)}")

    human: dict[str, Any] = {
        "WorkteamArn": settings.workteam_arn,
        "UiConfig": {"UiTemplateS3Uri": template_s3_uri},
        "PreHumanTaskLambdaArn": settings.pre_lambda_arn,
        "TaskKeywords": keywords,
        "TaskTitle": settings.title,
        "TaskDescription": settings.description,
        "NumberOfHumanWorkersPerDataObject": settings.workers_per_object,
        "TaskTimeLimitInSeconds": int(settings.task_time_limit_s),
        "TaskAvailabilityLifetimeInSeconds": int(settings.task_lifetime_s),
        "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": settings.consolidation_lambda_arn},
    }
    if settings.max_concurrent_tasks is not None:
        human["MaxConcurrentTaskCount"] = int(settings.max_concurrent_tasks)
    if settings.price_usd is not None:
        tenths = int(round(settings.price_usd * 1000))
        dollars, rest = divmod(tenths, 1000)
        cents, tenth = divmod(rest, 10)
        human["PublicWorkforceTaskPrice"] = {"AmountInUsd": {"Dollars": dollars, "Cents": cents,
                                                             "TenthFractionsOfACent": tenth}}
    output_config: dict[str, Any] = {"S3OutputPath": output}
    if settings.kms_key_id:
        output_config["KmsKeyId"] = settings.kms_key_id
    if settings.sns_topic_arn:
        output_config["SnsTopicArn"] = settings.sns_topic_arn
    tags = {"segqa:round": round_inputs["round"], "segqa:model-version": round_inputs.get("model_version") or "unknown",
            **settings.tags}
    request = {
        "LabelingJobName": name,
        "LabelAttributeName": label,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": manifest}},
                        "DataAttributes": {"ContentClassifiers": ["FreeOfAdultContent"]}},
        "OutputConfig": output_config,
        "RoleArn": settings.role_arn,
        "HumanTaskConfig": human,
        "Tags": [{"Key": _tag_value(k)[:128], "Value": _tag_value(v)} for k, v in tags.items()],
    }
    return request


def _arn_function_name(arn: str) -> str:
    return arn.split(":function:", 1)[-1].split(":")[0]


def _bucket(uri: str) -> str | None:
    return storage.split_s3(uri)[0] if storage.is_s3(uri) else None


def check_request(request: dict[str, Any], batch_refs: list[str] | None = None,
                  image_uris: list[str] | None = None, allow_public_workforce: bool = False) -> list[str]:
    """Warnings for a CreateLabelingJob request: managed-policy naming (ARCHITECTURE §7), public workforce.

    The request itself is validated by `validate_against_service_model`; these are conventions whose breach
    makes the job fail later (AccessDenied from the execution role) or leaks data. The public Mechanical Turk
    workforce is refused (SegqaError) unless ``allow_public_workforce``: it would show patient images to
    anonymous workers.
    """
    warnings: list[str] = []
    human = request["HumanTaskConfig"]
    for label, arn in (("pre-labeling Lambda", human.get("PreHumanTaskLambdaArn", "")),
                       ("consolidation Lambda",
                        human.get("AnnotationConsolidationConfig", {}).get("AnnotationConsolidationLambdaArn", ""))):
        fn = _arn_function_name(arn)
        if not any(m in fn for m in GT_LAMBDA_MARKERS):
            warnings.append(f"{label} {fn!r}: the AmazonSageMakerGroundTruthExecution policy only invokes Lambdas "
                            f"whose names contain {', '.join(GT_LAMBDA_MARKERS)}; rename it or grant "
                            "lambda:InvokeFunction to the role yourself")
    uris = {"manifest": request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"],
            "output": request["OutputConfig"]["S3OutputPath"],
            "template": human["UiConfig"].get("UiTemplateS3Uri", "")}
    for i, ref in enumerate((batch_refs or [])[:1] + (image_uris or [])[:1]):
        uris[f"{'batch' if i == 0 and batch_refs else 'image'} objects"] = ref
    seen: set[str] = set()
    for what, uri in uris.items():
        b = _bucket(uri)
        if what.endswith("objects") and not storage.is_s3(uri):
            warnings.append(f"{what} are at {uri}, not in S3: Ground Truth workers cannot load them")
            continue
        if b and b not in seen and not any(m in b for m in GT_BUCKET_MARKERS):
            seen.add(b)
            warnings.append(f"bucket {b!r} ({what}): the AmazonSageMakerGroundTruthExecution policy only reaches "
                            f"buckets whose names contain {', '.join(GT_BUCKET_MARKERS)} (or objects tagged "
                            "SageMaker); rename it or grant s3:GetObject/PutObject to the role yourself")
    if PUBLIC_WORKTEAM_MARK in human["WorkteamArn"]:
        if not allow_public_workforce:
            raise SegqaError(f"work team {human['WorkteamArn']} is the PUBLIC Mechanical Turk crowd: medical images "
                             "would be shown to anonymous workers; use a private work team, or pass "
                             "--allow-public-workforce if the data is cleared for public release")
        warnings.append("the work team is the PUBLIC Mechanical Turk crowd: medical images would be shown to "
                        "anonymous workers; use a private work team for patient data")
        if "PublicWorkforceTaskPrice" not in human:
            warnings.append("a public work team needs a task price (--price-usd)")
        if human.get("TaskAvailabilityLifetimeInSeconds", 0) > MAX_PUBLIC_LIFETIME_S:
            warnings.append(f"a public work team allows at most {MAX_PUBLIC_LIFETIME_S} s of task availability")
    elif "PublicWorkforceTaskPrice" in human:
        warnings.append("--price-usd is only used with the public workforce; a private team is not paid per task")
    return warnings


# ------------------------------------------------------------------------------------------ service model

def _java_pattern(pattern: str) -> re.Pattern[str]:
    """AWS patterns are Java regexes; translate the Unicode classes they use to Python's ``re``."""
    py = pattern.replace(r"\p{L}", r"\w").replace(r"\p{N}", r"\d").replace(r"\p{Z}", r"\s")
    return re.compile(py, re.DOTALL)


def validate_against_service_model(operation: str, params: dict[str, Any], service: str = "sagemaker") -> None:
    """Validate ``params`` for ``operation`` with botocore's own model; raise SegqaError listing every problem.

    botocore's ParamValidator checks required members, types and minimums; on top of it this checks maximum
    lengths/values, enums and the string patterns of the model (which the client does not check).
    """
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []

    def walk(value: Any, sh: Any, path: str) -> None:
        meta = sh.metadata
        if sh.type_name == "structure" and isinstance(value, dict):
            for k, v in value.items():
                if k in sh.members:
                    walk(v, sh.members[k], f"{path}.{k}")
        elif sh.type_name == "list" and isinstance(value, list):
            if "max" in meta and len(value) > meta["max"]:
                problems.append(f"{path}: {len(value)} entries, at most {meta['max']}")
            for i, v in enumerate(value):
                walk(v, sh.member, f"{path}[{i}]")
        elif sh.type_name == "string" and isinstance(value, str):
            if "max" in meta and len(value) > meta["max"]:
                problems.append(f"{path}: {len(value)} characters, at most {meta['max']}")
            if "pattern" in meta and not _java_pattern(meta["pattern"]).fullmatch(value):
                problems.append(f"{path}: {value!r} does not match {meta['pattern']!r}")
            if getattr(sh, "enum", None) and value not in sh.enum:
                problems.append(f"{path}: {value!r} is not one of {', '.join(sh.enum)}")
        elif sh.type_name in ("integer", "long") and isinstance(value, int):
            if "max" in meta and value > meta["max"]:
                problems.append(f"{path}: {value} is more than {meta['max']}")

    walk(params, shape, operation)
    if problems:
        raise SegqaError(f"{operation} request rejected by the {service} service model: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------ API calls

def _job_uri(round_dir: str, name: str) -> str:
    return storage.join(round_dir, JOB_DIR, name)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def create_job(client: Any, round_dir: str, settings: JobSettings, dry_run: bool = False
               ) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Build, validate and (unless ``dry_run``) create the round's labeling job.

    Returns (request, warnings, response or None). Uploads the template (not in a dry run), writes
    ``ROUND_DIR/job/request.json`` and ``job.json``. If ``job.json`` already records a job of this name, nothing
    is created again (a re-run is safe) and its stored response is returned.
    """
    inputs = load_round_job_inputs(round_dir)
    output, template_uri, template = _job_output_and_template(settings, inputs, "review")
    request = build_create_request(settings, inputs, template_uri)
    validate_against_service_model("CreateLabelingJob", request)
    image_refs = []
    if inputs["batch_refs"] and storage.is_s3(inputs["dest"]):
        image_refs = [f"{inputs['dest'].rstrip('/')}/images/"]
    warnings = check_request(request, inputs["batch_refs"], image_refs, settings.allow_public_workforce)
    if dry_run:
        return request, warnings, None

    extra = {"ManifestS3Uri": request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]}
    return _create_job_once(client, round_dir, "job", request, warnings, template_uri, template, extra)


def _create_job_once(client: Any, round_dir: str, name: str, request: dict[str, Any], warnings: list[str],
                     template_uri: str, template: bytes, extra: dict[str, Any]
                     ) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Create the labeling job unless ``ROUND_DIR/job/<name>.json`` already records one of this name (a re-run
    is safe): upload the UI template if missing, keep the request (``<name>-request.json``, ``request.json`` for
    the verify job), create the job, record it. Returns (request, warnings, record)."""
    job_file = _job_uri(round_dir, f"{name}.json")
    if storage.exists(job_file):
        recorded = storage.read_json(job_file)
        if recorded.get("LabelingJobName") == request["LabelingJobName"]:
            return request, warnings + [f"job {recorded['LabelingJobName']} was already created "
                                        f"({recorded.get('LabelingJobArn')}); nothing done"], recorded
    if not storage.exists(template_uri):
        storage.write_bytes(template_uri, template, "text/html; charset=utf-8")
    storage.write_json(_job_uri(round_dir, "request.json" if name == "job" else f"{name}-request.json"), request)
    response = client.create_labeling_job(**request)
    record = {"LabelingJobName": request["LabelingJobName"], "LabelingJobArn": response["LabelingJobArn"],
              "LabelAttributeName": request["LabelAttributeName"],
              "S3OutputPath": request["OutputConfig"]["S3OutputPath"], **extra, "created_at": utc_now_iso()}
    storage.write_json(job_file, record)
    return request, warnings, record


def adjust_settings(settings: JobSettings) -> JobSettings:
    """The verify job's settings turned into an adjust job's: the adjust template, label attribute, title and
    description wherever the verify defaults were left in place (explicit choices are kept)."""
    verify = JobSettings("", "", "", "")
    changes: dict[str, Any] = {}
    if settings.template_path == str(DEFAULT_TEMPLATE):
        changes["template_path"] = str(ADJUST_TEMPLATE)
    if settings.label_attribute_name == DEFAULT_LABEL_ATTRIBUTE:
        changes["label_attribute_name"] = ADJUST_LABEL_ATTRIBUTE
    if settings.title == verify.title:
        changes["title"] = ADJUST_TITLE
    if settings.description == verify.description:
        changes["description"] = ADJUST_DESCRIPTION
    return replace(settings, **changes)


def _named_by_manifest(settings: JobSettings, round_id: str, kind: str, manifest: str) -> tuple[JobSettings, str]:
    """A chained job's settings with its default name, ``<prefix>-<round>-<kind>-<8 hex of its manifest>`` (so
    the same work gets the same name and is not created twice; the verify job's prefix, which the stack's
    labeling-job-completed rule matches), and the manifest's fingerprint."""
    fingerprint = hashlib.sha256(storage.read_bytes(manifest)).hexdigest()
    if not settings.job_name:
        head = f"{settings.job_name_prefix}-{_slug(round_id) or 'round'}-{kind}"[:54].rstrip("-")
        settings = replace(settings, job_name=check_job_name(f"{head}-{fingerprint[:8]}"))
    return settings, fingerprint


def create_adjust_job(client: Any, round_dir: str, settings: JobSettings, from_job: str | None,
                      item_ids: list[str], dry_run: bool = False
                      ) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Chain the verify job ``from_job`` to an adjust job over ``item_ids`` (the items it rejected); with
    ``from_job`` None, the adjust job of the items routing sent straight to correction (``adjust/routed/``).

    Writes the adjust tasks and their manifest beside the round's batches (`rounds.adjusting.write_adjust_tasks`,
    also in a dry run: they are the job's input), builds the ``CreateLabelingJob`` request with the adjust
    template and its own ``LabelAttributeName``, validates it against botocore's service model and creates it.
    Returns (request, warnings, record or None); a re-run with the same tasks creates nothing again.
    """
    from qa_workflow.rounds.adjusting import write_adjust_tasks

    inputs = load_round_job_inputs(round_dir)
    settings = adjust_settings(settings)
    tasks = write_adjust_tasks(round_dir, item_ids, from_job, dest=inputs["dest"])
    settings, fingerprint = _named_by_manifest(settings, inputs["round"], "adjust", tasks.manifest)
    verify_record = _job_uri(round_dir, "job.json")
    if storage.exists(verify_record):
        verify_label = storage.read_json(verify_record).get("LabelAttributeName")
        if verify_label == settings.label_attribute_name:
            raise SegqaError(f"--label-attribute-name {verify_label!r} is the verify job's; the adjust job needs "
                             "its own (default segqa-adjust)")
    output, template_uri, template = _job_output_and_template(settings, inputs, "adjust")
    adjust_inputs = {**inputs, "manifest": tasks.manifest, "batch_refs": tasks.task_uris,
                     "batches_fingerprint": fingerprint, "items": tasks.items}
    request = build_create_request(settings, adjust_inputs, template_uri)
    request["Tags"].append({"Key": "segqa:kind", "Value": "adjust"})
    if from_job is not None:
        request["Tags"].append({"Key": "segqa:from-job", "Value": _tag_value(from_job)})
    validate_against_service_model("CreateLabelingJob", request)
    image_refs = [f"{inputs['dest'].rstrip('/')}/images/"] if storage.is_s3(inputs["dest"]) else []
    warnings = check_request(request, tasks.task_uris, image_refs)
    if dry_run:
        return request, warnings, None
    extra = {"kind": "adjust", "from_job": from_job, "ManifestS3Uri": tasks.manifest,
             "slices": len(tasks.task_uris), "items": tasks.items}
    record_name = f"adjust-{from_job}" if from_job is not None else "adjust-routed"
    return _create_job_once(client, round_dir, record_name, request, warnings, template_uri, template, extra)


def create_escalation_job(client: Any, round_dir: str, settings: JobSettings, from_job: str, item_ids: list[str],
                          dry_run: bool = False) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """A second verify job over ``item_ids``, the masks whose reviewers in the verify job ``from_job`` split
    (`rounds.escalating`): the verify template and batch format, the split items of each batch. Give it another
    work team (``settings.workteam_arn``: senior reviewers, say), since a work team cannot keep the reviewers who
    already voted on an item from voting again. Returns (request, warnings, record or None); a re-run with the same
    batches creates nothing again."""
    from qa_workflow.rounds.escalating import write_escalation_batches

    inputs = load_round_job_inputs(round_dir)
    batches = write_escalation_batches(round_dir, item_ids, from_job, dest=inputs["dest"])
    settings, fingerprint = _named_by_manifest(settings, inputs["round"], "escalate", batches.manifest)
    _, template_uri, template = _job_output_and_template(settings, inputs, "review")
    escalation_inputs = {**inputs, "manifest": batches.manifest, "batch_refs": batches.batch_uris,
                         "batches_fingerprint": fingerprint, "items": batches.items}
    request = build_create_request(settings, escalation_inputs, template_uri)
    request["Tags"] += [{"Key": "segqa:kind", "Value": "escalation"},
                        {"Key": "segqa:from-job", "Value": _tag_value(from_job)}]
    validate_against_service_model("CreateLabelingJob", request)
    image_refs = [f"{inputs['dest'].rstrip('/')}/images/"] if storage.is_s3(inputs["dest"]) else []
    warnings = check_request(request, batches.batch_uris, image_refs, settings.allow_public_workforce)
    if dry_run:
        return request, warnings, None
    extra = {"kind": "escalation", "from_job": from_job, "ManifestS3Uri": batches.manifest,
             "items": batches.items}
    return _create_job_once(client, round_dir, f"escalate-{from_job}", request, warnings, template_uri, template,
                            extra)


def sagemaker_client(region: str | None = None) -> Any:
    """A boto3 SageMaker client for the job commands (the region from the environment when None)."""
    import boto3

    return boto3.client("sagemaker", region_name=region) if region else boto3.client("sagemaker")


def _recorded_job(round_dir: str, job_name: str | None) -> str:
    if job_name:
        return check_job_name(job_name)
    job_file = _job_uri(round_dir, "job.json")
    if not storage.exists(job_file):
        raise SegqaError(f"{round_dir}: no labeling job recorded ({JOB_DIR}/job.json missing); run "
                         "'segqa job create' or pass --job-name")
    return storage.read_json(job_file)["LabelingJobName"]


def describe_job(client: Any, round_dir: str, job_name: str | None = None) -> dict[str, Any]:
    """``DescribeLabelingJob`` for the round's job; the response is also saved as ``job/status.json``."""
    name = _recorded_job(round_dir, job_name)
    request = {"LabelingJobName": name}
    validate_against_service_model("DescribeLabelingJob", request)
    response = client.describe_labeling_job(**request)
    response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    storage.write_text(_job_uri(round_dir, "status.json"),
                       json.dumps(response, indent=2, default=_json_default) + "\n", "application/json")
    return response


def summarize_status(response: dict[str, Any]) -> dict[str, Any]:
    """Status, counters and progress (labeled / total data objects) of a DescribeLabelingJob response."""
    c = response.get("LabelCounters", {})
    total = sum(int(c.get(k, 0)) for k in ("TotalLabeled", "FailedNonRetryableError", "Unlabeled"))
    return {"name": response.get("LabelingJobName"), "status": response.get("LabelingJobStatus"),
            "labeled": int(c.get("TotalLabeled", 0)), "human_labeled": int(c.get("HumanLabeled", 0)),
            "failed": int(c.get("FailedNonRetryableError", 0)), "unlabeled": int(c.get("Unlabeled", 0)),
            "total": total, "failure_reason": response.get("FailureReason"),
            "output_manifest": (response.get("LabelingJobOutput") or {}).get("OutputDatasetS3Uri")}


def sync_job(client: Any, round_dir: str, job_name: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Download the job's output manifest and worker responses into ``ROUND_DIR/job/output/``.

    Everything under ``<S3OutputPath>/<job name>/`` (``manifests/``, ``annotations/worker-response/``,
    ``annotations/consolidated-annotation/``, ...) is copied keeping its relative path. Worker responses and
    consolidation files are written once by Ground Truth, so those already present are skipped; manifests are
    always refreshed. Sync can run repeatedly while the job is in progress.
    Returns {"status", "downloaded", "skipped", "files", "output_manifest"}.
    """
    response = describe_job(client, round_dir, job_name)
    name = response["LabelingJobName"]
    prefix = f"{response['OutputConfig']['S3OutputPath'].rstrip('/')}/{name}/"
    local_root = _job_uri(round_dir, "output")
    uris = [u for u in storage.list_uris(prefix) if not u.endswith("/")]
    downloaded = skipped = 0
    for i, uri in enumerate(uris, start=1):
        rel = uri[len(prefix):]
        target = storage.join(local_root, rel)
        # worker responses and consolidation files are written once; manifests may be rewritten
        if storage.exists(target) and not rel.startswith("manifests/"):
            skipped += 1
        else:
            storage.write_bytes(target, storage.read_bytes(uri))
            downloaded += 1
        if progress:
            progress(i, len(uris))
    manifest = (response.get("LabelingJobOutput") or {}).get("OutputDatasetS3Uri")
    local_manifest = None
    if manifest and manifest.startswith(prefix):
        local_manifest = storage.join(local_root, manifest[len(prefix):])
    return {"status": response.get("LabelingJobStatus"), "downloaded": downloaded, "skipped": skipped,
            "files": len(uris), "output_manifest": local_manifest, "prefix": prefix}
