"""How well confidence predicts acceptance: reliability tables, expected calibration error, isotonic calibration.

Pure functions on unit-scale confidence (N,) in [0, 1] and ``accepted`` (N,) bool. Read the confidence as a
forecast of "a reviewer accepts this mask": a calibrated confidence of 0.9 is accepted 90 % of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.thresholds import cp_two_sided

__all__ = ["reliability_table", "expected_calibration_error", "fit_isotonic", "cross_validated_ece",
           "binned_acceptance", "isotonic_curve"]


def _uniform_bins(confidence: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins [k/n, (k+1)/n), the last one closed. The index is floor(x * n) (with a 1e-9 nudge for values
    like 0.3 * 10 = 2.9999999999999996): `np.linspace` edges land an ulp above 0.3, 0.6 and 0.7 and put
    those values in the bin below, where 0.1 or 0.4 go to the bin above."""
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.clip(np.floor(np.asarray(confidence, dtype=np.float64) * n_bins + 1e-9).astype(np.int64), 0, n_bins - 1)
    return edges, idx


def reliability_table(confidence: np.ndarray, accepted: np.ndarray, n_bins: int = 10,
                      level: float = 0.95) -> pd.DataFrame:
    """Equal-width bins on [0, 1]: ``bin_low, bin_high, n, mean_confidence, acceptance, lower, upper``.

    confidence: (N,) unit scale; accepted: (N,) bool. ``lower``/``upper``: two-sided Clopper-Pearson interval at
    ``level`` for the bin's acceptance rate. Empty bins are kept with n = 0 and NaN rates.
    """
    x = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(accepted, dtype=bool)
    edges, idx = _uniform_bins(x, n_bins)
    n = np.bincount(idx, minlength=n_bins)
    acc = np.bincount(idx, weights=y, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=x, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(n > 0, sum_conf / np.maximum(n, 1), np.nan)
        rate = np.where(n > 0, acc / np.maximum(n, 1), np.nan)
    lower, upper = cp_two_sided(acc, n, level)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "n": n, "mean_confidence": mean_conf,
                         "acceptance": rate, "lower": lower, "upper": upper})


def expected_calibration_error(probability: np.ndarray, accepted: np.ndarray, n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) · |acceptance_b − mean probability_b| over equal-width bins on [0, 1].

    probability: (N,) forecasts in [0, 1] (raw unit-scale confidence, or calibrated); accepted: (N,) bool.
    0 is perfectly calibrated; NaN for no items.
    """
    x = np.asarray(probability, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    y = np.asarray(accepted, dtype=np.float64)
    _, idx = _uniform_bins(x, n_bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=n_bins) - np.bincount(idx, weights=x, minlength=n_bins))
    return float(gap.sum() / x.size)  # Σ n_b/N · |Σy/n_b − Σx/n_b| == Σ |Σy − Σx| / N


def fit_isotonic(confidence: np.ndarray, accepted: np.ndarray):
    """An ``IsotonicRegression`` of P(accept | confidence) fitted on (N,) arrays; clips outside the data."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    return iso.fit(np.asarray(confidence, dtype=np.float64), np.asarray(accepted, dtype=np.float64))


def cross_validated_ece(confidence: np.ndarray, accepted: np.ndarray, n_splits: int = 5, n_bins: int = 10,
                        seed: int = 0) -> float:
    """ECE of isotonic-calibrated confidence, each item predicted by a model fitted without it (k-fold).

    An in-sample ECE of an isotonic fit is optimistic (it is fitted to those very bins); this is the honest
    figure. NaN when there are fewer than 2 · n_splits items.
    """
    from sklearn.model_selection import KFold

    x = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(accepted, dtype=bool)
    if x.size < 2 * n_splits:
        return float("nan")
    pred = np.empty(x.size)
    for train, test in KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x):
        pred[test] = fit_isotonic(x[train], y[train]).predict(x[test])
    return expected_calibration_error(pred, y, n_bins)


def binned_acceptance(confidence: np.ndarray, accepted: np.ndarray, n_bins: int = 10,
                      level: float = 0.95) -> pd.DataFrame:
    """Acceptance rate in (up to) ``n_bins`` equal-count bins of confidence, for plotting with error bars.

    confidence: (N,) any scale; accepted: (N,) bool. Returns ``low, high, n, mean_confidence, acceptance,
    lower, upper`` (two-sided Clopper-Pearson at ``level``). Ties never straddle bins.
    """
    x = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(accepted, dtype=bool)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    cuts = np.unique(np.searchsorted(xs, xs[np.linspace(0, xs.size, n_bins + 1).astype(int)[1:-1]], side="left"))
    bounds = np.unique(np.concatenate([[0], cuts, [xs.size]]))
    starts, stops = bounds[:-1], bounds[1:]
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    cum_y = np.concatenate([[0], np.cumsum(ys)])
    cum_x = np.concatenate([[0.0], np.cumsum(xs)])
    n = stops - starts
    acc = cum_y[stops] - cum_y[starts]
    lower, upper = cp_two_sided(acc, n, level)
    return pd.DataFrame({"low": xs[starts], "high": xs[stops - 1], "n": n,
                         "mean_confidence": (cum_x[stops] - cum_x[starts]) / n, "acceptance": acc / n,
                         "lower": lower, "upper": upper})


def isotonic_curve(confidence: np.ndarray, accepted: np.ndarray) -> dict[str, object]:
    """The fitted isotonic calibrator of one class as plain numbers, for ``calibration.json``.

    confidence: (N,) unit scale; accepted: (N,) bool. Returns ``{"n", "accept_rate", "x": [...], "y": [...]}``:
    P(accept | c) is the linear interpolation of (x, y) at c, clipped to the ends (exactly what
    ``IsotonicRegression.predict`` computes with ``out_of_bounds="clip"``); x increasing, y non-decreasing.
    No items: empty x and y.
    """
    x = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(accepted, dtype=bool)
    if x.size == 0:
        return {"n": 0, "accept_rate": None, "x": [], "y": []}
    iso = fit_isotonic(x, y)
    return {"n": int(x.size), "accept_rate": round(float(y.mean()), 6),
            # x at full precision: rounding merged knots closer than the rounding step (docstring: what predict gives)
            "x": [float(v) for v in iso.X_thresholds_], "y": [round(float(v), 12) for v in iso.y_thresholds_]}
