"""Retraining sets: confirmed label maps, and which slices (latest round, reviewed) train next."""

import numpy as np
import pytest

from qa_workflow.contract import IGNORE_LABEL
from qa_workflow.loop.retraining import confirmed_label_map, plan_slices


def test_confirmed_label_map_ignores_unconfirmed_classes():
    pred = np.array([[0, 1, 2, 3],
                     [3, 2, 1, 0]], np.uint8)
    out = confirmed_label_map(pred, ["gray_matter"])
    ig = IGNORE_LABEL
    assert out.tolist() == [[0, ig, 2, ig], [ig, 2, ig, 0]]
    assert confirmed_label_map(pred, ["csf", "gray_matter", "white_matter"]).tolist() == pred.tolist()
    assert pred.tolist() == [[0, 1, 2, 3], [3, 2, 1, 0]]  # input untouched


def _o(item, rnd, outcome):
    return {"item_id": item, "round": rnd, "outcome": outcome}


def test_plan_slices_latest_round_and_confirmed_only():
    outcomes = [
        _o("s1/001/csf", "round-01", "accept"), _o("s1/001/gray_matter", "round-01", "reject"),
        _o("s1/002/csf", "round-01", "split"),                      # nothing confirmed: left out
        _o("s1/003/csf", "round-01", "accept"), _o("s1/003/white_matter", "round-02", "reject"),
        _o("s2/004/white_matter", "round-02", "accept"),
    ]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes)}
    assert set(plans) == {("s1", 1), ("s2", 4)}  # s1/003's latest round (02) confirmed nothing
    assert plans[("s1", 1)].confirmed == ("csf",) and plans[("s1", 1)].round == "round-01"
    assert plans[("s2", 4)].confirmed == ("white_matter",)


def test_plan_slices_pseudo_labels_never_override_a_review():
    outcomes = [_o("s1/001/csf", "round-01", "reject")]
    auto = [{"item_id": "s1/001/csf", "round": "round-01"}, {"item_id": "s1/001/white_matter", "round": "round-01"},
            {"item_id": "s3/007/gray_matter", "round": "round-01"}]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes, auto)}
    assert plans[("s1", 1)].confirmed == ("white_matter",) and plans[("s1", 1)].pseudo == ("white_matter",)
    assert plans[("s3", 7)].pseudo == ("gray_matter",)


def test_plan_slices_rejects_bad_item_ids():
    from qa_workflow.contract import ContractError

    with pytest.raises(ContractError):
        plan_slices([_o("nonsense", "round-01", "accept")])
