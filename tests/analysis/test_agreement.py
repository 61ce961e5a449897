"""Reviewer agreement (`analysis.agreement`): alpha, kappa, per-reviewer agreement, gold accuracy.

Reviewer agreement: Krippendorff's alpha and Fleiss' kappa against published / hand-computed values, each
reviewer against the others, gold accuracy, and the votes file's validation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.agreement import (
    agreement_from_counts,
    agreement_from_votes,
    fleiss_kappa_binary,
    krippendorff_alpha_binary,
    parse_votes,
    reviewer_table,
)
from qa_workflow.contract import SegqaError


def test_krippendorff_alpha_binary_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", binary data, two observers: α = 0.095
    a = np.array([0, 1, 0, 0, 0, 0, 0, 0, 1, 0])
    b = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    accepts = a + b
    assert krippendorff_alpha_binary(accepts, 2 - accepts) == pytest.approx(0.0952, abs=1e-4)
    # with two raters Fleiss' kappa is Scott's pi: Po = 0.6, Pe = 0.3² + 0.7² = 0.58 -> 0.02 / 0.42
    assert fleiss_kappa_binary(accepts, 2 - accepts) == pytest.approx(0.02 / 0.42)


def test_three_reviewers_by_hand():
    accepts, rejects = np.array([3, 0, 2]), np.array([0, 3, 1])
    # P_i = 1, 1, 1/3 -> P̄ = 7/9; p_accept = 5/9 -> Pe = 41/81; κ = (63 - 41) / (81 - 41) = 0.55
    assert fleiss_kappa_binary(accepts, rejects) == pytest.approx(0.55)
    # n = 9, n_a = 5, n_r = 4, Σ a r / (m - 1) = 1 -> α = 1 - 8 · 1 / 20 = 0.6
    assert krippendorff_alpha_binary(accepts, rejects) == pytest.approx(0.6)


def test_single_votes_do_not_count_and_no_variation_is_undefined():
    assert krippendorff_alpha_binary([3, 1], [0, 0]) != krippendorff_alpha_binary([3, 1], [0, 0])  # NaN
    assert krippendorff_alpha_binary([2, 0, 1], [0, 2, 0]) == pytest.approx(
        krippendorff_alpha_binary([2, 0], [0, 2]))
    summary = agreement_from_counts(np.array([2, 0, 1, 1]), np.array([0, 2, 0, 1]))
    assert (summary.n_items, summary.n_votes, summary.n_pairable_items) == (4, 7, 3)
    assert summary.pct_unanimous == pytest.approx(200 / 3)
    assert summary.to_json()["n_reviewers"] is None


VOTES = b"""item_id,worker_id,decision,gold
i1,w1,accept,accept
i1,w2,ACCEPT,accept
i1,w3,reject,accept
i2,w1,reject,reject
i2,w2,reject,reject
i2,w3,reject,reject
i3,w1,accept,
i3,w2,reject,
i4,w1,accept,
i4,w3,accept,
"""


def test_reviewer_agreement_with_the_majority_of_the_others():
    votes = parse_votes(VOTES, "votes.csv")
    table = reviewer_table(votes).set_index("worker_id")
    # w1: i1 others tie (not compared), i2 agree, i3 others reject -> disagree, i4 others accept -> agree
    assert table.loc["w1", "n_compared"] == 3 and table.loc["w1", "agreement_with_majority"] == pytest.approx(2 / 3)
    # w2: i1 tie, i2 agree, i3 others accept -> disagree
    assert table.loc["w2", "n_compared"] == 2 and table.loc["w2", "agreement_with_majority"] == 0.5
    # w3: i1 others accept -> disagree, i2 agree, i4 agree
    assert table.loc["w3", "agreement_with_majority"] == pytest.approx(2 / 3)
    assert table.loc["w1", "accept_rate"] == 0.75 and table.loc["w1", "n_votes"] == 4
    # gold on i1 (accept) and i2 (reject)
    assert table.loc["w1", "gold_accuracy"] == 1.0 and table.loc["w3", "gold_accuracy"] == 0.5
    assert table.index[0] == "w2"  # least agreeing first


def test_gold_accuracy_per_vote_and_per_majority():
    summary = agreement_from_votes(parse_votes(VOTES, "votes.csv"))
    assert summary.n_reviewers == 3 and summary.n_gold_items == 2
    assert summary.gold_vote_accuracy == pytest.approx(5 / 6)
    assert summary.gold_majority_accuracy == 1.0
    # gold given on only some of an item's rows holds for all its votes (w3's reject of i1 counts as wrong)
    partial = (b"item_id,worker_id,decision,gold\ni1,w1,accept,accept\ni1,w2,accept,accept\ni1,w3,reject,\n"
               b"i2,w1,reject,\ni3,w3,accept,reject\n")
    summary = agreement_from_votes(parse_votes(partial, "votes.csv"))
    assert summary.n_gold_items == 2 and summary.gold_vote_accuracy == pytest.approx(2 / 4)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"item_id,decision\ni1,accept\n", "missing column(s) worker_id"),
    (b"item_id,worker_id,decision\n", "no votes"),
    (b"item_id,worker_id,decision\ni1,w1,accept\ni1,w2,maybe\n", "line 3: column decision: 'maybe'"),
    (b"item_id,worker_id,decision\ni1,,accept\n", "line 2: column worker_id: (empty)"),
    (b"item_id,worker_id,decision\ni1,w1,accept\ni1,w1,reject\n", "line 3: column worker_id: 'w1' voted twice"),
    (b"item_id,worker_id,decision,gold\ni1,w1,accept,yes\n", "column gold: 'yes'"),
    (b"item_id,worker_id,decision,gold\ni1,w1,accept,accept\ni1,w2,accept,reject\n", "conflicting gold"),
])
def test_bad_votes_file_names_line_and_column(data, message):
    with pytest.raises(SegqaError) as exc:
        parse_votes(data, "votes.csv")
    assert message in str(exc.value) and str(exc.value).startswith("votes.csv")
