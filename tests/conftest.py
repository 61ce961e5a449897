"""Shared fixtures. Tests are offline: AWS calls go to moto, never to the network."""

from __future__ import annotations

import os
import re
from typing import Any, Callable

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




def _java_regex(pattern: str) -> str:
    # AWS patterns are Java regexes matched against the whole value; the constructs Python spells differently:
    # \p{L}, \p{N} -> \w (a little looser: also digits and "_"), \p{Z} -> \s, \p{Alnum} -> ASCII letters/digits.
    return (pattern.replace(r"\p{Alnum}", "A-Za-z0-9").replace(r"\p{L}", r"\w").replace(r"\p{N}", r"\w")
            .replace(r"\p{Z}", r"\s"))


def service_model_problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Every way ``params`` break ``service``'s model of ``operation`` (empty list when it conforms).

    botocore's own parameter validation (which `Stubber` relies on) checks types, required members and minimum
    lengths, but not enum values, patterns or maxima; this checks those too, so a request with a misspelt
    instance type or a 64-character job name fails in a test instead of in AWS.
    """
    import boto3

    model = boto3.session.Session(region_name="us-east-1").client(service).meta.service_model.operation_model(operation).input_shape
    problems: list[str] = []

    def walk(shape, value, path):
        meta = shape.metadata
        if shape.type_name == "structure":
            if not isinstance(value, dict):
                problems.append(f"{path}: expected an object")
                return
            for name in shape.required_members:
                if name not in value:
                    problems.append(f"{path}.{name}: required")
            for name, v in value.items():
                if name not in shape.members:
                    problems.append(f"{path}.{name}: unknown member")
                else:
                    walk(shape.members[name], v, f"{path}.{name}")
        elif shape.type_name == "list":
            if not isinstance(value, list):
                problems.append(f"{path}: expected a list")
                return
            if "max" in meta and len(value) > meta["max"]:
                problems.append(f"{path}: more than {meta['max']} entries")
            for i, v in enumerate(value):
                walk(shape.member, v, f"{path}[{i}]")
        elif shape.type_name == "map":
            if not isinstance(value, dict):
                problems.append(f"{path}: expected a map")
                return
            if "max" in meta and len(value) > meta["max"]:
                problems.append(f"{path}: more than {meta['max']} entries")
            for k, v in value.items():
                walk(shape.key, k, f"{path}<key {k}>")
                walk(shape.value, v, f"{path}[{k}]")
        elif shape.type_name == "string":
            if not isinstance(value, str):
                problems.append(f"{path}: expected a string, got {type(value).__name__}")
                return
            if shape.enum and value not in shape.enum:
                problems.append(f"{path}: {value!r} is not one of the allowed values")
            if "min" in meta and len(value) < meta["min"]:
                problems.append(f"{path}: shorter than {meta['min']}")
            if "max" in meta and len(value) > meta["max"]:
                problems.append(f"{path}: longer than {meta['max']}")
            if "pattern" in meta and not re.fullmatch(_java_regex(meta["pattern"]), value, re.DOTALL):
                problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
        elif shape.type_name in ("integer", "long"):
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{path}: expected an integer")
                return
            if "min" in meta and value < meta["min"]:
                problems.append(f"{path}: below {meta['min']}")
            if "max" in meta and value > meta["max"]:
                problems.append(f"{path}: above {meta['max']}")
        elif shape.type_name == "boolean" and not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean")

    walk(model, params, operation)
    return problems


@pytest.fixture
def model_problems() -> Callable[[str, str, dict[str, Any]], list[str]]:
    """`service_model_problems`: check a request dict against botocore's model of the operation."""
    return service_model_problems
