"""The report's figures as PNG bytes (matplotlib, Agg canvas; no pyplot state, no display).

One panel per class in each figure:

- ``acceptance``: acceptance rate vs confidence (equal-count bins, Clopper-Pearson intervals), the isotonic
  curve, the 1 − max-error line and every method's threshold, the chosen method's auto-accept region shaded;
- ``reliability``: reliability diagram on [0, 1] with the items per bin, ECE before and after isotonic calibration;
- ``risk_coverage``: reject rate among auto-accepted items vs the share auto-accepted, as the threshold is
  lowered, with its upper confidence bound and each method's threshold marked.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.thresholds import METHODS, cp_upper_bound
from qa_workflow.contract import CLASS_BY_NAME

if TYPE_CHECKING:
    from analysis.results import AnalysisResult, ClassCalibration

__all__ = ["render_plots", "class_color", "METHOD_STYLE"]

_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
METHOD_STYLE = {
    "clopper-pearson": {"color": "#222222", "linestyle": "-", "marker": "o", "label": "Clopper–Pearson"},
    "bucket-walk": {"color": "#8c564b", "linestyle": "--", "marker": "s", "label": "bucket-walk"},
    "isotonic": {"color": "#9467bd", "linestyle": ":", "marker": "^", "label": "isotonic"},
}
_DPI = 110
_MAX_CURVE_POINTS = 1500


def class_color(name: str, index: int) -> str:
    """The contract's overlay colour for a tissue class; tab10 for any other label."""
    cls = CLASS_BY_NAME.get(name)
    if cls is not None and cls.color:
        return "#c79100" if cls.name == "white_matter" else cls.color  # the overlay amber is unreadable on white
    return _TAB10[index % len(_TAB10)]


def _grid(n: int, width: float = 4.3, height: float = 3.5) -> tuple[Figure, list]:
    ncols = min(3, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _legend_below(fig: Figure, handles, labels) -> None:
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), frameon=False,
                   fontsize=8.5)


def _acceptance_figure(result: AnalysisResult, calibration: dict[str, ClassCalibration]) -> bytes:
    opts = result.options
    top = result.records.scale_top
    fig, axes = _grid(len(result.classes))
    x_low = float(result.edges[0])
    handles: dict[str, object] = {}
    for i, (ax, name) in enumerate(zip(axes, result.classes, strict=True)):
        color = class_color(name, i)
        binned = calibration[name].binned
        yerr = np.vstack([binned["acceptance"] - binned["lower"], binned["upper"] - binned["acceptance"]])
        h = ax.errorbar(binned["mean_confidence"], binned["acceptance"], yerr=yerr, fmt="o", color=color,
                        ms=4.5, capsize=2.5, lw=1.1)
        handles.setdefault(f"acceptance (equal-count bins, {opts.confidence:.0%} CI)", h)
        iso = result.selectors["isotonic"][name].calibrator_
        xs = np.linspace(max(x_low, float(iso.X_min_)), float(iso.X_max_), 300)
        (h,) = ax.plot(xs, iso.predict(xs), color=color, alpha=0.45, lw=1.6)
        handles.setdefault("isotonic fit", h)
        h = ax.axhline(1 - opts.max_error, color="#d62728", lw=0.9, alpha=0.7)
        handles.setdefault(f"1 − max-error = {1 - opts.max_error:.0%}", h)
        for method in METHODS:
            thr = result.selectors[method][name].threshold_
            if thr is None:
                continue
            style = METHOD_STYLE[method]
            chosen = method == opts.method
            h = ax.axvline(thr, color=style["color"], ls=style["linestyle"], lw=2.0 if chosen else 1.1)
            handles.setdefault(f"threshold: {style['label']}", h)
            if chosen:
                ax.axvspan(thr, top, color="#2ca02c", alpha=0.08, lw=0)
        chosen = result.chosen(name)
        verdict = (f"auto-accept ≥ {chosen.threshold_:.3g} ({chosen.coverage_:.0%})" if chosen.threshold_ is not None
                   else "no threshold: review all")
        ax.set_title(f"{name}  (n={chosen.n_reviewed_:,})\n{verdict}", fontsize=10)
        ax.set_xlim(x_low - 0.02 * (top - x_low), top + 0.01 * (top - x_low))
        ax.set_ylim(-0.03, 1.03)
        _style_axes(ax, f"confidence ({result.records.scale} scale)", "acceptance rate")
    _legend_below(fig, list(handles.values()), list(handles.keys()))
    return _png(fig)


def _style_axes(ax, xlabel: str, ylabel: str) -> None:
    """The axis labels, grid and tick size every per-class panel of the report shares."""
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=8)


def _reliability_figure(result: AnalysisResult, calibration: dict[str, ClassCalibration]) -> bytes:
    fig, axes = _grid(len(result.classes))
    top = result.records.scale_top
    handles: dict[str, object] = {}
    for i, (ax, name) in enumerate(zip(axes, result.classes, strict=True)):
        color = class_color(name, i)
        cal = calibration[name]
        rel = cal.reliability
        counts = ax.twinx()
        counts.bar((rel["bin_low"] + rel["bin_high"]) / 2, rel["n"], width=0.095, color="#888888", alpha=0.18)
        counts.set_ylim(0, max(1, rel["n"].max()) * 3.2)
        counts.set_yticks([])
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        (h,) = ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=0.9)
        handles.setdefault("perfect calibration", h)
        has = rel["n"] > 0
        yerr = np.vstack([rel["acceptance"][has] - rel["lower"][has], rel["upper"][has] - rel["acceptance"][has]])
        h = ax.errorbar(rel["mean_confidence"][has], rel["acceptance"][has], yerr=yerr, fmt="o-", color=color,
                        ms=4, capsize=2.5, lw=1.2)
        handles.setdefault("observed acceptance per bin", h)
        iso = result.selectors["isotonic"][name].calibrator_
        xs = np.linspace(float(iso.X_min_), float(iso.X_max_), 300)
        (h,) = ax.plot(xs / top, iso.predict(xs), color="#9467bd", lw=1.4, alpha=0.8)
        handles.setdefault("isotonic calibration", h)
        handles.setdefault("items per bin (grey bars)", counts.patches[0] if counts.patches else h)
        cv = "–" if np.isnan(cal.ece_isotonic_cv) else f"{cal.ece_isotonic_cv:.3f}"
        ax.set_title(f"{name}: ECE {cal.ece_raw:.3f} raw, {cv} isotonic (CV)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.03, 1.03)
        _style_axes(ax, "confidence (unit scale)", "acceptance rate")
    _legend_below(fig, list(handles.values()), list(handles.keys()))
    return _png(fig)


def _risk_coverage_figure(result: AnalysisResult) -> bytes:
    opts = result.options
    fig, axes = _grid(len(result.classes))
    handles: dict[str, object] = {}
    for i, (ax, name) in enumerate(zip(axes, result.classes, strict=True)):
        color = class_color(name, i)
        cp = result.selectors["clopper-pearson"][name]
        n_total = cp.n_reviewed_
        n, e = cp.path_n_, cp.path_errors_
        pick = np.unique(np.linspace(0, n.size - 1, min(n.size, _MAX_CURVE_POINTS)).astype(int))
        n, e = n[pick], e[pick]
        cov, risk = n / n_total, e / n
        bound = cp_upper_bound(e, n, opts.confidence)
        (h,) = ax.plot(cov, risk, color=color, lw=1.6)
        handles.setdefault("reject rate among auto-accepted", h)
        (h,) = ax.plot(cov, bound, color=color, lw=1.0, ls="--", alpha=0.8)
        handles.setdefault(f"{opts.confidence:.0%} upper bound", h)
        h = ax.axhline(opts.max_error, color="#d62728", lw=0.9, alpha=0.7)
        handles.setdefault(f"max-error {opts.max_error:.0%}", h)
        for method in METHODS:
            sel = result.selectors[method][name]
            if sel.threshold_ is None or sel.n_above_ == 0:
                continue
            style = METHOD_STYLE[method]
            chosen = method == opts.method
            h = ax.scatter([sel.coverage_], [sel.errors_above_ / sel.n_above_], marker=style["marker"],
                           s=70 if chosen else 40, facecolor=style["color"] if chosen else "white",
                           edgecolor=style["color"], linewidth=1.4, zorder=5)
            handles.setdefault(f"threshold: {style['label']}", h)
        # zoom on the region that decides (risk up to 4x the target) unless the whole curve lies above it
        low_risk = risk[cov >= 0.02] if np.any(cov >= 0.02) else risk
        ymax = 4 * opts.max_error if low_risk.size and low_risk.min() < 2 * opts.max_error \
            else float(np.nanmax(risk)) * 1.05
        ax.set_ylim(0, min(1.0, max(ymax, 1e-3)))
        ax.set_xlim(0, 1.03)
        ax.set_title(f"{name}", fontsize=10)
        _style_axes(ax, "coverage (share auto-accepted)", "reject rate (risk)")
    _legend_below(fig, list(handles.values()), list(handles.keys()))
    return _png(fig)


def render_plots(result: AnalysisResult) -> dict[str, bytes]:
    """``{"acceptance": png, "reliability": png, "risk_coverage": png}`` for the report (needs calibration)."""
    if result.calibration is None:
        raise ValueError("render_plots needs an AnalysisResult made with calibration=True")
    return {
        "acceptance": _acceptance_figure(result, result.calibration),
        "risk_coverage": _risk_coverage_figure(result),
        "reliability": _reliability_figure(result, result.calibration),
    }
