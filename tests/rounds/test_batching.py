"""Batching: valid one-class batches in priority order, resumable uploads, unreadable masks rejected."""

import json

import numpy as np
import pytest

from qa_workflow import storage
from qa_workflow.contract import to_display, validate_batch
from qa_workflow.rounds.batching import read_manifest, write_batches
from qa_workflow.rounds.predict import run_predictions
from qa_workflow.rounds.round_dir import read_assignments, select_round
from qa_workflow.rounds.selection import SelectionPolicy


@pytest.fixture
def round_dir(tmp_path, intensity_predictor, tiny_dataset):
    data = tiny_dataset(tmp_path / "data", subjects=3, slices=4)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    out = str(tmp_path / "round" / "r07")
    select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=20, random_arm=2, seed=1))
    return out


def load_png(uri):
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(storage.read_bytes(uri))))


def check_batches(round_dir, dest, batch_size):
    refs = read_manifest(storage.join(dest, "manifest.jsonl"))
    assert refs == read_manifest(storage.join(round_dir, "manifest.jsonl"))
    items = []
    for ref in refs:
        b = validate_batch(storage.read_json(ref), ref)
        assert b["round"] == "r07" and b["model_version"] == "intensity-1"
        assert 1 <= len(b["items"]) <= batch_size
        items += b["items"]
    reviewed = read_assignments(round_dir)
    reviewed = reviewed[reviewed["assignment"].isin(["verify", "audit", "random_arm"])]
    assert sorted(i["item_id"] for i in items) == sorted(reviewed["item_id"])
    for it in items[:5]:
        mask = load_png(it["mask_uri"])
        labels = to_display(load_png(storage.join(str(round_dir).rsplit("/round/", 1)[0], "pred/masks",
                                                  it["slice_id"] + ".png")))  # reviewed PNGs: display
        cls = {"csf": 1, "gray_matter": 2, "white_matter": 3}[it["class_name"]]
        assert set(np.unique(mask)) <= {0, 255} and ((mask == 255) == (labels == cls)).all()
        assert load_png(it["image_uri"]).shape == (208, 176)  # anterior up: 208 rows
        assert len(storage.read_bytes(it["overlay_uri"])) <= 60_000
    return refs, items


def test_batches_are_valid_one_class_each_and_ordered_by_priority(round_dir):
    res = write_batches(round_dir, batch_size=5, workers=2)
    refs, items = check_batches(round_dir, round_dir, 5)
    assert len(refs) == len(res.batches) and res.items == len(items) == 22
    firsts = []
    for ref in refs:
        b = storage.read_json(ref)
        assert {i["class_name"] for i in b["items"]} == {b["class_name"]}
        firsts.append(b["batch_id"])
    assert all(f.startswith("r07-") for f in firsts)
    again = write_batches(round_dir, batch_size=5, workers=2)
    assert again.unchanged and again.uploaded == 0


_REAL_WRITE = storage.write_bytes


class Interrupt(RuntimeError):
    pass


def write_counter(monkeypatch, fail_after=None):
    """Count successful writes under each URI; raise Interrupt once ``fail_after`` writes succeeded."""
    real = _REAL_WRITE
    writes: list[str] = []

    def wrapped(uri, data, content_type=None):
        if fail_after is not None and len(writes) >= fail_after:
            raise Interrupt("connection lost")
        out = real(uri, data, content_type)
        writes.append(str(uri))
        return out

    monkeypatch.setattr(storage, "write_bytes", wrapped)
    return writes


@pytest.mark.parametrize("where", ["local", "s3"])
def test_interrupted_upload_resumes_without_duplicates(round_dir, tmp_path, monkeypatch, request, where):
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        dest = f"s3://{bucket}/review/r07"
    else:
        dest = str(tmp_path / "dest")
    first = write_counter(monkeypatch, fail_after=9)
    with pytest.raises(Interrupt):
        write_batches(round_dir, dest, batch_size=5, workers=3)
    state = storage.read_json(storage.join(round_dir, "batches.json"))
    assert state["status"] == "in-progress"
    assert not storage.exists(storage.join(dest, "manifest.jsonl"))
    done_before = {u for u in first if u.startswith(dest)}
    assert len(done_before) >= 8

    second = write_counter(monkeypatch)
    res = write_batches(round_dir, dest, batch_size=5, workers=3)
    rewritten = [u for u in second if u.startswith(dest)]
    assert not set(rewritten) & done_before, "objects written before the interruption are not written again"
    assert len(rewritten) == len(set(rewritten))
    objects = list(storage.list_uris(dest))
    assert len(objects) == len(set(objects)) == len(done_before) + len(rewritten)
    assert res.skipped_existing == len(done_before) - sum(1 for u in done_before if "/batches/" in u)
    # 22 items: 22 masks + 22 overlays + one image per distinct slice + batches + manifest
    items = read_assignments(round_dir)
    items = items[items["assignment"].isin(["verify", "audit", "random_arm"])]
    expected = 2 * len(items) + items["slice_id"].nunique() + len(res.batches) + 1
    assert len(objects) == expected
    assert not any(".tmp" in o for o in objects)
    check_batches(round_dir, dest, 5)
    if where == "s3":
        assert all(i.startswith("s3://") for r in read_manifest(storage.join(dest, "manifest.jsonl"))
                   for i in [r] + [x["overlay_uri"] for x in storage.read_json(r)["items"]])


def test_unreadable_predicted_mask_rejects_its_items(round_dir, tmp_path):
    frame = read_assignments(round_dir)
    victim = frame[frame["assignment"] == "verify"].iloc[0]
    open(victim["pred_mask"], "wb").write(b"broken")
    res = write_batches(round_dir, batch_size=25)
    lost = set(frame.loc[(frame["pred_mask"] == victim["pred_mask"])
                         & frame["assignment"].isin(["verify", "audit", "random_arm"]), "item_id"])
    assert {r.item_id for r in res.rejects} == lost
    rows = open(storage.join(round_dir, "batch_rejects.csv")).read()
    assert victim["item_id"] in rows and "unreadable predicted mask" in rows
    in_batches = {i for b in res.batches for i in b["items"]}
    assert not in_batches & lost and res.items == len(in_batches)


def test_batch_json_shape_matches_the_contract(round_dir):
    res = write_batches(round_dir, batch_size=25)
    b = json.load(open(res.batches[0]["uri"]))
    assert list(b) == ["batch_id", "round", "model_version", "class_id", "class_name", "color", "items"]
    assert list(b["items"][0]) == ["item_id", "slice_id", "class_name", "confidence", "overlay_uri",
                                   "image_uri", "mask_uri"]
    assert b["color"] == {"csf": "#1f77b4", "gray_matter": "#2ca02c", "white_matter": "#ffbf00"}[b["class_name"]]


def _routed_round(tmp_path, intensity_predictor, tiny_dataset, gray_matter_y=(0, 0.2), name="r07"):
    data = tiny_dataset(tmp_path / "data", subjects=3, slices=4)
    if not (tmp_path / "pred" / "run.json").is_file():
        run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    (tmp_path / "cal.json").write_text(json.dumps({"schema": "segqa.calibration/1", "classes": {
        "csf": {"x": [0, 1], "y": [0.9, 1]}, "gray_matter": {"x": [0, 1], "y": list(gray_matter_y)},
        "white_matter": {"x": [0, 1], "y": [0.9, 1]}}}))
    out = str(tmp_path / "round" / name)
    select_round(str(tmp_path / "pred"), out, SelectionPolicy(), calibration=str(tmp_path / "cal.json"))
    return out


def test_items_routed_to_adjust_become_one_adjust_task_per_slice_beside_the_batches(
        tmp_path, intensity_predictor, tiny_dataset):
    from qa_workflow.contract import validate_task

    out = _routed_round(tmp_path, intensity_predictor, tiny_dataset)
    frame = read_assignments(out)
    routed = frame[frame["assignment"] == "adjust"]
    assert len(routed) > 0 and set(routed["class_name"]) == {"gray_matter"}
    result = write_batches(out)
    assert result.not_batched == {}
    # the verify batches hold the verified items only
    _, items = check_batches(out, out, 25)
    assert not any(i["class_name"] == "gray_matter" for i in items)
    # the routed masks: one adjust task per slice, its routed classes to check, in their own manifest
    adjust = result.adjust
    assert adjust is not None and adjust["items"] == len(routed)
    assert adjust["manifest"] == storage.join(out, "adjust/routed/manifest.jsonl")
    assert read_manifest(adjust["manifest"]) == adjust["tasks"]
    tasks = [validate_task(storage.read_json(u), u) for u in adjust["tasks"]]
    assert sorted(t["slice_id"] for t in tasks) == sorted(set(routed["slice_id"])) == adjust["slices"]
    assert sorted(i for t in tasks for i in t["item_ids"]) == sorted(routed["item_id"])
    for t in tasks:
        assert t["kind"] == "adjust" and t["round"] == "r07" and t["origin"] == "routed" and "source_job" not in t
        assert t["classes_to_check"] == ["gray_matter"] and t["task_id"].startswith("r07-adjust-routed-")
        labels = load_png(t["mask_uri"])  # written in the display orientation (contract.to_display): 208 x 176
        assert labels.shape == (208, 176) and set(np.unique(labels)) <= {0, 1, 2, 3}
        assert load_png(t["initial_overlay_uri"]).shape == (208, 176, 4)
        assert load_png(t["image_uri"]).shape == (208, 176)
    # recorded in batches.json; a second run changes nothing and still reports them
    assert storage.read_json(storage.join(out, "batches.json"))["adjust"] == adjust
    again = write_batches(out)
    assert again.unchanged and again.adjust == adjust


def test_a_round_of_adjust_work_only_writes_tasks_and_an_empty_verify_manifest(
        tmp_path, intensity_predictor, tiny_dataset):
    out = _routed_round(tmp_path, intensity_predictor, tiny_dataset, name="r08")
    frame = read_assignments(out)
    frame.loc[frame["assignment"].isin(["verify", "audit", "random_arm"]), "assignment"] = "skip"
    frame.to_csv(storage.join(out, "assignments.csv"), index=False)
    result = write_batches(out)
    assert result.batches == [] and result.items == 0
    assert storage.read_text(result.manifest) == ""
    assert result.adjust is not None and result.adjust["items"] == int((frame["assignment"] == "adjust").sum())


def test_rounds_written_before_routing_still_batch(round_dir):
    """An assignments.csv of the 'review' era (no site / p_accept / expected_seconds columns) reads as verify."""
    import pandas as pd

    path = storage.join(round_dir, "assignments.csv")
    frame = pd.read_csv(path, keep_default_na=False)
    frame = frame.drop(columns=["site", "p_accept", "expected_seconds"])
    frame["assignment"] = frame["assignment"].replace("verify", "review")
    frame.to_csv(path, index=False)
    old = read_assignments(round_dir)
    assert "review" not in set(old["assignment"]) and (old["assignment"] == "verify").sum() == 20
    assert write_batches(round_dir).items == 22
