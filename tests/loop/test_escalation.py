"""The demo's escalation step: split masks go to more simulated reviewers before the chained corrections."""

import pytest

from qa_workflow import storage
from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import SegqaError
from qa_workflow.loop.demo import LoopConfig, Workspace, _chained_tasks, _escalate, human_seconds
from qa_workflow.review.simulated_reviewers import simulate_round
from qa_workflow.rounds.adjusting import rejected_in_store
from qa_workflow.rounds.escalating import split_in_store

RID = "round-01"


@pytest.fixture
def voted_round(tmp_path, intensity_predictor, tiny_dataset):
    """A batched round of the intensity predictor's masks, voted on by three simulated reviewers who err 30 % of
    the time (so that some masks split): (workspace, round folder)."""
    from qa_workflow.rounds.batching import write_batches
    from qa_workflow.rounds.predict import run_predictions
    from qa_workflow.rounds.round_dir import select_round
    from qa_workflow.rounds.selection import SelectionPolicy

    ws = Workspace(tmp_path / "ws")
    tiny_dataset(ws.cohort, subjects=2, slices=4)
    run_predictions(intensity_predictor(), ws.cohort, str(tmp_path / "pred"))
    round_path = tmp_path / "round"
    select_round(str(tmp_path / "pred"), str(round_path), SelectionPolicy(budget=24, seed=1), round_id=RID)
    write_batches(str(round_path), workers=1)
    simulate_round(str(round_path), ws.cohort, store_uri=ws.store_uri, reviewers=3, error_rate=0.3, seed=2,
                   job_name="verify-1")
    return ws, round_path


def test_split_masks_get_two_more_reviewers_and_only_unaccepted_ones_are_corrected(voted_round):
    ws, round_path = voted_round
    cfg = LoopConfig(workspace=str(ws.root), reviewers=3, escalate_to=5, error_rate=0.3, budget_seconds=None)
    store = open_store(ws.store_uri)
    split = split_in_store(store, "verify-1")
    assert len(split) >= 3  # the fixture's premise: enough disagreement to escalate

    job, escalated, accepted = _escalate(cfg, ws, round_path, RID, "verify-1", seed=2)
    votes = list(store.iter_votes(job=job))
    assert escalated == len(split) and sorted({v.item_id for v in votes}) == split and len(votes) == 2 * len(split)
    assert {v.worker_id.rsplit("-", 1)[1] for v in votes} == {"4", "5"}  # not the verify job's reviewers 1-3
    outcomes = {i: store.get_item(i, round=RID).outcome for i in split}
    assert accepted == sum(o == "accept" for o in outcomes.values())
    assert set(outcomes.values()) - {"split"}  # some splits got an answer

    tasks, chained = _chained_tasks(cfg, ws, round_path, RID, "verify-1", escalations=(job,))
    sent = {i for t in tasks.task_uris for i in storage.read_json(t)["item_ids"]}
    assert sent == set(rejected_in_store(store, "verify-1", job))
    assert not sent & {i for i, o in outcomes.items() if o == "accept"}  # resolved as accepted: no correction
    assert {i for i, o in outcomes.items() if o != "accept"} <= sent
    store.close()


def test_escalation_stays_within_the_rounds_seconds(voted_round):
    ws, round_path = voted_round
    store = open_store(ws.store_uri)
    spent = human_seconds(store, RID)["verify_seconds"]
    store.close()
    # seconds left for exactly one escalated mask: two more reviewers at 3 s each
    cfg = LoopConfig(workspace=str(ws.root), reviewers=3, escalate_to=5, budget_seconds=spent + 7)
    # seconds the routed corrections will take are not there to spend: of the 7 s left, 1 s is reserved
    assert _escalate(cfg, ws, round_path, RID, "verify-1", seed=2, reserved=1.5) is None
    _, escalated, _ = _escalate(cfg, ws, round_path, RID, "verify-1", seed=2)
    assert escalated == 1
    assert _escalate(LoopConfig(workspace=str(ws.root), budget_seconds=spent + 7), ws, round_path, RID,
                     "verify-1", seed=2) is None  # escalation off by default


def test_escalating_to_no_more_reviewers_than_the_first_is_refused():
    with pytest.raises(SegqaError, match="--escalate-to must be more than the 3 reviewers"):
        LoopConfig(reviewers=3, escalate_to=3)
