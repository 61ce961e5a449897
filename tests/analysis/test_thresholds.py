"""Threshold selectors (`analysis.thresholds`): hand-computed cases and the Clopper-Pearson guarantee.

Threshold selectors: hand-computed cases, the bucket-walk rule's edge cases, and a simulation of the
Clopper-Pearson guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.thresholds import (
    BucketWalkThreshold,
    ClopperPearsonThreshold,
    IsotonicThreshold,
    cp_bound_within,
    cp_upper_bound,
    min_reviews_for_bound,
)

# ------------------------------------------------------------------------------------------------------------
# Clopper-Pearson pieces


def test_cp_upper_bound_matches_closed_forms():
    # no errors: U = 1 - alpha^(1/n); all errors: 1; n = 0: undefined
    assert cp_upper_bound(0, 3, 0.7)[()] == pytest.approx(1 - 0.3 ** (1 / 3))
    assert cp_upper_bound(4, 4, 0.95)[()] == 1.0
    assert np.isnan(cp_upper_bound(0, 0, 0.95)[()])
    # one error in 10 at 95%: the Beta(2, 9) quantile
    assert cp_upper_bound(1, 10, 0.95)[()] == pytest.approx(stats.beta.ppf(0.95, 2, 9))


def test_binomial_tail_test_is_the_same_statement_as_the_bound():
    e, n = np.meshgrid(np.arange(0, 40), np.arange(1, 400), indexing="ij")
    e, n = e.ravel(), n.ravel()
    keep = e <= n
    e, n = e[keep], n[keep]
    bound = cp_upper_bound(e, n, 0.9)
    clear = np.abs(bound - 0.07) > 1e-9  # exact ties are a matter of floating point
    assert np.array_equal(cp_bound_within(e, n, 0.07, 0.9)[clear], (bound <= 0.07)[clear])


@pytest.mark.parametrize("eps, conf", [(0.05, 0.95), (0.01, 0.95), (0.1, 0.9), (0.02, 0.99)])
def test_min_reviews_with_no_errors_is_log_alpha_over_log_one_minus_eps(eps, conf):
    expected = math.ceil(math.log(1 - conf) / math.log(1 - eps))
    assert min_reviews_for_bound(0, eps, conf)[0] == expected


def test_min_reviews_is_the_smallest_passing_n():
    need = min_reviews_for_bound(np.array([0, 1, 3, 10]), 0.05, 0.95)
    assert need[0] == 59
    assert np.all(cp_upper_bound([0, 1, 3, 10], need, 0.95) <= 0.05)
    assert np.all(cp_upper_bound([0, 1, 3, 10], need - 1, 0.95) > 0.05)


# ------------------------------------------------------------------------------------------------------------
# Clopper-Pearson threshold by hand
# max_error 0.5 at confidence 0.7 (alpha 0.3): the bound can reach 0.5 from n = 2 on (0.5^2 = 0.25 <= 0.3).
X6 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
Y6 = np.array([True, True, True, False, True, False])


def test_clopper_pearson_scans_from_the_top_and_stops_at_the_first_failure():
    cp = ClopperPearsonThreshold(max_error=0.5, confidence=0.7).fit(X6, Y6)
    # 0.9 has only 1 item above it: not tested. 0.8 (0 of 2 rejected): U = 0.452 pass; 0.7 (0 of 3): 0.331 pass;
    # 0.6 (1 of 4): P(Bin(4, .5) <= 1) = 5/16 > 0.3 fail -> stop, although 0.5 (1 of 5, 6/32 <= 0.3) would pass.
    assert cp.n_min_ == 2
    assert cp.threshold_ == 0.7
    assert (cp.n_reviewed_, cp.n_above_, cp.errors_above_) == (6, 3, 0)
    assert cp.coverage_ == 0.5
    assert cp.error_upper_bound_ == pytest.approx(1 - 0.3 ** (1 / 3))
    assert cp.reason_ is None
    assert cp.path_tested_.tolist() == [False, True, True, True, False, False]
    assert cp.path_passed_.tolist() == [False, True, True, False, False, False]
    assert cp.predict([0.69, 0.7, 0.95]).tolist() == [False, True, True]


def test_clopper_pearson_ties_share_one_candidate():
    x = np.array([0.9, 0.9, 0.9, 0.5])
    cp = ClopperPearsonThreshold(max_error=0.5, confidence=0.7).fit(x, [True, True, True, False])
    assert cp.path_theta_.tolist() == [0.9, 0.5]
    assert cp.path_n_.tolist() == [3, 4]
    assert cp.threshold_ == 0.9 and cp.n_above_ == 3


def test_clopper_pearson_fixed_grid():
    # a coarser sequence never tests 0.6 (1 of 4 rejected, the failure above)
    cp = ClopperPearsonThreshold(max_error=0.5, confidence=0.7, candidates=[0.45, 0.85, 0.75]).fit(X6, Y6)
    # 0.85: 1 item (not tested); 0.75: 0 of 2 pass; 0.45: 1 of 5 -> P(Bin(5, .5) <= 1) = 6/32 <= 0.3 pass
    assert cp.path_theta_.tolist() == [0.85, 0.75, 0.45]
    assert cp.path_n_.tolist() == [1, 2, 5]
    assert cp.threshold_ == 0.45 and (cp.n_above_, cp.errors_above_) == (5, 1)


def test_too_few_reviews_gives_null_and_how_many_more():
    x = np.linspace(0.5, 0.99, 40)
    cp = ClopperPearsonThreshold().fit(x, np.ones(40, bool))  # 5% at 95% needs 59 items above
    assert cp.threshold_ is None and cp.n_above_ == 0 and cp.coverage_ == 0.0 and cp.error_upper_bound_ is None
    assert cp.more_reviews_needed_ == 19
    assert "too few reviews" in cp.reason_ and "19 more review" in cp.reason_
    assert "40 reviewed item(s), 0 of them rejected" in cp.reason_
    # the reviews' own record is in the reason: mostly rejected, more reviews alone would hardly help
    mostly_rejected = ClopperPearsonThreshold().fit(x, np.arange(40) % 4 == 0)
    assert "40 reviewed item(s), 30 of them rejected" in mostly_rejected.reason_


def _with_extra_accepted(x, y, k):
    top = x.max() + 0.001
    return np.concatenate([x, np.full(k, top)]), np.concatenate([y, np.ones(k, bool)])


@pytest.mark.parametrize("seed, n_items, start_coverage", [(0, 150, 0.05), (1, 150, 0.0), (2, 400, 0.05),
                                                            (3, 3000, 0.05), (4, 3000, 0.2)])
def test_more_reviews_needed_is_exactly_enough(seed, n_items, start_coverage):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 0.95, n_items)
    y = rng.random(n_items) < 0.9  # rejections everywhere: the scan fails at its first step
    fit = lambda x, y: ClopperPearsonThreshold(start_coverage=start_coverage).fit(x, y)  # noqa: E731
    cp = fit(x, y)
    assert cp.threshold_ is None, "this case is meant to fail"
    k = cp.more_reviews_needed_
    assert k > 0 and f"{k} more review(s)" in cp.reason_
    assert fit(*_with_extra_accepted(x, y, k)).threshold_ is not None
    assert fit(*_with_extra_accepted(x, y, k - 1)).threshold_ is None


def test_the_scan_starts_at_max_of_reachable_coverage_share_and_min_above():
    x = np.linspace(0, 1, 3000)
    y = np.ones(3000, bool)
    assert ClopperPearsonThreshold(start_coverage=0.0).fit(x, y).n_start_ == 59
    assert ClopperPearsonThreshold().fit(x, y).n_start_ == 150  # 5% of 3000
    assert ClopperPearsonThreshold(min_above=400).fit(x, y).n_start_ == 400
    assert ClopperPearsonThreshold().fit(x[:500], y[:500]).n_start_ == 59  # 5% of 500 = 25 < 59


def test_a_later_start_tolerates_a_rejection_among_the_very_top_items():
    x = np.linspace(1, 0, 3000)
    y = np.ones(3000, bool)
    y[200::200] = False  # 0.5% rejected throughout...
    y[0] = False  # ...and the most confident of all
    assert ClopperPearsonThreshold(start_coverage=0.0).fit(x, y).threshold_ is None  # 59 must all be accepted
    cp = ClopperPearsonThreshold().fit(x, y)  # starts at 150 items: a few rejections are fine
    assert cp.threshold_ is not None and cp.n_above_ >= 150 and cp.error_upper_bound_ <= 0.05
    assert cp.threshold_ == 0.0 and cp.errors_above_ == 15  # 0.5% passes all the way down
    late = ClopperPearsonThreshold(min_above=1000).fit(x, y)
    assert late.n_start_ == 1000 and late.path_tested_[:999].sum() == 0


# ------------------------------------------------------------------------------------------------------------
# bucket-walk by hand: edges 0.5 .. 1.0 in five buckets

EDGES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_bucket_walk_stops_at_first_failing_bucket_and_uses_its_upper_edge():
    # buckets (low->high): [0.5,.6): 1 inc / 1 ok; [.6,.7): 2 inc / 3 ok (fails); [.7,.8): empty; [.8,.9):
    # 1 inc / 10 ok (ratio 0.1: passes, "within"); [.9,1]: 0 / 5
    x = np.array([0.55, 0.55] + [0.65] * 5 + [0.85] * 11 + [0.95] * 4 + [1.0])
    y = np.array([False, True] + [False, False, True, True, True] + [False] + [True] * 10 + [True] * 5)
    bw = BucketWalkThreshold(edges=EDGES, max_error_ratio=0.1).fit(x, y)
    assert bw.threshold_ == 0.7  # the upper edge of [.6,.7)
    assert bw.bucket_total_.tolist() == [2, 5, 0, 11, 5]
    assert bw.bucket_incorrect_.tolist() == [1, 2, 0, 1, 0]
    assert bw.bucket_passed_.tolist() == [False, False, True, True, True]
    assert (bw.n_above_, bw.errors_above_, bw.n_reviewed_) == (16, 1, 23)
    assert bw.coverage_ == pytest.approx(16 / 23)
    assert bw.error_upper_bound_ == pytest.approx(cp_upper_bound(1, 16, 0.95)[()])


def test_bucket_walk_all_correct_class_passes_every_bucket_and_gets_the_lowest_edge():
    x = np.array([0.52, 0.61, 0.99, 1.0])  # buckets [.7,.8) and [.8,.9) are empty: they pass
    bw = BucketWalkThreshold(edges=EDGES, max_error_ratio=0.1).fit(x, np.ones(4, bool))
    assert bw.threshold_ == 0.5 and bw.coverage_ == 1.0 and bw.reason_ is None


def test_bucket_walk_empty_top_buckets_pass():
    x = np.array([0.55, 0.65, 0.65])
    y = np.array([True, False, True])  # [.6,.7) fails (1:1); everything above is empty
    bw = BucketWalkThreshold(edges=EDGES, max_error_ratio=0.1).fit(x, y)
    assert bw.threshold_ == 0.7 and bw.n_above_ == 0 and bw.coverage_ == 0.0
    assert bw.error_upper_bound_ is None


def test_bucket_walk_failing_at_the_top_bucket_accepts_nothing():
    x = np.array([0.55, 0.95, 0.95, 0.97, 1.0])
    y = np.array([True, True, True, True, False])  # top bucket 1 : 3 > 0.1; its upper edge 1.0 is in it
    bw = BucketWalkThreshold(edges=EDGES, max_error_ratio=0.1).fit(x, y)
    assert bw.threshold_ is None and bw.n_above_ == 0 and bw.coverage_ == 0.0
    assert "top bucket" in bw.reason_ and "1 incorrect : 3 correct" in bw.reason_
    assert not bw.predict([1.0]).any()


def test_bucket_walk_a_bucket_with_only_incorrect_items_fails():
    x = np.array([0.85, 0.95])
    bw = BucketWalkThreshold(edges=EDGES, max_error_ratio=0.5).fit(x, [False, True])
    assert bw.threshold_ == 0.9


def test_bucket_walk_default_edges_from_the_data():
    x = np.array([0.5, 0.75, 1.0])
    bw = BucketWalkThreshold(max_error_ratio=0.1).fit(x, [True, True, True])
    assert bw.edges_.tolist() == EDGES and bw.threshold_ == 0.5


# ------------------------------------------------------------------------------------------------------------
# isotonic by hand: x 1..6, y 0 1 0 1 1 1 -> PAV blocks [0] [0.5 0.5] [1 1 1]


def test_isotonic_threshold_where_the_calibrated_curve_reaches_the_target():
    x = np.arange(1.0, 7.0)
    y = np.array([0, 1, 0, 1, 1, 1], bool)
    iso = IsotonicThreshold(max_error=0.4, min_above=1).fit(x, y)
    assert iso.predict_proba([1, 2, 3, 4]).tolist() == pytest.approx([0, 0.5, 0.5, 1])
    # target 0.6 is crossed between (3, 0.5) and (4, 1.0): 3 + 0.1 / 0.5 = 3.2
    assert iso.threshold_ == pytest.approx(3.2)
    assert (iso.n_above_, iso.errors_above_, iso.coverage_) == (3, 0, 0.5)
    assert iso.predict_proba([iso.threshold_])[0] == pytest.approx(0.6)


def test_isotonic_never_reaching_the_target_gives_null():
    x = np.arange(10.0)
    iso = IsotonicThreshold(max_error=0.05, min_above=1).fit(x, np.arange(10) % 2 == 0)
    assert iso.threshold_ is None and "never reaches 95" in iso.reason_


def test_isotonic_needs_enough_items_above():
    x = np.linspace(0, 1, 30)
    iso = IsotonicThreshold(max_error=0.05).fit(x, x > 0.2)  # 23 items all accepted: < 59
    assert iso.threshold_ is None and "too few reviews" in iso.reason_


# ------------------------------------------------------------------------------------------------------------
# The guarantee, by simulation


def _true_error_above(theta: np.ndarray, mid: float, slope: float, lo: float) -> np.ndarray:
    """E[1 - p(c) | c >= theta] for c ~ U(lo, 1) and p(c) = sigmoid((c - mid) / slope), in closed form."""
    # ∫ (1 - sigmoid((c - m)/s)) dc = -s · log(1 + exp(-(c - m)/s)) ... antiderivative of sigmoid(-(c-m)/s)
    def antiderivative(c):
        return -slope * np.logaddexp(0.0, -(c - mid) / slope)
    return (antiderivative(1.0) - antiderivative(theta)) / (1.0 - theta)


def test_clopper_pearson_true_error_exceeds_target_in_at_most_about_alpha_of_runs():
    eps, conf, n_items, reps = 0.1, 0.9, 400, 300
    mid, slope, lo = 0.6, 0.06, 0.3
    rng = np.random.default_rng(2024)
    x = rng.uniform(lo, 1.0, (reps, n_items))
    y = rng.random((reps, n_items)) < 1.0 / (1.0 + np.exp(-(x - mid) / slope))
    cp_theta = np.full(reps, np.nan)
    naive_theta = np.full(reps, np.nan)
    for r in range(reps):
        cp = ClopperPearsonThreshold(max_error=eps, confidence=conf).fit(x[r], y[r])
        if cp.threshold_ is not None:
            cp_theta[r] = cp.threshold_
        # the naive rule: lowest theta whose observed error rate above is <= eps (no bound)
        ok = cp.path_n_ >= cp.n_min_
        rate = cp.path_errors_ / cp.path_n_
        good = np.flatnonzero(ok & (rate <= eps))
        if good.size:
            naive_theta[r] = cp.path_theta_[good[-1]]
    found = ~np.isnan(cp_theta)
    assert found.mean() > 0.9, "the procedure should find a threshold in most runs"
    violations = _true_error_above(cp_theta[found], mid, slope, lo) > eps
    alpha = 1 - conf
    assert violations.mean() <= alpha + 2.5 * math.sqrt(alpha * (1 - alpha) / reps)
    # the test can fail: the naive rule, same data, breaks the target far more often than alpha
    naive_bad = _true_error_above(naive_theta[~np.isnan(naive_theta)], mid, slope, lo) > eps
    assert naive_bad.mean() > 2 * alpha


def test_summary_keeps_the_threshold_exact():
    x = np.array([0.1234567890123457] * 60 + [0.05])
    cp = ClopperPearsonThreshold(start_coverage=0).fit(x, np.array([True] * 60 + [False]))
    assert cp.summary().to_json()["threshold"] == 0.1234567890123457  # not rounded up past the items on it
    assert cp.predict(x).sum() == 60


@pytest.mark.parametrize("selector", [
    ClopperPearsonThreshold(max_error=0.1, confidence=0.9, start_coverage=0.0, min_above=3),
    BucketWalkThreshold(edges=[0.0, 0.5, 0.8, 1.0], max_error_ratio=0.2),
    IsotonicThreshold(max_error=0.1, confidence=0.9, min_above=5),
])
def test_selectors_are_scikit_learn_estimators_clone_round_trips_their_parameters(selector):
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 400)
    y = rng.uniform(0, 1, 400) < x
    copy = clone(selector)
    assert type(copy) is type(selector) and copy.get_params() == selector.get_params()
    assert copy.fit(x, y).threshold_ == selector.fit(x, y).threshold_
    assert not hasattr(clone(selector), "threshold_")


def test_set_params_changes_what_a_selector_learns():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 2000)
    y = rng.uniform(0, 1, 2000) < 0.5 + 0.5 * x
    cp = ClopperPearsonThreshold(max_error=0.05, confidence=0.95)
    strict = cp.fit(x, y).threshold_
    loose = cp.set_params(max_error=0.2).fit(x, y).threshold_
    assert cp.max_error == 0.2 and strict is not None and loose is not None and loose < strict


def test_the_isotonic_calibrator_is_a_scikit_learn_estimator():
    from sklearn.base import clone

    from analysis.calibration import fit_isotonic

    iso = fit_isotonic(np.array([0.1, 0.4, 0.6, 0.9]), np.array([False, False, True, True]))
    assert clone(iso).get_params() == iso.get_params()
