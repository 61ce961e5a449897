"""Acceptance tables, hand-computed cell by cell (ARCHITECTURE §9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.records import parse_review_records
from analysis.tables import (
    BUCKET_TABLE_COLUMNS,
    CLASS_TABLE_COLUMNS,
    acceptance_by_bucket,
    acceptance_by_class,
    assign_buckets,
    default_bucket_edges,
    parse_bucket_edges,
)
from qa_workflow.contract import SegqaError

# class a: a1 confirmed, a2 split 2:1, a3 disconfirmed, a4 split 1:1 (a tie), a5 confirmed
# class b: b1 confirmed at the very top (1.0), b2 disconfirmed, b3 confirmed; b4 has no votes (dropped)
CSV = b"""item_id,class_name,confidence,confirm_count,disconfirm_count
a1,a,0.95,3,0
a2,a,0.90,2,1
a3,a,0.85,0,2
a4,a,0.60,1,1
a5,a,0.50,1,0
b1,b,1.00,1,0
b2,b,0.70,0,1
b3,b,0.70,2,0
b4,b,0.40,0,0
"""


def _records(policy="incorrect"):
    return parse_review_records(CSV, source="hand.csv", split_policy=policy)


def _rows(table: pd.DataFrame) -> list[tuple]:
    return [tuple(None if isinstance(v, float) and np.isnan(v) else v for v in row)
            for row in table.itertuples(index=False)]


def test_unreviewed_row_is_dropped_and_counted():
    rec = _records()
    assert len(rec) == 8 and rec.n_unreviewed == 1
    assert rec.classes == ("a", "b")
    assert rec.scale == "unit" and rec.scale_detected


def test_acceptance_by_class_split_counts_as_incorrect():
    table = acceptance_by_class(_records().frame, ("a", "b"))
    assert tuple(table.columns) == CLASS_TABLE_COLUMNS
    assert _rows(table) == [
        ("a", 5, 2, 1, 2, 40.0),
        ("b", 3, 2, 1, 0, 66.67),
        ("TOTALS", 8, 4, 2, 2, 50.0),
        # means of the class rows; % correct is the mean of 40 and 66.667
        ("CLASS_AVERAGE", 4.0, 2.0, 1.0, 1.0, 53.33),
    ]


def test_acceptance_by_class_majority_policy():
    table = acceptance_by_class(_records("majority").frame, ("a", "b"))
    # a2 (2 accept : 1 reject) now counts as correct; a4 (1 : 1) is a tie and still does not
    assert table.loc[0, "pct_correct"] == 60.0
    assert table.loc[2, "pct_correct"] == 62.5  # 5 of 8
    assert table.loc[3, "pct_correct"] == round((60 + 200 / 3) / 2, 2)
    # status columns do not depend on the policy
    assert _rows(table)[0][:5] == ("a", 5, 2, 1, 2)


def test_default_buckets_are_five_equal_width_from_lowest_to_top():
    rec = _records()
    edges = default_bucket_edges(rec.frame["confidence"].to_numpy(), rec.scale_top)
    assert edges.tolist() == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_acceptance_by_bucket_every_cell():
    rec = _records()
    edges = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    table = acceptance_by_bucket(rec.frame, rec.classes, edges)
    assert tuple(table.columns) == BUCKET_TABLE_COLUMNS
    assert _rows(table) == [
        ("a", 0.5, 0.6, 1, 0, 100.0),   # a5
        ("a", 0.6, 0.7, 1, 1, 0.0),     # a4: a split is incorrect
        ("a", 0.7, 0.8, 0, 0, None),    # empty bucket: no percentage
        ("a", 0.8, 0.9, 1, 1, 0.0),     # a3
        ("a", 0.9, 1.0, 2, 1, 50.0),    # a1, a2 (0.90 is the lower edge: belongs here)
        ("b", 0.5, 0.6, 0, 0, None),
        ("b", 0.6, 0.7, 0, 0, None),
        ("b", 0.7, 0.8, 2, 1, 50.0),    # b2, b3
        ("b", 0.8, 0.9, 0, 0, None),
        ("b", 0.9, 1.0, 1, 0, 100.0),   # b1 at 1.0: the top edge is inclusive
        ("TOTALS", 0.5, 0.6, 1, 0, 100.0),
        ("TOTALS", 0.6, 0.7, 1, 1, 0.0),
        ("TOTALS", 0.7, 0.8, 2, 1, 50.0),
        ("TOTALS", 0.8, 0.9, 1, 1, 0.0),
        ("TOTALS", 0.9, 1.0, 3, 1, 66.67),
        # counts averaged over both classes; % correct over the classes with items in the bucket
        ("CLASS_AVERAGE", 0.5, 0.6, 0.5, 0.0, 100.0),
        ("CLASS_AVERAGE", 0.6, 0.7, 0.5, 0.5, 0.0),
        ("CLASS_AVERAGE", 0.7, 0.8, 1.0, 0.5, 50.0),
        ("CLASS_AVERAGE", 0.8, 0.9, 0.5, 0.5, 0.0),
        ("CLASS_AVERAGE", 0.9, 1.0, 1.5, 0.5, 75.0),
    ]


def test_items_outside_custom_edges_fall_in_no_bucket():
    rec = _records()
    table = acceptance_by_bucket(rec.frame, rec.classes, np.array([0.8, 0.9, 1.0]))
    totals = table[table["class_name"] == "TOTALS"]
    assert totals["total"].tolist() == [1, 3]  # a3 | a1, a2, b1; the five items below 0.8 are in no bucket
    assert assign_buckets(np.array([0.1, 0.8, 0.9, 1.0]), np.array([0.8, 0.9, 1.0])).tolist() == [-1, 0, 1, 1]


def test_default_edges_round_the_lowest_confidence_down_and_handle_a_single_value():
    edges = default_bucket_edges(np.array([0.12345, 0.9]), 1.0)
    assert edges[0] == pytest.approx(0.1234) and edges[0] <= 0.12345 and edges[-1] == 1.0 and len(edges) == 6
    assert default_bucket_edges(np.array([100.0, 100.0]), 100.0).tolist() == [100.0, 100.0]
    assert assign_buckets(np.array([100.0]), np.array([100.0, 100.0])).tolist() == [0]
    # minima whose rounding lands one ulp above them (0.82 / 1e-4 * 1e-4 = 0.8200000000000001) stay in a bucket
    for top, scale in ((1.0, 0.01), (100.0, 1.0)):
        for v in np.round(np.arange(50, 100, 0.01), 2) * scale:
            conf = np.array([v, top])
            assert assign_buckets(conf, default_bucket_edges(conf, top)).min() == 0, (top, v)


@pytest.mark.parametrize("spec, message", [
    ("80,85,x", "comma-separated numbers"),
    ("80", "at least two edges"),
    ("80,90,85", "strictly increasing"),
    ("80,90,120", "within the confidence scale"),
])
def test_bad_bucket_edges_say_what_is_wrong(spec, message):
    with pytest.raises(SegqaError, match=message):
        parse_bucket_edges(spec, 100.0)


def test_an_escalated_split_that_the_added_votes_resolved_counts_as_decided():
    # 2-1 plus two more accepts is 4-1: confirmed, and correct under either policy; 3-2 stays split
    rec = parse_review_records(b"item_id,class_name,confidence,confirm_count,disconfirm_count\n"
                               b"sub-001/001/csf,csf,0.9,4,1\nsub-001/002/csf,csf,0.8,3,2\n"
                               b"sub-001/003/csf,csf,0.7,1,4\n")
    assert list(rec.frame["status"]) == ["confirmed", "split", "disconfirmed"]
    assert list(rec.frame["correct"]) == [True, False, False]
    majority = parse_review_records(rec.frame.to_csv(index=False).encode(), split_policy="majority")
    assert list(majority.frame["correct"]) == [True, True, False]
