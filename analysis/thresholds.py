"""Per-class auto-accept thresholds from reviewed items: three selectors with the scikit-learn estimator shape.

Every selector is built with its parameters (stored, nothing else), learns from one class's reviewed items with
``fit(confidence, correct)`` and returns ``self``; learned state ends in an underscore:

- ``threshold_``: auto-accept items with ``confidence >= threshold_``; ``None`` means nothing may be
  auto-accepted, and ``reason_`` says why;
- ``n_reviewed_``, ``n_above_`` (reviewed items at or above the threshold), ``errors_above_`` (of those, how
  many were rejected), ``error_upper_bound_`` (one-sided Clopper-Pearson upper bound, at ``confidence``, on the
  reject rate above the threshold), ``coverage_`` (``n_above_ / n_reviewed_``: the share that would have been
  auto-accepted).

``predict(confidence)`` says which items would be auto-accepted. ``confidence`` is on whatever scale the caller
uses (the threshold comes back on the same scale); ``correct`` is True for an item the reviewers accepted.

The three rules (ARCHITECTURE §9):

`ClopperPearsonThreshold` (the default; a guarantee)
    Fixed-sequence testing (Bauer 1991; the "Learn then Test" recipe of Angelopoulos et al. 2021). The candidate
    thresholds are the class's distinct observed confidences, from high to low: the finest sequence on which
    the set ``confidence >= θ`` changes, and one that depends on the confidences only, never on the reviewers'
    answers, so it is fixed before any outcome is looked at. For each θ in turn the null hypothesis "the reject
    rate among items with confidence ≥ θ exceeds max_error" is tested at level α = 1 - confidence with the
    exact binomial test; the first θ whose hypothesis is not rejected ends the scan, and the threshold is the
    last θ rejected. Because the tests run in a fixed order and stop at the first failure, the chance that the
    returned threshold's true reject rate exceeds max_error is at most α, with no multiplicity correction.
    The test "reject" is the same statement as "the one-sided Clopper-Pearson upper bound U(e, n) at
    ``confidence`` is ≤ max_error": U(e, n) ≤ ε ⟺ P(Binomial(n, ε) ≤ e) ≤ α (the bound is the p at which that
    tail equals α, and the tail falls as p grows). The scan uses the tail (``scipy.stats.binom.cdf``: fast on a
    million candidates), the reported bound uses ``scipy.stats.beta.ppf``.
    The scan starts at the highest θ with enough items above it for the bound to be reachable at all: with
    zero errors U(0, n) = 1 - α^(1/n), so n ≥ ln α / ln(1 - ε) (59 items for ε = 5 %, 95 %).

`BucketWalkThreshold` (the bulk-QA rule)
    From the highest bucket down, continue while the bucket's incorrect:correct ratio is ≤ max_error_ratio
    (an empty bucket passes); at the first bucket over it, stop and use its upper edge; passing every bucket
    gives the lowest edge. When the top bucket itself fails, its upper edge is the top of the range, which
    belongs to that (inclusive) bucket: the threshold is ``None``, nothing may be auto-accepted.

`IsotonicThreshold`
    Isotonic regression of P(accept | confidence) (scikit-learn); the threshold is the lowest confidence at
    which the calibrated acceptance reaches 1 - max_error. This bounds the acceptance of the *marginal* item,
    not of the whole accepted set, and carries no guarantee; it needs at least as many items above the threshold
    as the Clopper-Pearson bound needs to reach max_error, so it never speaks from a handful of items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import BaseEstimator

from analysis.tables import assign_buckets, default_bucket_edges
from qa_workflow.contract import SegqaError

__all__ = [
    "METHODS", "DEFAULT_METHOD", "cp_upper_bound", "cp_two_sided", "cp_bound_within", "min_reviews_for_bound",
    "ClopperPearsonThreshold", "BucketWalkThreshold", "IsotonicThreshold", "make_selector", "ThresholdSummary",
    "Selector",
]

METHODS = ("clopper-pearson", "bucket-walk", "isotonic")
DEFAULT_METHOD = "clopper-pearson"


# --------------------------------------------------------------------------------------------------------
# Clopper-Pearson, vectorised

def _check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise SegqaError(f"{name} must be strictly between 0 and 1, got {value:g}")
    return value


def cp_upper_bound(errors: np.ndarray | int, n: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a binomial rate at level ``confidence``.

    errors, n: broadcastable integer arrays, 0 ≤ errors ≤ n. Returns float array; 1.0 where errors == n,
    NaN where n == 0. ``U = Beta⁻¹(confidence; errors + 1, n - errors)``.
    """
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    e, n = np.broadcast_arrays(e, n)
    out = np.full(e.shape, np.nan)
    ok = (n > 0) & (e < n)
    out[ok] = stats.beta.ppf(confidence, e[ok] + 1, n[ok] - e[ok])
    out[(n > 0) & (e >= n)] = 1.0
    return out


def cp_two_sided(successes: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval (lower, upper) for a rate ``successes / n`` at ``level``.

    successes, n: (K,) integer arrays; NaN where n == 0.
    """
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = (1.0 - level) / 2.0
    lower = np.full(s.shape, np.nan)
    upper = np.full(s.shape, np.nan)
    ok = n > 0
    lower[ok] = np.where(s[ok] > 0, stats.beta.ppf(a, np.maximum(s[ok], 1), n[ok] - s[ok] + 1), 0.0)
    upper[ok] = np.where(s[ok] < n[ok], stats.beta.ppf(1 - a, s[ok] + 1, np.maximum(n[ok] - s[ok], 1)), 1.0)
    return lower, upper


def cp_bound_within(errors: np.ndarray, n: np.ndarray, max_error: float, confidence: float) -> np.ndarray:
    """True where the one-sided CP upper bound at ``confidence`` is ≤ ``max_error`` (bool array).

    Same statement as ``cp_upper_bound(errors, n, confidence) <= max_error``, computed as the exact binomial
    test P(Binomial(n, max_error) ≤ errors) ≤ 1 - confidence, which is ~20x faster than the Beta quantile.
    n == 0 is never within.
    """
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    tail = stats.binom.cdf(e, n, max_error)
    return (n > 0) & (tail <= 1.0 - confidence)


def min_reviews_for_bound(errors: np.ndarray | int, max_error: float, confidence: float) -> np.ndarray:
    """Smallest n with ``cp_upper_bound(errors, n) <= max_error``: how many reviewed items a set with this many
    rejections needs before it can pass. errors: (K,) int ≥ 0. Returns (K,) int64.

    ``min_reviews_for_bound(0, 0.05, 0.95) == 59`` (ln 0.05 / ln 0.95 = 58.4).
    """
    e = np.atleast_1d(np.asarray(errors, dtype=np.int64))
    lo = e.copy()  # n = e (every item an error) never passes
    hi = np.maximum(e + 1, np.ceil((e + 1) / max_error).astype(np.int64))
    for _ in range(64):
        short = ~cp_bound_within(e, hi, max_error, confidence)
        if not short.any():
            break
        lo = np.where(short, hi, lo)
        hi = np.where(short, hi * 2, hi)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = cp_bound_within(e, mid, max_error, confidence)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return hi


# --------------------------------------------------------------------------------------------------------
# Selectors

@dataclass(frozen=True)
class ThresholdSummary:
    """What thresholds.json says about one class (ARCHITECTURE §9)."""

    threshold: float | None
    n_reviewed: int
    n_above: int
    errors_above: int
    error_upper_bound: float | None
    coverage: float
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            # exact: the threshold is an observed confidence or an edge, and rounding it up would drop the
            # items sitting right on it
            "threshold": None if self.threshold is None else float(self.threshold),
            "n_reviewed": self.n_reviewed, "n_above": self.n_above, "errors_above": self.errors_above,
            "error_upper_bound": _round(self.error_upper_bound, 6), "coverage": _round(self.coverage, 6),
            "reason": self.reason,
        }


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


def _check_xy(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(correct).ravel()
    if x.shape != y.shape:
        raise ValueError(f"confidence and correct differ in length ({x.size} vs {y.size})")
    if x.size == 0:
        raise ValueError("no reviewed items to fit on")
    if not np.all(np.isfinite(x)):
        raise ValueError("confidence has non-finite values")
    return x, y.astype(bool)


class _Selector(BaseEstimator):
    """Shared learned-state bookkeeping and ``predict``; parameters, ``get_params``/``set_params`` and ``clone``
    come from scikit-learn's ``BaseEstimator``."""

    confidence: float

    def _finish(self, x: np.ndarray, correct: np.ndarray, threshold: float | None, reason: str | None) -> None:
        self.threshold_ = None if threshold is None else float(threshold)
        self.reason_ = reason
        self.n_reviewed_ = int(x.size)
        if threshold is None:
            self.n_above_, self.errors_above_, self.error_upper_bound_ = 0, 0, None
        else:
            above = x >= threshold
            self.n_above_ = int(above.sum())
            self.errors_above_ = int((~correct[above]).sum())
            bound = cp_upper_bound(self.errors_above_, self.n_above_, self.confidence)
            self.error_upper_bound_ = None if np.isnan(bound) else float(bound)
        self.coverage_ = self.n_above_ / self.n_reviewed_

    def predict(self, confidence: Any) -> np.ndarray:
        """Which items would be auto-accepted: (N,) bool, ``confidence >= threshold_``."""
        x = np.asarray(confidence, dtype=np.float64)
        if self.threshold_ is None:
            return np.zeros(x.shape, dtype=bool)
        return x >= self.threshold_

    def summary(self) -> ThresholdSummary:
        return ThresholdSummary(self.threshold_, self.n_reviewed_, self.n_above_, self.errors_above_,
                                self.error_upper_bound_, self.coverage_, self.reason_)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


class ClopperPearsonThreshold(_Selector):
    """Lowest threshold whose one-sided CP upper bound on the reject rate above it is ≤ ``max_error``,
    found by a fixed-sequence scan from high to low confidence (see the module docstring).

    Parameters: ``max_error`` (ε, e.g. 0.05), ``confidence`` (1 - α, e.g. 0.95), ``candidates`` (None: the
    distinct observed confidences; or a fixed grid of thresholds, scanned from high to low), and where the scan
    starts: at the first θ with at least ``n_start_ = max(n_min_, min_above, ⌈start_coverage · N⌉)`` items
    above it, N the class's reviewed items. ``n_min_`` is the fewest for which the bound can reach ε at all
    (then every one of them must have been accepted); ``start_coverage`` (default 0.05) also waits until the
    threshold would auto-accept 5 % of the class, so that in a large class one rejection among its very
    top items does not end the scan before it has begun; ``min_above`` (default None) sets a count instead.
    All three depend on the counts only, never on the reviewers' answers, so the sequence stays fixed and
    the guarantee holds for any values chosen before looking at the results.

    Learned, besides the common ones: ``n_min_``, ``n_start_``, ``more_reviews_needed_`` (None, or for a
    ``None`` threshold the fewest further reviews, all accepted, of high-confidence items that would make a
    threshold reachable), and the scan path ``path_theta_``, ``path_n_``, ``path_errors_`` (every candidate,
    high to low) with ``path_tested_`` / ``path_passed_``.
    """

    def __init__(self, max_error: float = 0.05, confidence: float = 0.95,
                 candidates: Sequence[float] | None = None, start_coverage: float = 0.05,
                 min_above: int | None = None) -> None:
        self.max_error = max_error
        self.confidence = confidence
        self.candidates = candidates
        self.start_coverage = start_coverage
        self.min_above = min_above

    def _start_count(self, n_min: int, n_items: np.ndarray | int) -> np.ndarray:
        """n_start for a class of ``n_items`` reviewed items (array-friendly)."""
        share = np.ceil(float(self.start_coverage or 0.0) * np.asarray(n_items, dtype=np.float64) - 1e-9)
        return np.maximum(np.maximum(n_min, int(self.min_above or 0)), share.astype(np.int64))

    def fit(self, confidence: Any, correct: Any) -> ClopperPearsonThreshold:
        eps = _check_level("max_error", self.max_error)
        conf = _check_level("confidence", self.confidence)
        if not 0.0 <= float(self.start_coverage or 0.0) < 1.0:
            raise SegqaError(f"start_coverage must be in [0, 1), got {self.start_coverage}")
        x, ok = _check_xy(confidence, correct)
        order = np.argsort(-x, kind="stable")
        xs, errs = x[order], (~ok[order]).astype(np.int64)
        cum_e = np.cumsum(errs)
        if self.candidates is None:
            last_of_tie = np.flatnonzero(np.append(xs[1:] != xs[:-1], True))
            theta, n = xs[last_of_tie], last_of_tie + 1
            e = cum_e[last_of_tie]
        else:
            theta = np.unique(np.asarray(self.candidates, dtype=np.float64))[::-1]
            asc = xs[::-1]
            n = x.size - np.searchsorted(asc, theta, side="left")  # items with confidence >= theta
            e = np.where(n > 0, cum_e[np.maximum(n - 1, 0)], 0)
        n_min = int(min_reviews_for_bound(0, eps, conf)[0])
        n_start = int(self._start_count(n_min, x.size))
        tested = np.zeros(theta.size, dtype=bool)
        passed = np.zeros(theta.size, dtype=bool)
        start = int(np.searchsorted(n, n_start, side="left"))  # n grows along the sequence
        threshold: float | None = None
        reason: str | None = None
        if start < theta.size:
            ok_seq = cp_bound_within(e[start:], n[start:], eps, conf)
            fails = np.flatnonzero(~ok_seq)
            stop = start + (int(fails[0]) if fails.size else ok_seq.size)
            tested[start:min(stop + 1, theta.size)] = True
            passed[start:stop] = True
            if stop > start:
                threshold = float(theta[stop - 1])
        self.n_min_, self.n_start_ = n_min, n_start
        self.path_theta_, self.path_n_, self.path_errors_ = theta, n, e
        self.path_tested_, self.path_passed_ = tested, passed
        self.more_reviews_needed_ = None
        if threshold is None:
            k, at = self._more_reviews(n, e, x.size, n_min, eps, conf)
            self.more_reviews_needed_ = k
            where = (f"of masks with confidence ≥ {_fmt(theta[at])}" if at is not None
                     else "of masks more confident than any reviewed so far")
            more = f"{k} more review(s), all accepted, {where}, would make a threshold reachable"
            # how the reviews so far went: many rejections say the model, not the count, stands in the way
            reviewed = f"{x.size} reviewed item(s), {int(errs.sum())} of them rejected"
            if start >= theta.size and n_start > n_min:
                reason = (f"too few reviews: {reviewed}, and the scan starts only where "
                          f"{n_start} items lie above the threshold (min_above); {more}")
            elif start >= theta.size:
                reason = (f"too few reviews: {reviewed}, and the Clopper-Pearson bound cannot "
                          f"reach {_pct(eps)} at {_pct(conf)} confidence with fewer than {n_min} items above "
                          f"the threshold even if all were accepted; {more}")
            else:
                bound = float(cp_upper_bound(e[start], n[start], conf))
                reason = (f"the scan fails at its first step: of the {int(n[start])} highest-confidence items "
                          f"(confidence ≥ {_fmt(theta[start])}), {int(e[start])} "
                          f"{'was' if e[start] == 1 else 'were'} rejected "
                          f"({_pct(e[start] / n[start])}) and the upper bound is {_pct(bound)} > {_pct(eps)}; "
                          f"{more}")
        self._finish(x, ok, threshold, reason)
        return self

    def _more_reviews(self, n: np.ndarray, e: np.ndarray, n_items: int, n_min: int, eps: float, conf: float
                      ) -> tuple[int, int | None]:
        """Fewest k extra accepted reviews, placed above every reviewed confidence, after which the scan finds
        a threshold. With k added the class has N + k items and the scan starts at n_start(k); the new items
        alone are tested first when k ≥ n_start(k), and always pass (no errors, enough items); otherwise the
        first tested candidate is j*(k), the first with n + k ≥ n_start(k), and it passes iff
        n[j*] + k ≥ min_reviews_for_bound(e[j*]). Returns (k, index of j*(k), or None for the new items)."""
        share = float(self.start_coverage or 0.0)
        # k ≥ (s·N + 1) / (1 − s) gives k ≥ s·(N + k) + 1 > n_start's share term: the new items alone suffice
        k_max = int(max(n_min, int(self.min_above or 0), math.ceil((share * n_items + 1) / (1 - share))))
        ks = np.arange(0, k_max + 1, dtype=np.int64)
        n_start = self._start_count(n_min, n_items + ks)
        new_alone = ks >= n_start
        j = np.searchsorted(n, n_start - ks, side="left")
        valid = (j < n.size) & ~new_alone
        jv = np.minimum(j, n.size - 1)
        need = min_reviews_for_bound(e[jv], eps, conf)
        works = new_alone | (valid & (n[jv] + ks >= need))
        first = int(np.flatnonzero(works)[0])  # k_max always works: new_alone[-1] is True
        return int(ks[first]), (None if new_alone[first] else int(jv[first]))


class BucketWalkThreshold(_Selector):
    """The bulk-QA rule: walk buckets from the top while incorrect ≤ ``max_error_ratio`` × correct.

    Parameters: ``edges`` (bucket edges on the caller's scale; None: ``n_buckets`` equal-width buckets from the
    lowest confidence to ``top``), ``max_error_ratio`` (e.g. 0.1: a false positive costs ten true positives),
    ``n_buckets``, ``top`` (1.0 or 100.0), ``confidence`` (level of the reported bound only).
    Learned: ``edges_``, ``bucket_total_``, ``bucket_incorrect_`` (B,), ``bucket_passed_`` (B,) bool
    (False also for buckets below the stop, which were never looked at).
    """

    def __init__(self, edges: Sequence[float] | np.ndarray | None = None, max_error_ratio: float = 0.1,
                 n_buckets: int = 5, top: float = 1.0, confidence: float = 0.95) -> None:
        self.edges = edges
        self.max_error_ratio = max_error_ratio
        self.n_buckets = n_buckets
        self.top = top
        self.confidence = confidence

    def fit(self, confidence: Any, correct: Any) -> BucketWalkThreshold:
        if not self.max_error_ratio >= 0:
            raise SegqaError(f"max_error_ratio must be ≥ 0, got {self.max_error_ratio}")
        x, ok = _check_xy(confidence, correct)
        edges = (default_bucket_edges(x, self.top, self.n_buckets) if self.edges is None
                 else np.asarray(self.edges, dtype=np.float64))
        b = edges.size - 1
        idx = assign_buckets(x, edges)
        inside = idx >= 0
        total = np.bincount(idx[inside], minlength=b)
        incorrect = np.bincount(idx[inside], weights=~ok[inside], minlength=b).astype(np.int64)
        correct_n = total - incorrect
        fail = incorrect > self.max_error_ratio * correct_n * (1 + 1e-12)
        failing = np.flatnonzero(fail)
        top_fail = int(failing[-1]) if failing.size else -1
        passed = np.zeros(b, dtype=bool)
        passed[top_fail + 1:] = True
        self.edges_, self.bucket_total_ = edges, total
        self.bucket_incorrect_, self.bucket_passed_ = incorrect, passed
        reason = None
        if total.sum() == 0:
            threshold = None
            reason = (f"no reviewed items inside the bucket edges {_fmt(edges[0])}..{_fmt(edges[-1])}")
        elif top_fail == b - 1:
            threshold = None
            ratio = incorrect[-1] / correct_n[-1] if correct_n[-1] else math.inf
            reason = (f"the top bucket [{_fmt(edges[-2])}, {_fmt(edges[-1])}] fails: {incorrect[-1]} incorrect : "
                      f"{correct_n[-1]} correct = {ratio:.3g} > {self.max_error_ratio:g}; nothing may be "
                      "auto-accepted")
        else:
            threshold = float(edges[top_fail + 1])  # the upper edge of the failing bucket, or the lowest edge
        self._finish(x, ok, threshold, reason)
        return self


class IsotonicThreshold(_Selector):
    """Lowest confidence whose isotonic-calibrated P(accept) reaches ``1 - max_error``.

    Parameters: ``max_error``, ``confidence`` (level of the reported bound and of ``min_above="auto"``),
    ``min_above`` ("auto": ``min_reviews_for_bound(0, max_error, confidence)``; or an int).
    Learned: ``calibrator_`` (fitted ``sklearn.isotonic.IsotonicRegression``), ``peak_acceptance_``.
    """

    def __init__(self, max_error: float = 0.05, confidence: float = 0.95, min_above: int | str = "auto") -> None:
        self.max_error = max_error
        self.confidence = confidence
        self.min_above = min_above

    def fit(self, confidence: Any, correct: Any) -> IsotonicThreshold:
        from sklearn.isotonic import IsotonicRegression

        eps = _check_level("max_error", self.max_error)
        conf = _check_level("confidence", self.confidence)
        x, ok = _check_xy(confidence, correct)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(x, ok.astype(np.float64))
        self.calibrator_ = iso
        xs, ys = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
        self.peak_acceptance_ = float(ys.max())
        target = 1.0 - eps
        reached = np.flatnonzero(ys >= target - 1e-12)
        min_above = (int(min_reviews_for_bound(0, eps, conf)[0]) if self.min_above == "auto"
                     else int(self.min_above))
        threshold: float | None = None
        reason: str | None = None
        if reached.size == 0:
            reason = (f"calibrated acceptance never reaches {_pct(target)}: it peaks at "
                      f"{_pct(self.peak_acceptance_)}")
        else:
            i = int(reached[0])
            if i == 0 or ys[i] == ys[i - 1]:
                theta = float(xs[i])
            else:  # where the interpolated calibration curve (what predict() uses) crosses the target
                theta = float(xs[i - 1] + (target - ys[i - 1]) / (ys[i] - ys[i - 1]) * (xs[i] - xs[i - 1]))
            n_above = int((x >= theta).sum())
            if n_above < min_above:
                reason = (f"too few reviews: only {n_above} item(s) have calibrated acceptance ≥ {_pct(target)} "
                          f"(confidence ≥ {_fmt(theta)}); at least {min_above} are needed to state anything at "
                          f"{_pct(conf)} confidence, so {min_above - n_above} more review(s) of such items")
            else:
                threshold = theta
        self._finish(x, ok, threshold, reason)
        return self

    def predict_proba(self, confidence: Any) -> np.ndarray:
        """Calibrated P(accept | confidence): (N,) float in [0, 1]."""
        return self.calibrator_.predict(np.asarray(confidence, dtype=np.float64))


# The public name of what `make_selector` returns, for annotations elsewhere.
Selector = _Selector


def make_selector(method: str, *, max_error: float = 0.05, confidence: float = 0.95,
                  max_error_ratio: float = 0.1, edges: Sequence[float] | np.ndarray | None = None, top: float = 1.0,
                  start_coverage: float = 0.05, min_above: int | None = None) -> _Selector:
    """A fresh selector for ``method`` (one of METHODS) with the analysis options."""
    if method == "clopper-pearson":
        return ClopperPearsonThreshold(max_error=max_error, confidence=confidence, start_coverage=start_coverage,
                                       min_above=min_above)
    if method == "bucket-walk":
        return BucketWalkThreshold(edges=edges, max_error_ratio=max_error_ratio, top=top, confidence=confidence)
    if method == "isotonic":
        return IsotonicThreshold(max_error=max_error, confidence=confidence)
    raise SegqaError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
