"""Fixtures shared by several test folders. Tests are offline: AWS calls go to moto, never to the network.

Layout: ``tests/<package>/`` holds the tests of ``qa_workflow/<package>/`` (or of the top-level package of that
name); each folder's ``conftest.py`` holds the fixtures only that folder uses, this file the ones several use.
Builders are fixtures that return a plain function (a factory) where a test needs to call them with arguments;
no test imports a helper module.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from qa_workflow.contract import CLASS_BY_NAME

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


@pytest.fixture
def aws():
    """moto for S3 and DynamoDB in one context: yields (s3 client, dynamodb client, bucket name)."""
    import boto3
    from moto import mock_aws

    from qa_workflow import storage

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="segqa-sagemaker")
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        storage.set_s3_client(s3)
        try:
            yield s3, ddb, "segqa-sagemaker"
        finally:
            storage.set_s3_client(None)


# -- review batches (ARCHITECTURE §6): the review template tests and the Lambda tests -----------------------

def _make_batch(batch_id: str, class_name: str = "gray_matter", n: int = 12, subject: str = "sub-001",
                first_slice: int = 0, round_: int = 1, model_version: str = "unet-v1", seed: int = 0,
                base: str = "s3://segqa-sagemaker/r1") -> dict[str, Any]:
    rng = random.Random(seed)
    cls = CLASS_BY_NAME[class_name]
    items = []
    for k in range(n):
        sl = first_slice + k
        iid = f"{subject}/{sl:03d}/{class_name}"
        items.append({"item_id": iid, "slice_id": f"{subject}/{sl:03d}", "class_name": class_name,
                      "confidence": round(rng.random(), 4), "overlay_uri": f"{base}/overlays/{iid}.png",
                      "image_uri": f"{base}/images/{subject}/{sl:03d}.png", "mask_uri": f"{base}/masks/{iid}.png"})
    return {"batch_id": batch_id, "round": round_, "model_version": model_version, "class_id": cls.id,
            "class_name": class_name, "color": cls.color, "items": items}


@pytest.fixture(scope="session")
def make_batch() -> Callable[..., dict[str, Any]]:
    """Factory: ``make_batch(batch_id, class_name="gray_matter", n=12, subject=..., seed=...)`` -> a batch dict
    of ``n`` items on S3-style URIs (confidences drawn from ``seed``)."""
    return _make_batch


# -- a stand-in segmenter and phantom datasets: the rounds tests and the Ground Truth client tests --------------

H, W = 176, 208


def _phantom(rng: np.random.Generator, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    r = np.sqrt(((yy - H / 2) / (60 + shift)) ** 2 + ((xx - W / 2) / (75 + shift)) ** 2)
    labels = np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
    tone = np.array([5, 40, 120, 200], np.float32)[labels]
    image = np.clip(tone + rng.normal(0, 8, size=(H, W)), 0, 255).astype(np.uint8)
    return image, labels


def _tiny_dataset(root: Path, subjects: int = 3, slices: int = 6, seed: int = 0, split: str = "pool") -> Path:
    from training.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(root, source="test-phantom", seed=seed) as w:
        for s in range(subjects):
            for k in range(slices):
                image, labels = _phantom(rng, shift=float(k))
                w.add(f"sub-{s + 1:03d}", k, image, labels, split)
    return root


class IntensityPredictor:
    """A stand-in segmenter: softmax of how close each pixel's intensity is to each class's tone.

    Has the interface of training.predict.Predictor that `run_predictions` uses.
    """

    version = "intensity-1"
    network = "intensity"

    def __init__(self, sharpness: float = 0.004, channels: int = 4) -> None:
        self.sharpness = sharpness
        self.channels = channels

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        x = images.astype(np.float32)[:, None] / 255.0
        tones = (np.array([5, 40, 120, 200], np.float32) / 255.0)[: self.channels]
        logits = -((x - tones[None, :, None, None]) ** 2) / self.sharpness
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict_mc(self, images, samples, seed=0, batch_size=8):
        mean = self.predict_proba(images)
        mi = np.full(images.shape, 0.01, np.float32)
        return SimpleNamespace(mean=mean, entropy=None, mutual_info=mi, samples=samples)


@pytest.fixture(scope="session")
def phantom() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory: ``phantom(rng, shift=0.0)`` -> (image uint8 (176, 208), labels uint8 (176, 208)), a head-like
    slice of nested ellipses (csf rim, gray, white core) with noise; ``shift`` widens the ellipses."""
    return _phantom


@pytest.fixture(scope="session")
def tiny_dataset() -> Callable[..., Path]:
    """Factory: ``tiny_dataset(root, subjects=3, slices=6, seed=0, split="pool")`` writes a dataset folder of
    phantom slices, all in ``split``, and returns ``root``."""
    return _tiny_dataset


@pytest.fixture(scope="session")
def intensity_predictor() -> type[IntensityPredictor]:
    """The stand-in segmenter's class: ``intensity_predictor(channels=3)`` builds one with a wrong class count."""
    return IntensityPredictor


# -- benchmark scripts: the B7 and B8 helper tests -----------------------------------------------------------

def _benchmark_module(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package) and return the module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def benchmark_module() -> Callable[[str], Any]:
    """Factory: ``benchmark_module("b7_label_efficiency")`` -> that benchmark script as a module."""
    return _benchmark_module


# -- botocore service models ---------------------------------------------------------------------------------

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

    client = boto3.session.Session(region_name="us-east-1").client(service)
    model = client.meta.service_model.operation_model(operation).input_shape
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
