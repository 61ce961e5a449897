"""`qa_workflow.contract`: tissue classes, item ids, decision parsing and batch validation."""

import json
from datetime import UTC

import pytest

from qa_workflow import contract as c


def test_tissue_classes_match_architecture():
    assert [(t.id, t.name, t.color) for t in c.TISSUE_CLASSES] == [
        (0, "background", None), (1, "csf", "#1f77b4"), (2, "gray_matter", "#2ca02c"), (3, "white_matter", "#ffbf00")]
    assert [t.name for t in c.REVIEW_CLASSES] == ["csf", "gray_matter", "white_matter"]
    assert c.tissue_class("2") is c.GRAY_MATTER and c.tissue_class(3) is c.WHITE_MATTER
    assert c.WHITE_MATTER.rgb == (255, 191, 0)
    with pytest.raises(c.ContractError, match="unknown tissue class"):
        c.tissue_class("bone")


@pytest.mark.parametrize("subject,idx,cls", [("sub-007", 45, "gray_matter"), ("OAS1_0001_MR1", 0, "csf"),
                                             ("s.1", 1234, "white_matter")])
def test_item_id_round_trip(subject, idx, cls):
    iid = c.format_item_id(subject, idx, cls)
    parsed = c.parse_item_id(iid)
    assert (parsed.subject, parsed.slice_index, parsed.class_name) == (subject, idx, cls)
    assert str(parsed) == iid
    assert c.format_item_id("sub-007", 45, "gray_matter") == "sub-007/045/gray_matter"


@pytest.mark.parametrize("bad", ["sub-007/45/gray_matter", "sub-007/045/bone", "sub-007/045/background",
                                 "../etc/045/csf", "sub-007/045", "", "sub 7/045/csf", "sub-007/0045/csf"])
def test_item_id_rejects_malformed(bad):
    with pytest.raises(c.ContractError):
        c.parse_item_id(bad)


def test_parse_decisions_by_id_and_validation():
    raw = json.dumps([{"item_id": "s1/002/csf", "decision": "reject", "reason": "under_segmented", "comment": "<b>x"},
                      {"decision": "accept", "item_id": "s1/001/csf", "reason": "other"}])
    ds = {d.item_id: d for d in c.parse_decisions(raw)}
    assert ds["s1/002/csf"].reason == "under_segmented" and ds["s1/002/csf"].comment == "<b>x"
    assert ds["s1/001/csf"].decision == "accept" and ds["s1/001/csf"].reason is None
    with pytest.raises(c.ContractError, match="decided twice"):
        c.parse_decisions([{"item_id": "s1/001/csf", "decision": "accept"}] * 2)
    with pytest.raises(c.ContractError, match="decision must be"):
        c.parse_decisions([{"item_id": "s1/001/csf", "decision": "maybe"}])
    with pytest.raises(c.ContractError, match="not valid JSON"):
        c.parse_decisions("[{")


def _batch(n=3):
    items = [{"item_id": f"sub-1/{i:03d}/csf", "slice_id": f"sub-1/{i:03d}", "class_name": "csf", "confidence": 0.5,
              "overlay_uri": "o.png", "image_uri": "i.png", "mask_uri": "m.png"} for i in range(n)]
    return {"batch_id": "r1-csf-000", "round": 1, "model_version": "m1", "class_id": 1, "class_name": "csf",
            "color": "#1f77b4", "items": items}


def test_validate_batch_accepts_contract_and_names_the_fault():
    assert c.validate_batch(_batch())["batch_id"] == "r1-csf-000"
    b = _batch()
    b["items"][1]["confidence"] = 1.5
    with pytest.raises(c.ContractError, match=r"items\[1\]: confidence"):
        c.validate_batch(b)
    b = _batch()
    b["items"][2]["item_id"] = "sub-1/002/gray_matter"
    with pytest.raises(c.ContractError, match="not of the batch's class"):
        c.validate_batch(b)
    b = _batch()
    del b["model_version"]
    with pytest.raises(c.ContractError, match="missing field"):
        c.validate_batch(b)


def test_batch_color_must_be_rrggbb_since_it_goes_into_css():
    for bad in ("red;}body{display:none", "#12345", "#1234567", "#ggg000", "", None, 0x1F77B4):
        b = _batch()
        b["color"] = bad
        with pytest.raises(c.ContractError, match=r"color must be #rrggbb"):
            c.validate_batch(b)
    b = _batch()
    b["color"] = "#A0b1C2"
    assert c.validate_batch(b)["color"] == "#A0b1C2"


def test_rounds_sort_by_their_number_then_text():
    ids = ["round-10", "round-9", "round-0007", "12", "3", "draft"]
    assert sorted(ids, key=c.round_sort_key) == ["draft", "3", "round-0007", "round-9", "round-10", "12"]
    assert max(["round-9", "round-10"], key=c.round_sort_key) == "round-10"
    assert c.round_number("round-0007") == 7 and c.round_number(4) == 4 and c.round_number("draft") == -1


def test_timestamps_are_utc_iso_with_z():
    from datetime import datetime, timedelta, timezone

    assert c.utc_iso(0) == "1970-01-01T00:00:00Z"
    assert c.utc_iso(1.5, "milliseconds") == "1970-01-01T00:00:01.500Z"
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert c.utc_iso(plus_two) == "2026-01-01T12:00:00Z"
    now = c.utc_now_iso("milliseconds")
    assert now.endswith("Z") and abs(datetime.fromisoformat(now.replace("Z", "+00:00"))
                                     - datetime.now(UTC)) < timedelta(minutes=1)


def _adjust_task(**kw):
    task = {"task_id": "r2-sub-001-004", "kind": "adjust", "round": "2", "model_version": "unet-r2",
            "slice_id": "sub-001/004", "image_uri": "s3://b/img.png", "mask_uri": "s3://b/mask.png",
            "initial_overlay_uri": "s3://b/initial.png", "label_mappings": c.label_mappings(),
            "classes_to_check": ["gray_matter"], "item_ids": ["sub-001/004/gray_matter"]}
    return {**task, **kw}


def test_adjust_tasks_validate_and_verify_batches_stay_the_default(make_batch):
    assert c.validate_task(_adjust_task())["kind"] == "adjust"
    assert c.task_kind(make_batch("b1")) == "verify"  # no kind: an old verify batch
    assert c.validate_task(make_batch("b1"))["batch_id"] == "b1"
    assert c.label_mappings()["white_matter"] == {"color": "#ffbf00"}
    assert "background" not in c.label_mappings()


@pytest.mark.parametrize("change, match", [
    ({"kind": "draw"}, "kind must be one of"),
    ({"item_ids": ["sub-001/005/gray_matter"]}, "not of slice sub-001/004"),
    ({"item_ids": ["sub-001/004/csf"]}, "not in classes_to_check"),
    ({"classes_to_check": []}, "classes_to_check must be a non-empty list"),
    ({"classes_to_check": ["background"]}, "not a review class"),
    ({"label_mappings": {"csf": {"color": "#123456"}}}, "no colour for gray_matter, white_matter"),
    ({"label_mappings": {**c.label_mappings(), "csf": {"color": "blue"}}}, "csf.color must be #rrggbb"),
    ({"slice_id": "sub-001"}, "is not <subject>/<slice:03d>"),
    ({"initial_overlay_uri": ""}, "initial_overlay_uri must be a non-empty string"),
])
def test_bad_adjust_tasks_name_the_field(change, match):
    with pytest.raises(c.ContractError, match=match):
        c.validate_task(_adjust_task(**change), where="task.json")


@pytest.mark.parametrize(("accepts", "rejects", "outcome"), [
    (3, 0, "accept"), (0, 3, "reject"), (2, 1, "split"), (1, 2, "split"), (1, 1, "split"), (3, 2, "split"),
    (4, 1, "accept"), (1, 4, "reject"), (3, 1, "accept"), (0, 0, None), (1, 0, "accept")])
def test_vote_outcome_splits_unless_the_majority_leads_by_two(accepts, rejects, outcome):
    from qa_workflow.contract import vote_outcome

    assert vote_outcome(accepts, rejects) == outcome
