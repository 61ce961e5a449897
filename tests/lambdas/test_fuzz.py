"""Fuzzed post-labeling payloads: never a crash, one answer per object, every valid vote once.

Hypothesis draws the workers' annotations, valid and invalid mixed; the oracle `_expected` says which votes must
land, so no valid vote may be lost and none counted twice, also on a replay."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_workflow.confirmations import consolidate
from qa_workflow.confirmations.dynamodb import create_table
from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import REJECT_REASONS

WORKER_POOL = ["private.us-east-1.aaaa", "private.us-east-1.bbbb", " private.us-east-1.cccc ", "w4"]

junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@st.composite
def valid_entry(draw, item_id: str):
    decision = draw(st.sampled_from(["accept", "reject"]))
    entry = {"item_id": item_id, "decision": decision}
    if draw(st.booleans()):
        entry["reason"] = draw(st.sampled_from(list(REJECT_REASONS) + [""]))
    if draw(st.booleans()):
        entry["comment"] = draw(st.text(max_size=30))
    if draw(st.booleans()):
        entry["extra_field"] = draw(junk)
    return entry


@st.composite
def invalid_entry(draw, batch):
    ids = [it["item_id"] for it in batch["items"]]
    kind = draw(st.sampled_from(["unknown_id", "bad_id", "bad_decision", "bad_reason", "not_object", "no_id",
                                 "bad_comment"]))
    if kind == "unknown_id":
        return {"item_id": "sub-999/001/" + batch["class_name"], "decision": "accept"}
    if kind == "bad_id":
        return {"item_id": draw(st.text(max_size=15)), "decision": "accept"}
    if kind == "bad_decision":
        return {"item_id": draw(st.sampled_from(ids)), "decision": draw(junk)}
    if kind == "bad_reason":
        return {"item_id": draw(st.sampled_from(ids)), "decision": "reject", "reason": "looks_odd"}
    if kind == "bad_comment":
        return {"item_id": draw(st.sampled_from(ids)), "decision": "accept", "comment": 5}
    if kind == "no_id":
        return {"decision": "accept"}
    return draw(junk)


@st.composite
def annotation(draw, batch):
    """(annotation entry, valid decisions it carries as {item_id: decision} or None, worker id or None)."""
    worker = draw(st.sampled_from(WORKER_POOL))
    kind = draw(st.sampled_from(["form"] * 6 + ["list_form", "junk_content", "non_object", "no_field",
                                               "bad_decisions_json", "missing_s3", "no_worker", "not_a_dict"]))
    if kind == "not_a_dict":
        return draw(junk), None, None
    if kind == "no_worker":
        return {"annotationData": {"content": "{}"}, "workerId": draw(st.sampled_from([None, "", "  ", 3]))}, None, None
    if kind in ("junk_content", "non_object", "no_field", "bad_decisions_json", "missing_s3"):
        data = {"junk_content": {"content": draw(st.text(max_size=30))},
                "non_object": {"content": json.dumps(draw(junk))},
                "no_field": {"content": json.dumps({"answer": "yes"})},
                "bad_decisions_json": {"content": json.dumps({"decisions": "[{\"item_id\": "})},
                "missing_s3": {"s3Uri": "/nonexistent/segqa/annotation.json"}}[kind]
        return {"workerId": worker, "annotationData": data}, None, worker.strip()
    ids = [it["item_id"] for it in batch["items"]]
    chosen = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    entries = [draw(valid_entry(i)) for i in chosen]
    valid = {e["item_id"]: e["decision"] for e in entries}
    entries += draw(st.lists(invalid_entry(batch), max_size=4))
    entries = draw(st.permutations(entries))
    decisions = json.dumps(entries) if kind == "form" else entries
    content = json.dumps({"decisions": decisions, "batch_id": batch["batch_id"]})
    return {"workerId": worker, "annotationData": {"content": content}}, valid, worker.strip()


@st.composite
def payloads(draw, batches):
    """1-4 objects (object id, index into ``batches``, annotations as `annotation` draws them)."""
    objects = []
    for oid in range(draw(st.integers(1, 4))):
        b = draw(st.sampled_from(range(len(batches))))
        anns = draw(st.lists(annotation(batches[b]), max_size=5))
        objects.append((str(oid), b, anns))
    return objects


def _expected(objects) -> dict[tuple[str, str], tuple[int, int]]:
    """Oracle: per object, a worker's first annotation with any valid decision counts; across objects a vote
    (job, item, worker) counts once, first one wins."""
    votes: dict[tuple[str, str], str] = {}
    for _oid, _b, anns in objects:
        used: set[str] = set()
        for _entry, valid, worker in anns:
            if not valid or worker in used:
                continue
            used.add(worker)
            for iid, decision in valid.items():
                votes.setdefault((iid, worker), decision)
    counts: dict[tuple[str, str], list[int]] = {}
    for (iid, _w), decision in votes.items():
        c = counts.setdefault(("1", iid), [0, 0])
        c[0 if decision == "accept" else 1] += 1
    return {k: tuple(v) for k, v in counts.items()}


def _run(gt, batches, objects, store, root: Path):
    batch_uris = []
    for b in batches:
        p = root / f"{b['batch_id']}.json"
        p.write_text(json.dumps(b))
        batch_uris.append(str(p))
    payload = [{"datasetObjectId": oid, "dataObject": {"s3Uri": batch_uris[b]}, "annotations": [a[0] for a in anns]}
               for oid, b, anns in objects]
    (root / "payload.json").write_text(json.dumps(payload))
    out = consolidate.post_labeling(gt.post_event(str(root / "payload.json")), store)
    assert [e["datasetObjectId"] for e in out] == [o[0] for o in objects]
    assert all(list(e["consolidatedAnnotation"]["content"]) == [gt.label] for e in out)
    counts = {(s.item.round, s.item.item_id): (s.confirm_count, s.disconfirm_count) for s in store.iter_items()}
    assert counts == _expected(objects)
    # and a replay changes nothing
    assert consolidate.post_labeling(gt.post_event(str(root / "payload.json")), store) == out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_payloads_sqlite(gt, data):
    batches = gt.batches(2, 11)
    objects = data.draw(payloads(batches), label="objects")
    root = Path(tempfile.mkdtemp(prefix="segqa-fuzz-"))
    try:
        _run(gt, batches, objects, open_store(f"sqlite:///{root}/store.db"), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_payloads_dynamodb(gt, data):
    import boto3
    from moto import mock_aws

    batches = gt.batches(2, 11)
    objects = data.draw(payloads(batches), label="objects")
    root = Path(tempfile.mkdtemp(prefix="segqa-fuzz-"))
    try:
        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            create_table("fuzz", client)
            _run(gt, batches, objects, open_store("dynamodb://fuzz", client=client), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
