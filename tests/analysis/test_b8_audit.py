"""B8's helpers (benchmarks/b8_threshold_audit.py): the fit/audit split by site and the reviewers' verdict
with escalation."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def b8(benchmark_module):
    return benchmark_module("b8_threshold_audit")


def test_split_halves_alternate_within_each_site(b8):
    site_of = {"s1": "A", "s2": "A", "s3": "B", "s4": "A", "s5": "B", "s6": "A", "s7": "B", "s8": "B"}
    fit = b8.split_halves(sorted(site_of), site_of)
    assert fit == {"s1", "s4", "s3", "s7"}  # A: s1 s2 s4 s6 -> s1 s4; B: s3 s5 s7 s8 -> s3 s7
    assert sum(site_of[s] == "B" for s in fit) == 2


def test_escalation_asks_the_rest_only_where_the_first_reviewers_split(b8):
    accepts = np.array([[1, 1, 1, 0, 0],   # unanimous accept: 3 asked, accepted (the last two never asked)
                        [0, 0, 0, 1, 1],   # unanimous reject: 3 asked, rejected
                        [1, 1, 0, 0, 0],   # split 2:1, then 2 of 5: rejected
                        [1, 0, 1, 1, 0],   # split 2:1, then 3 of 5: accepted
                        [0, 1, 0, 1, 1]], dtype=bool)  # split 1:2, then 3 of 5: accepted
    accepted, asked = b8.majority_with_escalation(accepts, 3)
    assert accepted.tolist() == [True, False, False, True, True]
    assert asked.tolist() == [3, 3, 5, 5, 5]
    # without escalation: the majority of all of them
    plain, asked_all = b8.majority_with_escalation(accepts, 5)
    assert plain.tolist() == [True, False, False, True, True] and set(asked_all.tolist()) == {5}
    three, _ = b8.majority_with_escalation(accepts[:, :3], 3)
    assert three.tolist() == [True, False, True, True, False]
    with pytest.raises(ValueError, match="first must be in 1..5"):
        b8.majority_with_escalation(accepts, 6)


@pytest.mark.parametrize(("reviewers", "escalate_to"), [(1, None), (3, None), (5, None), (3, 5), (3, 7)])
def test_panel_chance_is_the_rate_of_majority_with_escalation(b8, reviewers, escalate_to):
    """The exact chance agrees with the verdicts drawn the way B8 draws them (reviewer by reviewer)."""
    from qa_workflow.review.simulated_reviewers import accept_probability

    rng = np.random.default_rng(0)
    quality = np.array([0.88, 0.91, 0.94, 0.99])
    asked = escalate_to or reviewers
    n = 40_000
    p = np.asarray(accept_probability(quality)) * 0.97 + (1 - np.asarray(accept_probability(quality))) * 0.03
    draws = rng.random((len(quality), n, asked)) < p[:, None, None]
    drawn = np.array([b8.majority_with_escalation(d, reviewers)[0].mean() for d in draws])
    exact = b8.panel_accept_chance(quality, reviewers, escalate_to, 0.03, 0.9)
    assert np.all(np.diff(exact) > 0)  # better masks pass more often
    np.testing.assert_allclose(exact, drawn, atol=0.01)


def test_oracle_first_step_multiplies_the_best_masks_chances(b8):
    panel = {"reviewers": 3, "escalate_to": None, "error_rate": 0.03, "tau": 0.9}
    good, poor = np.full(59, 0.99), np.full(100, 0.85)
    alone = b8.oracle_first_step(good, 59, **panel)
    # the best 59 are picked by quality, whatever else is in the pool
    mixed = b8.oracle_first_step(np.concatenate([poor, good]), 59, **panel)
    assert mixed == pytest.approx(alone)
    one = float(b8.panel_accept_chance(np.array([0.99]), **panel)[0])
    assert alone["oracle_first_step_chance"] == pytest.approx(one ** 59)
    assert alone["oracle_expected_rejections"] == pytest.approx(59 * (1 - one))
    # masks at the bar pass about half the time: 59 of them essentially never all pass
    assert b8.oracle_first_step(np.full(59, 0.9), 59, **panel)["oracle_first_step_chance"] < 1e-15
    assert b8.oracle_first_step(good[:58], 59, **panel) == {"oracle_first_step_chance": 0.0,
                                                            "oracle_expected_rejections": None}
