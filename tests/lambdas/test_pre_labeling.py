"""The pre-labeling Lambda: documented request shapes in, the validated batch out as taskInput."""

from __future__ import annotations

import json

import pytest

from lambdas.pre_labeling.handler import lambda_handler
from qa_workflow.contract import ContractError, SegqaError


def _event(gt, data_object: dict) -> dict:
    return {"version": "2018-10-16", "labelingJobArn": gt.job_arn, "dataObject": data_object}


def test_source_ref_on_s3_returns_the_batch_as_task_input(s3_bucket, make_batch, gt):
    from qa_workflow import storage

    batch = make_batch("r1-csf-0001", "csf", n=13)
    storage.write_json(f"s3://{s3_bucket}/r1/batches/b1.json", batch)
    out = lambda_handler(_event(gt, {"source-ref": f"s3://{s3_bucket}/r1/batches/b1.json"}), None)
    assert out == {"taskInput": batch, "isHumanAnnotationRequired": True}


@pytest.mark.parametrize("form", ["path", "file_uri", "inline_source", "source_uri"])
def test_local_paths_file_uris_and_inline_sources(tmp_path, form, make_batch, gt):
    batch = make_batch("r1-wm-0002", "white_matter", n=11)
    path = tmp_path / "batch one.json"
    path.write_text(json.dumps(batch))
    data_object = {"path": {"source-ref": str(path)}, "file_uri": {"source-ref": path.as_uri()},
                   "inline_source": {"source": json.dumps(batch)}, "source_uri": {"source": str(path)}}[form]
    out = lambda_handler(_event(gt, data_object), None)
    assert out["taskInput"] == batch and out["isHumanAnnotationRequired"] is True


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b["items"][3].update(class_name="csf", item_id="sub-001/003/csf"),
     r"items\[3\].*not of the batch's class"),
    (lambda b: b["items"][0].pop("overlay_uri"), r"items\[0\]: missing field\(s\) overlay_uri"),
    (lambda b: b.pop("color"), r"missing field\(s\) color"),
    (lambda b: b["items"][1].update(confidence=1.5), r"items\[1\]: confidence must be a number in \[0, 1\]"),
    (lambda b: b.update(items=[]), "items must be a non-empty list"),
])
def test_an_invalid_batch_raises_a_clear_error_never_a_half_task(tmp_path, mutate, match, make_batch, gt):
    batch = make_batch("r1-gm-0003", "gray_matter", n=12)
    mutate(batch)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(batch))
    with pytest.raises(ContractError, match=match) as info:
        lambda_handler(_event(gt, {"source-ref": str(path)}), None)
    assert str(path) in str(info.value)  # the message names the file


def test_unreadable_batches_and_bad_events_raise(tmp_path, gt):
    with pytest.raises(SegqaError, match="no such file"):
        lambda_handler(_event(gt, {"source-ref": str(tmp_path / "missing.json")}), None)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(SegqaError, match="not valid JSON"):
        lambda_handler(_event(gt, {"source-ref": str(tmp_path / "x.json")}), None)
    with pytest.raises(ContractError, match="source-ref, source"):
        lambda_handler(_event(gt, {}), None)
    with pytest.raises(ContractError, match="expected an object"):
        lambda_handler({"version": "2018-10-16", "labelingJobArn": gt.job_arn}, None)


def test_every_call_the_pre_labeling_handler_makes_is_allowed_by_the_stack_role(aws, make_batch, gt, role_check):
    from qa_workflow import storage

    bucket = aws[2]
    batch = make_batch("r1-csf-0001", "csf", n=13)
    storage.write_json(f"s3://{bucket}/r1/batches/b1.json", batch)
    made, denied = role_check("PreLabelingRole", lambda: lambda_handler(
        _event(gt, {"source-ref": f"s3://{bucket}/r1/batches/b1.json"}), None))
    assert ("s3", "GetObject") in made and denied == []
