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


def test_create_once_creates_local_files_once(tmp_path):
    path = str(tmp_path / "claim.json")
    assert storage.create_once(path, b"first") and not storage.create_once(path, b"second")
    assert storage.read_bytes(path) == b"first"
