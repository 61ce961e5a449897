"""The retrain trigger: start U-Net and ENet retraining on SageMaker when enough new confirmations exist.

Invoked by EventBridge Scheduler (``{"source": "segqa.schedule"}``), by the EventBridge rule on
``SageMaker Ground Truth Labeling Job State Change`` (acts on ``LabelingJobStatus = Completed`` only), or by
hand (``{"force": true}`` skips the minimum). Each invocation:

1. reads the last training round's record under ``SEGQA_RETRAIN_STATE_URI`` (``round-NNNN.json``); if that
   round's jobs are still running it stops;
2. counts the *confirmed* review items in the store (``SEGQA_STORE``): items whose reviewers all accepted
   (a split counts as not confirmed, as in the analysis). It reads only the items changed since the last
   round's read (its ``items_read_at`` less `READ_OVERLAP_S`, one ``by_class_updated`` index query per class)
   and merges them into that round's ``outcomes.jsonl`` (the later read of an item wins); before the first
   round it reads every item. If fewer than ``SEGQA_MIN_NEW_CONFIRMATIONS`` items were confirmed since that
   round it stops;
3. otherwise writes what it decided on under ``round-NNNN/``: ``reviews.csv`` (the review-record CSV of the
   analysis) and ``outcomes.jsonl`` (per reviewed item and round: outcome and the predicted mask's URI, the
   input of `qa_workflow.loop.retraining.build_retraining_set`, with the item's counts for the next run), and
   starts one ``CreateTrainingJob`` per network
   in ``SEGQA_NETWORKS`` with the MXNet image ``SEGQA_TRAINING_IMAGE`` in script mode: ``sagemaker_program`` =
   the source bundle's entry script, ``sagemaker_submit_directory`` = ``SEGQA_TRAINING_SOURCE``, channels
   ``train`` / ``validation`` (segqa dataset folders) and ``reviews``;
4. records the round (``round-NNNN.json``, with ``items_read_at`` and ``outcomes_uri`` for the next run).

Idempotent: the job names are deterministic (``<SEGQA_JOB_PREFIX>-r<NNNN>-<network>``); a job that already
exists with this deployment's state URI counts as started (a retried or concurrent invocation), and the round
record is written only after every job is started, so a crash in between is finished by the next run.

The logic of the ``retrain_trigger`` Lambda (``lambdas/retrain_trigger/handler.py`` only calls `handle`).
Standard library + boto3 (imported lazily); logs are one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from qa_workflow import storage
from qa_workflow.confirmations.export import export_review_records, review_records_csv
from qa_workflow.confirmations.records import ItemRecord, ItemState
from qa_workflow.confirmations.store import open_store, store_uri_from_env
from qa_workflow.contract import (
    ACCEPT,
    NETWORKS,
    REVIEW_CLASSES,
    TRAINING_ENTRY_SCRIPT,
    TRAINING_JOB_NAME_RE,
    TRAINING_METRIC_DEFINITIONS,
    SegqaError,
    round_sort_key,
    utc_iso,
    utc_now_iso,
)

log = logging.getLogger("segqa.retrain_trigger")
log.setLevel(os.environ.get("SEGQA_LOG_LEVEL", "INFO"))

ROUND_SCHEMA = "segqa.retrain-round/1"
ACTIVE_STATUSES = ("InProgress", "Stopping")
#: A round whose jobs all ended so trained on nothing: its confirmations count again for the next round.
ENDED_UNUSED = ("Failed", "Stopped")
LABELING_JOB_DETAIL_TYPE = "SageMaker Ground Truth Labeling Job State Change"
_ROUND_FILE_RE = re.compile(r"round-(\d{4,})\.json$")
#: A round's claim older than this belongs to a run that died (the function's timeout is 2 minutes).
CLAIM_STALE_S = 15 * 60


def log_event(level: int, event: str, **fields: Any) -> None:
    """One structured log line: ``{"event": ..., **fields}``."""
    log.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=True))


# --------------------------------------------------------------------------------------------------------
# Configuration (environment variables set by cloudformation/template.yaml)


@dataclass(frozen=True)
class TriggerConfig:
    job_prefix: str
    min_new_confirmations: int
    networks: tuple[str, ...]
    training_image: str
    training_role_arn: str
    training_source_uri: str
    instance_type: str
    instance_count: int
    max_runtime_s: int
    train_data_uri: str
    validation_data_uri: str | None
    state_uri: str
    model_output_uri: str
    region: str
    volume_gb: int = 30
    kms_key_id: str | None = None  # encrypts the job output (the stack's data key)
    extra_hyperparameters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TriggerConfig:
        def need(name: str) -> str:
            value = (env.get(name) or "").strip()
            if not value:
                raise SegqaError(f"environment variable {name} is not set (the stack sets it; see docs/aws.md)")
            return value

        def integer(name: str, default: int | None = None) -> int:
            raw = (env.get(name) or "").strip()
            if not raw and default is not None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise SegqaError(f"environment variable {name}: expected an integer, got {raw!r}") from None

        networks = tuple(n.strip() for n in need("SEGQA_NETWORKS").split(",") if n.strip())
        bad = [n for n in networks if n not in NETWORKS]
        if bad or not networks:
            raise SegqaError(f"SEGQA_NETWORKS: expected a comma-separated subset of {', '.join(NETWORKS)}, "
                             f"got {env.get('SEGQA_NETWORKS')!r}")
        try:
            extra = json.loads(env.get("SEGQA_TRAINING_HYPERPARAMETERS") or "{}")
        except json.JSONDecodeError as exc:
            raise SegqaError(f"SEGQA_TRAINING_HYPERPARAMETERS: not valid JSON ({exc.msg})") from None
        if not isinstance(extra, dict):
            raise SegqaError("SEGQA_TRAINING_HYPERPARAMETERS: expected a JSON object such as {\"epochs\": 40}")
        prefix = need("SEGQA_JOB_PREFIX")
        cfg = cls(
            job_prefix=prefix,
            min_new_confirmations=integer("SEGQA_MIN_NEW_CONFIRMATIONS", 200),
            networks=networks,
            training_image=need("SEGQA_TRAINING_IMAGE"),
            training_role_arn=need("SEGQA_TRAINING_ROLE_ARN"),
            training_source_uri=need("SEGQA_TRAINING_SOURCE"),
            instance_type=need("SEGQA_TRAINING_INSTANCE_TYPE"),
            instance_count=integer("SEGQA_TRAINING_INSTANCE_COUNT", 1),
            max_runtime_s=integer("SEGQA_TRAINING_MAX_RUNTIME", 4 * 3600),
            train_data_uri=need("SEGQA_TRAIN_DATA_URI"),
            validation_data_uri=(env.get("SEGQA_VALIDATION_DATA_URI") or "").strip() or None,
            state_uri=need("SEGQA_RETRAIN_STATE_URI").rstrip("/") + "/",
            model_output_uri=need("SEGQA_MODEL_OUTPUT_URI").rstrip("/") + "/",
            region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip() or need("AWS_REGION"),
            volume_gb=integer("SEGQA_TRAINING_VOLUME_GB", 30),
            kms_key_id=(env.get("SEGQA_KMS_KEY_ID") or "").strip() or None,
            extra_hyperparameters={str(k): str(v) for k, v in extra.items()},
        )
        for name in ("training_source_uri", "train_data_uri", "validation_data_uri", "model_output_uri"):
            value = getattr(cfg, name)
            if value is not None:
                storage.require_s3(name, value, expected="s3://bucket/key")
        if cfg.min_new_confirmations < 1 or cfg.instance_count < 1:
            raise SegqaError("SEGQA_MIN_NEW_CONFIRMATIONS and SEGQA_TRAINING_INSTANCE_COUNT must be at least 1")
        training_job_name(cfg.job_prefix, 1, "unet")  # fails early on a prefix SageMaker would refuse
        return cfg


# --------------------------------------------------------------------------------------------------------
# Pure decisions


@dataclass(frozen=True)
class Trigger:
    kind: str  # schedule | labeling_job | manual
    act: bool  # False: an event this function ignores (e.g. a labeling job that failed)
    force: bool = False
    labeling_job: str | None = None
    status: str | None = None


def parse_trigger(event: Any) -> Trigger:
    """What invoked us: the schedule, a labeling-job state change (only ``Completed`` acts), or a person."""
    if not isinstance(event, Mapping):
        return Trigger("manual", act=True)
    if event.get("detail-type") == LABELING_JOB_DETAIL_TYPE:
        detail = event.get("detail") or {}
        status = detail.get("LabelingJobStatus")
        resources = event.get("resources") or []
        job = str(resources[0]).rsplit("/", 1)[-1] if resources else detail.get("LabelingJobName")
        return Trigger("labeling_job", act=status == "Completed", labeling_job=job, status=status)
    if event.get("source") == "segqa.schedule":
        return Trigger("schedule", act=True)
    return Trigger("manual", act=True, force=bool(event.get("force")))


def training_job_name(prefix: str, round_no: int, network: str) -> str:
    """``segqa-dev-r0007-unet``: deterministic per (deployment prefix, training round, network)."""
    name = f"{prefix}-r{round_no:04d}-{network}"
    if not TRAINING_JOB_NAME_RE.match(name):
        raise SegqaError(f"training job name {name!r} is not valid for SageMaker (letters, digits, '-', at most "
                         "63 characters); shorten SEGQA_JOB_PREFIX")
    return name


def decide(confirmed_total: int, last_round: Mapping[str, Any] | None, min_new: int, force: bool = False,
           last_failed: bool = False) -> tuple[bool, int, str]:
    """Whether to start a training round: ``(start, new_confirmations, reason)``.

    ``new_confirmations`` = confirmed items now minus those at the last round (all of them before the first);
    when every job of the last round failed (``last_failed``), minus those before it: its data trained nothing.
    """
    before = int(last_round["confirmed_total"]) if last_round else 0
    if last_round and last_failed:
        before -= int(last_round.get("new_confirmations") or 0)
    new = max(0, confirmed_total - before)
    if force:
        return True, new, "forced by the invocation"
    if new >= min_new:
        return True, new, f"{new} new confirmed items >= minimum {min_new}"
    return False, new, f"{new} new confirmed items < minimum {min_new}"


def _hp(value: Any) -> str:
    """Hyperparameter values are JSON-encoded, as the SageMaker framework containers decode them."""
    return json.dumps(value)


def training_job_request(cfg: TriggerConfig, round_no: int, network: str, reviews_uri: str) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request for one network in one training round (MXNet script mode)."""
    name = training_job_name(cfg.job_prefix, round_no, network)
    hp: dict[str, str] = {k: _hp(_plain(v)) for k, v in cfg.extra_hyperparameters.items()}
    hp.update({
        "network": _hp(network),
        "sagemaker_program": _hp(TRAINING_ENTRY_SCRIPT),
        "sagemaker_submit_directory": _hp(cfg.training_source_uri),
        "sagemaker_region": _hp(cfg.region),
        "sagemaker_container_log_level": _hp(logging.INFO),
        "sagemaker_job_name": _hp(name),
    })
    if cfg.instance_count > 1:
        hp.setdefault("kvstore", _hp("dist_sync"))
        hp["sagemaker_parameter_server_enabled"] = _hp(True)  # the MXNet container starts the servers
    channels = [("train", cfg.train_data_uri)]
    if cfg.validation_data_uri:
        channels.append(("validation", cfg.validation_data_uri))
    channels.append(("reviews", reviews_uri))
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": cfg.training_image, "TrainingInputMode": "File",
                                   "MetricDefinitions": [dict(m) for m in TRAINING_METRIC_DEFINITIONS]},
        "RoleArn": cfg.training_role_arn,
        "HyperParameters": dict(sorted(hp.items())),
        "InputDataConfig": [{"ChannelName": ch, "InputMode": "File",
                             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                             "S3DataDistributionType": "FullyReplicated"}}}
                            for ch, uri in channels],
        "OutputDataConfig": {"S3OutputPath": f"{cfg.model_output_uri}{network}/",
                             **({"KmsKeyId": cfg.kms_key_id} if cfg.kms_key_id else {})},
        "ResourceConfig": {"InstanceType": cfg.instance_type, "InstanceCount": cfg.instance_count,
                           "VolumeSizeInGB": cfg.volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
        "Environment": {"SEGQA_TRAINING_ROUND": str(round_no), "SEGQA_RETRAIN_STATE_URI": cfg.state_uri},
        "Tags": [{"Key": "project", "Value": "segqa"}, {"Key": "segqa:network", "Value": network},
                 {"Key": "segqa:training-round", "Value": str(round_no)}],
    }


def _plain(value: str) -> Any:
    """``"40"`` -> 40, ``"true"`` -> True, other text unchanged (so JSON encoding gives what a user means)."""
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


# --------------------------------------------------------------------------------------------------------
# State and store


#: How long before the previous round's read the next run starts reading again. A vote's ``updated_at`` is its
#: writer's clock when the transaction began, and the index lags the table: a transaction retried past the read,
#: a skewed clock or a slow index would otherwise hide a change forever. Re-reading an item is harmless (its
#: current state replaces the previous one), missing one is not.
READ_OVERLAP_S = 15 * 60
#: What one line of ``outcomes.jsonl`` carries: the outcome rows `build_retraining_set` takes, plus what the next
#: run needs to rebuild the item without reading it again (the review-record columns and ``updated_at``).
OUTCOME_FIELDS = ("item_id", "round", "outcome", "class_name", "mask_uri", "confidence", "confirm_count",
                  "disconfirm_count", "model_version", "subject", "slice_id", "batch_id", "updated_at")


class StoreSnapshot:
    """The store's reviewed items as one run sees them, offering the `iter_items` the exports use."""

    def __init__(self, states: Any) -> None:
        self.states = list(states)

    @classmethod
    def read(cls, store: Any, updated_since: str | None = None) -> StoreSnapshot:
        """One index query per review class (the trigger's role may query, never scan the table); with
        ``updated_since``, only the items changed at or after it (the ``by_class_updated`` index)."""
        if updated_since is None:
            return cls(state for c in REVIEW_CLASSES for state in store.iter_items(class_name=c.name))
        return cls(state for c in REVIEW_CLASSES
                   for state in store.iter_items(class_name=c.name, updated_since=updated_since))

    def merged_into(self, previous: StoreSnapshot) -> StoreSnapshot:
        """``previous`` with this snapshot's items replacing theirs (key: round and item id; the later read wins)."""
        by_key = {(s.item.round, s.item.item_id): s for s in previous.states}
        by_key.update({(s.item.round, s.item.item_id): s for s in self.states})
        return StoreSnapshot(sorted(by_key.values(), key=lambda s: (round_sort_key(s.item.round), s.item.item_id)))

    def iter_items(self, class_name: str | None = None, round: str | int | None = None) -> Any:
        return iter([s for s in self.states if (class_name is None or s.item.class_name == class_name)
                     and (round is None or s.item.round == str(round))])


def count_confirmed(store: Any) -> int:
    """Review items (masks) whose reviewers all accepted."""
    return sum(1 for state in store.iter_items() if state.outcome == ACCEPT)


def outcome_row(state: ItemState) -> dict[str, Any]:
    """One line of ``outcomes.jsonl`` (`OUTCOME_FIELDS`)."""
    it = state.item
    return {"item_id": it.item_id, "round": it.round, "outcome": state.outcome, "class_name": it.class_name,
            "mask_uri": it.mask_uri, "confidence": it.confidence, "confirm_count": state.confirm_count,
            "disconfirm_count": state.disconfirm_count, "model_version": it.model_version, "subject": it.subject,
            "slice_id": it.slice_id, "batch_id": it.batch_id, "updated_at": state.updated_at}


def state_from_outcome_row(row: Any) -> ItemState:
    """The item a previous run wrote as one line of ``outcomes.jsonl`` (ValueError when it is not one)."""
    if not isinstance(row, dict) or set(OUTCOME_FIELDS) - set(row):
        raise ValueError(f"expected an object with {', '.join(OUTCOME_FIELDS)}")
    counts = (row["confirm_count"], row["disconfirm_count"])
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError("confirm_count and disconfirm_count must be integers >= 0")
    item = ItemRecord(item_id=str(row["item_id"]), class_name=str(row["class_name"]),
                      confidence=float(row["confidence"]), round=str(row["round"]),
                      model_version=str(row["model_version"]), subject=str(row["subject"]),
                      slice_id=str(row["slice_id"]), batch_id=str(row["batch_id"]), mask_uri=str(row["mask_uri"]))
    return ItemState(item=item, confirm_count=counts[0], disconfirm_count=counts[1],
                     updated_at=str(row["updated_at"]))


def outcomes_jsonl(store: Any) -> str:
    """One JSON line per reviewed item and round (`OUTCOME_FIELDS`): ``item_id``, ``round``, ``outcome`` (accept |
    reject | split), ``class_name``, ``mask_uri`` - the rows `qa_workflow.loop.retraining.build_retraining_set`
    takes as outcomes, with the predicted mask each decision was about - and the item's counts and metadata, from
    which the next run rebuilds it."""
    lines = [json.dumps(outcome_row(s), sort_keys=True) for s in store.iter_items() if s.outcome is not None]
    return "".join(line + "\n" for line in lines)


def read_outcomes(uri: str) -> StoreSnapshot:
    """The items a previous run wrote to ``outcomes.jsonl`` (SegqaError naming the file and line otherwise)."""
    states = []
    for n, line in enumerate(storage.read_text(uri).splitlines(), 1):
        if not line.strip():
            continue
        try:
            states.append(state_from_outcome_row(json.loads(line)))
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise SegqaError(f"{uri}, line {n}: not an outcome row ({exc})") from None
    return StoreSnapshot(states)


def _iso_minus(moment: str, seconds: float) -> str:
    return utc_iso(datetime.fromisoformat(moment.replace("Z", "+00:00")) - timedelta(seconds=seconds),
                   "milliseconds")


def read_reviewed_items(store: Any, last: Mapping[str, Any] | None) -> tuple[StoreSnapshot, dict[str, Any]]:
    """The reviewed items as of now and how they were read: since the last round's read (its ``items_read_at``
    less `READ_OVERLAP_S`) merged into that round's ``outcomes.jsonl``, or every item (before the first round, or
    when the last round's record or outcomes cannot serve: an older record, a missing or damaged file)."""
    previous = None
    since = None
    if last and last.get("items_read_at") and last.get("outcomes_uri"):
        try:
            since = _iso_minus(str(last["items_read_at"]), READ_OVERLAP_S)
            previous = read_outcomes(str(last["outcomes_uri"]))
        except (SegqaError, ValueError) as exc:
            log_event(logging.WARNING, "full_read", round=last.get("round"), reason=str(exc))
            previous, since = None, None
    changed = StoreSnapshot.read(store, updated_since=since)
    info = {"read": "full" if previous is None else "since", "read_since": since, "items_read": len(changed.states)}
    return (changed if previous is None else changed.merged_into(previous)), info


def claim_round(reviews_prefix: str, request_id: str | None) -> bool:
    """Take the round for this run (a create-only ``claim.json``), so that two overlapping runs never write one
    round's retraining set over each other. A claim older than `CLAIM_STALE_S` (its run died before recording
    the round) is taken over."""
    uri = storage.join(reviews_prefix, "claim.json")
    now = time.time()
    mine = json.dumps({"request_id": request_id, "claimed_at": now}).encode()
    if storage.create_once(uri, mine, "application/json"):
        return True
    try:
        claimed_at = float(storage.read_json(uri).get("claimed_at", 0))
    except (SegqaError, ValueError, TypeError, AttributeError):
        claimed_at = 0.0
    if now - claimed_at < CLAIM_STALE_S:
        return False
    log_event(logging.WARNING, "stale_claim_taken_over", claim=uri, claimed_at=claimed_at, request_id=request_id)
    storage.write_bytes(uri, mine, "application/json")
    return True


def release_claim(reviews_prefix: str) -> None:
    """Mark this run's claim stale (a failed run): the next run takes the round over at once instead of waiting
    `CLAIM_STALE_S`, while the Lambda's retries are still coming. (Overwritten, not deleted: the role may put
    objects under ``retrain/`` but not delete them.)"""
    uri = storage.join(reviews_prefix, "claim.json")
    try:
        storage.write_bytes(uri, json.dumps({"released": True, "claimed_at": 0}).encode(), "application/json")
    except Exception as exc:  # the original error matters more; the claim then goes stale on its own
        log_event(logging.WARNING, "claim_not_released", claim=uri, reason=str(exc))


def _round_plan(reviews_prefix: str, store: Any, confirmed: int, new: int, read_at: str) -> dict[str, Any]:
    """The round's retraining set and what it counted, written once, before any job starts (``plan.json``,
    after ``reviews.csv`` and ``outcomes.jsonl``, the ``reviews`` channel). A run that finds a plan (an earlier
    run of the round failed or died after writing it) keeps it: a job it started trains on that channel, so the
    channel is never rewritten and the round records what the jobs saw."""
    plan_uri = storage.join(reviews_prefix, "plan.json")
    if storage.exists(plan_uri):
        plan = storage.read_json(plan_uri)
        log_event(logging.INFO, "round_plan_resumed", plan=plan_uri, confirmed_total=plan.get("confirmed_total"))
        return plan
    rows, _ = export_review_records(store)
    reviews_uri = storage.join(reviews_prefix, "reviews.csv")
    storage.write_text(reviews_uri, review_records_csv(rows), "text/csv")
    outcomes_uri = storage.join(reviews_prefix, "outcomes.jsonl")
    storage.write_text(outcomes_uri, outcomes_jsonl(store), "application/x-ndjson")
    plan = {"confirmed_total": confirmed, "new_confirmations": new, "items_read_at": read_at,
            "reviews_uri": reviews_uri, "outcomes_uri": outcomes_uri}
    storage.write_json(plan_uri, plan)
    return plan


def round_record_uri(cfg: TriggerConfig, round_no: int) -> str:
    return storage.join(cfg.state_uri, f"round-{round_no:04d}.json")


def latest_round(state_uri: str) -> dict[str, Any] | None:
    """The newest ``round-NNNN.json`` under the state prefix, or None before the first round."""
    best: tuple[int, str] | None = None
    for uri in storage.list_uris(state_uri):
        m = _ROUND_FILE_RE.search(uri)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), uri)
    if best is None:
        return None
    record = storage.read_json(best[1])
    if not isinstance(record, dict) or record.get("schema") != ROUND_SCHEMA:
        raise SegqaError(f"{best[1]}: not a {ROUND_SCHEMA} record")
    return record


def _job_status(sm: Any, name: str) -> str | None:
    try:
        return sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
    except sm.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":  # "Requested resource not found"
            return None
        raise


def start_job(sm: Any, request: Mapping[str, Any], state_uri: str) -> str:
    """Create one training job; ``"started"``, or ``"already_started"`` when this deployment made it before."""
    try:
        sm.create_training_job(**request)
        return "started"
    except sm.exceptions.ResourceInUse:
        existing = sm.describe_training_job(TrainingJobName=request["TrainingJobName"])
        if (existing.get("Environment") or {}).get("SEGQA_RETRAIN_STATE_URI") != state_uri:
            raise SegqaError(f"training job {request['TrainingJobName']} exists but was not started by this "
                             f"deployment (state {state_uri}); use another NamePrefix/Environment or restore the "
                             "round records") from None
        return "already_started"


# --------------------------------------------------------------------------------------------------------
# One invocation


def run(event: Any, cfg: TriggerConfig, store: Any, sm: Any, request_id: str | None = None) -> dict[str, Any]:
    """One trigger invocation with explicit dependencies (store, SageMaker client); returns the summary."""
    trigger = parse_trigger(event)
    base = {"request_id": request_id, "trigger": trigger.kind, "labeling_job": trigger.labeling_job}
    if not trigger.act:
        log_event(logging.INFO, "ignored", status=trigger.status, **base)
        return {"action": "ignored", "reason": f"labeling job status {trigger.status}", **base}

    last = latest_round(cfg.state_uri)
    last_failed = False
    if last:
        statuses = {net: _job_status(sm, name) for net, name in (last.get("jobs") or {}).items()}
        running = {net: status for net, status in statuses.items() if status in ACTIVE_STATUSES}
        # every job of the last round failed or was stopped: its confirmations trained nothing, so they count again
        last_failed = bool(statuses) and all(status in ENDED_UNUSED for status in statuses.values())
        if running:
            log_event(logging.INFO, "skipped", reason="previous round still training", round=last["round"],
                      running=running, **base)
            return {"action": "skipped", "reason": f"training round {last['round']} is still running",
                    "running": running, **base}

    # Taken before the queries: the next round reads from here (less the overlap), so nothing written while this
    # run reads is missed. One read of the items serves the count and both exports.
    read_at = utc_now_iso("milliseconds")
    store, read = read_reviewed_items(store, last)
    confirmed = count_confirmed(store)
    start, new, reason = decide(confirmed, last, cfg.min_new_confirmations, trigger.force, last_failed=last_failed)
    round_no = (int(last["round"]) + 1) if last else 1
    summary = {**base, "round": round_no, "confirmed_total": confirmed, "new_confirmations": new, "reason": reason,
               **read}
    if not start:
        log_event(logging.INFO, "skipped", **summary)
        return {"action": "skipped", **summary}

    # The channel is an S3 prefix: the trailing "/" keeps round-0001.json (next to the folder) out of it.
    reviews_prefix = storage.join(cfg.state_uri, f"round-{round_no:04d}") + "/"
    if not claim_round(reviews_prefix, request_id):
        summary["reason"] = f"training round {round_no} is being started by another run"
        log_event(logging.INFO, "skipped", **summary)
        return {"action": "skipped", **summary}
    # On a failure from here on the claim is released, so the Lambda's own retry (a minute later) goes on; once
    # the plan is written it finishes the round from it (the same channel, the jobs already started kept), never
    # from a newer read of the store.
    jobs, outcomes = {}, {}
    try:
        plan = _round_plan(reviews_prefix, store, confirmed, new, read_at)
        confirmed, new, read_at = plan["confirmed_total"], plan["new_confirmations"], plan["items_read_at"]
        summary.update(confirmed_total=confirmed, new_confirmations=new)
        for network in cfg.networks:
            request = training_job_request(cfg, round_no, network, reviews_prefix)
            outcomes[network] = start_job(sm, request, cfg.state_uri)
            jobs[network] = request["TrainingJobName"]
            log_event(logging.INFO, "training_job", network=network, job=jobs[network], outcome=outcomes[network],
                      **summary)
    except BaseException:
        release_claim(reviews_prefix)
        raise
    record = {"schema": ROUND_SCHEMA, "round": round_no, "confirmed_total": confirmed, "new_confirmations": new,
              "jobs": jobs, "reviews_uri": plan["reviews_uri"],
              "outcomes_uri": plan["outcomes_uri"], "items_read_at": read_at,
              "started_at": utc_now_iso(), "trigger": trigger.kind,
              "labeling_job": trigger.labeling_job, "image": cfg.training_image,
              "source": cfg.training_source_uri}
    storage.write_json(round_record_uri(cfg, round_no), record)
    log_event(logging.INFO, "round_started", jobs=jobs, outcomes=outcomes, **summary)
    return {"action": "started", "jobs": jobs, "outcomes": outcomes, **summary}


_sm_client = None


def _sagemaker() -> Any:
    global _sm_client
    if _sm_client is None:
        import boto3

        _sm_client = boto3.client("sagemaker")
    return _sm_client


def handle(event: Any, request_id: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One Lambda invocation: configuration and store from the environment, the SageMaker client of this
    process; a configuration mistake is logged as one line and raised (the invocation fails visibly)."""
    env = os.environ if environ is None else environ
    try:
        cfg = TriggerConfig.from_env(env)
        store = open_store(store_uri_from_env(dict(env)), cached=True)
        return run(event, cfg, store, _sagemaker(), request_id=request_id)
    except SegqaError as exc:
        log_event(logging.ERROR, "error", error=str(exc), request_id=request_id)
        raise
