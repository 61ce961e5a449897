"""The retrain trigger (`qa_workflow.confirmations.retrain_trigger`, the logic of the retrain_trigger Lambda): its
SageMaker requests against botocore's own service model (Stubber), the
store through moto DynamoDB, its round records on moto S3."""

from __future__ import annotations

import csv
import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from qa_workflow import storage
from qa_workflow.cloud import sagemaker as sagemaker_launch
from qa_workflow.confirmations import retrain_trigger as trigger
from qa_workflow.confirmations.dynamodb import create_table
from qa_workflow.confirmations.export import export_review_records, review_records_csv
from qa_workflow.confirmations.store import ItemRecord, Vote, open_store
from qa_workflow.contract import REVIEW_CLASSES, SegqaError

REGION = "us-east-1"
BUCKET = "segqa-test-sagemaker"
TABLE = "segqa-test-confirmations"
ROLE = "arn:aws:iam::123456789012:role/segqa-dev-TrainingRole-X"


def env(**over: str) -> dict[str, str]:
    base = {
        "SEGQA_JOB_PREFIX": "segqa-dev", "SEGQA_MIN_NEW_CONFIRMATIONS": "3", "SEGQA_NETWORKS": "unet,enet",
        "SEGQA_TRAINING_IMAGE": "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-gpu-py38",
        "SEGQA_TRAINING_ROLE_ARN": ROLE, "SEGQA_TRAINING_SOURCE": "s3://code-sagemaker/training/sourcedir-ab12.tar.gz",
        "SEGQA_TRAINING_INSTANCE_TYPE": "ml.g4dn.xlarge", "SEGQA_TRAINING_INSTANCE_COUNT": "1",
        "SEGQA_TRAINING_MAX_RUNTIME": "7200", "SEGQA_TRAIN_DATA_URI": f"s3://{BUCKET}/retrain/dataset/train/",
        "SEGQA_VALIDATION_DATA_URI": f"s3://{BUCKET}/retrain/dataset/validation/",
        "SEGQA_RETRAIN_STATE_URI": f"s3://{BUCKET}/retrain/rounds/", "SEGQA_MODEL_OUTPUT_URI": f"s3://{BUCKET}/models/",
        "SEGQA_TRAINING_HYPERPARAMETERS": '{"epochs": 40}', "AWS_REGION": REGION,
    }
    base.update(over)
    return base


@pytest.fixture
def aws():
    """moto S3 (round records) + DynamoDB (the store) + a Stubber'd SageMaker client."""
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        storage.set_s3_client(s3)
        ddb = boto3.client("dynamodb", region_name=REGION)
        create_table(TABLE, ddb)
        store = open_store(f"dynamodb://{TABLE}", client=ddb)
        sm = boto3.client("sagemaker", region_name=REGION)
        with Stubber(sm) as stub:
            try:
                yield store, sm, stub
                stub.assert_no_pending_responses()
            finally:
                storage.set_s3_client(None)


def vote(store, n_items: int, decision: str = "accept", job: str = "segqa-r1-csf", round: str = "1",
         start: int = 0) -> None:
    pairs = []
    for i in range(start, start + n_items):
        item = ItemRecord(item_id=f"sub-{i:03d}/040/csf", class_name="csf", confidence=0.8, round=round,
                          model_version="unet-v1", subject=f"sub-{i:03d}", slice_id=f"sub-{i:03d}/040",
                          mask_uri=f"s3://seg-sagemaker/pred/sub-{i:03d}/040.png")
        pairs.append((item, Vote(job=job, item_id=item.item_id, worker_id="w1", decision=decision)))
    store.record_votes(pairs)


@pytest.fixture
def expect_start(model_problems):
    def expect(stub, cfg, round_no, network):
        """Expect one CreateTrainingJob with exactly this request, after checking it against the service model
        (enums, patterns and maxima too, which the Stubber's own validation does not check)."""
        request = trigger.training_job_request(cfg, round_no, network, f"s3://{BUCKET}/retrain/rounds/round-{round_no:04d}/")
        assert model_problems("sagemaker", "CreateTrainingJob", request) == []
        stub.add_response("create_training_job",
                          {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/"
                                             f"{request['TrainingJobName']}"},
                          request)
        return request

    return expect


def describe(name: str, status: str, state_uri: str = f"s3://{BUCKET}/retrain/rounds/") -> dict:
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "TrainingJobStatus": status, "SecondaryStatus": "Training", "CreationTime": "2026-01-01T00:00:00Z",
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ModelArtifacts": {"S3ModelArtifacts": ""},
            "ResourceConfig": {"VolumeSizeInGB": 30}, "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
            "Environment": {"SEGQA_RETRAIN_STATE_URI": state_uri}}


def test_too_few_confirmations_starts_nothing(aws):
    store, sm, stub = aws
    vote(store, 2)  # 2 confirmed
    vote(store, 4, decision="reject", start=10)  # rejections never count
    out = trigger.run({"source": "segqa.schedule"}, trigger.TriggerConfig.from_env(env()), store, sm)
    assert out["action"] == "skipped" and out["confirmed_total"] == 2 and out["new_confirmations"] == 2
    assert trigger.latest_round(f"s3://{BUCKET}/retrain/rounds/") is None


def test_enough_confirmations_start_both_networks_then_wait_for_them(aws, expect_start):
    store, sm, stub = aws
    vote(store, 4)
    cfg = trigger.TriggerConfig.from_env(env())
    unet = expect_start(stub, cfg, 1, "unet")
    expect_start(stub, cfg, 1, "enet")
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm, request_id="r-1")
    assert out["action"] == "started" and out["round"] == 1
    assert out["jobs"] == {"unet": "segqa-dev-r0001-unet", "enet": "segqa-dev-r0001-enet"}
    hp = unet["HyperParameters"]
    assert json.loads(hp["network"]) == "unet" and json.loads(hp["epochs"]) == 40
    assert json.loads(hp["sagemaker_program"]) == sagemaker_launch.ENTRY_SCRIPT
    assert json.loads(hp["sagemaker_submit_directory"]) == cfg.training_source_uri
    assert "kvstore" not in hp  # one host
    assert [c["ChannelName"] for c in unet["InputDataConfig"]] == ["train", "validation", "reviews"]

    record = trigger.latest_round(cfg.state_uri)
    assert record["round"] == 1 and record["confirmed_total"] == 4 and record["jobs"] == out["jobs"]
    rows = list(csv.DictReader(io.StringIO(storage.read_text(record["reviews_uri"]))))
    assert len(rows) == 4 and {r["confirm_count"] for r in rows} == {"1"}
    outcomes = [json.loads(line) for line in
                storage.read_text(f"s3://{BUCKET}/retrain/rounds/round-0001/outcomes.jsonl").splitlines()]
    assert {o["outcome"] for o in outcomes} == {"accept"} and len(outcomes) == 4
    assert outcomes[0]["mask_uri"] == "s3://seg-sagemaker/pred/sub-000/040.png" and outcomes[0]["round"] == "1"

    # The next check, even with plenty of new confirmations, waits while round 1 trains.
    vote(store, 5, start=20)
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-unet", "InProgress"),
                      {"TrainingJobName": "segqa-dev-r0001-unet"})
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-enet", "Completed"),
                      {"TrainingJobName": "segqa-dev-r0001-enet"})
    again = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert again["action"] == "skipped" and again["running"] == {"unet": "InProgress"}

    # Once it finished, the 5 new confirmations (9 - 4) start round 2.
    for net in ("unet", "enet"):
        stub.add_response("describe_training_job", describe(f"segqa-dev-r0001-{net}", "Completed"),
                          {"TrainingJobName": f"segqa-dev-r0001-{net}"})
    expect_start(stub, cfg, 2, "unet")
    expect_start(stub, cfg, 2, "enet")
    third = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert third["action"] == "started" and third["round"] == 2 and third["new_confirmations"] == 5


def test_a_retry_after_a_crash_finishes_the_round_without_duplicates(aws, expect_start):
    store, sm, stub = aws
    vote(store, 3)
    cfg = trigger.TriggerConfig.from_env(env())
    # The first attempt started the U-Net job, then died before the record: the retry sees ResourceInUse.
    stub.add_client_error("create_training_job", service_error_code="ResourceInUse",
                          service_message="Training job names must be unique", http_status_code=400,
                          expected_params=trigger.training_job_request(cfg, 1, "unet",
                                                                       f"s3://{BUCKET}/retrain/rounds/round-0001/"))
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-unet", "InProgress"),
                      {"TrainingJobName": "segqa-dev-r0001-unet"})
    expect_start(stub, cfg, 1, "enet")
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert out["outcomes"] == {"unet": "already_started", "enet": "started"}
    assert trigger.latest_round(cfg.state_uri)["jobs"]["enet"] == "segqa-dev-r0001-enet"


def test_a_job_name_taken_by_another_deployment_is_an_error(aws):
    store, sm, stub = aws
    vote(store, 3)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    stub.add_client_error("create_training_job", service_error_code="ResourceInUse", http_status_code=400)
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-unet", "Completed", "s3://other/"),
                      {"TrainingJobName": "segqa-dev-r0001-unet"})
    with pytest.raises(SegqaError, match="not started by this deployment"):
        trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert trigger.latest_round(cfg.state_uri) is None


def test_labeling_job_events_act_only_on_completion(aws, expect_start):
    store, sm, stub = aws
    vote(store, 3)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="enet"))
    event = {"version": "0", "source": "aws.sagemaker", "detail-type": trigger.LABELING_JOB_DETAIL_TYPE,
             "resources": ["arn:aws:sagemaker:us-east-1:123456789012:labeling-job/segqa-r1-csf"],
             "detail": {"LabelingJobStatus": "Failed"}}
    assert trigger.run(event, cfg, store, sm)["action"] == "ignored"
    event["detail"]["LabelingJobStatus"] = "Completed"
    expect_start(stub, cfg, 1, "enet")
    out = trigger.run(event, cfg, store, sm)
    assert out["action"] == "started" and out["labeling_job"] == "segqa-r1-csf"


def test_force_starts_below_the_minimum_and_several_hosts_use_the_parameter_server(aws, expect_start):
    store, sm, stub = aws
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet", SEGQA_TRAINING_INSTANCE_COUNT="2"))
    request = expect_start(stub, cfg, 1, "unet")
    out = trigger.run({"force": True}, cfg, store, sm)
    assert out["action"] == "started" and out["confirmed_total"] == 0
    hp = request["HyperParameters"]
    assert json.loads(hp["kvstore"]) == "dist_sync" and json.loads(hp["sagemaker_parameter_server_enabled"]) is True
    assert request["ResourceConfig"]["InstanceCount"] == 2


def test_handle_reads_its_configuration_and_store_from_the_environment(aws, monkeypatch):
    store, sm, stub = aws
    vote(store, 1)
    monkeypatch.setattr(trigger, "_sm_client", sm)
    out = trigger.handle({"source": "segqa.schedule"}, request_id="abc", environ=env(SEGQA_STORE=f"dynamodb://{TABLE}"))
    assert out["action"] == "skipped" and out["request_id"] == "abc" and out["confirmed_total"] == 1


def test_request_carries_the_launchers_entry_script_and_metrics():
    request = trigger.training_job_request(trigger.TriggerConfig.from_env(env()), 1, "unet", "s3://b/r/")
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == sagemaker_launch.ENTRY_SCRIPT
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == list(sagemaker_launch.METRIC_DEFINITIONS)


@pytest.mark.parametrize("over, message", [
    ({"SEGQA_NETWORKS": "unet,resnet"}, "SEGQA_NETWORKS"),
    ({"SEGQA_TRAINING_IMAGE": ""}, "SEGQA_TRAINING_IMAGE is not set"),
    ({"SEGQA_TRAIN_DATA_URI": "/local/data"}, "expected s3://"),
    ({"SEGQA_TRAINING_HYPERPARAMETERS": "[1]"}, "JSON object"),
    ({"SEGQA_JOB_PREFIX": "x" * 60}, "shorten SEGQA_JOB_PREFIX"),
])
def test_configuration_mistakes_are_named(over, message):
    with pytest.raises(SegqaError, match=message):
        trigger.TriggerConfig.from_env(env(**over))


def test_decide_counts_new_confirmations_since_the_last_round():
    assert trigger.decide(10, None, 10) == (True, 10, "10 new confirmed items >= minimum 10")
    assert trigger.decide(14, {"confirmed_total": 10}, 5)[:2] == (False, 4)
    assert trigger.decide(8, {"confirmed_total": 10}, 5)[:2] == (False, 0)  # items can lose confirmation
    assert trigger.decide(8, {"confirmed_total": 10}, 5, force=True)[0] is True


def test_unknown_job_status_is_none_and_other_errors_raise():
    sm = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sm) as stub:
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found")
        assert trigger._job_status(sm, "segqa-dev-r0001-unet") is None
        stub.add_client_error("describe_training_job", "AccessDeniedException", "no")
        with pytest.raises(ClientError):
            trigger._job_status(sm, "segqa-dev-r0001-unet")


def test_one_invocation_reads_the_table_once(aws, expect_start):
    store, sm, stub = aws
    vote(store, 3)
    calls = []

    class Counting:
        def iter_items(self, *args, **kwargs):
            calls.append((args, kwargs))
            return store.iter_items(*args, **kwargs)

    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    expect_start(stub, cfg, 1, "unet")
    assert trigger.run({"source": "segqa.schedule"}, cfg, Counting(), sm)["action"] == "started"
    # One query per review class (never a table scan, which the trigger's role may not do) serves the count,
    # reviews.csv and outcomes.jsonl.
    assert sorted(kwargs["class_name"] for _, kwargs in calls) == sorted(c.name for c in REVIEW_CLASSES)


def test_a_second_run_never_overwrites_the_retraining_set_of_a_run_in_progress(aws, expect_start, monkeypatch):
    """Two overlapping runs pick the same round number: the first claims it (a create-only object), the second
    stops without touching reviews.csv / outcomes.jsonl; a claim left by a crashed run is taken over later."""
    store, sm, stub = aws
    vote(store, 4)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    claim = f"s3://{BUCKET}/retrain/rounds/round-0001/claim.json"
    assert storage.create_once(claim, b'{"request_id": "other", "claimed_at": 1000.0}')
    monkeypatch.setattr(trigger.time, "time", lambda: 1000.0 + 60)
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm, request_id="second")
    assert out["action"] == "skipped" and "another run" in out["reason"]
    assert not storage.exists(f"s3://{BUCKET}/retrain/rounds/round-0001/reviews.csv")
    assert not storage.create_once(claim, b"{}")  # create-only: the first claim stays

    monkeypatch.setattr(trigger.time, "time", lambda: 1000.0 + trigger.CLAIM_STALE_S + 1)
    expect_start(stub, cfg, 1, "unet")
    assert trigger.run({"source": "segqa.schedule"}, cfg, store, sm, request_id="later")["action"] == "started"
    assert storage.exists(f"s3://{BUCKET}/retrain/rounds/round-0001/reviews.csv")


def _clock(monkeypatch):
    """Set the store's clock (``updated_at`` of the votes) and the trigger's (its read time) by hand."""
    from qa_workflow.confirmations import dynamodb as dynamo_engine

    def at(store_time: str, trigger_time: str) -> None:
        monkeypatch.setattr(dynamo_engine, "utc_now_iso", lambda timespec="seconds": store_time)
        monkeypatch.setattr(trigger, "utc_now_iso", lambda timespec="seconds": trigger_time)

    return at


def _spy(store):
    """Items each DynamoDB Query of the store's client returned, and the Scans it made."""
    seen = {"query_items": 0, "queries": 0, "scans": 0}

    def after_query(parsed, **_):
        seen["queries"] += 1
        seen["query_items"] += len(parsed.get("Items", []))

    def before_scan(**_):
        seen["scans"] += 1

    store.client.meta.events.register("after-call.dynamodb.Query", after_query)
    store.client.meta.events.register("before-call.dynamodb.Scan", before_scan)
    return seen


def _round_files(round_no: int) -> tuple[list[dict], str]:
    folder = f"s3://{BUCKET}/retrain/rounds/round-{round_no:04d}/"
    outcomes = [json.loads(line) for line in storage.read_text(folder + "outcomes.jsonl").splitlines()]
    return outcomes, storage.read_text(folder + "reviews.csv")


def _completed(stub, round_no: int, networks=("unet",)) -> None:
    for net in networks:
        name = f"segqa-dev-r{round_no:04d}-{net}"
        stub.add_response("describe_training_job", describe(name, "Completed"), {"TrainingJobName": name})


def _first_round_started(aws, expect_start, monkeypatch, confirmations: int = 4):
    """Round 1 of a unet-only trigger started at 09:00 over ``confirmations`` confirmed items voted at 08:00;
    returns (store, sagemaker client, stub, clock setter, config)."""
    store, sm, stub = aws
    at = _clock(monkeypatch)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    at("2026-03-01T08:00:00.000Z", "2026-03-01T09:00:00.000Z")
    vote(store, confirmations)
    expect_start(stub, cfg, 1, "unet")
    assert trigger.run({"source": "segqa.schedule"}, cfg, store, sm)["action"] == "started"
    return store, sm, stub, at, cfg


def test_a_second_run_reads_only_what_changed_and_writes_what_a_full_read_would(aws, expect_start, monkeypatch):
    store, sm, stub = aws
    at = _clock(monkeypatch)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    at("2026-03-01T08:00:00.000Z", "2026-03-01T09:00:00.000Z")
    vote(store, 6)
    vote(store, 2, decision="reject", start=50)
    spy = _spy(store)
    expect_start(stub, cfg, 1, "unet")
    first = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert first["action"] == "started" and first["read"] == "full" and first["items_read"] == 8
    assert spy["query_items"] == 8 and spy["scans"] == 0
    record = trigger.latest_round(cfg.state_uri)
    assert record["items_read_at"] == "2026-03-01T09:00:00.000Z"
    assert record["outcomes_uri"] == f"s3://{BUCKET}/retrain/rounds/round-0001/outcomes.jsonl"

    # An hour later: 3 new confirmations, one confirmed item disputed (accept -> split), one in a new round.
    at("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z")
    vote(store, 3, start=20)
    vote(store, 1, decision="reject", job="segqa-r1-csf-b", start=0)
    vote(store, 1, round="2", job="segqa-r2-csf", start=0)
    spy.update(query_items=0, queries=0)
    _completed(stub, 1)
    expect_start(stub, cfg, 2, "unet")
    second = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert second["action"] == "started" and second["read"] == "since"
    assert second["read_since"] == "2026-03-01T08:45:00.000Z"  # the first run's read less the overlap
    assert second["items_read"] == spy["query_items"] == 5 and spy["scans"] == 0
    assert spy["queries"] == len(REVIEW_CLASSES)
    assert second["confirmed_total"] == 6 + 3 - 1 + 1 and second["new_confirmations"] == 3

    # The merged files are exactly what a full read of the store gives.
    full = trigger.StoreSnapshot.read(store)
    outcomes, reviews = _round_files(2)
    assert outcomes == [json.loads(line) for line in trigger.outcomes_jsonl(full).splitlines()]
    assert reviews == review_records_csv(export_review_records(full)[0])
    disputed = [o for o in outcomes if o["item_id"] == "sub-000/040/csf"]
    assert [(o["round"], o["outcome"]) for o in disputed] == [("1", "split"), ("2", "accept")]
    assert len(outcomes) == 8 + 3 + 1


def test_a_run_with_nothing_new_reads_nothing_and_starts_nothing(aws, expect_start, monkeypatch):
    store, sm, stub, at, cfg = _first_round_started(aws, expect_start, monkeypatch)
    at("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z")
    spy = _spy(store)
    _completed(stub, 1)
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert out["action"] == "skipped" and out["new_confirmations"] == 0 and out["confirmed_total"] == 4
    assert out["items_read"] == spy["query_items"] == 0 and spy["scans"] == 0
    assert trigger.latest_round(cfg.state_uri)["round"] == 1
    assert not storage.exists(f"s3://{BUCKET}/retrain/rounds/round-0002/claim.json")


def test_a_damaged_previous_outcomes_file_falls_back_to_a_full_read(aws, expect_start, monkeypatch):
    store, sm, stub, at, cfg = _first_round_started(aws, expect_start, monkeypatch)
    storage.write_text(f"s3://{BUCKET}/retrain/rounds/round-0001/outcomes.jsonl", '{"item_id": "x"}\n')
    at("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z")
    vote(store, 3, start=20)
    _completed(stub, 1)
    expect_start(stub, cfg, 2, "unet")
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)
    assert out["read"] == "full" and out["items_read"] == 7 and out["new_confirmations"] == 3
    outcomes, _ = _round_files(2)
    assert len(outcomes) == 7


def test_outcome_rows_round_trip():
    item = ItemRecord(item_id="sub-001/040/csf", class_name="csf", confidence=0.25, round="3",
                      model_version="unet-v2", subject="sub-001", slice_id="sub-001/040", batch_id="b-3",
                      mask_uri="s3://x/040.png")
    state = trigger.ItemState(item=item, confirm_count=2, disconfirm_count=1, updated_at="2026-03-01T08:00:00.000Z")
    row = json.loads(json.dumps(trigger.outcome_row(state)))
    assert row["outcome"] == "split" and set(row) == set(trigger.OUTCOME_FIELDS)
    assert trigger.state_from_outcome_row(row) == state
    with pytest.raises(ValueError, match="integers"):
        trigger.state_from_outcome_row({**row, "confirm_count": -1})


def test_create_once_creates_local_files_once(tmp_path):
    path = str(tmp_path / "claim.json")
    assert storage.create_once(path, b"first") and not storage.create_once(path, b"second")
    assert storage.read_bytes(path) == b"first"


def test_a_run_that_fails_after_starting_a_job_is_finished_by_the_retry_from_its_plan(aws, expect_start):
    """U-Net started, then the ENet's CreateTrainingJob failed (a quota): the claim is released so the Lambda's
    retry a minute later finishes the round, with the channel the U-Net job trains on left as it was, although
    more confirmations arrived in between; the round records what the jobs saw."""
    store, sm, stub = aws
    vote(store, 4)
    cfg = trigger.TriggerConfig.from_env(env())
    unet = expect_start(stub, cfg, 1, "unet")
    enet = trigger.training_job_request(cfg, 1, "enet", f"s3://{BUCKET}/retrain/rounds/round-0001/")
    stub.add_client_error("create_training_job", service_error_code="ResourceLimitExceeded",
                          service_message="quota", http_status_code=400, expected_params=enet)
    with pytest.raises(Exception, match="quota"):
        trigger.run({"source": "segqa.schedule"}, cfg, store, sm, request_id="first")
    assert trigger.latest_round(cfg.state_uri) is None
    channel = storage.read_text(f"s3://{BUCKET}/retrain/rounds/round-0001/reviews.csv")

    vote(store, 6, start=30)  # new confirmations before the retry: they belong to the next round
    stub.add_client_error("create_training_job", service_error_code="ResourceInUse",
                          service_message="Training job names must be unique", http_status_code=400,
                          expected_params=unet)
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-unet", "InProgress"),
                      {"TrainingJobName": "segqa-dev-r0001-unet"})
    expect_start(stub, cfg, 1, "enet")
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm, request_id="retry")
    assert out["action"] == "started" and out["outcomes"] == {"unet": "already_started", "enet": "started"}
    assert storage.read_text(f"s3://{BUCKET}/retrain/rounds/round-0001/reviews.csv") == channel
    assert trigger.latest_round(cfg.state_uri)["confirmed_total"] == 4 == out["confirmed_total"]


def test_the_confirmations_of_a_round_whose_jobs_all_failed_count_again(aws, expect_start):
    store, sm, stub = aws
    vote(store, 4)
    cfg = trigger.TriggerConfig.from_env(env(SEGQA_NETWORKS="unet"))
    expect_start(stub, cfg, 1, "unet")
    assert trigger.run({"source": "segqa.schedule"}, cfg, store, sm)["action"] == "started"
    stub.add_response("describe_training_job", describe("segqa-dev-r0001-unet", "Failed"),
                      {"TrainingJobName": "segqa-dev-r0001-unet"})
    expect_start(stub, cfg, 2, "unet")
    out = trigger.run({"source": "segqa.schedule"}, cfg, store, sm)  # nothing new, but round 1 trained nothing
    assert out["action"] == "started" and out["round"] == 2 and out["new_confirmations"] == 4
    assert trigger.decide(4, {"confirmed_total": 4, "new_confirmations": 4}, 3) == (
        False, 0, "0 new confirmed items < minimum 3")


def test_training_job_names_are_at_most_63_characters():
    assert len(trigger.training_job_name("a" * 52, 1, "unet")) == 63
    with pytest.raises(SegqaError, match="at most 63 characters"):
        trigger.training_job_name("a-" * 29 + "a", 1, "unet")  # hyphens count too
