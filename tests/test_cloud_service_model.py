"""A strict check of request dicts against botocore's service model.

botocore's own parameter validation (which `Stubber` relies on) checks types, required members and minimum
lengths, but not enum values, patterns or maxima. `model_problems` checks those too, so a request with a
misspelt instance type or a 64-character job name fails here instead of in AWS.
"""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest

_session = boto3.session.Session(region_name="us-east-1")


def _java_regex(pattern: str) -> str:
    # AWS patterns are Java regexes matched against the whole value; the constructs Python spells differently:
    # \p{L}, \p{N} -> \w (a little looser: also digits and "_"), \p{Z} -> \s, \p{Alnum} -> ASCII letters/digits.
    return (pattern.replace(r"\p{Alnum}", "A-Za-z0-9").replace(r"\p{L}", r"\w").replace(r"\p{N}", r"\w")
            .replace(r"\p{Z}", r"\s"))


def model_problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Every way ``params`` break ``service``'s model of ``operation`` (empty list when it conforms)."""
    model = _session.client(service).meta.service_model.operation_model(operation).input_shape
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


GOOD = {
    "TrainingJobName": "segqa-dev-r0001-unet",
    "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
    "RoleArn": "arn:aws:iam::123456789012:role/x",
    "OutputDataConfig": {"S3OutputPath": "s3://b/models/"},
    "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}


def test_a_conforming_request_has_no_problems():
    assert model_problems("sagemaker", "CreateTrainingJob", GOOD) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r["AlgorithmSpecification"].update(TrainingInputMode="Files"), "not one of the allowed values"),
    (lambda r: r["ResourceConfig"].update(InstanceType="ml.g4dn.huge"), "not one of the allowed values"),
    (lambda r: r.update(TrainingJobName="x" * 64), "longer than 63"),
    (lambda r: r.update(TrainingJobName="bad_name"), "does not match"),
    (lambda r: r.pop("RoleArn"), "RoleArn: required"),
    (lambda r: r.update(Hyperparameters={}), "unknown member"),
    (lambda r: r["ResourceConfig"].update(InstanceCount="1"), "expected an integer"),
])
def test_broken_requests_are_caught(mutate, expected):
    import copy

    request = copy.deepcopy(GOOD)
    mutate(request)
    assert any(expected in p for p in model_problems("sagemaker", "CreateTrainingJob", request))
