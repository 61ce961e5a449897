"""Builders for the review tests: batches, Ground Truth-shaped events and annotation payloads, store snapshots.

The event shapes are the ones the AWS documentation shows for custom labeling workflows:
pre-labeling ``{"version": "2018-10-16", "labelingJobArn", "dataObject": {"source-ref"}}``; post-labeling
``{"version", "labelingJobArn", "labelCategories", "labelAttributeName", "roleArn", "payload": {"s3Uri"}}`` whose
file is ``[{"datasetObjectId", "dataObject": {"s3Uri"}, "annotations": [{"workerId", "annotationData":
{"content": "<JSON string>"}}]}]``. The crowd form's fields are top-level keys of that JSON string.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable

JOB_ARN = "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/segqa-r1-review"
JOB = "segqa-r1-review"
LABEL = "segqa-review"
WORKERS = ("private.us-east-1.0a1b2c3d4e5f6a7b", "private.us-east-1.1c2d3e4f5a6b7c8d",
           "private.us-east-1.2e3f4a5b6c7d8e9f")
COLORS = {"csf": "#1f77b4", "gray_matter": "#2ca02c", "white_matter": "#ffbf00"}
CLASS_IDS = {"csf": 1, "gray_matter": 2, "white_matter": 3}


def make_batch(batch_id: str, class_name: str = "gray_matter", n: int = 12, subject: str = "sub-001",
               first_slice: int = 0, round_: int = 1, model_version: str = "unet-v1", seed: int = 0,
               base: str = "s3://segqa-sagemaker/r1") -> dict[str, Any]:
    rng = random.Random(seed)
    items = []
    for k in range(n):
        sl = first_slice + k
        iid = f"{subject}/{sl:03d}/{class_name}"
        items.append({"item_id": iid, "slice_id": f"{subject}/{sl:03d}", "class_name": class_name,
                      "confidence": round(rng.random(), 4), "overlay_uri": f"{base}/overlays/{iid}.png",
                      "image_uri": f"{base}/images/{subject}/{sl:03d}.png", "mask_uri": f"{base}/masks/{iid}.png"})
    return {"batch_id": batch_id, "round": round_, "model_version": model_version, "class_id": CLASS_IDS[class_name],
            "class_name": class_name, "color": COLORS[class_name], "items": items}


def batches(n_objects: int, n_items: int = 12, class_name: str = "gray_matter") -> list[dict[str, Any]]:
    """Distinct batches (one subject each) so items never repeat across objects."""
    return [make_batch(f"r1-{class_name}-{o:04d}", class_name, n_items, subject=f"sub-{o:03d}", seed=o)
            for o in range(n_objects)]


def write_json(path: Path, obj: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


def random_decisions(batch: dict[str, Any], rng: random.Random, p_accept: float = 0.7) -> list[dict[str, Any]]:
    """One decision per item, in shuffled order (the consumer must match by item_id)."""
    out = []
    for it in batch["items"]:
        if rng.random() < p_accept:
            d = {"item_id": it["item_id"], "decision": "accept"}
        else:
            d = {"item_id": it["item_id"], "decision": "reject",
                 "reason": rng.choice(["under_segmented", "over_segmented", "wrong_tissue", "image_artifact", "other"])}
            if rng.random() < 0.3:
                d["comment"] = "<b>leaks</b> into the \"skull\" & beyond"
        out.append(d)
    rng.shuffle(out)
    return out


def form_content(batch: dict[str, Any], decisions: list[dict[str, Any]], submitted_at: str | None = None) -> str:
    """``annotationData.content``: the crowd form's fields as a JSON string; ``decisions`` is itself a string."""
    form: dict[str, Any] = {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"]}
    if submitted_at:
        form["submitted_at"] = submitted_at
    return json.dumps(form)


def post_event(payload_uri: str, job_arn: str = JOB_ARN) -> dict[str, Any]:
    return {"version": "2018-10-16", "labelingJobArn": job_arn, "labelCategories": None,
            "labelAttributeName": LABEL, "roleArn": "arn:aws:iam::111122223333:role/SageMakerGroundTruth",
            "payload": {"s3Uri": payload_uri}}


def expected_counts(payload: Iterable[dict[str, Any]], batches_by_uri: dict[str, dict[str, Any]]
                    ) -> dict[tuple[str, str], tuple[int, int]]:
    """Oracle: (round, item_id) -> (confirm, disconfirm), one vote per (item, worker), for content-form payloads
    whose decisions are all valid."""
    votes: dict[tuple[str, str, str], str] = {}
    for obj in payload:
        batch = batches_by_uri[obj["dataObject"]["s3Uri"]]
        for ann in obj["annotations"]:
            decisions = json.loads(json.loads(ann["annotationData"]["content"])["decisions"])
            for d in decisions:
                votes.setdefault((str(batch["round"]), d["item_id"], ann["workerId"]), d["decision"])
    counts: dict[tuple[str, str], list[int]] = {}
    for (rnd, iid, _w), decision in votes.items():
        c = counts.setdefault((rnd, iid), [0, 0])
        c[0 if decision == "accept" else 1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def store_counts(store: Any) -> dict[tuple[str, str], tuple[int, int]]:
    return {(s.item.round, s.item.item_id): (s.confirm_count, s.disconfirm_count) for s in store.iter_items()}


def snapshot(store: Any) -> tuple[list[Any], list[Any]]:
    """Everything the store holds (items with counts and timestamps, votes), for exact comparisons."""
    return list(store.iter_items()), list(store.iter_votes())


# ------------------------------------------------------------------------------------------------------------
# Fixtures shared by the review tests (import them into a test module to use them)

import pytest  # noqa: E402


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


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_uri(request, aws, tmp_path, monkeypatch):
    """A fresh store of each engine, named in SEGQA_STORE (as the Lambda sees it); yields its URI."""
    from qa_workflow.confirmations import store as store_mod
    from qa_workflow.confirmations.dynamodb import create_table

    _, ddb, _ = aws
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/store.db"
    else:
        create_table("segqa-votes", ddb)
        uri = "dynamodb://segqa-votes"
    store_mod.clear_store_cache()
    store_mod.open_store(uri, client=ddb if request.param == "dynamodb" else None, cached=True)
    monkeypatch.setenv("SEGQA_STORE", uri)
    yield uri
    store_mod.clear_store_cache()
