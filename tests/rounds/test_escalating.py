"""Escalation: the masks a verify job split on go to more reviewers in a second verify job, whose votes decide."""

import json

import pytest

from qa_workflow import storage
from qa_workflow.confirmations.records import ItemRecord, Vote
from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import SegqaError, validate_batch
from qa_workflow.rounds.adjusting import rejected_in_store
from qa_workflow.rounds.escalating import split_in_store, write_escalation_batches
from qa_workflow.rounds.round_dir import read_assignments


def _record(store, job, row, decisions, first_worker=1):
    item = ItemRecord(row.item_id, row.class_name, float(row.confidence), "r03", slice_id=row.slice_id)
    store.record_votes([(item, Vote(job, row.item_id, f"w{first_worker + n}", d)) for n, d in enumerate(decisions)])


def test_split_masks_get_a_second_verify_job_whose_votes_decide(batched_round, tmp_path):
    round_dir, dest = batched_round
    rows = list(read_assignments(round_dir).query("assignment == 'verify'").sort_values("item_id").itertuples())
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    first = {0: ["accept"] * 3, 1: ["accept", "accept", "reject"], 2: ["accept", "reject", "accept"],
             3: ["reject", "accept", "reject"], 4: ["reject"] * 3}
    for k, decisions in first.items():
        _record(store, "verify-1", rows[k], decisions)
    ids = [r.item_id for r in rows]
    assert split_in_store(store, "verify-1") == sorted(ids[1:4])

    result = write_escalation_batches(round_dir, ids[1:4], "verify-1")
    assert result.manifest == f"{dest}/escalate/verify-1/manifest.jsonl" and result.items == 3
    refs = [json.loads(line)["source-ref"] for line in storage.read_text(result.manifest).splitlines()]
    assert refs == result.batch_uris
    originals = {it["item_id"]: it for b in json.loads((tmp_path / "round" / "r03" / "batches.json").read_text())
                 ["batches"] for it in storage.read_json(b["uri"])["items"]}
    escalated = []
    for ref in refs:
        batch = validate_batch(storage.read_json(ref))
        assert batch["batch_id"].endswith("-escalated") and ref.startswith(f"{dest}/escalate/verify-1/")
        for it in batch["items"]:  # the source batch's own objects: nothing rendered again
            assert it == originals[it["item_id"]]
            escalated.append(it["item_id"])
    assert sorted(escalated) == sorted(ids[1:4])

    # two more reviewers: 2-1 + 2 accepts = 4-1 (accepted), 2-1 + 1/1 = 3-2 (still split), 1-2 + 2 rejects = 1-4
    _record(store, "escalate-1", rows[1], ["accept", "accept"], first_worker=4)
    _record(store, "escalate-1", rows[2], ["accept", "reject"], first_worker=4)
    _record(store, "escalate-1", rows[3], ["reject", "reject"], first_worker=4)
    assert [store.get_item(i).outcome for i in ids[:5]] == ["accept", "accept", "split", "reject", "reject"]
    assert rejected_in_store(store, "verify-1") == sorted(ids[1:5])  # without the second opinion
    assert rejected_in_store(store, "verify-1", "escalate-1") == sorted(ids[2:5])


def test_escalation_errors_name_what_is_wrong(batched_round, tmp_path):
    round_dir, _ = batched_round
    with pytest.raises(SegqaError, match="no split items"):
        write_escalation_batches(round_dir, [], "verify-1")
    with pytest.raises(SegqaError, match="in no verify batch of this round: sub-999/001/csf"):
        write_escalation_batches(round_dir, ["sub-999/001/csf"], "verify-1")
    with pytest.raises(SegqaError, match="no votes of job 'nope'"):
        split_in_store(open_store(f"sqlite:///{tmp_path}/empty.db"), "nope")
    storage.write_json(f"{round_dir}/batches.json", {"status": "in-progress"})
    with pytest.raises(SegqaError, match="not complete"):
        write_escalation_batches(round_dir, ["sub-000/001/csf"], "verify-1")


def test_simulated_escalation_reviewers_are_other_people(batched_round, tmp_path):
    from qa_workflow.review.simulated_reviewers import simulate_round

    round_dir, _ = batched_round
    store_uri = f"sqlite:///{tmp_path}/s.db"
    ids = sorted(read_assignments(round_dir).query("assignment == 'verify'")["item_id"])[:4]
    result = write_escalation_batches(round_dir, ids, "verify-1")
    sim = simulate_round(result.manifest, tmp_path / "data", store_uri=store_uri, reviewers=2, first_reviewer=4,
                         job_name="escalate-1")
    votes = list(open_store(store_uri).iter_votes(job="escalate-1"))
    assert sim.votes == len(votes) == 8 and sorted({v.item_id for v in votes}) == ids
    assert {v.worker_id for v in votes} == {"private.local.sim-reviewer-4", "private.local.sim-reviewer-5"}
    with pytest.raises(SegqaError, match="--first-reviewer"):
        simulate_round(result.manifest, tmp_path / "data", store_uri=store_uri, first_reviewer=0)


def test_segqa_batch_writes_escalation_batches_and_review_simulate_numbers_the_new_reviewers(batched_round,
                                                                                            tmp_path, capsys):
    from qa_workflow.cli import main

    round_dir, dest = batched_round
    rows = list(read_assignments(round_dir).query("assignment == 'verify'").sort_values("item_id").itertuples())
    store_uri = f"sqlite:///{tmp_path}/s.db"
    store = open_store(store_uri)
    _record(store, "verify-1", rows[0], ["accept", "reject", "accept"])
    _record(store, "verify-1", rows[1], ["reject"] * 3)
    assert main(["batch", "--round", round_dir, "--dest", dest, "--workers", "1", "--escalate-from-job", "verify-1",
                 "--store", store_uri]) == 0
    assert "1 escalation batches (1 split items)" in capsys.readouterr().err.replace("\n", " ")
    manifest = f"{dest}/escalate/verify-1/manifest.jsonl"
    assert main(["review", "simulate", "--round", manifest, "--truth", str(tmp_path / "data"), "--store", store_uri,
                 "--reviewers", "2", "--first-reviewer", "4", "--job-name", "escalate-1"]) == 0
    assert "1 batches, 1 items, 2 votes" in capsys.readouterr().out
    assert {v.worker_id[-1] for v in store.iter_votes(job="escalate-1")} == {"4", "5"}
    assert main(["batch", "--round", round_dir, "--dest", dest, "--workers", "1", "--adjust-from-job", "verify-1",
                 "--escalation-job", "escalate-1", "--store", store_uri]) == 0
    assert main(["batch", "--round", round_dir, "--escalation-job", "escalate-1"]) == 2
    assert "--escalation-job goes with --adjust-from-job" in capsys.readouterr().err
