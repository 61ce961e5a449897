"""report.html: one self-contained page (inline CSS, PNGs embedded as base64) that opens offline.

It answers "which masks can skip review, and how sure are we?" first (a headline per class and the summary
table), then shows why (acceptance vs confidence, risk-coverage, method comparison, calibration), then the
tables and the reviewers. The template is ``analysis/templates/report.html.j2`` (jinja2, autoescaped).
"""

from __future__ import annotations

import base64
import math
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import jinja2
import numpy as np
import pandas as pd

from analysis.plots import METHOD_STYLE, class_color
from analysis.tables import CLASS_AVERAGE, TOTALS
from analysis.thresholds import METHODS

if TYPE_CHECKING:
    from analysis.results import AnalysisResult

__all__ = ["render_report", "method_explanation"]

_TEMPLATES = Path(__file__).with_name("templates")


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if _missing(x) else f"{100 * float(x):.{digits}f}%"


def _num(x: Any, digits: int = 4) -> str:
    if _missing(x):
        return "–"
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    return env


def method_explanation(result: AnalysisResult, method: str | None = None) -> str:
    """One sentence on what a threshold of ``method`` promises, with the run's targets."""
    o = result.options
    method = method or o.method
    if method == "clopper-pearson":
        start = (f"{o.min_above} items" if o.min_above else "")
        share = f"{o.start_coverage:.0%} of the class" if o.start_coverage else ""
        floor = " and ".join(x for x in (start, share) if x)
        return (f"Clopper–Pearson: with {o.confidence:.0%} confidence, at most {o.max_error:.0%} of the masks at "
                "or above the threshold would be rejected by reviewers (over the whole auto-accepted set: masks "
                "just above the threshold are rejected more often, those far above it less). The threshold is "
                "the lowest confidence that passes a fixed-sequence scan of the distinct observed confidences, "
                "high to low, stopping at the first that fails, so the guarantee needs no correction for the "
                "many thresholds tried. The scan starts once enough masks lie above the threshold for the bound "
                f"to reach {o.max_error:.0%}" + (f" and at least {floor} would be auto-accepted." if floor else "."))
    if method == "bucket-walk":
        return (f"bucket-walk (the bulk-QA rule): the lowest bucket edge such that every bucket above it has at "
                f"most {o.max_error_ratio:g} incorrect per correct item. It carries no statistical guarantee; "
                f"the bound column shows what the reviews above it support at {o.confidence:.0%} confidence.")
    return (f"isotonic: the lowest confidence at which the isotonic-calibrated acceptance reaches "
            f"{1 - o.max_error:.0%} (it bounds the marginal mask, not the whole accepted set, and carries no "
            f"guarantee); the bound column shows what the reviews above it support at {o.confidence:.0%} "
            "confidence.")


def _headline(result: AnalysisResult, name: str) -> dict:
    sel = result.chosen(name)
    o = result.options
    if sel.threshold_ is None:
        why = (sel.reason_ or "").split(":")[0]
        more = getattr(sel, "more_reviews_needed_", None)
        hint = f"; {more} more accepted reviews of confident masks would make a threshold reachable" if more else ""
        return {"ok": False, "text": f"review every mask — {why}{hint} (details below)"}
    bound = "" if sel.error_upper_bound_ is None else f"; at most {_pct(sel.error_upper_bound_)} of them rejected " \
                                                       f"({o.confidence:.0%} upper bound)"
    text = (f"auto-accept masks with confidence ≥ {_num(sel.threshold_)}: {_pct(sel.coverage_, 0)} of reviewed "
            f"masks would have skipped review{bound}; {sel.errors_above_:,} of {sel.n_above_:,} were rejected.")
    return {"ok": True, "text": text}


def _bucket_grid(result: AnalysisResult) -> dict:
    """The bucket table pivoted for reading: one row per class (then TOTALS, CLASS_AVERAGE), one column per
    bucket; each cell has % correct, incorrect and total, and a shade for how far % correct is from 100."""
    table = result.bucket_table
    edges = [float(e) for e in result.edges]
    labels = [f"{_num(lo)}–{_num(hi)}" for lo, hi in pairwise(edges)]
    rows = []
    for name, group in table.groupby("class_name", sort=False):
        cells = []
        for r in group.itertuples(index=False):
            # pandas-stubs types an itertuples field as any scalar; pct_correct is a float column
            pct = None if _missing(r.pct_correct) else float(cast(float, r.pct_correct))
            # white at 100 % correct, deepening towards 50 % and below
            shade = None if pct is None else max(0.0, min(1.0, (100.0 - pct) / 50.0))
            cells.append({"pct": pct, "incorrect": r.incorrect, "total": r.total, "shade": shade})
        rows.append({"name": name, "summary": name in (TOTALS, CLASS_AVERAGE), "cells": cells})
    return {"labels": labels, "rows": rows}


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.replace({np.nan: None}).to_dict("records")


def render_report(result: AnalysisResult, images: dict[str, bytes]) -> str:
    """The report as an HTML string; ``images`` are the PNGs of `analysis.plots.render_plots`."""
    o = result.options
    rec = result.records
    classes = []
    for i, name in enumerate(result.classes):
        sel = result.chosen(name)
        cal = result.calibration[name] if result.calibration else None
        classes.append({
            "name": name, "color": class_color(name, i), "threshold": sel.threshold_, "coverage": sel.coverage_,
            "n_reviewed": sel.n_reviewed_, "n_above": sel.n_above_, "errors_above": sel.errors_above_,
            "bound": sel.error_upper_bound_, "reason": sel.reason_, "headline": _headline(result, name),
            "ece_raw": cal.ece_raw if cal else None, "ece_cv": cal.ece_isotonic_cv if cal else None,
            "methods": [{"method": m, "label": METHOD_STYLE[m]["label"], "chosen": m == o.method,
                         **result.selectors[m][name].summary().to_json()} for m in
                        sorted(METHODS, key=lambda m: m != o.method)],
        })
    n_ok = sum(c["threshold"] is not None for c in classes)
    target = (f"max error {o.max_error:.0%} at {o.confidence:.0%} confidence" if o.method != "bucket-walk"
              else f"max incorrect:correct {o.max_error_ratio:g} per bucket")
    class_rows = _records(result.class_table)
    for row in class_rows:
        row["summary"] = row["class_name"] in (TOTALS, CLASS_AVERAGE)
    env = _environment()
    html = env.get_template("report.html.j2").render(
        title="segqa threshold analysis",
        created_at=result.created_at, source=rec.source, n_records=len(rec), n_classes=len(classes),
        n_ok=n_ok, method=o.method, method_label=METHOD_STYLE[o.method]["label"], target=target,
        explanation=method_explanation(result), explanations={m: method_explanation(result, m) for m in METHODS},
        scale=rec.scale, split_policy=rec.split_policy, options=o, classes=classes,
        images={k: base64.b64encode(v).decode("ascii") for k, v in images.items()},
        class_rows=class_rows, bucket_grid=_bucket_grid(result), agreement=result.agreement.to_json(),
        reviewers=_records(result.reviewers) if result.reviewers is not None else None,
        notes=result.notes, edges=[float(e) for e in result.edges],
    )
    return html
