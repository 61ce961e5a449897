"""The retrain_trigger Lambda's shell: the packaged handler reads SEGQA_STORE and the stack's variables."""

from __future__ import annotations

import boto3
from moto import mock_aws

from lambdas.retrain_trigger import handler
from qa_workflow import storage
from qa_workflow.confirmations import retrain_trigger
from qa_workflow.confirmations.dynamodb import create_table
from qa_workflow.confirmations.store import clear_store_cache

REGION = "us-east-1"
BUCKET = "segqa-test-sagemaker"


def test_lambda_handler_reads_its_configuration_from_the_environment(monkeypatch):
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        storage.set_s3_client(s3)
        create_table("segqa-trigger", boto3.client("dynamodb", region_name=REGION))
        env = {"SEGQA_JOB_PREFIX": "segqa-dev", "SEGQA_NETWORKS": "unet", "SEGQA_TRAINING_IMAGE": "img",
               "SEGQA_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
               "SEGQA_TRAINING_SOURCE": "s3://code/src.tar.gz", "SEGQA_TRAINING_INSTANCE_TYPE": "ml.g4dn.xlarge",
               "SEGQA_TRAIN_DATA_URI": f"s3://{BUCKET}/train/", "SEGQA_RETRAIN_STATE_URI": f"s3://{BUCKET}/rounds/",
               "SEGQA_MODEL_OUTPUT_URI": f"s3://{BUCKET}/models/", "AWS_REGION": REGION,
               "AWS_DEFAULT_REGION": REGION, "SEGQA_STORE": "dynamodb://segqa-trigger"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(retrain_trigger, "_sm_client", boto3.client("sagemaker", region_name=REGION))
        clear_store_cache()
        try:
            out = handler.lambda_handler({"source": "segqa.schedule"}, type("Ctx", (), {"aws_request_id": "abc"})())
        finally:
            clear_store_cache()
            storage.set_s3_client(None)
    assert out["action"] == "skipped" and out["request_id"] == "abc" and out["confirmed_total"] == 0
