"""Simulated reviewers (ARCHITECTURE §10): the behaviour model, and filling a round through the real handlers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.contract import SegqaError
from qa_workflow.review.simulated_reviewers import (
    accept_probability,
    dice_quality,
    mask_quality,
    reviewer_decision,
    simulate_round,
)


@pytest.fixture(autouse=True)
def _fresh_store_cache():
    yield
    clear_store_cache()


def _counts(uri):
    st = open_store(uri, create=False)
    try:
        return {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in st.iter_items()}
    finally:
        st.close()


def test_dice_quality():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    assert dice_quality(a, b) == 1.0  # both empty
    a[:4] = True
    assert dice_quality(a, b) == 0.0
    b[:2] = True
    assert dice_quality(a, b) == pytest.approx(2 * 16 / (32 + 16))
    assert dice_quality(a, a) == 1.0
    with pytest.raises(ValueError):
        dice_quality(a, np.zeros((4, 4), bool))


def test_reviewers_judge_surface_dice_by_default_and_volume_dice_on_request():
    truth = np.zeros((40, 40), bool)
    truth[10:26, 10:26] = True
    shifted = np.roll(truth, 1, axis=1)  # off by one pixel: invisible on an overlay
    assert mask_quality(shifted, truth) == 1.0
    assert accept_probability(mask_quality(shifted, truth)) > 0.99
    assert mask_quality(shifted, truth, "dice") == pytest.approx(0.9375)
    assert accept_probability(mask_quality(shifted, truth, "dice")) < 0.9
    with pytest.raises(SegqaError, match="unknown quality measure"):
        mask_quality(shifted, truth, "hd95")


def test_accept_probability_is_the_documented_sigmoid():
    assert accept_probability(0.90) == pytest.approx(0.5)
    assert accept_probability(0.92) == pytest.approx(1 / (1 + np.exp(-1)))
    assert accept_probability(1.0) > 0.99 and accept_probability(0.8) < 0.01
    q = np.linspace(0, 1, 11)
    assert np.all(np.diff(accept_probability(q)) >= 0)


def test_decisions_are_reproducible_independent_and_flip_at_the_error_rate():
    ids = [f"sub-{i:03d}/001/csf" for i in range(4000)]
    first = [reviewer_decision(0.90, seed=7, reviewer_index=1, item_id=i, error_rate=0.0) for i in ids]
    assert first == [reviewer_decision(0.90, seed=7, reviewer_index=1, item_id=i, error_rate=0.0) for i in ids]
    assert 0.45 < np.mean(first) < 0.55  # q = τ: a coin toss
    other = [reviewer_decision(0.90, seed=7, reviewer_index=2, item_id=i, error_rate=0.0) for i in ids]
    assert 0.4 < np.mean(np.equal(first, other)) < 0.6  # reviewers are independent
    # A perfect mask is accepted unless the reviewer slips; slips happen at the error rate.
    slips = [not reviewer_decision(1.0, seed=3, reviewer_index=1, item_id=i, error_rate=0.1) for i in ids]
    assert 0.08 < np.mean(slips) < 0.12
    assert not any(reviewer_decision(0.0, seed=3, reviewer_index=1, item_id=i, error_rate=0.0) for i in ids[:500])


def test_simulated_round_goes_through_the_handlers_into_the_store(tmp_path, make_round):
    rnd = make_round(tmp_path, n_batches=3, n_items=8, bad_every=3)
    uri = f"sqlite:///{tmp_path}/store.sqlite"
    work = tmp_path / "annotations"
    result = simulate_round(str(rnd.root), rnd.truth, store_uri=uri, reviewers=3, error_rate=0.0, seed=1,
                            objects_per_invocation=2, work_dir=work)
    assert result.objects == 3 and result.invocations == 2 and result.votes == 3 * 8 * 3
    counts = _counts(uri)
    assert set(counts) == set(rnd.item_ids)
    # Dice 1 masks are always accepted, Dice 0 masks always rejected (no slips at error rate 0).
    assert all(counts[i] == (3, 0) for i in rnd.good_items)
    assert all(counts[i] == (0, 3) for i in rnd.bad_items)
    # What went through the handlers is Ground Truth's shape: annotation files of objects with worker answers.
    payloads = [json.loads(p.read_text()) for p in sorted(work.glob("consolidation-*.json"))]
    assert [len(p) for p in payloads] == [2, 1]
    answer = payloads[0][0]["annotations"][0]
    assert answer["workerId"] == "private.local.sim-reviewer-1"
    form = json.loads(answer["annotationData"]["content"])
    assert set(form) == {"decisions", "batch_id", "submitted_at", "seconds"} and isinstance(form["decisions"], str)
    assert float(form["seconds"]) == 3.0 * 8  # the cost model: 3 s per mask on the screen
    st = open_store(uri, create=False)
    reasons = {v.reason for v in st.iter_votes() if v.decision == "reject"}
    jobs = {v.job for v in st.iter_votes()}
    st.close()
    assert reasons == {"under_segmented"}  # every bad mask here is smaller than its truth region
    (job,) = jobs
    assert job == result.job_name and job.startswith("segqa-sim-") and len(job) <= 63
    quality = {r["item_id"]: r["quality"] for r in result.items}
    assert all(quality[i] == 1.0 for i in rnd.good_items) and all(quality[i] == 0.0 for i in rnd.bad_items)


def test_default_job_names_differ_between_rounds(tmp_path):
    from qa_workflow.review.portal.labeling import job_name_for

    a = job_name_for(str(tmp_path / "rounds" / "r1" / "round" / "manifest.jsonl"), prefix="segqa-sim")
    b = job_name_for(str(tmp_path / "rounds" / "r2" / "round" / "manifest.jsonl"), prefix="segqa-sim")
    assert a != b and a.startswith("segqa-sim-r1-round-") and b.startswith("segqa-sim-r2-round-")
    assert a == job_name_for(str(tmp_path / "rounds" / "r1" / "round" / "manifest.jsonl"), prefix="segqa-sim")


def test_rerunning_a_simulation_double_counts_nothing_and_a_new_job_adds_votes(tmp_path, make_round):
    rnd = make_round(tmp_path, n_batches=2, n_items=5)
    uri = f"sqlite:///{tmp_path}/store.sqlite"
    first = simulate_round(str(rnd.root), rnd.truth, store_uri=uri, reviewers=2, seed=5)
    once = _counts(uri)
    again = simulate_round(str(rnd.root), rnd.truth, store_uri=uri, reviewers=2, seed=5)
    assert _counts(uri) == once and [r["accepts"] for r in again.items] == [r["accepts"] for r in first.items]
    simulate_round(str(rnd.root), rnd.truth, store_uri=uri, reviewers=2, seed=5, job_name="second-pass")
    twice = _counts(uri)
    assert all(sum(twice[i]) == 2 * sum(once[i]) == 4 for i in once)


def test_error_rate_one_flips_every_answer(tmp_path, make_round):
    rnd = make_round(tmp_path, n_batches=1, n_items=6)
    uri = f"sqlite:///{tmp_path}/store.sqlite"
    simulate_round(str(rnd.root), rnd.truth, store_uri=uri, reviewers=1, error_rate=1.0)
    counts = _counts(uri)
    assert all(counts[i] == (0, 1) for i in rnd.good_items) and all(counts[i] == (1, 0) for i in rnd.bad_items)


def test_missing_truth_and_bad_options_are_clear_errors(tmp_path, make_round):
    rnd = make_round(tmp_path, n_batches=1, n_items=2)
    (rnd.truth / "index.csv").write_text("subject,slice,image,mask,split\n")
    with pytest.raises(SegqaError, match="not in the truth dataset"):
        simulate_round(str(rnd.root), rnd.truth, store_uri=f"sqlite:///{tmp_path}/s.sqlite")
    with pytest.raises(SegqaError, match="error-rate"):
        simulate_round(str(rnd.root), rnd.truth, store_uri=f"sqlite:///{tmp_path}/s.sqlite", error_rate=2)


def test_cli_simulate(tmp_path, capsys, make_round):
    from qa_workflow.cli import main

    rnd = make_round(tmp_path, n_batches=2, n_items=3)
    uri = f"sqlite:///{tmp_path}/store.sqlite"
    out = tmp_path / "sim.csv"
    assert main(["review", "simulate", "--round", str(rnd.root), "--truth", str(rnd.truth), "--store", uri,
                 "--reviewers", "3", "--seed", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 batches, 6 items, 18 votes" in text and "gray_matter" in text
    lines = out.read_text().splitlines()
    assert lines[0] == "item_id,class_name,confidence,quality,accepts,rejects" and len(lines) == 7
    assert main(["review", "simulate", "--round", str(tmp_path / "nowhere"), "--truth", str(rnd.truth),
                 "--store", uri]) == 2
    assert "manifest.jsonl" in capsys.readouterr().err
    # a batch that fails pre-labeling fails the run (the others' votes stay stored)
    broken = tmp_path / "broken.jsonl"
    broken.write_text((rnd.root / "manifest.jsonl").read_text() + json.dumps({"source-ref": str(tmp_path / "no.json")})
                      + "\n")
    assert main(["review", "simulate", "--round", str(broken), "--truth", str(rnd.truth), "--store", uri]) == 1
    err = capsys.readouterr().err
    assert "failed pre-labeling" in err and "1 of 3 batches failed pre-labeling" in err
