"""Chaining verify to adjust: rejected items (store or output manifest) -> one adjust task per slice."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from qa_workflow import storage
from qa_workflow.confirmations.records import ItemRecord, Vote
from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import CLASS_BY_NAME, SegqaError, validate_task
from qa_workflow.rounds.adjusting import rejected_in_output_manifest, rejected_in_store, write_adjust_tasks
from qa_workflow.rounds.round_dir import read_assignments


def _png(uri):
    return np.asarray(Image.open(io.BytesIO(storage.read_bytes(uri))))


def test_rejected_items_of_a_job_become_one_task_per_slice(batched_round, tmp_path):
    round_dir, dest = batched_round
    reviewed = read_assignments(round_dir)
    reviewed = reviewed[reviewed["assignment"] == "verify"].sort_values("item_id")
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    votes, items = [], []
    for k, row in enumerate(reviewed.itertuples()):
        item = ItemRecord(row.item_id, row.class_name, float(row.confidence), "r03", slice_id=row.slice_id)
        decisions = ["accept", "accept"] if k % 3 == 0 else ["reject", "accept"] if k % 3 == 1 else ["reject"]
        votes += [(item, Vote("verify-1", row.item_id, f"w{n}", d)) for n, d in enumerate(decisions)]
        items.append(item)
    votes.append((items[0], Vote("other-job", items[0].item_id, "w1", "reject")))  # another job's vote counts not
    store.record_votes(votes)
    rejected = rejected_in_store(store, "verify-1")
    assert rejected == sorted(reviewed["item_id"].iloc[[k for k in range(len(reviewed)) if k % 3]])

    result = write_adjust_tasks(round_dir, rejected, "verify-1")
    lines = [json.loads(x) for x in storage.read_text(result.manifest).splitlines()]
    assert [x["source-ref"] for x in lines] == result.task_uris and result.manifest.startswith(dest)
    tasks = [validate_task(storage.read_json(u)) for u in result.task_uris]
    assert sorted(i for t in tasks for i in t["item_ids"]) == rejected
    assert len(tasks) == len({i.rsplit("/", 1)[0] for i in rejected}) == len(result.slices)
    for t in tasks:
        assert t["kind"] == "adjust" and t["round"] == "r03" and t["source_job"] == "verify-1"
        assert t["classes_to_check"] == [i.rsplit("/", 1)[1] for i in t["item_ids"]]
        labels = _png(t["mask_uri"])
        initial = _png(t["initial_overlay_uri"])
        assert initial.shape == (*labels.shape, 4) and _png(t["image_uri"]).shape == labels.shape
        assert (initial[..., 3][labels == 0] == 0).all()  # background transparent
        for name, entry in t["label_mappings"].items():
            colour = [int(entry["color"][i:i + 2], 16) for i in (1, 3, 5)]
            inside = labels == CLASS_BY_NAME[name].id
            assert (initial[inside][:, :3] == colour).all() and (initial[inside][:, 3] == 255).all()


def test_rejected_items_from_a_ground_truth_output_manifest(tmp_path):
    manifest = tmp_path / "output.manifest"
    items = [{"item_id": "sub-001/004/csf", "decision": "reject"}, {"item_id": "sub-001/005/csf", "decision": "accept"},
             {"item_id": "sub-001/006/csf", "decision": "split"}, {"item_id": "sub-001/007/csf", "decision": None}]
    lines = [{"source-ref": "s3://b/batches/1.json", "segqa-review": {"items": items},
              "segqa-review-metadata": {"type": "groundtruth/custom"}}]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert rejected_in_output_manifest(str(manifest), "segqa-review") == ["sub-001/004/csf", "sub-001/006/csf"]
    with pytest.raises(SegqaError, match="no verify result under 'segqa-adjust'"):
        rejected_in_output_manifest(str(manifest), "segqa-adjust")


def test_unknown_items_and_unknown_jobs_are_clear_errors(batched_round, tmp_path):
    round_dir, _ = batched_round
    with pytest.raises(SegqaError, match="not in this round: sub-999/001/csf"):
        write_adjust_tasks(round_dir, ["sub-999/001/csf"], "verify-1")
    with pytest.raises(SegqaError, match="no votes of job 'nope'"):
        rejected_in_store(open_store(f"sqlite:///{tmp_path}/empty.db"), "nope")


def test_segqa_batch_writes_adjust_tasks_for_a_verify_jobs_rejections(batched_round, tmp_path, capsys):
    from qa_workflow.cli import main

    round_dir, dest = batched_round
    row = read_assignments(round_dir).query("assignment == 'verify'").iloc[0]
    store_uri = f"sqlite:///{tmp_path}/s.db"
    item = ItemRecord(row.item_id, row.class_name, float(row.confidence), "r03")
    open_store(store_uri).record_votes([(item, Vote("verify-9", row.item_id, "w1", "reject"))])
    assert main(["batch", "--round", round_dir, "--dest", dest, "--workers", "1", "--adjust-from-job", "verify-9",
                 "--store", store_uri]) == 0
    assert "1 adjust tasks (1 rejected items)" in capsys.readouterr().err.replace("\n", " ")
    manifest = storage.read_text(f"{dest}/adjust/verify-9/manifest.jsonl")
    (ref,) = [json.loads(x)["source-ref"] for x in manifest.splitlines()]
    assert validate_task(storage.read_json(ref))["item_ids"] == [row.item_id]


def test_segqa_batch_without_a_store_fails_before_writing_anything(tmp_path, capsys, monkeypatch, intensity_predictor,
                                                                    tiny_dataset):
    from qa_workflow.cli import main
    from qa_workflow.rounds.predict import run_predictions
    from qa_workflow.rounds.round_dir import select_round
    from qa_workflow.rounds.selection import SelectionPolicy

    data = tiny_dataset(tmp_path / "data", subjects=2, slices=3)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    round_dir = str(tmp_path / "round" / "r03")
    select_round(str(tmp_path / "pred"), round_dir, SelectionPolicy(budget=12, seed=1))
    before = sorted(p.name for p in (tmp_path / "round" / "r03").iterdir())
    monkeypatch.delenv("SEGQA_STORE", raising=False)
    assert main(["batch", "--round", round_dir, "--workers", "1", "--adjust-from-job", "verify-9"]) == 2
    assert "SEGQA_STORE is not set" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "round" / "r03").iterdir()) == before  # no batch, no manifest
