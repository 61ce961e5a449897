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
