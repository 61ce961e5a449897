"""Shared fixtures. Tests are offline: AWS calls go to moto, never to the network."""

from __future__ import annotations

import os

import pytest

# boto3 must never find real credentials or reach AWS from a test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture
def s3_bucket():
    """A moto S3 bucket wired into the storage layer; yields its name."""
    import boto3
    from moto import mock_aws

    from qa_workflow import storage

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="segqa-test-sagemaker")
        storage.set_s3_client(client)
        try:
            yield "segqa-test-sagemaker"
        finally:
            storage.set_s3_client(None)
