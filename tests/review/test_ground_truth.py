"""The Ground Truth job client: requests botocore accepts, create once, status and sync, names."""

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber

from qa_workflow import storage
from qa_workflow.cli import main
from qa_workflow.contract import SegqaError
from qa_workflow.review.ground_truth import (
    ADJUST_TEMPLATE,
    JobSettings,
    build_create_request,
    check_job_name,
    check_label_attribute_name,
    check_request,
    create_adjust_job,
    create_job,
    describe_job,
    job_name_default,
    summarize_status,
    sync_job,
    validate_against_service_model,
)
from qa_workflow.rounds.batching import write_batches
from qa_workflow.rounds.predict import run_predictions
from qa_workflow.rounds.round_dir import select_round
from qa_workflow.rounds.selection import SelectionPolicy

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/segqa-dev-GroundTruthExecutionRole"
TEAM = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/private-crowd/segqa-reviewers"
PRE = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:segqa-dev-SageMaker-PreLabeling"
POST = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:segqa-dev-SageMaker-PostLabeling"


@pytest.fixture
def s3_round(tmp_path, s3_bucket, intensity_predictor, tiny_dataset):
    """A round batched to the moto bucket; yields (round_dir, dest, template path)."""
    data = tiny_dataset(tmp_path / "data", subjects=2, slices=3)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    round_dir = str(tmp_path / "r01")
    select_round(str(tmp_path / "pred"), round_dir, SelectionPolicy(budget=6))
    dest = f"s3://{s3_bucket}/review/r01"
    write_batches(round_dir, dest, batch_size=25, workers=2)
    template = tmp_path / "mask_review.liquid.html"
    template.write_text("<crowd-form>{{ task.input.batch_id }}</crowd-form>")
    return round_dir, dest, template


def settings(template, **kw):
    return JobSettings(role_arn=ROLE, workteam_arn=TEAM, pre_lambda_arn=PRE, consolidation_lambda_arn=POST,
                       template_path=str(template), **kw)


def sagemaker():
    return boto3.client("sagemaker", region_name="us-east-1")


def test_dry_run_prints_a_request_that_botocore_accepts(s3_round, capsys):
    round_dir, dest, template = s3_round
    code = main(["job", "create", "--round", round_dir, "--role-arn", ROLE, "--workteam-arn", TEAM,
                 "--pre-lambda-arn", PRE, "--consolidation-lambda-arn", POST, "--template", str(template),
                 "--tag", "project=brain-qa", "--dry-run"])
    assert code == 0
    captured = capsys.readouterr()
    request = json.loads(captured.out)
    assert request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] == f"{dest}/manifest.jsonl"
    assert request["OutputConfig"]["S3OutputPath"] == f"{dest}/gt-output"
    human = request["HumanTaskConfig"]
    assert human["NumberOfHumanWorkersPerDataObject"] == 3
    assert human["UiConfig"]["UiTemplateS3Uri"].startswith(f"{dest}/gt-output/templates/mask_review-")
    assert human["PreHumanTaskLambdaArn"] == PRE
    assert human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"] == POST
    assert {"Key": "project", "Value": "brain-qa"} in request["Tags"]
    assert request["LabelingJobName"].startswith("segqa-r01-") and len(request["LabelingJobName"]) <= 63
    assert "warning" not in captured.err  # our names follow the managed-policy conventions
    validate_against_service_model("CreateLabelingJob", request)
    # and botocore's own stubbed client accepts exactly this request
    client = sagemaker()
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job",
                          {"LabelingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/x"}, request)
        client.create_labeling_job(**request)
        stub.assert_no_pending_responses()
    assert not storage.exists(human["UiConfig"]["UiTemplateS3Uri"]), "a dry run uploads nothing"


def test_create_uploads_the_template_records_the_job_and_is_not_repeated(s3_round):
    round_dir, dest, template = s3_round
    client = sagemaker()
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/segqa-r01"
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": arn})
        request, warnings, record = create_job(client, round_dir, settings(template, workers_per_object=5))
        stub.assert_no_pending_responses()
        # the second call finds job/job.json and makes no API call (the stubber would fail on one)
        _, warnings2, record2 = create_job(client, round_dir, settings(template, workers_per_object=5))
    assert record["LabelingJobArn"] == arn and record2["LabelingJobArn"] == arn
    assert any("already created" in w for w in warnings2)
    uploaded = storage.read_text(request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"])
    assert uploaded == template.read_text()
    assert json.load(open(f"{round_dir}/job/request.json"))["HumanTaskConfig"][
        "NumberOfHumanWorkersPerDataObject"] == 5


def test_status_and_sync_download_output_manifest_and_worker_responses(s3_round, s3_bucket):
    round_dir, dest, template = s3_round
    client = sagemaker()
    name = "segqa-r01-job"
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                    f"labeling-job/{name}"})
        create_job(client, round_dir, settings(template, job_name=name))
    out = f"{dest}/gt-output/{name}"
    storage.write_text(f"{out}/manifests/output/output.manifest", '{"source-ref": "x"}\n')
    storage.write_text(f"{out}/annotations/worker-response/iteration-1/0/2026-01-01_00:00:00.json", "{}")
    storage.write_text(f"{out}/annotations/worker-response/iteration-1/1/2026-01-01_00:00:01.json", "{}")
    describe = {
        "LabelingJobStatus": "Completed",
        "LabelCounters": {"TotalLabeled": 2, "HumanLabeled": 2, "MachineLabeled": 0,
                          "FailedNonRetryableError": 0, "Unlabeled": 0},
        "CreationTime": dt.datetime(2026, 1, 1), "LastModifiedTime": dt.datetime(2026, 1, 2),
        "JobReferenceCode": "ref", "LabelingJobName": name,
        "LabelingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/{name}",
        "LabelAttributeName": "segqa-review",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"{dest}/manifest.jsonl"}}},
        "OutputConfig": {"S3OutputPath": f"{dest}/gt-output"}, "RoleArn": ROLE,
        "HumanTaskConfig": {"WorkteamArn": TEAM, "UiConfig": {"UiTemplateS3Uri": f"{dest}/t.html"},
                            "PreHumanTaskLambdaArn": PRE, "TaskTitle": "t", "TaskDescription": "d",
                            "NumberOfHumanWorkersPerDataObject": 3, "TaskTimeLimitInSeconds": 3600,
                            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": POST}},
        "LabelingJobOutput": {"OutputDatasetS3Uri": f"{out}/manifests/output/output.manifest"},
    }
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("describe_labeling_job", describe, {"LabelingJobName": name})
        status = summarize_status(describe_job(client, round_dir))
        first = sync_job(client, round_dir)
        second = sync_job(client, round_dir)
        stub.assert_no_pending_responses()
    assert (status["status"], status["labeled"], status["total"]) == ("Completed", 2, 2)
    assert first["downloaded"] == 3 and first["files"] == 3
    assert second["downloaded"] == 1 and second["skipped"] == 2  # manifests refresh, responses are kept
    local = f"{round_dir}/job/output"
    assert open(f"{local}/manifests/output/output.manifest").read() == '{"source-ref": "x"}\n'
    assert first["output_manifest"] == f"{local}/manifests/output/output.manifest"
    assert json.load(open(f"{round_dir}/job/status.json"))["LabelingJobStatus"] == "Completed"


ROUND_INPUTS = {"round": "r01", "batches_fingerprint": "ab" * 32, "model_version": "enet-1",
                "dest": "s3://my-data/review/r01", "manifest": "s3://my-data/review/r01/manifest.jsonl"}


def test_managed_policy_conventions_are_warned_about():
    s = JobSettings(role_arn=ROLE, workteam_arn=f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/public-crowd/default",
                    pre_lambda_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:pre-label",
                    consolidation_lambda_arn=POST, output_s3="s3://my-output/gt")
    request = build_create_request(s, ROUND_INPUTS, "s3://my-output/t.html")
    warnings = check_request(request, [f"{ROUND_INPUTS['dest']}/batches/b.json"], allow_public_workforce=True)
    text = "\n".join(warnings)
    assert "pre-label" in text and "SageMaker" in text
    assert "segqa-dev-SageMaker-PostLabeling" not in text
    assert "'my-data'" in text and "'my-output'" in text
    assert "--price-usd" in text
    validate_against_service_model("CreateLabelingJob", request)  # legal, only unwise


def test_a_public_workforce_is_refused_unless_the_operator_allows_it():
    public = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/public-crowd/default"
    s = JobSettings(role_arn=ROLE, workteam_arn=public, pre_lambda_arn=PRE, consolidation_lambda_arn=POST,
                    output_s3="s3://my-data-sagemaker/gt", price_usd=0.12)
    request = build_create_request(s, ROUND_INPUTS, "s3://my-data-sagemaker/t.html")
    with pytest.raises(SegqaError, match="PUBLIC.*--allow-public-workforce"):
        check_request(request)
    assert any("PUBLIC" in w for w in check_request(request, allow_public_workforce=True))


def test_job_names_start_with_the_stacks_prefix_so_its_completion_rule_sees_them():
    assert job_name_default("r01", "ab" * 32) == "segqa-r01-abababab"
    assert job_name_default("r01", "ab" * 32, prefix="segqa-dev") == "segqa-dev-r01-abababab"
    s = JobSettings(role_arn=ROLE, workteam_arn=TEAM, pre_lambda_arn=PRE, consolidation_lambda_arn=POST,
                    job_name_prefix="segqa-prod")
    assert build_create_request(s, ROUND_INPUTS, "s3://my-data/t.html")["LabelingJobName"].startswith("segqa-prod-r01-")


def test_name_rules():
    assert check_job_name("segqa-r01-1a2b3c4d") == "segqa-r01-1a2b3c4d"
    for bad in ("-lead", "trail-", "under_score", "a" * 64, "dots.no", ""):
        with pytest.raises(SegqaError, match="LabelingJobName"):
            check_job_name(bad)
    with pytest.raises(SegqaError, match="-metadata"):
        check_label_attribute_name("segqa-review-metadata")
    with pytest.raises(SegqaError, match="label attribute"):
        check_label_attribute_name("segqa_review")
    with pytest.raises(SegqaError, match="reads the manifest"):
        build_create_request(settings("t"), {**ROUND_INPUTS, "manifest": "/tmp/r01/manifest.jsonl"}, "s3://b/t")
    with pytest.raises(SegqaError, match="--workers"):
        build_create_request(settings("t", workers_per_object=12), ROUND_INPUTS, "s3://b/t")


def test_service_model_check_catches_what_botocore_skips():
    request = build_create_request(settings("t"), ROUND_INPUTS, "s3://b/t")
    request["LabelingJobName"] = "bad_name"
    request["HumanTaskConfig"]["TaskKeywords"] = ["ok", "two  spaces"]
    request["Tags"] = [{"Key": "k", "Value": "v"}] * 51
    with pytest.raises(SegqaError) as err:
        validate_against_service_model("CreateLabelingJob", request)
    msg = str(err.value)
    assert "LabelingJobName" in msg and "TaskKeywords[1]" in msg and "51 entries" in msg
    with pytest.raises(SegqaError, match="Missing required parameter"):
        validate_against_service_model("CreateLabelingJob", {"LabelingJobName": "x"})


def test_create_needs_a_batched_round(tmp_path, intensity_predictor, tiny_dataset):
    data = tiny_dataset(tmp_path / "data", subjects=1, slices=2)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    select_round(str(tmp_path / "pred"), str(tmp_path / "r"), SelectionPolicy(budget=2))
    with pytest.raises(SegqaError, match="no batches yet"):
        create_job(None, str(tmp_path / "r"), settings("t"), dry_run=True)
    write_batches(str(tmp_path / "r"))
    with pytest.raises(SegqaError, match="from S3"):
        create_job(None, str(tmp_path / "r"), settings(__file__), dry_run=True)


def test_status_command_prints_progress(s3_round, monkeypatch, capsys):
    round_dir, dest, template = s3_round
    client = sagemaker()
    monkeypatch.setattr("qa_workflow.cli.rounds._sagemaker_client", lambda region: client)
    name = "segqa-r01-status"
    response = {
        "LabelingJobStatus": "InProgress",
        "LabelCounters": {"TotalLabeled": 3, "HumanLabeled": 3, "MachineLabeled": 0,
                          "FailedNonRetryableError": 1, "Unlabeled": 4},
        "CreationTime": dt.datetime(2026, 1, 1), "LastModifiedTime": dt.datetime(2026, 1, 2),
        "JobReferenceCode": "ref", "LabelingJobName": name, "LabelingJobArn": f"arn:aws:sagemaker:us-east-1:"
        f"{ACCOUNT}:labeling-job/{name}", "LabelAttributeName": "segqa-review",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"{dest}/manifest.jsonl"}}},
        "OutputConfig": {"S3OutputPath": f"{dest}/gt-output"}, "RoleArn": ROLE,
        "HumanTaskConfig": {"WorkteamArn": TEAM, "UiConfig": {"UiTemplateS3Uri": f"{dest}/t.html"},
                            "TaskTitle": "t", "TaskDescription": "d", "NumberOfHumanWorkersPerDataObject": 3,
                            "TaskTimeLimitInSeconds": 3600},
    }
    with Stubber(client) as stub:
        stub.add_response("describe_labeling_job", response, {"LabelingJobName": name})
        assert main(["job", "status", "--round", round_dir, "--job-name", name]) == 0
    err = capsys.readouterr().err
    assert "InProgress" in err and "3/8 batches labeled (38 %)" in err and "1 failed" in err
    assert main(["job", "status", "--round", round_dir]) == 2  # no job recorded and no --job-name
    assert "no labeling job recorded" in capsys.readouterr().err


def test_a_verify_job_chains_to_an_adjust_job_with_its_own_label_attribute(s3_round, tmp_path, capsys,
                                                                           model_problems):
    from qa_workflow.confirmations.records import ItemRecord, Vote
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.contract import validate_task
    from qa_workflow.rounds.batching import read_manifest
    from qa_workflow.rounds.round_dir import read_assignments

    round_dir, dest, review_template = s3_round
    verify = create_job(None, round_dir, settings(review_template, job_name="segqa-r01-verify"), dry_run=True)[0]
    reviewed = read_assignments(round_dir).query("assignment == 'verify'").sort_values("item_id").head(3)
    store_uri = f"sqlite:///{tmp_path}/votes.db"
    store = open_store(store_uri)
    store.record_votes([(ItemRecord(r.item_id, r.class_name, 0.5, "r01"), Vote("segqa-r01-verify", r.item_id, "w1", d))
                        for r, d in zip(reviewed.itertuples(), ["reject", "accept", "reject"], strict=True)])
    base = ["job", "create", "--round", round_dir, "--role-arn", ROLE, "--workteam-arn", TEAM, "--pre-lambda-arn",
            PRE, "--consolidation-lambda-arn", POST, "--kind", "adjust", "--from-job", "segqa-r01-verify",
            "--store", store_uri]
    assert main([*base, "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert model_problems("sagemaker", "CreateLabelingJob", request) == []
    assert request["LabelAttributeName"] == "segqa-adjust" != verify["LabelAttributeName"]
    assert request["LabelingJobName"].startswith("segqa-r01-adjust-")
    assert main([*base, "--dry-run", "--job-name-prefix", "segqa-prod"]) == 0
    assert json.loads(capsys.readouterr().out)["LabelingJobName"].startswith("segqa-prod-r01-adjust-")
    assert "/templates/mask_adjust-" in request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]
    assert {"Key": "segqa:from-job", "Value": "segqa-r01-verify"} in request["Tags"]
    manifest = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert manifest == f"{dest}/adjust/segqa-r01-verify/manifest.jsonl"
    tasks = [validate_task(storage.read_json(ref)) for ref in read_manifest(manifest)]
    rejected = sorted(reviewed["item_id"].iloc[[0, 2]])
    assert sorted(i for t in tasks for i in t["item_ids"]) == rejected

    client = sagemaker()
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/{request['LabelingJobName']}"
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": arn}, request)
        _, _, record = create_adjust_job(client, round_dir, settings(ADJUST_TEMPLATE), "segqa-r01-verify", rejected)
    assert record["LabelingJobArn"] == arn and record["kind"] == "adjust" and record["slices"] == len(tasks)
    assert storage.exists(request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"])
    assert storage.read_json(f"{round_dir}/job/adjust-segqa-r01-verify.json")["LabelAttributeName"] == "segqa-adjust"


def test_the_masks_routed_to_adjust_get_their_own_adjust_job(s3_round, capsys, model_problems):
    from qa_workflow.contract import validate_task
    from qa_workflow.rounds.batching import read_manifest
    from qa_workflow.rounds.round_dir import read_assignments

    round_dir, dest, _ = s3_round
    base = ["job", "create", "--round", round_dir, "--role-arn", ROLE, "--workteam-arn", TEAM, "--pre-lambda-arn",
            PRE, "--consolidation-lambda-arn", POST, "--kind", "adjust", "--dry-run"]
    assert main(base) == 2  # a cold-start round routes nothing to adjust
    assert "no items routed to adjust" in capsys.readouterr().err
    frame = read_assignments(round_dir)
    routed = sorted(frame.query("assignment == 'verify'")["item_id"].head(3))
    frame.loc[frame["item_id"].isin(routed), "assignment"] = "adjust"
    frame.to_csv(storage.join(round_dir, "assignments.csv"), index=False)
    assert main(base) == 0
    request = json.loads(capsys.readouterr().out)
    assert model_problems("sagemaker", "CreateLabelingJob", request) == []
    assert request["LabelAttributeName"] == "segqa-adjust"
    assert not any(t["Key"] == "segqa:from-job" for t in request["Tags"])
    manifest = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert manifest == f"{dest}/adjust/routed/manifest.jsonl"
    tasks = [validate_task(storage.read_json(ref)) for ref in read_manifest(manifest)]
    assert sorted(i for t in tasks for i in t["item_ids"]) == routed
    assert all(t["origin"] == "routed" for t in tasks)


def test_split_masks_of_a_verify_job_get_an_escalation_job_and_its_votes_reach_the_chained_adjust_job(
        s3_round, tmp_path, capsys, model_problems):
    from qa_workflow.confirmations.records import ItemRecord, Vote
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.contract import validate_batch
    from qa_workflow.review.ground_truth import DEFAULT_TEMPLATE, create_escalation_job
    from qa_workflow.rounds.batching import read_manifest
    from qa_workflow.rounds.round_dir import read_assignments

    round_dir, dest, _ = s3_round
    rows = list(read_assignments(round_dir).query("assignment == 'verify'").sort_values("item_id").head(3)
                .itertuples())
    store_uri = f"sqlite:///{tmp_path}/votes.db"
    store = open_store(store_uri)
    first = [["accept", "accept", "reject"], ["reject", "accept", "reject"], ["accept"] * 3]
    store.record_votes([(ItemRecord(r.item_id, r.class_name, 0.5, "r01"),
                         Vote("segqa-r01-verify", r.item_id, f"w{k}", d))
                        for r, ds in zip(rows, first, strict=True) for k, d in enumerate(ds)])
    base = ["job", "create", "--round", round_dir, "--role-arn", ROLE, "--workteam-arn", TEAM, "--pre-lambda-arn",
            PRE, "--consolidation-lambda-arn", POST, "--from-job", "segqa-r01-verify", "--store", store_uri,
            "--workers", "2", "--dry-run"]
    assert main(base) == 0
    out = capsys.readouterr()
    request = json.loads(out.out)
    assert "2 split items" in out.err
    assert model_problems("sagemaker", "CreateLabelingJob", request) == []
    assert request["LabelingJobName"].startswith("segqa-r01-escalate-")
    assert request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 2
    # a stack's prefix names the chained jobs too: its labeling-job-completed rule matches on it
    assert main([*base, "--job-name-prefix", "segqa-prod"]) == 0
    prefixed = json.loads(capsys.readouterr().out)["LabelingJobName"]
    assert prefixed.startswith("segqa-prod-r01-escalate-") and prefixed[-8:] == request["LabelingJobName"][-8:]
    assert {"Key": "segqa:kind", "Value": "escalation"} in request["Tags"]
    manifest = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert manifest == f"{dest}/escalate/segqa-r01-verify/manifest.jsonl"
    batches = [validate_batch(storage.read_json(ref)) for ref in read_manifest(manifest)]
    assert sorted(i["item_id"] for b in batches for i in b["items"]) == [rows[0].item_id, rows[1].item_id]

    client = sagemaker()
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/{request['LabelingJobName']}"
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": arn}, request)
        _, _, record = create_escalation_job(client, round_dir, settings(DEFAULT_TEMPLATE, workers_per_object=2),
                                             "segqa-r01-verify", [rows[0].item_id, rows[1].item_id])
    assert record["kind"] == "escalation" and record["items"] == 2
    assert storage.read_json(f"{round_dir}/job/escalate-segqa-r01-verify.json")["LabelingJobArn"] == arn

    # the second opinion: two more accepts make the first mask 4-1 (accepted), two rejects the second 1-4
    store.record_votes([(ItemRecord(r.item_id, r.class_name, 0.5, "r01"), Vote("segqa-r01-escalate", r.item_id,
                                                                              f"senior{k}", d))
                        for r, d in ((rows[0], "accept"), (rows[1], "reject")) for k in range(2)])
    adjust = ["job", "create", "--round", round_dir, "--role-arn", ROLE, "--workteam-arn", TEAM, "--pre-lambda-arn",
              PRE, "--consolidation-lambda-arn", POST, "--kind", "adjust", "--from-job", "segqa-r01-verify",
              "--store", store_uri, "--dry-run"]
    assert main(adjust) == 0 and "2 rejected items" in capsys.readouterr().err  # without the second opinion
    assert main([*adjust, "--escalation-job", "segqa-r01-escalate"]) == 0
    assert "1 rejected items" in capsys.readouterr().err
    assert main([*adjust, "--escalation-job", "x", "--from-manifest", "s3://b/out.manifest"]) == 2
    assert "leave out --from-manifest" in capsys.readouterr().err
