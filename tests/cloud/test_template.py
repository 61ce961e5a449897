"""cloudformation/template.yaml: cfn-lint clean, the conventions the code relies on, a moto create.

cloudformation/template.yaml: cfn-lint clean, the conventions Ground Truth and the code rely on, and a real
create in moto's CloudFormation (as far as moto models the resource types)."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import boto3
import pytest
from moto import mock_aws

from lambdas import package
from qa_workflow.cloud import deploy
from qa_workflow.confirmations import dynamodb
from qa_workflow.confirmations import retrain_trigger as retrain
from qa_workflow.contract import SegqaError

REGION = "eu-west-1"
#: Resource types of the template that moto's CloudFormation does not create (docs/aws.md says so too).
MOTO_UNSUPPORTED = {"AWS::S3::BucketPolicy", "AWS::Scheduler::Schedule", "AWS::Lambda::EventInvokeConfig",
                    "AWS::CloudWatch::Alarm", "AWS::SQS::QueuePolicy"}


@pytest.fixture(scope="module")
def template():
    return deploy._decode(deploy.TEMPLATE_PATH)


def res(template, logical_id):
    return template["Resources"][logical_id]["Properties"]


def statements(template, role):
    return [s for p in res(template, role)["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_cfn_lint_reports_nothing():
    assert deploy.lint_template(regions=("us-east-1", "eu-west-1")) == []


def test_cfn_lint_errors_stop_a_deploy(tmp_path):
    broken = tmp_path / "template.yaml"
    broken.write_text(deploy.TEMPLATE_PATH.read_text().replace("Runtime: python3.12", "Runtime: python3.99", 1))
    with pytest.raises(SegqaError, match="E3030"):
        deploy.lint_template(broken)


def test_ground_truth_can_reach_the_bucket_and_the_labeling_lambdas(template):
    assert "sagemaker" in res(template, "DataBucket")["BucketName"]["Fn::Sub"]
    for fn in ("PreLabelingFunction", "PostLabelingFunction"):
        assert "SageMaker" in res(template, fn)["FunctionName"]["Fn::Sub"]
    gt = res(template, "GroundTruthExecutionRole")
    policy = "arn:${AWS::Partition}:iam::aws:policy/AmazonSageMakerGroundTruthExecution"
    assert gt["ManagedPolicyArns"] == [{"Fn::Sub": policy}]
    assert gt["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    invoke = [s for s in statements(template, "GroundTruthExecutionRole") if s["Action"] == "lambda:InvokeFunction"]
    assert invoke[0]["Resource"] == [{"Fn::GetAtt": ["PreLabelingFunction", "Arn"]},
                                     {"Fn::GetAtt": ["PostLabelingFunction", "Arn"]}]


def test_bucket_is_private_encrypted_versioned_and_serves_images_to_the_portal(template):
    bucket = res(template, "DataBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "GET" in bucket["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"]
    deny = res(template, "DataBucketPolicy")["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_table_matches_the_store_schema_exactly(template):
    """The stack's table must be the one qa_workflow.confirmations.dynamodb.create_table makes (keys, indexes,
    projections)."""
    made = {}

    class Recorder:
        class exceptions:
            ResourceInUseException = type("ResourceInUseException", (Exception,), {})

        def create_table(self, **kwargs):
            made.update(kwargs)

    dynamodb.create_table("t", client=Recorder(), wait=False)
    table = res(template, "ConfirmationTable")
    assert table["BillingMode"] == made["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["KeySchema"] == made["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(made["AttributeDefinitions"], key=str)

    def gsis(items):
        return {g["IndexName"]: (g["KeySchema"], g["Projection"]) for g in items}

    assert gsis(table["GlobalSecondaryIndexes"]) == gsis(made["GlobalSecondaryIndexes"])


def test_lambdas_run_the_packaged_handlers_on_python_312_with_the_store(template):
    assert set(deploy.LAMBDA_CODE_PARAMETERS) == set(package.functions())
    for fn, param in zip(("PreLabelingFunction", "PostLabelingFunction", "RetrainTriggerFunction"),
                         deploy.LAMBDA_CODE_PARAMETERS.values(), strict=True):
        p = res(template, fn)
        assert p["Runtime"] == package.LAMBDA_RUNTIME == "python3.12" and p["Handler"] == "handler.lambda_handler"
        assert p["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": param}}
        assert p["Environment"]["Variables"]["SEGQA_STORE"] == {"Fn::Sub": "dynamodb://${ConfirmationTable}"}


def test_iam_is_least_privilege(template):
    wildcard_ok = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}  # these take no resource ARN
    for logical_id, r in template["Resources"].items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        for s in statements(template, logical_id):
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (logical_id, actions)
            if s["Resource"] == "*":
                assert set(actions) <= wildcard_ok, (logical_id, actions)
    post = {a for s in statements(template, "PostLabelingRole") for a in
            (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    # TransactWriteItems is authorised by the actions of its parts (Put with a condition, Update).
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"} <= post
    assert not any(a.startswith("dynamodb:") for s in statements(template, "PreLabelingRole")
                   for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    pass_role = [s for s in statements(template, "RetrainTriggerRole") if s["Action"] == "iam:PassRole"][0]
    assert pass_role["Resource"] == {"Fn::GetAtt": ["TrainingRole", "Arn"]}
    start = [s for s in statements(template, "RetrainTriggerRole") if "sagemaker:CreateTrainingJob" in s["Action"]][0]
    assert start["Resource"]["Fn::Sub"].endswith(":training-job/${NamePrefix}-${Environment}-*")
    env = res(template, "RetrainTriggerFunction")["Environment"]["Variables"]
    assert env["SEGQA_JOB_PREFIX"] == {"Fn::Sub": "${NamePrefix}-${Environment}"}
    assert retrain.training_job_name("segqa-dev", 3, "unet").startswith("segqa-dev-")


def test_schedule_and_labeling_rule_reach_the_retrain_trigger_as_it_expects(template):
    schedule = res(template, "RetrainSchedule")
    assert schedule["ScheduleExpression"] == {"Ref": "RetrainScheduleExpression"}
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["RetrainTriggerFunction", "Arn"]}
    assert retrain.parse_trigger(json.loads(schedule["Target"]["Input"])).kind == "schedule"
    pattern = res(template, "LabelingJobCompletedRule")["EventPattern"]
    assert pattern["detail-type"] == [retrain.LABELING_JOB_DETAIL_TYPE]
    assert pattern["source"] == ["aws.sagemaker"] and pattern["detail"] == {"LabelingJobStatus": ["Completed"]}
    # Only this stack's labeling jobs (their names start with the job prefix) reach the trigger.
    assert pattern["resources"] == [{"prefix": {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:"
                                                          "${AWS::AccountId}:labeling-job/${NamePrefix}-${Environment}-"}}]
    principal = res(template, "RetrainSchedulerRole")["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "scheduler.amazonaws.com"}


def _zip(function: str) -> bytes:
    return package.build_zip(function)


def test_stack_creates_in_moto_and_the_trigger_accepts_its_environment():
    with mock_aws(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="code-sagemaker", CreateBucketConfiguration={"LocationConstraint": REGION})
        params = {"CodeBucket": "code-sagemaker", "TrainingSourceKey": "training/sourcedir-x.tar.gz",
                  "TrainingImageUri": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/mxnet-training:1.9.0-gpu-py38"}
        for function, param in deploy.LAMBDA_CODE_PARAMETERS.items():
            params[param] = f"lambdas/{function}.zip"
            s3.put_object(Bucket="code-sagemaker", Key=params[param], Body=_zip(function))
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(StackName="segqa-dev", TemplateBody=deploy.TEMPLATE_PATH.read_text(),
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
                         Capabilities=["CAPABILITY_IAM"])
        stack = cfn.describe_stacks(StackName="segqa-dev")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        bucket = outputs["DataBucketName"]
        assert bucket == "segqa-dev-sagemaker-123456789012-eu-west-1"
        # moto applies a bucket's encryption and tags from a template (not its versioning, CORS, lifecycle or
        # public access block: those are checked on the template above).
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert {"Key": "project", "Value": "segqa"} in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]

        table = boto3.client("dynamodb", region_name=REGION).describe_table(
            TableName=outputs["ConfirmationTableName"])["Table"]
        assert {g["IndexName"] for g in table["GlobalSecondaryIndexes"]} == {"by_class", "by_round", "by_class_updated"}
        assert outputs["StoreUri"] == f"dynamodb://{table['TableName']}"

        lam = boto3.client("lambda", region_name=REGION)
        fn = lam.get_function(FunctionName="segqa-dev-SageMaker-RetrainTrigger")["Configuration"]
        assert fn["Runtime"] == "python3.12" and fn["FunctionArn"] == outputs["RetrainTriggerFunctionArn"]
        env = {k: str(v) for k, v in fn["Environment"]["Variables"].items()}
        cfg = retrain.TriggerConfig.from_env({**env, "AWS_REGION": REGION})
        assert cfg.training_role_arn == outputs["TrainingRoleArn"] and cfg.networks == ("unet", "enet")
        assert cfg.state_uri == f"s3://{bucket}/retrain/rounds/"
        code = s3.get_object(Bucket="code-sagemaker", Key=params["RetrainTriggerCodeKey"])["Body"].read()
        assert "handler.py" in zipfile.ZipFile(io.BytesIO(code)).namelist()

        rules = boto3.client("events", region_name=REGION).list_rules(NamePrefix="segqa-dev")["Rules"]
        assert json.loads(rules[0]["EventPattern"])["detail-type"] == [retrain.LABELING_JOB_DETAIL_TYPE]

        created = {r["ResourceType"] for r in cfn.list_stack_resources(StackName="segqa-dev")["StackResourceSummaries"]
                   if r.get("PhysicalResourceId")}
        declared = {r["Type"] for r in deploy._decode(deploy.TEMPLATE_PATH)["Resources"].values()}
    not_created = declared - created - {"AWS::Lambda::Permission"}  # moto gives permissions no physical id
    assert not_created == MOTO_UNSUPPORTED
    assert any("AWS::Scheduler::Schedule" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------- hardening


def _if_key(value):
    """The key every KMS-using property refers to: the parameter, or the key the stack creates."""
    return value == {"Fn::If": ["CreateDataKey", {"Fn::GetAtt": ["DataKey", "Arn"]}, {"Ref": "DataKeyArn"}]}


def _actions(s):
    return s["Action"] if isinstance(s["Action"], list) else [s["Action"]]


def test_failed_retrain_runs_land_in_an_encrypted_dead_letter_queue(template):
    queue = res(template, "RetrainDeadLetterQueue")
    assert queue["SqsManagedSseEnabled"] is True
    dlq = {"Arn": {"Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]}}
    assert res(template, "RetrainSchedule")["Target"]["DeadLetterConfig"] == dlq
    assert res(template, "LabelingJobCompletedRule")["Targets"][0]["DeadLetterConfig"] == dlq
    invoke = res(template, "RetrainTriggerInvokeConfig")
    assert invoke["FunctionName"] == {"Ref": "RetrainTriggerFunction"}
    assert invoke["DestinationConfig"] == {"OnFailure": {"Destination": dlq["Arn"]}}
    # Who sends to the queue may: the scheduler's role, the trigger's role (destination), EventBridge (policy).
    for role in ("RetrainSchedulerRole", "RetrainTriggerRole"):
        assert any("sqs:SendMessage" in _actions(s) and s["Resource"] == dlq["Arn"] for s in statements(template, role))
    sent = res(template, "RetrainDeadLetterQueuePolicy")["PolicyDocument"]["Statement"][0]
    assert sent["Principal"] == {"Service": "events.amazonaws.com"}
    assert sent["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["LabelingJobCompletedRule", "Arn"]}


def test_each_function_alarms_on_errors_and_throttles_to_the_optional_topic(template):
    alarms = {(r["Properties"]["Dimensions"][0]["Value"]["Ref"], r["Properties"]["MetricName"]):
              r["Properties"] for r in template["Resources"].values()
              if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"]["Namespace"] == "AWS/Lambda"}
    functions = ("PreLabelingFunction", "PostLabelingFunction", "RetrainTriggerFunction")
    assert set(alarms) == {(f, m) for f in functions for m in ("Errors", "Throttles")}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                    {"Ref": "AWS::NoValue"}]}
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == "none"


def test_one_key_encrypts_bucket_table_logs_and_job_output(template):
    assert template["Parameters"]["DataKeyArn"]["Default"] == "create"
    assert res(template, "DataKey")["EnableKeyRotation"] is True
    sse = res(template, "DataBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert _if_key(sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"])
    table = res(template, "ConfirmationTable")["SSESpecification"]
    assert table["SSEType"] == "KMS" and _if_key(table["KMSMasterKeyId"])
    for group in ("PreLabelingLogGroup", "PostLabelingLogGroup", "RetrainTriggerLogGroup"):
        assert _if_key(res(template, group)["KmsKeyId"])
    assert _if_key(res(template, "RetrainTriggerFunction")["Environment"]["Variables"]["SEGQA_KMS_KEY_ID"])
    key_users = {role for role in ("PreLabelingRole", "PostLabelingRole", "RetrainTriggerRole",
                                   "GroundTruthExecutionRole", "TrainingRole")
                 for s in statements(template, role) if any(a.startswith("kms:") for a in _actions(s))}
    assert key_users == {"PreLabelingRole", "PostLabelingRole", "RetrainTriggerRole", "GroundTruthExecutionRole",
                         "TrainingRole"}
    # The pre-labeling Lambda only reads: it may decrypt, never encrypt.
    pre = {a for s in statements(template, "PreLabelingRole") for a in _actions(s) if a.startswith("kms:")}
    assert pre == {"kms:Decrypt"}
    for role in key_users:
        for s in statements(template, role):
            if any(a.startswith("kms:") for a in _actions(s)):
                assert _if_key(s["Resource"]), role
    # CloudWatch Logs may use a created key for this stack's log groups only.
    logs = [s for s in res(template, "DataKey")["KeyPolicy"]["Statement"]
            if s["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}][0]
    assert "ArnLike" in logs["Condition"]


def test_job_output_is_encrypted_with_the_configured_key():
    cfg = retrain.TriggerConfig.from_env({**_trigger_env(), "SEGQA_KMS_KEY_ID": "arn:aws:kms:eu-west-1:1:key/k"})
    request = retrain.training_job_request(cfg, 1, "unet", "s3://b/retrain/rounds/round-0001/")
    assert request["OutputDataConfig"]["KmsKeyId"] == "arn:aws:kms:eu-west-1:1:key/k"
    plain = retrain.training_job_request(retrain.TriggerConfig.from_env(_trigger_env()), 1, "unet", "s3://b/r/")
    assert "KmsKeyId" not in plain["OutputDataConfig"]


def _trigger_env():
    return {"SEGQA_JOB_PREFIX": "segqa-dev", "SEGQA_NETWORKS": "unet", "SEGQA_TRAINING_IMAGE": "img",
            "SEGQA_TRAINING_ROLE_ARN": "arn:aws:iam::1:role/t", "SEGQA_TRAINING_SOURCE": "s3://c/src.tar.gz",
            "SEGQA_TRAINING_INSTANCE_TYPE": "ml.g4dn.xlarge", "SEGQA_TRAIN_DATA_URI": "s3://b/train/",
            "SEGQA_RETRAIN_STATE_URI": "s3://b/retrain/rounds/", "SEGQA_MODEL_OUTPUT_URI": "s3://b/models/",
            "AWS_REGION": "eu-west-1"}


def test_trust_policies_name_this_account_and_cors_origins_are_parameters(template):
    for logical_id, r in template["Resources"].items():
        if r["Type"] == "AWS::IAM::Role":
            for s in r["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
                assert s["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}, logical_id
    worker, review = res(template, "DataBucket")["CorsConfiguration"]["CorsRules"][0]["AllowedOrigins"]
    assert worker == {"Fn::If": ["HasWorkerPortalOrigin", {"Ref": "WorkerPortalOrigin"},
                                 {"Fn::Sub": "https://*.labeling.${AWS::Region}.sagemaker.aws"}]}
    assert review == {"Fn::If": ["HasReviewPortalOrigin", {"Ref": "ReviewPortalOrigin"}, {"Ref": "AWS::NoValue"}]}
    assert "ImageCorsAllowedOrigins" not in template["Parameters"]


def test_training_pulls_images_only_from_aws_and_this_account(template):
    pull = [s for s in statements(template, "TrainingRole") if "ecr:BatchGetImage" in _actions(s)][0]
    assert pull["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${TrainingImageAccount}:repository/*"},
        {"Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*"}]


def test_the_trigger_runs_one_at_a_time_and_reads_no_whole_table(template):
    # Overlapping runs are serialised by a create-only claim (tests/confirmations), not reserved concurrency,
    # which a new account cannot grant (its unreserved minimum).
    assert "ReservedConcurrentExecutions" not in res(template, "RetrainTriggerFunction")
    actions = {a for s in statements(template, "RetrainTriggerRole") for a in _actions(s)}
    assert "dynamodb:Scan" not in actions and "dynamodb:Query" in actions
    training = {a for s in statements(template, "RetrainTriggerRole") for a in _actions(s)}
    assert "sagemaker:AddTags" in training  # CreateTrainingJob with Tags needs it


def test_checkov_passes_offline_with_justified_suppressions():
    import re
    import subprocess
    import sys
    from pathlib import Path

    checkov = Path(sys.executable).with_name("checkov")
    # The file is named relative to its folder, as `make cfn-check` does: checkov leaves the path it was given
    # among each Lambda's environment variables (`__file__`), and CKV_AWS_45 reads an absolute checkout path
    # with a 40-character run of [A-Za-z0-9/] as an AWS secret key, so the result would depend on the clone.
    proc = subprocess.run([str(checkov), "-f", deploy.TEMPLATE_PATH.name, "--framework", "cloudformation",
                           "--skip-download", "--compact", "--quiet", "-o", "json"],
                          capture_output=True, text=True, timeout=300, cwd=deploy.TEMPLATE_PATH.parent,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    report = json.loads(proc.stdout)
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    skips = [skip for r in deploy._decode(deploy.TEMPLATE_PATH)["Resources"].values()
             for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert skips and all(re.fullmatch(r"CKV_AWS_\d+", s["id"]) and len(s["comment"]) > 30 for s in skips)
    assert report["summary"]["skipped"] == len(skips)
