"""`segqa deploy`: lint the template, upload the code, create or update the CloudFormation stack.

The stack (``cloudformation/template.yaml``) needs its Lambda code in S3 before it exists, so the code goes
to a *code bucket* that this module creates outside the stack (``<prefix>-<env>-sagemaker-code-<account>-
<region>``, private, encrypted), under content-addressed keys: ``lambdas/<function>-<sha256[:16]>.zip`` and
``training/sourcedir-<sha256[:16]>.tar.gz``. New code means a new key, so CloudFormation updates exactly the
functions whose code changed and nothing is uploaded twice.

Steps (`plan_deploy` is pure apart from optional read-only AWS look-ups; `execute_deploy` does the work):

1. lint the template with cfn-lint (errors stop the deploy; warnings are reported);
2. collect the artefacts: the Lambda zips from ``build/lambdas`` (`make lambdas`), the training source bundle
   (`qa_workflow.cloud.sagemaker`), the review templates;
3. ensure the code bucket, upload the missing artefacts;
4. create a change set (CREATE or UPDATE), show its changes, execute it, follow the stack events until the
   stack settles; a failure raises `SegqaError` with the resources' own failure reasons;
5. upload the review template(s) to the stack's data bucket (``templates/``) and return the stack outputs.

Library code never prints: progress goes to the ``on_event`` callback.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qa_workflow.cloud import sagemaker as sagemaker_launch
from qa_workflow.contract import SegqaError

__all__ = [
    "TEMPLATE_PATH", "LAMBDA_CODE_PARAMETERS", "Artifact", "DeployPlan", "DeployResult", "StackEvent",
    "lint_template", "template_parameters", "lambda_artifacts", "training_artifact", "code_bucket_name",
    "plan_deploy", "execute_deploy", "stack_outputs", "read_outputs", "env_exports", "OUTPUT_ENV",
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "cloudformation" / "template.yaml"
REVIEW_TEMPLATES_DIR = ROOT / "templates"
DEFAULT_LAMBDAS_DIR = ROOT / "build" / "lambdas"
#: Lambda function folder -> the template parameter holding its zip's S3 key.
LAMBDA_CODE_PARAMETERS = {"pre_labeling": "PreLabelingCodeKey", "post_labeling": "PostLabelingCodeKey",
                          "retrain_trigger": "RetrainTriggerCodeKey"}
TRAINING_SOURCE_PARAMETER = "TrainingSourceKey"
#: Parameters `segqa deploy` fills in itself; the user may override the image.
AUTO_PARAMETERS = ("CodeBucket", *LAMBDA_CODE_PARAMETERS.values(), TRAINING_SOURCE_PARAMETER, "TrainingImageUri")
#: Stack output -> the environment variable that `segqa job create`, `segqa store` and the portal read it from.
OUTPUT_ENV = {"StoreUri": "SEGQA_STORE", "GroundTruthRoleArn": "SEGQA_GT_ROLE_ARN",
              "PreLabelingFunctionArn": "SEGQA_GT_PRE_LAMBDA_ARN",
              "PostLabelingFunctionArn": "SEGQA_GT_CONSOLIDATION_LAMBDA_ARN",
              "ProcessingRoleArn": "SEGQA_PROCESSING_ROLE_ARN",
              "LabelingJobNamePrefix": "SEGQA_GT_JOB_PREFIX", "DataKeyOutput": "SEGQA_GT_KMS_KEY_ID"}
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation accepts inline; larger templates go through S3
TERMINAL_OK = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")
TERMINAL_FAILED = ("CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
                   "UPDATE_ROLLBACK_FAILED", "DELETE_COMPLETE", "DELETE_FAILED", "UPDATE_FAILED")


# --------------------------------------------------------------------------------------------------------
# Template


def lint_template(path: Path = TEMPLATE_PATH, regions: tuple[str, ...] = ("us-east-1",)) -> list[str]:
    """Run cfn-lint; raise SegqaError listing the errors; return warnings as ``"W1234 line N: message"``."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(Path(path).read_text(encoding="utf-8"), config=ManualArgs(regions=list(regions)))
    as_text = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]
    errors = [t for t, m in zip(as_text, matches, strict=True) if m.rule.id.startswith("E")]
    if errors:
        raise SegqaError(f"{path}: cfn-lint found {len(errors)} error(s): " + "; ".join(errors[:5]))
    return as_text


def _decode(path: Path) -> dict[str, Any]:
    from cfnlint.decode.decode import decode_str

    template, errors = decode_str(Path(path).read_text(encoding="utf-8"))
    if errors or not isinstance(template, dict):
        raise SegqaError(f"{path}: not a readable CloudFormation template")
    return template


def template_parameters(path: Path = TEMPLATE_PATH) -> dict[str, dict[str, Any]]:
    """The template's parameters: ``{name: {"Type", "Default"?, "Description", "AllowedValues"?, ...}}``."""
    return {name: dict(spec) for name, spec in (_decode(path).get("Parameters") or {}).items()}


# --------------------------------------------------------------------------------------------------------
# Artefacts


@dataclass(frozen=True)
class Artifact:
    """One object to upload: where it comes from, its S3 key, its bytes' SHA-256."""

    name: str
    key: str
    sha256: str
    size: int
    data: bytes = field(repr=False)
    content_type: str = "application/octet-stream"


def _artifact(name: str, prefix: str, suffix: str, data: bytes, content_type: str) -> Artifact:
    digest = hashlib.sha256(data).hexdigest()
    return Artifact(name, f"{prefix}-{digest[:16]}{suffix}", digest, len(data), data, content_type)


def lambda_artifacts(lambdas_dir: Path = DEFAULT_LAMBDAS_DIR) -> dict[str, Artifact]:
    """The three Lambda zips of `make lambdas`; a missing one is a SegqaError telling what to run."""
    out, missing = {}, []
    for function in LAMBDA_CODE_PARAMETERS:
        path = Path(lambdas_dir) / f"{function}.zip"
        if not path.is_file():
            missing.append(str(path))
            continue
        out[function] = _artifact(function, f"lambdas/{function}", ".zip", path.read_bytes(), "application/zip")
    if missing:
        raise SegqaError(f"Lambda zip(s) missing: {', '.join(missing)}; run `make lambdas` first "
                         "(or pass --lambdas DIR)")
    return out


def training_artifact() -> Artifact:
    """The training source bundle (``sourcedir.tar.gz``) the scheduled training jobs run."""
    return _artifact("training source", "training/sourcedir", ".tar.gz", sagemaker_launch.source_tarball_bytes(),
                     "application/gzip")


def review_template_files(directory: Path = REVIEW_TEMPLATES_DIR) -> dict[str, bytes]:
    """``{"templates/<name>.liquid.html": bytes}`` for the review templates in the source tree, includes expanded
    (`review.templates.expand_includes`: Ground Truth gets one self-contained file)."""
    from qa_workflow.review.templates import expand_includes

    return {f"templates/{p.name}": expand_includes(p.read_text(encoding="utf-8")).encode("utf-8")
            for p in sorted(Path(directory).glob("*.liquid.html"))}


def code_bucket_name(prefix: str, environment: str, account: str, region: str) -> str:
    name = f"{prefix}-{environment}-sagemaker-code-{account}-{region}"
    if len(name) > 63:
        raise SegqaError(f"code bucket name {name!r} is longer than 63 characters; use a shorter --prefix "
                         "or pass --code-bucket")
    return name


# --------------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class DeployPlan:
    stack_name: str
    region: str
    account: str | None  # None: not known (no AWS credentials in a dry run)
    code_bucket: str
    template_path: Path
    parameters: dict[str, str]  # what this deploy sets; on update the others keep their values
    artifacts: tuple[Artifact, ...]
    review_templates: dict[str, bytes] = field(repr=False)
    lint_warnings: tuple[str, ...] = ()
    stack_status: str | None = None  # the stack's current status, None if it does not exist (or unknown)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def action(self) -> str:
        if self.account is None:
            return "create or update (not checked: no AWS credentials)"
        return "update" if self.stack_status else "create"

    def describe(self) -> dict[str, Any]:
        """JSON-able view of the plan (what `--dry-run` prints)."""
        return {"stack": self.stack_name, "region": self.region, "action": self.action,
                "code_bucket": self.code_bucket,
                "uploads": [{"what": a.name, "to": f"s3://{self.code_bucket}/{a.key}", "bytes": a.size}
                            for a in self.artifacts],
                "parameters": dict(sorted(self.parameters.items())),
                "then": [f"upload {k} to the stack's data bucket" for k in self.review_templates],
                "lint_warnings": list(self.lint_warnings), "tags": self.tags}


def _account(session: Any) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return session.client("sts").get_caller_identity()["Account"]
    except (BotoCoreError, ClientError):
        return None


def _stack_status(cfn: Any, stack_name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    return stacks[0]["StackStatus"] if stacks else None


def _ecr_account(image: str) -> str | None:
    """``763104351884`` for ``763104351884.dkr.ecr.<region>.amazonaws.com/...``; None for other registries."""
    m = re.match(r"^(\d{12})\.dkr\.ecr\.", image)
    return m.group(1) if m else None


def plan_deploy(session: Any, *, prefix: str = "segqa", environment: str = "dev", stack_name: str | None = None,
                lambdas_dir: Path = DEFAULT_LAMBDAS_DIR, code_bucket: str | None = None,
                overrides: Mapping[str, str] | None = None, template_path: Path = TEMPLATE_PATH,
                lint: bool = True) -> DeployPlan:
    """Work out everything the deploy will do. Calls AWS read-only (account id, stack status) when it can;
    without credentials the plan still forms, with the account left open."""
    region = session.region_name
    if not region:
        raise SegqaError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    declared = template_parameters(template_path)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise SegqaError(f"unknown stack parameter(s) {', '.join(unknown)}; the template has: "
                         f"{', '.join(sorted(declared))}")
    fixed = {"NamePrefix": prefix, "Environment": environment}
    for key, value in fixed.items():
        if key in overrides and overrides[key] != value:
            raise SegqaError(f"set {key} with --{'prefix' if key == 'NamePrefix' else 'environment'}, "
                             "not as a parameter override")
    warnings = tuple(lint_template(template_path, regions=(region,))) if lint else ()
    lambdas = lambda_artifacts(lambdas_dir)
    training = training_artifact()
    account = _account(session)
    bucket = code_bucket or code_bucket_name(prefix, environment, account or "<account-id>", region)
    instance_type = overrides.get("TrainingInstanceType") or str(declared["TrainingInstanceType"].get("Default"))
    aws_image = sagemaker_launch.default_training_image(region, instance_type)
    image = overrides.pop("TrainingImageUri", None) or aws_image
    image_account = overrides.setdefault("TrainingImageAccount", _ecr_account(aws_image) or "")
    if _ecr_account(image) not in (None, image_account, account):
        raise SegqaError(f"training image {image}: account {_ecr_account(image)} - the training role pulls images "
                         f"only from the AWS registry ({image_account}) and this account ({account or 'unknown'}); "
                         "push the image to this account's ECR")
    parameters = {**fixed, **overrides, "CodeBucket": bucket, "TrainingImageUri": image,
                  TRAINING_SOURCE_PARAMETER: training.key,
                  **{LAMBDA_CODE_PARAMETERS[fn]: art.key for fn, art in lambdas.items()}}
    stack_name = stack_name or f"{prefix}-{environment}"
    status = _stack_status(session.client("cloudformation"), stack_name) if account else None
    return DeployPlan(stack_name=stack_name, region=region, account=account, code_bucket=bucket,
                      template_path=Path(template_path), parameters={k: str(v) for k, v in parameters.items()},
                      artifacts=(*lambdas.values(), training), review_templates=review_template_files(),
                      lint_warnings=warnings, stack_status=status,
                      tags={"project": "segqa", "environment": environment})


# --------------------------------------------------------------------------------------------------------
# Execution


@dataclass(frozen=True)
class StackEvent:
    timestamp: datetime
    logical_id: str
    resource_type: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class DeployResult:
    stack_name: str
    outcome: str  # created | updated | unchanged | cancelled
    outputs: dict[str, str]
    changes: list[dict[str, str]]
    uploaded: list[str]


EventCallback = Callable[[str, Any], None]  # (kind, payload): "upload", "changes", "event", "status"


def ensure_code_bucket(s3: Any, bucket: str, region: str) -> bool:
    """Create the private, encrypted code bucket when missing; True if it was created."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("403", "AccessDenied", "Forbidden"):
            raise SegqaError(f"code bucket {bucket} exists but is not yours or not readable; "
                             "pass --code-bucket") from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
    return True


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _parameters_for(plan: DeployPlan, cfn: Any) -> list[dict[str, Any]]:
    explicit = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(plan.parameters.items())]
    declared = template_parameters(plan.template_path)
    if not plan.stack_status:
        # A new stack gets every parameter spelled out (defaults included), so later updates keep exactly these
        # values through UsePreviousValue (moto, unlike CloudFormation, otherwise sees a default as a change).
        return explicit + [{"ParameterKey": k, "ParameterValue": str(spec["Default"])}
                           for k, spec in sorted(declared.items()) if k not in plan.parameters and "Default" in spec]
    current = cfn.describe_stacks(StackName=plan.stack_name)["Stacks"][0].get("Parameters", [])
    keep = [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True} for p in current
            if p["ParameterKey"] not in plan.parameters and p["ParameterKey"] in declared]
    return explicit + keep


def _wait_change_set(cfn: Any, stack: str, name: str, poll_s: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        desc = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        if desc["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return desc
        if time.monotonic() > deadline:
            raise SegqaError(f"change set {name} of stack {stack} not ready after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _changes(desc: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for change in desc.get("Changes", []):
        rc = change.get("ResourceChange", {})
        out.append({"action": rc.get("Action", ""), "logical_id": rc.get("LogicalResourceId", ""),
                    "type": rc.get("ResourceType", ""), "replacement": rc.get("Replacement", "")})
    return out


def _follow_stack(cfn: Any, stack: str, since: datetime, on_event: EventCallback, poll_s: float,
                  timeout_s: float) -> str:
    """Report new stack events until the stack reaches a final status; return that status."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        events = []
        for page in cfn.get_paginator("describe_stack_events").paginate(StackName=stack):
            batch = [e for e in page["StackEvents"] if e["Timestamp"] >= since]
            events.extend(batch)
            if len(batch) < len(page["StackEvents"]):
                break
        for e in sorted(events, key=lambda e: e["Timestamp"]):
            if e["EventId"] in seen:
                continue
            seen.add(e["EventId"])
            on_event("event", StackEvent(e["Timestamp"], e["LogicalResourceId"], e["ResourceType"],
                                         e["ResourceStatus"], e.get("ResourceStatusReason", "") or ""))
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return status
        if time.monotonic() > deadline:
            raise SegqaError(f"stack {stack} still {status} after {timeout_s:.0f} s; follow it in the CloudFormation "
                             "console")
        time.sleep(poll_s)


def _failure_reasons(cfn: Any, stack: str, since: datetime) -> list[str]:
    reasons = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=stack):
        for e in page["StackEvents"]:
            if e["Timestamp"] >= since and e["ResourceStatus"].endswith("_FAILED") and e.get("ResourceStatusReason"):
                reasons.append(f"{e['LogicalResourceId']}: {e['ResourceStatusReason']}")
    return list(dict.fromkeys(reversed(reasons)))  # oldest (the cause) first, no repeats


def _no_changes(message: str) -> bool:
    return "didn't contain changes" in message or "No updates are to be performed" in message


def stack_outputs(cfn: Any, stack: str) -> dict[str, str]:
    stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])} if stacks else {}


def read_outputs(session: Any, stack: str) -> dict[str, str]:
    """The outputs of an existing stack; SegqaError when it does not exist or AWS is not reachable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return stack_outputs(session.client("cloudformation"), stack)
    except ClientError as exc:
        raise SegqaError(f"stack {stack}: {exc.response.get('Error', {}).get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise SegqaError(f"cannot read stack {stack}: {exc}") from None


def env_exports(outputs: Mapping[str, str]) -> dict[str, str]:
    """``{"SEGQA_STORE": "dynamodb://...", "SEGQA_GT_ROLE_ARN": ..., ...}`` from the stack outputs."""
    return {env: outputs[key] for key, env in OUTPUT_ENV.items() if key in outputs}


def execute_deploy(plan: DeployPlan, session: Any, on_event: EventCallback = lambda kind, payload: None,
                   confirm: Callable[[list[dict[str, str]]], bool] | None = None, poll_s: float = 5.0,
                   timeout_s: float = 1800.0) -> DeployResult:
    """Carry out `plan`: code bucket, uploads, change set, execution, events, review template upload.

    ``confirm(changes)`` is asked before the change set runs; False deletes the change set (outcome
    ``cancelled``) and leaves the stack as it was.
    """
    from botocore.exceptions import ClientError, NoCredentialsError

    if plan.account is None:
        raise SegqaError("no AWS credentials: configure them (aws configure / AWS_PROFILE) or use --dry-run")
    s3 = session.client("s3")
    cfn = session.client("cloudformation")
    try:
        if plan.stack_status and plan.stack_status.endswith("_IN_PROGRESS"):
            raise SegqaError(f"stack {plan.stack_name} is {plan.stack_status}; wait until it settles")
        if plan.stack_status == "ROLLBACK_COMPLETE":
            raise SegqaError(f"stack {plan.stack_name} is ROLLBACK_COMPLETE (its first create failed) and cannot be "
                             f"updated; delete it (aws cloudformation delete-stack --stack-name {plan.stack_name}) "
                             "and deploy again")
        if ensure_code_bucket(s3, plan.code_bucket, plan.region):
            on_event("status", f"created code bucket s3://{plan.code_bucket}")
        uploaded = []
        for art in plan.artifacts:
            if _exists(s3, plan.code_bucket, art.key):
                continue
            s3.put_object(Bucket=plan.code_bucket, Key=art.key, Body=art.data, ContentType=art.content_type)
            uploaded.append(f"s3://{plan.code_bucket}/{art.key}")
            on_event("upload", uploaded[-1])

        body = plan.template_path.read_text(encoding="utf-8")
        template: dict[str, str] = {"TemplateBody": body}
        if len(body.encode("utf-8")) > TEMPLATE_BODY_LIMIT:
            key = f"cloudformation/template-{hashlib.sha256(body.encode()).hexdigest()[:16]}.yaml"
            s3.put_object(Bucket=plan.code_bucket, Key=key, Body=body.encode("utf-8"))
            template = {"TemplateURL": f"https://{plan.code_bucket}.s3.{plan.region}.amazonaws.com/{key}"}
        change_set = f"segqa-{datetime.now(UTC):%Y%m%d%H%M%S}"
        kind = "UPDATE" if plan.stack_status else "CREATE"
        try:
            cfn.create_change_set(StackName=plan.stack_name, ChangeSetName=change_set, ChangeSetType=kind,
                                  Parameters=_parameters_for(plan, cfn), Capabilities=["CAPABILITY_IAM"],
                                  Tags=[{"Key": k, "Value": v} for k, v in sorted(plan.tags.items())],
                                  Description="segqa deploy", **template)
        except ClientError as exc:
            if not _no_changes(str(exc)):
                raise
            return DeployResult(plan.stack_name, "unchanged", stack_outputs(cfn, plan.stack_name), [], uploaded)
        desc = _wait_change_set(cfn, plan.stack_name, change_set, poll_s, timeout_s)
        if desc["Status"] == "FAILED":
            reason = desc.get("StatusReason", "")
            if _no_changes(reason):
                cfn.delete_change_set(StackName=plan.stack_name, ChangeSetName=change_set)
                return DeployResult(plan.stack_name, "unchanged", stack_outputs(cfn, plan.stack_name), [], uploaded)
            raise SegqaError(f"CloudFormation refused the change set: {reason}")
        changes = _changes(desc)
        on_event("changes", changes)
        if confirm is not None and not confirm(changes):
            cfn.delete_change_set(StackName=plan.stack_name, ChangeSetName=change_set)
            if kind == "CREATE":  # a CREATE change set leaves an empty stack in REVIEW_IN_PROGRESS behind
                cfn.delete_stack(StackName=plan.stack_name)
            return DeployResult(plan.stack_name, "cancelled", {}, changes, uploaded)
        since = datetime.now(UTC).replace(microsecond=0)
        cfn.execute_change_set(StackName=plan.stack_name, ChangeSetName=change_set)
        status = _follow_stack(cfn, plan.stack_name, since, on_event, poll_s, timeout_s)
        if status not in TERMINAL_OK:
            reasons = _failure_reasons(cfn, plan.stack_name, since)
            raise SegqaError(f"stack {plan.stack_name} ended {status}: " + ("; ".join(reasons[:5]) or "see its events"))
        outputs = stack_outputs(cfn, plan.stack_name)
        data_bucket = outputs.get("DataBucketName") or cfn.describe_stack_resource(
            StackName=plan.stack_name, LogicalResourceId="DataBucket")["StackResourceDetail"]["PhysicalResourceId"]
        for key, data in plan.review_templates.items():
            s3.put_object(Bucket=data_bucket, Key=key, Body=data, ContentType="text/html; charset=utf-8")
            on_event("upload", f"s3://{data_bucket}/{key}")
        return DeployResult(plan.stack_name, "created" if kind == "CREATE" else "updated", outputs, changes, uploaded)
    except NoCredentialsError:
        raise SegqaError("no AWS credentials: configure them (aws configure / AWS_PROFILE) or use --dry-run") from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SegqaError(f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}") from None
