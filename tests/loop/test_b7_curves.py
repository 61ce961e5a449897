"""B7's curve arithmetic (benchmarks/b7_label_efficiency.py): when a Dice-vs-human-seconds curve reaches a
target, and the three targets of issue #13 computed from arms' curves."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def b7(benchmark_module):
    return benchmark_module("b7_label_efficiency")


def test_seconds_to_reach_interpolates_between_points(b7):
    assert b7.seconds_to_reach([0, 100, 200], [0.5, 0.6, 0.8], 0.7) == pytest.approx(150.0)
    assert b7.seconds_to_reach([0, 100, 200], [0.5, 0.6, 0.8], 0.5) == 0.0
    assert b7.seconds_to_reach([0, 100, 200], [0.5, 0.6, 0.8], 0.81) is None


def _curve(points, site_b=None):
    return [{"round": k, "seconds": s, "challenger": d, "challenger_site": {"B": (site_b or [d] * len(points))[k]}}
            for k, (s, d) in enumerate(points)]


def test_targets_met_and_missed(b7):
    scratch = [_curve([(0, 0.70), (900, 0.74), (1800, 0.78)])]
    random_review = [_curve([(0, 0.70), (600, 0.73), (1200, 0.76)])]
    segqa = [_curve([(0, 0.70), (300, 0.78), (600, 0.80)])]
    lines = b7.targets({"scratch": scratch, "random-review": random_review, "segqa": segqa}, "B")
    # segqa reaches 0.78 at 300 s = 1/6 of scratch's 1800 s; above random review everywhere; 0.76 at ~225 s
    assert "0.17x" in lines[0] and lines[0].endswith("**met**")
    assert lines[1].endswith("**met**")
    assert "0.19x" in lines[2] and lines[2].endswith("**met**")

    worse = [_curve([(0, 0.70), (600, 0.71), (1200, 0.72)])]
    lines = b7.targets({"scratch": scratch, "random-review": random_review, "segqa": worse}, "B")
    assert "never" in lines[0] and lines[0].endswith("**missed**")
    assert "**missed** at 0.17 h (0.7100 vs 0.7300)" in lines[1]
    assert "never" in lines[2] and lines[2].endswith("**missed**")


def test_paired_gaps_compare_each_seed_with_its_own_arms(b7):
    # two seeds: segqa ahead of random review by 0.02 and 0.04 overall; behind scratch on site B in one seed
    curves = {"scratch": [_curve([(0, 0.70), (900, 0.72)], [0.60, 0.65]), _curve([(0, 0.60), (900, 0.62)], [0.5, 0.5])],
              "random-review": [_curve([(0, 0.70), (600, 0.73)]), _curve([(0, 0.60), (600, 0.61)])],
              "segqa": [_curve([(0, 0.70), (600, 0.75)], [0.60, 0.64]), _curve([(0, 0.60), (600, 0.65)], [0.5, 0.6])]}
    lines = b7.paired_gaps(curves, "B")
    assert len(lines) == 4
    assert lines[0].startswith("- segqa − random-review, overall: +0.0300 (95 % t interval ")
    assert lines[0].endswith("segqa ahead in 2 of 2 seeds")
    # t(0.975, 1) = 12.706, sd of (0.02, 0.04) = 0.01414, /sqrt(2) -> half width 0.1271
    assert "-0.0971 to +0.1571" in lines[0]
    assert lines[3].startswith("- segqa − scratch, site B: +0.0450") and lines[3].endswith("ahead in 1 of 2 seeds")


def test_a_run_of_some_arms_gets_a_table_per_arm(b7):
    from argparse import Namespace

    control = [_curve([(0, 0.70), (0, 0.72), (0, 0.73)], site_b=[0.60, 0.61, 0.62]),
               _curve([(0, 0.72), (0, 0.74), (0, 0.75)], site_b=[0.62, 0.63, 0.66])]
    text = b7.arms_table({"no-labels": control}, Namespace(seeds=[0, 1]), ["--arms", "no-labels"], 3.0, "B")
    rows = [line for line in text.splitlines() if line.startswith("| no-labels")]
    assert len(rows) == 3
    assert rows[2] == "| no-labels | 2 | 0.00 | 0.7400 ± 0.0100 | 0.6400 ± 0.0200 |"
    assert "--arms no-labels" in text


def test_control_gaps_pair_each_arm_with_the_no_labels_control(b7):
    control = [_curve([(0, 0.70), (0, 0.72)]), _curve([(0, 0.60), (0, 0.64)])]
    others = {"segqa": [_curve([(0, 0.70), (900, 0.76)]), _curve([(0, 0.60), (900, 0.66)])]}
    lines = b7.control_gaps(control, others, "B", "B7.json")
    # gaps 0.04 and 0.02: mean 0.03; the arm gained 0.06 on average, half of it from the labels
    assert lines[1].startswith("- segqa, overall: +0.0300 (95 % t interval")
    assert "ahead in 2 of 2 seeds" in lines[1] and "of its gain +0.0600 over round 0, 50% from the labels" in lines[1]
    # another run's seeds (other initial models) cannot be paired
    with pytest.raises(SystemExit, match="does not share"):
        b7.control_gaps(control, {"segqa": [_curve([(0, 0.71), (900, 0.76)]), others["segqa"][1]]}, "B", "x")
