"""The post-labeling Lambda on Ground Truth-shaped adjust events (``crowd-semantic-segmentation`` answers):
every worker's label map written once, per-pixel majority with ties kept as the model's label, a bad PNG failing
its own object only, replays changing nothing. Both store engines; task objects and PNGs on moto S3."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from lambdas.post_labeling.handler import lambda_handler
from lambdas.pre_labeling.handler import lambda_handler as pre_handler
from qa_workflow.confirmations.export import export_corrections
from qa_workflow.confirmations.store import open_store

H, W = 12, 16
#: The answer's own colours (Ground Truth's palette, not the contract's) and display-name labels.
GT_COLOURS = {"Cerebrospinal fluid": {"color": "#ff7f0e"}, "Gray matter": {"color": "#2ca02c"},
              "White matter": {"color": "#9467bd"}}


def _model() -> np.ndarray:
    model = np.zeros((H, W), np.uint8)
    model[2:10, 2:14] = 3
    model[4:8, 5:11] = 2
    return model


def _png(labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(labels, "L").save(buf, format="PNG")
    return buf.getvalue()


def _read_png(s3, uri: str) -> np.ndarray:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return np.asarray(Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())))


def _scenario(gt, aws, malformed: bool = True):
    """Two adjust objects. Object 0: three workers (the second's answer at annotationData.s3Uri). Region A is
    painted gray matter by workers 0 and 1 (a majority); region B gets three different labels (a tie: the
    model's label stays). Object 1: one worker whose PNG is truncated."""
    s3, _, bucket = aws
    model = _model()
    s3.put_object(Bucket=bucket, Key="r2/masks/sub-004/045.png", Body=_png(model))
    task = gt.adjust_task("sub-004/045", f"s3://{bucket}/r2/masks/sub-004/045.png", ["gray_matter", "csf"])
    bad_task = gt.adjust_task("sub-004/046", f"s3://{bucket}/r2/masks/sub-004/045.png", ["white_matter"])
    uris = []
    for t in (task, bad_task):
        key = f"r2/adjust/{t['task_id']}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(t).encode())
        uris.append(f"s3://{bucket}/{key}")
    a, b = (slice(0, 2), slice(0, 4)), (slice(9, 12), slice(12, 16))
    w0, w1, w2 = model.copy(), model.copy(), model.copy()
    w0[a] = 2
    w1[a] = 2
    w1[b] = 3
    w2[b] = 1
    contents = [gt.segmentation_content(w0, GT_COLOURS, seconds=61.5),
                gt.segmentation_content(w1, GT_COLOURS, seconds=40),
                gt.segmentation_content(w2, {"csf": {"color": "#010203"}, "gray_matter": {"color": "#040506"},
                                             "white_matter": {"color": "#070809"}}, modified=True)]
    s3.put_object(Bucket=bucket, Key="r2/annotations/w1.json", Body=contents[1].encode())
    annotations = [{"workerId": gt.workers[0], "annotationData": {"content": contents[0]}},
                   {"workerId": gt.workers[1], "annotationData": {"s3Uri": f"s3://{bucket}/r2/annotations/w1.json"}},
                   {"workerId": gt.workers[2], "annotationData": {"content": contents[2]}}]
    broken = json.loads(gt.segmentation_content(model, GT_COLOURS))
    broken["correctedMask"]["labeledImage"]["pngImageData"] = broken["correctedMask"]["labeledImage"][
        "pngImageData"][:60]
    payload = [{"datasetObjectId": "0", "dataObject": {"s3Uri": uris[0]}, "annotations": annotations},
               {"datasetObjectId": "1", "dataObject": {"s3Uri": uris[1]},
                "annotations": [{"workerId": gt.workers[0], "annotationData": {"content": json.dumps(broken)}}]}]
    payload_uri = f"s3://{bucket}/r2/consolidation-request/iteration-1/payload.json"
    s3.put_object(Bucket=bucket, Key=payload_uri.split("/", 3)[3], Body=json.dumps(payload).encode())
    expected = model.copy()
    expected[a] = 2
    return payload_uri, task, model, expected, (w0, w1, w2)


def test_adjust_answers_are_consolidated_per_pixel_and_a_bad_png_fails_its_own_object(aws, store_uri, gt,
                                                                                      monkeypatch):
    s3, _, bucket = aws
    monkeypatch.delenv("SEGQA_CORRECTIONS_PREFIX", raising=False)
    payload_uri, task, model, expected, worker_maps = _scenario(gt, aws)
    response = lambda_handler(gt.post_event(payload_uri), None)

    assert [e["datasetObjectId"] for e in response] == ["0", "1"]
    good = response[0]["consolidatedAnnotation"]["content"][gt.label]
    assert good["kind"] == "adjust" and good["slice_id"] == "sub-004/045" and good["modified"] is True
    assert good["workers"] == list(gt.workers)
    folder = f"s3://{bucket}/r2/adjust/corrections/{gt.job}/sub-004/045"
    assert good["mask_uri"] == f"{folder}/consolidated.png"
    assert np.array_equal(_read_png(s3, good["mask_uri"]), expected)  # region B: a 1-1-1 tie keeps the model's 3
    for worker, labels in zip(gt.workers, worker_maps, strict=True):
        assert np.array_equal(_read_png(s3, f"{folder}/{worker}.png"), labels)
    bad = response[1]["consolidatedAnnotation"]["content"][gt.label]
    assert bad["mask_uri"] is None and "truncated" in bad["error"] and bad["workers"] == []

    store = open_store(store_uri)
    corrections = list(store.iter_corrections())
    assert [(c.slice_id, c.worker_id, c.seconds, c.modified) for c in corrections] == [
        ("sub-004/045", gt.workers[0], 61.5, True), ("sub-004/045", gt.workers[1], 40.0, True),
        ("sub-004/045", gt.workers[2], None, True)]
    assert corrections[0].job == gt.job and corrections[0].round == "2" and corrections[0].task_id == task["task_id"]
    rows = export_corrections(store)
    assert [(r["slice_id"], r["mask_uri"], r["seconds"]) for r in rows] == [
        ("sub-004/045", good["mask_uri"], 101.5)]


def test_a_replayed_adjust_payload_changes_nothing(aws, store_uri, gt, monkeypatch, tmp_path):
    s3, _, bucket = aws
    monkeypatch.setenv("SEGQA_CORRECTIONS_PREFIX", f"s3://{bucket}/corrections")
    payload_uri, *_ = _scenario(gt, aws)
    first = lambda_handler(gt.post_event(payload_uri), None)
    store = open_store(store_uri)
    before = list(store.iter_corrections()), list(store.iter_consolidated_masks())
    keys = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="corrections/")["Contents"]}
    assert len(keys) == 4  # three workers' maps and the consolidated mask

    again = lambda_handler(gt.post_event(payload_uri), None)
    assert again == first
    after = list(store.iter_corrections()), list(store.iter_consolidated_masks())
    assert after[0] == before[0] and [m.mask_uri for m in after[1]] == [m.mask_uri for m in before[1]]
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="corrections/")["Contents"]} == keys


@pytest.mark.parametrize("change, match", [
    ({"labelMappings": {"bone": {"color": "#ff0000"}}}, "unknown label 'bone'"),
    ({"inputImageProperties": {"height": H, "width": W + 1}}, "differ from the slice"),
])
def test_unknown_labels_and_wrong_sizes_fail_the_object(aws, store_uri, gt, change, match, tmp_path, monkeypatch):
    s3, _, bucket = aws
    monkeypatch.setenv("SEGQA_CORRECTIONS_PREFIX", str(tmp_path / "corrections"))
    s3.put_object(Bucket=bucket, Key="m.png", Body=_png(_model()))
    task = gt.adjust_task("sub-001/001", f"s3://{bucket}/m.png", ["csf"])
    content = json.loads(gt.segmentation_content(_model(), GT_COLOURS))
    content["correctedMask"].update(change)
    payload = [{"datasetObjectId": "7", "dataObject": {"content": json.dumps(task)},
                "annotations": [{"workerId": "w1", "annotationData": {"content": json.dumps(content)}}]}]
    s3.put_object(Bucket=bucket, Key="p.json", Body=json.dumps(payload).encode())
    (entry,) = lambda_handler(gt.post_event(f"s3://{bucket}/p.json"), None)
    assert match in entry["consolidatedAnnotation"]["content"][gt.label]["error"]
    assert list(open_store(store_uri).iter_corrections()) == [] and not (tmp_path / "corrections").exists()


def test_pre_labeling_passes_an_adjust_task_through(aws, gt):
    s3, _, bucket = aws
    task = gt.adjust_task("sub-002/010", f"s3://{bucket}/m.png", ["white_matter"])
    s3.put_object(Bucket=bucket, Key="t.json", Body=json.dumps(task).encode())
    out = pre_handler({"version": "2018-10-16", "labelingJobArn": gt.job_arn,
                       "dataObject": {"source-ref": f"s3://{bucket}/t.json"}}, None)
    assert out == {"taskInput": task, "isHumanAnnotationRequired": True}
    task["classes_to_check"] = ["bone"]
    s3.put_object(Bucket=bucket, Key="t.json", Body=json.dumps(task).encode())
    with pytest.raises(Exception, match="not a review class"):
        pre_handler({"version": "2018-10-16", "labelingJobArn": gt.job_arn,
                     "dataObject": {"source-ref": f"s3://{bucket}/t.json"}}, None)



def test_every_call_the_adjust_consolidation_makes_is_allowed_by_the_stack_role(aws, store_uri, gt, monkeypatch,
                                                                               role_check):
    """Reading tasks and answers, writing every worker's label map and the majority under the default
    ``corrections/`` prefix: all of it allowed by PostLabelingRole, S3 calls on the very object keys."""
    monkeypatch.delenv("SEGQA_CORRECTIONS_PREFIX", raising=False)
    payload_uri, *_ = _scenario(gt, aws)
    made, denied = role_check("PostLabelingRole", lambda: lambda_handler(gt.post_event(payload_uri), None))
    assert {("s3", "PutObject"), ("s3", "GetObject")} <= made  # the scenario writes and reads objects
    if store_uri.startswith("dynamodb"):
        assert ("dynamodb", "PutItem") in made  # the corrections and the consolidated mask
    assert denied == []
