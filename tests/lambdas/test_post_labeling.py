"""The post-labeling Lambda on Ground Truth-shaped events, against both store engines.

The post-labeling Lambda on Ground Truth-shaped events, against both store engines (moto S3 + DynamoDB,
real SQLite)."""

from __future__ import annotations

import json
import logging
import random

import pytest

from lambdas.post_labeling.handler import lambda_handler
from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import ContractError


def _put(s3, bucket: str, key: str, obj) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(obj).encode())
    return f"s3://{bucket}/{key}"


def _scenario(gt, aws, n_objects=3, n_items=14, seed=7):
    """Batches and a payload on (moto) S3: several objects, three workers, shuffled decisions; the second
    worker's annotation of every object is stored at annotationData.s3Uri, the others inline as content."""
    s3, _, bucket = aws
    rng = random.Random(seed)
    bs = gt.batches(n_objects, n_items)
    by_uri = {_put(s3, bucket, f"r1/batches/{b['batch_id']}.json", b): b for b in bs}
    payload, oracle_payload = [], []
    for oid, (uri, b) in enumerate(by_uri.items()):
        anns, plain = [], []
        for w, worker in enumerate(gt.workers):
            content = gt.form_content(b, gt.random_decisions(b, rng), submitted_at=f"2025-03-0{w + 1}T10:00:00.000Z")
            plain.append({"workerId": worker, "annotationData": {"content": content}})
            if w == 1:
                ann_uri = f"s3://{bucket}/r1/annotations/{oid}/{w}.json"
                s3.put_object(Bucket=bucket, Key=ann_uri.split("/", 3)[3], Body=content.encode())
                anns.append({"workerId": worker, "annotationData": {"s3Uri": ann_uri}})
            else:
                anns.append({"workerId": worker, "annotationData": {"content": content}})
        payload.append({"datasetObjectId": str(oid), "dataObject": {"s3Uri": uri}, "annotations": anns})
        oracle_payload.append({"datasetObjectId": str(oid), "dataObject": {"s3Uri": uri}, "annotations": plain})
    payload_uri = _put(s3, bucket, "r1/consolidation-request/iteration-1/payload.json", payload)
    return payload_uri, by_uri, gt.expected_counts(oracle_payload, by_uri), payload


def test_documented_event_shapes_give_one_entry_per_object_and_exact_counts(aws, store_uri, gt):
    payload_uri, by_uri, expected, payload = _scenario(gt, aws)
    response = lambda_handler(gt.post_event(payload_uri), None)

    assert [e["datasetObjectId"] for e in response] == [o["datasetObjectId"] for o in payload]
    assert gt.store_counts(open_store(store_uri)) == expected
    for entry, obj in zip(response, payload, strict=True):
        content = entry["consolidatedAnnotation"]["content"]
        assert list(content) == [gt.label]
        label = content[gt.label]
        batch = by_uri[obj["dataObject"]["s3Uri"]]
        assert label["batch_id"] == batch["batch_id"] and label["job"] == gt.job
        assert sorted(label["workers"]) == sorted(gt.workers)
        assert [row["item_id"] for row in label["items"]] == [it["item_id"] for it in batch["items"]]
        for row in label["items"]:
            c, d = expected[("1", row["item_id"])]
            assert (row["confirm_count"], row["disconfirm_count"]) == (c, d)
            assert row["decision"] == ("split" if c and d else "accept" if c else "reject")
            assert sum(row["reasons"].values()) <= d
        assert sum(label["summary"].values()) == len(batch["items"])
        assert "problems" not in label



def test_every_call_the_vote_consolidation_makes_is_allowed_by_the_stack_role(aws, store_uri, gt, role_check):
    payload_uri, *_ = _scenario(gt, aws)
    made, denied = role_check("PostLabelingRole", lambda: lambda_handler(gt.post_event(payload_uri), None))
    assert ("s3", "GetObject") in made
    if store_uri.startswith("dynamodb"):
        assert ("dynamodb", "TransactWriteItems") in made
    assert denied == []

def test_votes_carry_reviewer_fields_and_items_carry_batch_metadata(aws, store_uri, gt):
    payload_uri, by_uri, _, _ = _scenario(gt, aws, n_objects=1)
    lambda_handler(gt.post_event(payload_uri), None)
    store = open_store(store_uri)
    batch = next(iter(by_uri.values()))
    item = batch["items"][3]
    state = store.get_item(item["item_id"], round=1)
    assert state.item.class_name == "gray_matter" and state.item.model_version == "unet-v1"
    assert state.item.confidence == pytest.approx(item["confidence"])
    assert state.item.subject == "sub-000" and state.item.slice_id == item["slice_id"]
    assert state.item.batch_id == batch["batch_id"] and state.item.mask_uri == item["mask_uri"]
    assert state.reviewers == tuple(sorted(gt.workers))
    votes = list(store.iter_votes(item_id=item["item_id"], round=1))
    assert sorted(v.worker_id for v in votes) == sorted(gt.workers)
    assert {v.job for v in votes} == {gt.job}
    assert sorted(v.submitted_at for v in votes) == [f"2025-03-0{w}T10:00:00.000Z" for w in (1, 2, 3)]
    assert all(v.recorded_at for v in votes)
    rejects = [v for v in store.iter_votes() if v.decision == "reject"]
    assert rejects and all(v.reason for v in rejects)
    assert any(v.comment == "<b>leaks</b> into the \"skull\" & beyond" for v in rejects)


def test_replaying_an_invocation_twice_leaves_the_store_identical(aws, store_uri, gt):
    payload_uri, _, expected, _ = _scenario(gt, aws)
    first = lambda_handler(gt.post_event(payload_uri), None)
    store = open_store(store_uri)
    after_first = gt.snapshot(store)
    assert lambda_handler(gt.post_event(payload_uri), None) == first
    assert lambda_handler(gt.post_event(payload_uri), None) == first
    assert gt.snapshot(store) == after_first
    assert gt.store_counts(store) == expected


def test_decisions_are_matched_by_item_id_never_by_position(aws, store_uri, tmp_path, gt):
    batch = gt.batches(1, 12)[0]
    target = batch["items"][5]["item_id"]
    decisions = [{"decision": "accept", "item_id": it["item_id"]} for it in batch["items"]]
    decisions = [d if d["item_id"] != target else {"comment": "x", "decision": "reject", "item_id": target,
                                                    "reason": "over_segmented"} for d in decisions][::-1]
    (tmp_path / "b.json").write_text(json.dumps(batch))
    payload = [{"datasetObjectId": "0", "dataObject": {"s3Uri": str(tmp_path / "b.json")},
                "annotations": [{"workerId": gt.workers[0],
                                 "annotationData": {"content": gt.form_content(batch, decisions)}}]}]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    out = lambda_handler(gt.post_event(f"file://{tmp_path}/p.json"), None)
    rows = {r["item_id"]: r for r in out[0]["consolidatedAnnotation"]["content"][gt.label]["items"]}
    assert rows[target]["decision"] == "reject" and rows[target]["reasons"] == {"over_segmented": 1}
    assert all(r["decision"] == "accept" for iid, r in rows.items() if iid != target)
    assert open_store(store_uri).get_item(target).disconfirm_count == 1


def _log_events(caplog) -> list[dict]:
    out = []
    for rec in caplog.records:
        if rec.name == "segqa.lambdas":
            out.append(json.loads(rec.getMessage()))
    return out


def test_malformed_annotations_and_objects_affect_only_themselves(aws, store_uri, tmp_path, caplog, gt):
    bs = gt.batches(3, 12)
    uris = []
    for b in bs:
        p = tmp_path / f"{b['batch_id']}.json"
        p.write_text(json.dumps(b))
        uris.append(str(p))
    good = bs[0]
    rng = random.Random(3)
    d_ok = gt.random_decisions(good, rng)
    d_partial = gt.random_decisions(good, rng)
    dropped = d_partial.pop()  # one item left undecided
    d_partial += [{"item_id": "sub-999/001/gray_matter", "decision": "accept"},  # not in this batch
                  {"item_id": good["items"][0]["item_id"] + "x", "decision": "accept"},  # malformed id
                  {"item_id": "sub-000/001/csf"},  # no decision
                  "not an object"]
    payload = [
        {"datasetObjectId": "good", "dataObject": {"s3Uri": uris[0]}, "annotations": [
            {"workerId": gt.workers[0], "annotationData": {"content": gt.form_content(good, d_ok)}},
            {"workerId": gt.workers[1], "annotationData": {"content": gt.form_content(good, d_partial)}},
            {"workerId": gt.workers[2], "annotationData": {"content": "{not json"}},
            {"workerId": "", "annotationData": {"content": gt.form_content(good, d_ok)}},
            {"workerId": "private.x", "annotationData": {"content": json.dumps({"other_field": "1"})}},
            {"workerId": "private.y", "annotationData": {"s3Uri": str(tmp_path / "missing.json")}},
        ]},
        {"datasetObjectId": "missing-batch", "dataObject": {"s3Uri": str(tmp_path / "nope.json")},
         "annotations": [{"workerId": gt.workers[0], "annotationData": {"content": gt.form_content(good, d_ok)}}]},
        {"datasetObjectId": "other", "dataObject": {"s3Uri": uris[1]}, "annotations": [
            {"workerId": gt.workers[0],
             "annotationData": {"content": gt.form_content(bs[1], gt.random_decisions(bs[1], rng))}}]},
    ]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    with caplog.at_level(logging.INFO, logger="segqa"):
        out = lambda_handler(gt.post_event(str(tmp_path / "p.json")), None)

    # An object whose batch cannot be read gets no entry: Ground Truth counts it failed, not labeled, so no
    # manifest line or labeled count downstream pretends it was reviewed.
    assert [e["datasetObjectId"] for e in out] == ["good", "other"]
    label = out[0]["consolidatedAnnotation"]["content"][gt.label]
    assert label["workers"] == [gt.workers[0], gt.workers[1]]
    assert len(label["problems"]) == 5

    store = open_store(store_uri)
    votes = list(store.iter_votes())
    by_worker = {w: {v.item_id for v in votes if v.worker_id == w} for w in {v.worker_id for v in votes}}
    assert by_worker[gt.workers[0]] == ({it["item_id"] for it in good["items"]}
                                        | {it["item_id"] for it in bs[1]["items"]})
    assert by_worker[gt.workers[1]] == {it["item_id"] for it in good["items"]} - {dropped["item_id"]}
    assert set(by_worker) == {gt.workers[0], gt.workers[1]}

    events = _log_events(caplog)
    problems = [e for e in events if e["event"] == "post_labeling.annotation_problems"]
    assert all(e["job"] == gt.job and e["object_id"] == "good" for e in problems)
    text = json.dumps(problems)
    assert "unknown item sub-999/001/gray_matter" in text and "no decision for 1 item(s)" in text
    assert "not valid JSON" in text
    assert any(e["event"] == "post_labeling.bad_batch" and e["object_id"] == "missing-batch" for e in events)
    assert any(e["event"] == "post_labeling.bad_annotation" for e in events)  # the empty workerId


def test_repeated_object_ids_give_one_entry_and_a_worker_counts_once(aws, store_uri, tmp_path, gt):
    b = gt.batches(1, 11)[0]
    (tmp_path / "b.json").write_text(json.dumps(b))
    accept_all = [{"item_id": it["item_id"], "decision": "accept"} for it in b["items"]]
    reject_all = [{"item_id": it["item_id"], "decision": "reject"} for it in b["items"]]
    obj = {"datasetObjectId": "7", "dataObject": {"s3Uri": str(tmp_path / "b.json")}}

    def answer(worker: str, decisions: list[dict[str, str]]) -> dict:
        return {"workerId": worker, "annotationData": {"content": gt.form_content(b, decisions)}}

    payload = [{**obj, "annotations": [answer(gt.workers[0], accept_all)]},
               {**obj, "annotations": [answer(gt.workers[0], reject_all), answer(gt.workers[1], reject_all)]}]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    out = lambda_handler(gt.post_event(str(tmp_path / "p.json")), None)
    assert [e["datasetObjectId"] for e in out] == ["7"]
    assert set(gt.store_counts(open_store(store_uri)).values()) == {(1, 1)}
    assert {r["decision"] for r in out[0]["consolidatedAnnotation"]["content"][gt.label]["items"]} == {"split"}


def test_dataobject_content_and_nested_form_fields_are_understood(aws, store_uri, tmp_path, gt):
    b = gt.batches(1, 11)[0]
    decisions = [{"item_id": it["item_id"], "decision": "accept"} for it in b["items"]]
    nested = json.dumps({"review": {"decisions": decisions}})  # a form that wraps its fields one level down
    payload = [{"datasetObjectId": "0", "dataObject": {"content": json.dumps(b)},
                "annotations": [{"workerId": gt.workers[0], "annotationData": {"content": nested}}]}]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    lambda_handler(gt.post_event(str(tmp_path / "p.json")), None)
    assert set(gt.store_counts(open_store(store_uri)).values()) == {(1, 0)}


_JOB_ARN = "arn:aws:sagemaker:us-east-1:1:labeling-job/j"


@pytest.mark.parametrize("event,match", [
    ({"labelAttributeName": "segqa-review", "payload": {"s3Uri": "x"}}, "labelingJobArn"),
    ({"labelingJobArn": _JOB_ARN, "payload": {"s3Uri": "x"}}, "labelAttributeName"),
    ({"labelingJobArn": _JOB_ARN, "labelAttributeName": "segqa-review"}, "payload.s3Uri"),
])
def test_malformed_events_raise_a_clear_error(aws, store_uri, event, match):
    with pytest.raises(ContractError, match=match):
        lambda_handler(event, None)


def test_missing_store_configuration_is_a_clear_error(monkeypatch, tmp_path, gt):
    from qa_workflow.confirmations.store import clear_store_cache
    from qa_workflow.contract import SegqaError

    clear_store_cache()
    monkeypatch.delenv("SEGQA_STORE", raising=False)
    with pytest.raises(SegqaError, match="SEGQA_STORE is not set"):
        lambda_handler(gt.post_event(str(tmp_path / "p.json")), None)
