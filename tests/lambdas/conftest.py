"""Tests of `lambdas/`: the pre-/post-labeling handlers, the retrain trigger and their packaging.

The event shapes are the ones the AWS documentation shows for custom labeling workflows:
pre-labeling ``{"version": "2018-10-16", "labelingJobArn", "dataObject": {"source-ref"}}``; post-labeling
``{"version", "labelingJobArn", "labelCategories", "labelAttributeName", "roleArn", "payload": {"s3Uri"}}`` whose
file is ``[{"datasetObjectId", "dataObject": {"s3Uri"}, "annotations": [{"workerId", "annotationData":
{"content": "<JSON string>"}}]}]``. The crowd form's fields are top-level keys of that JSON string.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest


class GroundTruthShapes:
    """Builders of Ground Truth-shaped data for one labeling job, and oracles over what the store should hold."""

    job_arn = "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/segqa-r1-review"
    job = "segqa-r1-review"
    label = "segqa-review"
    workers = ("private.us-east-1.0a1b2c3d4e5f6a7b", "private.us-east-1.1c2d3e4f5a6b7c8d",
               "private.us-east-1.2e3f4a5b6c7d8e9f")

    def __init__(self, make_batch: Callable[..., dict[str, Any]]) -> None:
        self.make_batch = make_batch

    def batches(self, n_objects: int, n_items: int = 12, class_name: str = "gray_matter") -> list[dict[str, Any]]:
        """Distinct batches (one subject each) so items never repeat across objects."""
        return [self.make_batch(f"r1-{class_name}-{o:04d}", class_name, n_items, subject=f"sub-{o:03d}", seed=o)
                for o in range(n_objects)]

    @staticmethod
    def random_decisions(batch: dict[str, Any], rng: random.Random, p_accept: float = 0.7) -> list[dict[str, Any]]:
        """One decision per item, in shuffled order (the consumer must match by item_id)."""
        out = []
        for it in batch["items"]:
            if rng.random() < p_accept:
                d = {"item_id": it["item_id"], "decision": "accept"}
            else:
                d = {"item_id": it["item_id"], "decision": "reject",
                     "reason": rng.choice(["under_segmented", "over_segmented", "wrong_tissue", "image_artifact",
                                           "other"])}
                if rng.random() < 0.3:
                    d["comment"] = "<b>leaks</b> into the \"skull\" & beyond"
            out.append(d)
        rng.shuffle(out)
        return out

    @staticmethod
    def form_content(batch: dict[str, Any], decisions: list[dict[str, Any]], submitted_at: str | None = None) -> str:
        """``annotationData.content``: the crowd form's fields as a JSON string; ``decisions`` is itself a string."""
        form: dict[str, Any] = {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"]}
        if submitted_at:
            form["submitted_at"] = submitted_at
        return json.dumps(form)

    def post_event(self, payload_uri: str) -> dict[str, Any]:
        """The post-labeling (consolidation) request for the payload file at ``payload_uri``."""
        return {"version": "2018-10-16", "labelingJobArn": self.job_arn, "labelCategories": None,
                "labelAttributeName": self.label, "roleArn": "arn:aws:iam::111122223333:role/SageMakerGroundTruth",
                "payload": {"s3Uri": payload_uri}}

    @staticmethod
    def adjust_task(slice_id: str, mask_uri: str, classes_to_check: list[str], base: str = "s3://segqa-sagemaker/r2"
                    ) -> dict[str, Any]:
        """An adjust task object (ARCHITECTURE §6) of one slice whose model label map is at ``mask_uri``."""
        from qa_workflow.contract import label_mappings

        return {"task_id": f"r2-adjust-{slice_id.replace('/', '-')}", "kind": "adjust", "round": 2,
                "model_version": "unet-r2", "slice_id": slice_id, "image_uri": f"{base}/images/{slice_id}.png",
                "mask_uri": mask_uri, "initial_overlay_uri": f"{base}/initial/{slice_id}.png",
                "label_mappings": label_mappings(), "classes_to_check": classes_to_check,
                "item_ids": [f"{slice_id}/{c}" for c in classes_to_check]}

    @staticmethod
    def segmentation_content(labels: Any, mappings: dict[str, dict[str, str]], modified: bool = True,
                             seconds: float | None = None) -> str:
        """``annotationData.content`` of the adjust template: the ``crowd-semantic-segmentation`` output for the
        label map ``labels`` (H x W, values 0..3) drawn in the colours of ``mappings`` (label -> colour; the
        labels in class id order 1..3), background transparent, as the editor's canvas exports it."""
        import base64
        import io

        import numpy as np
        from PIL import Image

        labels = np.asarray(labels)
        rgba = np.zeros((*labels.shape, 4), np.uint8)
        for class_id, entry in enumerate(mappings.values(), start=1):
            colour = entry["color"].lstrip("#")
            rgba[labels == class_id] = [int(colour[i:i + 2], 16) for i in (0, 2, 4)] + [255]
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        form: dict[str, Any] = {"correctedMask": {
            "labeledImage": {"pngImageData": base64.b64encode(buf.getvalue()).decode()},
            "labelMappings": mappings, "initialValueModified": modified,
            "inputImageProperties": {"height": int(labels.shape[0]), "width": int(labels.shape[1])}}}
        if seconds is not None:
            form["seconds"] = str(seconds)
        return json.dumps(form)

    @staticmethod
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

    @staticmethod
    def store_counts(store: Any) -> dict[tuple[str, str], tuple[int, int]]:
        """What a store holds as (round, item_id) -> (confirm, disconfirm)."""
        return {(s.item.round, s.item.item_id): (s.confirm_count, s.disconfirm_count) for s in store.iter_items()}

    @staticmethod
    def snapshot(store: Any) -> tuple[list[Any], list[Any]]:
        """Everything the store holds (items with counts and timestamps, votes), for exact comparisons."""
        return list(store.iter_items()), list(store.iter_votes())


@pytest.fixture(scope="session")
def gt(make_batch) -> GroundTruthShapes:
    """Ground Truth-shaped batches, events, annotation contents and store oracles (see `GroundTruthShapes`)."""
    return GroundTruthShapes(make_batch)


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


def _actions_needed(service: str, operation: str, params: dict) -> list[str]:
    """The IAM actions one API call is authorised by (HeadObject by s3:GetObject, ListObjectsV2 by
    s3:ListBucket, TransactWriteItems by the actions of its parts)."""
    if service == "s3" and operation in ("HeadObject", "ListObjectsV2"):
        return ["s3:GetObject" if operation == "HeadObject" else "s3:ListBucket"]
    if service == "dynamodb" and operation == "TransactWriteItems":
        parts = {"Put": "PutItem", "Update": "UpdateItem", "ConditionCheck": "ConditionCheckItem",
                 "Delete": "DeleteItem"}
        return sorted({f"dynamodb:{parts[kind]}" for item in params["TransactItems"] for kind in item})
    return [f"{service}:{operation}"]


@pytest.fixture
def role_check(aws, monkeypatch):
    """``role_check(role, run)``: run ``run()`` recording every AWS call it makes, and return the (service,
    operation) pairs made and the (action, resource) pairs that the stack role ``role`` does not allow. moto
    enforces no IAM, so the handlers' tests do: S3 object calls are matched on their object ARN against the
    statements' resources (``${DataBucket.Arn}`` resolved to the test bucket), other calls on the action."""
    import fnmatch

    import botocore.client

    from qa_workflow.cloud import deploy

    bucket = aws[2]
    template = deploy._decode(deploy.TEMPLATE_PATH)

    def check(role: str, run) -> tuple[set[tuple[str, str]], list[tuple[str, str | None]]]:
        statements = [s for p in template["Resources"][role]["Properties"]["Policies"]
                      for s in p["PolicyDocument"]["Statement"]]
        calls: list[tuple[str, str, dict]] = []
        original = botocore.client.BaseClient._make_api_call

        def recording(client, operation, params):
            calls.append((client.meta.service_model.endpoint_prefix, operation, params))
            return original(client, operation, params)

        with monkeypatch.context() as m:
            m.setattr(botocore.client.BaseClient, "_make_api_call", recording)
            run()

        def resources(statement) -> list[str]:
            found = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            return [r["Fn::Sub"].replace("${DataBucket.Arn}", f"arn:aws:s3:::{bucket}")
                    if isinstance(r, dict) and "Fn::Sub" in r else str(r) for r in found]

        def allowed(action: str, arn: str | None) -> bool:
            return any(action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                       and (arn is None or any(fnmatch.fnmatchcase(arn, r) for r in resources(s)))
                       for s in statements if s["Effect"] == "Allow")

        denied = []
        for service, operation, params in calls:
            arn = f"arn:aws:s3:::{params['Bucket']}/{params['Key']}" if service == "s3" and "Key" in params else None
            denied += [(a, arn) for a in _actions_needed(service, operation, params) if not allowed(a, arn)]
        return {(service, operation) for service, operation, _ in calls}, denied

    return check
