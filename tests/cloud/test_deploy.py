"""`segqa deploy` (`qa_workflow.cloud.deploy`): plan, create / no-op / update, cancel, failed stacks.

`segqa deploy`: the plan (dry run, with and without AWS credentials), a create / no-op / update cycle in moto's
CloudFormation, cancelling, and a failed stack reported with its resources' reasons (botocore Stubber)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from lambdas import package
from qa_workflow.cli import main
from qa_workflow.cloud import deploy
from qa_workflow.contract import SegqaError
from qa_workflow.review.templates import expand_includes

REGION = "eu-west-1"
# moto warns about the two resource types it does not model (docs/aws.md lists them).
pytestmark = [pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
              pytest.mark.filterwarnings("ignore:sagemaker.train.configs has been moved:DeprecationWarning")]


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lambdas")
    package.build_all(out, check=False)
    return out


def no_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_dry_run_without_credentials_prints_the_plan_and_touches_nothing(zips, monkeypatch, tmp_path, capsys):
    no_credentials(monkeypatch, tmp_path)
    rc = main(["deploy", "--dry-run", "--region", REGION, "--lambdas", str(zips), "-p", "MinNewConfirmations=50"])
    out = capsys.readouterr().out
    assert rc == 0 and out.rstrip().endswith("dry run: nothing was changed")
    plan = json.loads(out[:out.rindex("}") + 1])
    assert plan["action"].startswith("create or update (not checked")
    assert plan["code_bucket"] == f"segqa-dev-sagemaker-code-<account-id>-{REGION}"
    assert plan["parameters"]["MinNewConfirmations"] == "50"
    assert plan["parameters"]["TrainingImageUri"].endswith(f".{REGION}.amazonaws.com/mxnet-training:1.9.0-gpu-py38")
    keys = {u["what"]: u["to"].split("/", 3)[3] for u in plan["uploads"]}
    zip_bytes = (zips / "post_labeling.zip").read_bytes()
    import hashlib

    assert keys["post_labeling"] == f"lambdas/post_labeling-{hashlib.sha256(zip_bytes).hexdigest()[:16]}.zip"
    assert plan["parameters"]["PostLabelingCodeKey"] == keys["post_labeling"]
    assert plan["parameters"]["TrainingSourceKey"] == keys["training source"]
    assert plan["then"] == [f"upload templates/{name} to the stack's data bucket"
                            for name in ("mask_adjust.liquid.html", "mask_review.liquid.html")]


@pytest.mark.parametrize("args, message", [
    (["--lambdas", "/nonexistent"], "run `make lambdas` first"),
    (["-p", "MinConfirmations=5"], "unknown stack parameter(s) MinConfirmations"),
    (["-p", "NamePrefix=other"], "set NamePrefix with --prefix"),
    (["-p", "no-equals-sign"], "expected Key=Value"),
])
def test_deploy_mistakes_are_one_line(zips, args, message, monkeypatch, tmp_path, capsys):
    no_credentials(monkeypatch, tmp_path)
    full = ["deploy", "--dry-run", "--region", REGION]
    full += args if "--lambdas" in args else ["--lambdas", str(zips), *args]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_deploy_without_credentials_says_so(zips, monkeypatch, tmp_path, capsys):
    no_credentials(monkeypatch, tmp_path)
    assert main(["deploy", "--yes", "--region", REGION, "--lambdas", str(zips)]) == 2
    assert "no AWS credentials" in capsys.readouterr().err


def test_create_then_no_op_then_update_keeps_earlier_parameters(zips):
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        plan = deploy.plan_deploy(session, lambdas_dir=zips, overrides={"MinNewConfirmations": "50"}, lint=False)
        assert plan.action == "create" and plan.code_bucket == f"segqa-dev-sagemaker-code-123456789012-{REGION}"
        events = []
        result = deploy.execute_deploy(plan, session, on_event=lambda k, p: events.append((k, p)), poll_s=0)
        assert result.outcome == "created" and len(result.uploaded) == 4
        assert [k for k, _ in events].count("upload") == 6  # 4 code objects + the verify and adjust templates
        assert any(k == "event" and p.status == "CREATE_COMPLETE" for k, p in events)
        s3 = session.client("s3")
        for art in plan.artifacts:
            assert s3.get_object(Bucket=plan.code_bucket, Key=art.key)["Body"].read() == art.data
        data_bucket = f"segqa-dev-sagemaker-123456789012-{REGION}"
        for name in ("mask_review.liquid.html", "mask_adjust.liquid.html"):
            template = s3.get_object(Bucket=data_bucket, Key=f"templates/{name}")["Body"].read()
            source = Path(deploy.REVIEW_TEMPLATES_DIR, name).read_text(encoding="utf-8")
            assert template.decode("utf-8") == expand_includes(source)  # self-contained: shared JS inlined
            assert b"data-segqa-include" not in template
        assert b"segqaWindowLevel" in s3.get_object(Bucket=data_bucket,
                                                    Key="templates/mask_review.liquid.html")["Body"].read()
        block = s3.get_public_access_block(Bucket=plan.code_bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())

        again = deploy.plan_deploy(session, lambdas_dir=zips, lint=False)
        assert again.action == "update"
        same = deploy.execute_deploy(again, session, poll_s=0)
        assert same.outcome == "unchanged" and same.uploaded == []

        changed = deploy.plan_deploy(session, lambdas_dir=zips, overrides={"LogRetentionDays": "60"}, lint=False)
        updated = deploy.execute_deploy(changed, session, poll_s=0)
        assert updated.outcome == "updated"
        params = {p["ParameterKey"]: p["ParameterValue"] for p in
                  session.client("cloudformation").describe_stacks(StackName="segqa-dev")["Stacks"][0]["Parameters"]}
        assert params["LogRetentionDays"] == "60" and params["MinNewConfirmations"] == "50"


def test_declining_the_change_set_leaves_no_stack(zips):
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        plan = deploy.plan_deploy(session, lambdas_dir=zips, lint=False)
        seen = []
        result = deploy.execute_deploy(plan, session, confirm=lambda changes: seen.extend(changes) or False, poll_s=0)
        assert result.outcome == "cancelled" and "ConfirmationTable" in {c["logical_id"] for c in seen}
        stacks = session.client("cloudformation").list_stacks()["StackSummaries"]
        assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == "segqa-dev")


class _Session:
    """A boto3-like session handing out the given (stubbed) clients."""

    def __init__(self, **clients):
        self.clients = clients

    def client(self, name):
        return self.clients[name]


def test_a_failed_create_is_reported_with_the_resources_reasons():
    # A new stack gets every parameter spelled out, defaults included (read before the clock below starts).
    parameters = [{"ParameterKey": "NamePrefix", "ParameterValue": "segqa"}] + [
        {"ParameterKey": k, "ParameterValue": str(spec["Default"])}
        for k, spec in sorted(deploy.template_parameters().items()) if k != "NamePrefix" and "Default" in spec]
    s3 = boto3.client("s3", region_name=REGION)
    cfn = boto3.client("cloudformation", region_name=REGION)
    art = deploy.Artifact("pre_labeling", "lambdas/pre_labeling-0123456789abcdef.zip", "0" * 64, 3, b"zip")
    plan = deploy.DeployPlan(stack_name="segqa-dev", region=REGION, account="123456789012", code_bucket="code-b",
                             template_path=deploy.TEMPLATE_PATH, parameters={"NamePrefix": "segqa"},
                             artifacts=(art,), review_templates={}, stack_status=None)
    now = datetime.now(UTC) + timedelta(seconds=5)
    stack_id = "arn:aws:cloudformation:eu-west-1:123456789012:stack/segqa-dev/1"

    def event(i, logical, status, reason=""):
        return {"StackId": stack_id, "EventId": f"e{i}", "StackName": "segqa-dev", "LogicalResourceId": logical,
                "ResourceType": "AWS::Lambda::Function" if logical != "segqa-dev" else "AWS::CloudFormation::Stack",
                "Timestamp": now + timedelta(seconds=i), "ResourceStatus": status, "ResourceStatusReason": reason}

    failing = [event(4, "segqa-dev", "ROLLBACK_COMPLETE"),  # newest first, as CloudFormation lists them
               event(3, "segqa-dev", "ROLLBACK_IN_PROGRESS",
                     "The following resource(s) failed to create: [PreLabelingFunction]"),
               event(2, "PostLabelingFunction", "CREATE_FAILED", "Resource creation cancelled"),
               event(1, "PreLabelingFunction", "CREATE_FAILED",
                     "Error occurred while GetObject. S3 Error Code: NoSuchKey")]
    with Stubber(s3) as s3_stub, Stubber(cfn) as cfn_stub:
        s3_stub.add_response("head_bucket", {}, {"Bucket": "code-b"})
        s3_stub.add_response("head_object", {}, {"Bucket": "code-b", "Key": art.key})
        cfn_stub.add_response("create_change_set", {"Id": "cs-1", "StackId": stack_id},
                              {"StackName": "segqa-dev", "ChangeSetName": ANY, "ChangeSetType": "CREATE",
                               "Parameters": parameters,
                               "Capabilities": ["CAPABILITY_IAM"], "Tags": [], "Description": "segqa deploy",
                               "TemplateBody": ANY})
        cfn_stub.add_response("describe_change_set", {"Status": "CREATE_COMPLETE", "Changes": [
            {"Type": "Resource", "ResourceChange": {"Action": "Add", "LogicalResourceId": "PreLabelingFunction",
                                                    "ResourceType": "AWS::Lambda::Function"}}]})
        cfn_stub.add_response("execute_change_set", {})
        cfn_stub.add_response("describe_stack_events", {"StackEvents": failing})
        cfn_stub.add_response("describe_stacks", {"Stacks": [{"StackName": "segqa-dev", "CreationTime": now,
                                                              "StackStatus": "ROLLBACK_COMPLETE"}]})
        cfn_stub.add_response("describe_stack_events", {"StackEvents": failing})
        seen = []
        with pytest.raises(SegqaError) as err:
            deploy.execute_deploy(plan, _Session(s3=s3, cloudformation=cfn), on_event=lambda k, p: seen.append((k, p)),
                                  poll_s=0)
    message = str(err.value)
    # The cause (the oldest failure) comes first, then what it dragged down.
    assert message.startswith("stack segqa-dev ended ROLLBACK_COMPLETE: "
                              "PreLabelingFunction: Error occurred while GetObject")
    assert message.endswith("; PostLabelingFunction: Resource creation cancelled")
    assert [p.status for k, p in seen if k == "event"] == ["CREATE_FAILED", "CREATE_FAILED", "ROLLBACK_IN_PROGRESS",
                                                            "ROLLBACK_COMPLETE"]


def test_print_template_parameters_lists_every_parameter(capsys):
    assert main(["deploy", "--print-template-parameters"]) == 0
    out = capsys.readouterr().out
    for name in deploy.template_parameters():
        assert name[:12] in out  # rich may wrap long names


def _tiny_stack_with_outputs(session) -> None:
    lambda_arn = "arn:aws:lambda:eu-west-1:123456789012:function:segqa-dev-SageMaker"
    outputs = {"StoreUri": "dynamodb://segqa-dev-confirmations", "DataUri": "s3://segqa-dev-sagemaker-1-eu-west-1",
               "GroundTruthRoleArn": "arn:aws:iam::123456789012:role/gt",
               "TrainingRoleArn": "arn:aws:iam::123456789012:role/tr",
               "PreLabelingFunctionArn": f"{lambda_arn}-PreLabeling",
               "PostLabelingFunctionArn": f"{lambda_arn}-PostLabeling"}
    body = {"Resources": {"Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "x"}}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    session.client("cloudformation").create_stack(StackName="segqa-dev", TemplateBody=json.dumps(body))


def test_show_outputs_prints_the_exports_the_other_commands_read(capsys):
    from qa_workflow.cli import rounds as qa
    from qa_workflow.confirmations.store import ENV_VAR

    # Every variable segqa job create reads comes from the stack, except the work team (made in the console).
    assert set(deploy.OUTPUT_ENV.values()) == set(qa._ENV.values()) - {qa._ENV["workteam"]} | {ENV_VAR}
    assert set(deploy.OUTPUT_ENV) <= set(deploy._decode(deploy.TEMPLATE_PATH)["Outputs"])
    with mock_aws():
        _tiny_stack_with_outputs(boto3.Session(region_name=REGION))
        assert main(["deploy", "--show-outputs", "--region", REGION]) == 0
        out = capsys.readouterr().out
        assert "export SEGQA_STORE=dynamodb://segqa-dev-confirmations" in out
        assert "export SEGQA_GT_CONSOLIDATION_LAMBDA_ARN=arn:aws:lambda:eu-west-1:123456789012:function:" \
               "segqa-dev-SageMaker-PostLabeling" in out
        assert main(["deploy", "--show-outputs", "--region", REGION, "--stack", "nope"]) == 2
        assert "stack nope" in capsys.readouterr().err
        # train-remote takes the role and the S3 locations from the same outputs
        assert main(["train-remote", "--dry-run", "--stack", "segqa-dev", "--region", REGION, "--network", "enet"]) == 0
        out = capsys.readouterr().out
        trainer = json.loads(out[:out.rindex("]") + 1])[0]
    assert trainer["role_arn"] == "arn:aws:iam::123456789012:role/tr"
    assert trainer["channels"]["train"] == "s3://segqa-dev-sagemaker-1-eu-west-1/retrain/dataset/train/"
    assert trainer["output_path"] == "s3://segqa-dev-sagemaker-1-eu-west-1/models/enet"


def test_training_images_come_from_the_aws_registry_or_this_account(zips):
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        plan = deploy.plan_deploy(session, lambdas_dir=zips, lint=False)
        aws_account = plan.parameters["TrainingImageUri"].split(".", 1)[0]
        assert plan.parameters["TrainingImageAccount"] == aws_account
        own = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/mine:1"
        plan = deploy.plan_deploy(session, lambdas_dir=zips, overrides={"TrainingImageUri": own}, lint=False)
        assert plan.parameters["TrainingImageAccount"] == aws_account
        other = f"999999999999.dkr.ecr.{REGION}.amazonaws.com/theirs:1"
        with pytest.raises(SegqaError, match="999999999999.*only from"):
            deploy.plan_deploy(session, lambdas_dir=zips, overrides={"TrainingImageUri": other}, lint=False)
