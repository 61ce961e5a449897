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
MOTO_UNSUPPORTED = {"AWS::S3::BucketPolicy", "AWS::Scheduler::Schedule"}


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
    broken.write_text(deploy.TEMPLATE_PATH.read_text().replace("Runtime: python3.11", "Runtime: python3.99", 1))
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
    cors = bucket["CorsConfiguration"]["CorsRules"][0]
    assert "GET" in cors["AllowedMethods"] and cors["AllowedOrigins"] == {"Ref": "ImageCorsAllowedOrigins"}
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


def test_lambdas_run_the_packaged_handlers_on_python_311_with_the_store(template):
    assert set(deploy.LAMBDA_CODE_PARAMETERS) == set(package.functions())
    for fn, param in zip(("PreLabelingFunction", "PostLabelingFunction", "RetrainTriggerFunction"),
                         deploy.LAMBDA_CODE_PARAMETERS.values(), strict=True):
        p = res(template, fn)
        assert p["Runtime"] == "python3.11" and p["Handler"] == "handler.lambda_handler"
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
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert {"Key": "project", "Value": "segqa"} in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]

        table = boto3.client("dynamodb", region_name=REGION).describe_table(
            TableName=outputs["ConfirmationTableName"])["Table"]
        assert {g["IndexName"] for g in table["GlobalSecondaryIndexes"]} == {"by_class", "by_round"}
        assert outputs["StoreUri"] == f"dynamodb://{table['TableName']}"

        lam = boto3.client("lambda", region_name=REGION)
        fn = lam.get_function(FunctionName="segqa-dev-SageMaker-RetrainTrigger")["Configuration"]
        assert fn["Runtime"] == "python3.11" and fn["FunctionArn"] == outputs["RetrainTriggerFunctionArn"]
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
