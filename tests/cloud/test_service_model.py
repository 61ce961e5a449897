"""The strict service-model check (`model_problems`) catches what botocore's validation does not.

The strict service-model check (`model_problems`, tests/conftest.py) catches what botocore's own validation
does not: enum values, patterns and maxima."""

from __future__ import annotations

import pytest

GOOD = {
    "TrainingJobName": "segqa-dev-r0001-unet",
    "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
    "RoleArn": "arn:aws:iam::123456789012:role/x",
    "OutputDataConfig": {"S3OutputPath": "s3://b/models/"},
    "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}


def test_a_conforming_request_has_no_problems(model_problems):
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
def test_broken_requests_are_caught(mutate, expected, model_problems):
    import copy

    request = copy.deepcopy(GOOD)
    mutate(request)
    assert any(expected in p for p in model_problems("sagemaker", "CreateTrainingJob", request))
