"""Acceptance tables (ARCHITECTURE §9): per class, and per class and confidence bucket.

Pure functions on a validated review-record frame (`analysis.records.ReviewRecords.frame`). The layout is the
bulk-QA study's: one row per class, then a ``TOTALS`` row (sums; % correct over all items) and a
``CLASS_AVERAGE`` row (the mean of the class rows; % correct is the mean of the classes' percentages, so every
class weighs the same however many items it has).

Buckets are ``[low, high)`` except the top one, which is ``[low, high]`` (the top edge is inclusive). Items
outside the edges belong to no bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.records import STATUS_CONFIRMED, STATUS_DISCONFIRMED, STATUS_SPLIT
from qa_workflow.contract import SegqaError

__all__ = [
    "TOTALS", "CLASS_AVERAGE", "CLASS_TABLE_COLUMNS", "BUCKET_TABLE_COLUMNS", "DEFAULT_N_BUCKETS",
    "default_bucket_edges", "parse_bucket_edges", "assign_buckets", "acceptance_by_class", "acceptance_by_bucket",
]

TOTALS = "TOTALS"
CLASS_AVERAGE = "CLASS_AVERAGE"
CLASS_TABLE_COLUMNS = ("class_name", "total", "confirmed", "disconfirmed", "split", "pct_correct")
BUCKET_TABLE_COLUMNS = ("class_name", "bucket_low", "bucket_high", "total", "incorrect", "pct_correct")
DEFAULT_N_BUCKETS = 5
_PCT_DECIMALS = 2


def default_bucket_edges(confidence: np.ndarray, top: float, n_buckets: int = DEFAULT_N_BUCKETS) -> np.ndarray:
    """``n_buckets`` equal-width buckets from the lowest observed confidence to the top of the scale.

    confidence: (N,) on the input scale; top: 1.0 (unit) or 100.0 (percent). Returns (n_buckets + 1,) edges.
    The lowest edge is the lowest confidence rounded down (to 1e-4 of the scale), so it never cuts an item off.
    When every item sits at the top, there is one bucket ``[top, top]``.
    """
    if n_buckets < 1:
        raise SegqaError(f"the number of buckets must be at least 1, got {n_buckets}")
    step = top * 1e-4
    lowest = float(np.min(confidence))
    # floor(v / step) * step can land one ulp above v (0.82 -> 0.8200000000000001): never above the lowest item
    low = min(math.floor(lowest / step) * step, lowest)
    low = min(max(low, 0.0), top)
    if low >= top:
        return np.array([top, top])
    edges = np.round(np.linspace(low, top, n_buckets + 1), 10)
    edges[0], edges[-1] = low, top
    return edges


def parse_bucket_edges(spec: str | Sequence[float], top: float, what: str = "--buckets") -> np.ndarray:
    """Bucket edges from ``"80,85,90,95,100"`` (or a sequence), checked against the scale's top.

    Edges are on the input's confidence scale, strictly increasing, at least two, within [0, top].
    """
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        try:
            edges = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            raise SegqaError(f"{what}: expected comma-separated numbers like 0.8,0.85,0.9,0.95,1, "
                             f"got {spec!r}") from None
    else:
        edges = np.asarray(list(spec), dtype=np.float64)
    if edges.size < 2:
        raise SegqaError(f"{what}: need at least two edges (one bucket), got {edges.size}")
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        shown = ",".join(f"{e:g}" for e in edges)
        raise SegqaError(f"{what}: edges must be strictly increasing numbers, got {shown}")
    if edges[0] < 0 or edges[-1] > top:
        scale = "[0, 1]" if top == 1.0 else "[0, 100]"
        raise SegqaError(f"{what}: edges must lie within the confidence scale {scale} of the input, got "
                         f"{edges[0]:g}..{edges[-1]:g}")
    return edges


def assign_buckets(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index of each confidence: (N,) int64 in [0, len(edges) - 2], or -1 outside the edges.

    Bucket i is [edges[i], edges[i+1]); the last bucket includes its top edge.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    n_buckets = len(edges) - 1
    idx = np.searchsorted(edges, confidence, side="right") - 1
    idx[confidence == edges[-1]] = n_buckets - 1
    idx[(confidence < edges[0]) | (confidence > edges[-1])] = -1
    return idx.astype(np.int64)


def _pct(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """100 · correct / total, unrounded; NaN where total is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * correct / np.maximum(total, 1), np.nan)


def acceptance_by_class(frame: pd.DataFrame, classes: Iterable[str]) -> pd.DataFrame:
    """``class_name,total,confirmed,disconfirmed,split,pct_correct`` + TOTALS and CLASS_AVERAGE rows.

    frame: validated review records (columns class_name, status, correct). ``pct_correct`` is the share of
    items counted correct under the records' split policy, in percent (2 decimals).
    """
    classes = list(classes)
    code = pd.Categorical(frame["class_name"], categories=classes).codes
    k = len(classes)
    status = frame["status"].to_numpy()
    total = np.bincount(code, minlength=k)
    confirmed = np.bincount(code, weights=status == STATUS_CONFIRMED, minlength=k).astype(np.int64)
    disconfirmed = np.bincount(code, weights=status == STATUS_DISCONFIRMED, minlength=k).astype(np.int64)
    split = np.bincount(code, weights=status == STATUS_SPLIT, minlength=k).astype(np.int64)
    correct = np.bincount(code, weights=frame["correct"].to_numpy(), minlength=k)
    pct = _pct(correct, total)
    table = pd.DataFrame({"class_name": classes, "total": total, "confirmed": confirmed,
                          "disconfirmed": disconfirmed, "split": split, "pct_correct": np.round(pct, _PCT_DECIMALS)})
    totals = {"class_name": TOTALS, "total": total.sum(), "confirmed": confirmed.sum(),
              "disconfirmed": disconfirmed.sum(), "split": split.sum(),
              "pct_correct": round(float(_pct(np.array([correct.sum()]), np.array([total.sum()]))[0]), _PCT_DECIMALS)}
    average = {"class_name": CLASS_AVERAGE, **{c: round(float(table[c].mean()), 2) for c in
                                               ("total", "confirmed", "disconfirmed", "split")},
               "pct_correct": round(float(np.nanmean(pct)), _PCT_DECIMALS) if k else np.nan}
    out = pd.concat([table, pd.DataFrame([totals, average])], ignore_index=True)
    return out[list(CLASS_TABLE_COLUMNS)]


def acceptance_by_bucket(frame: pd.DataFrame, classes: Iterable[str], edges: np.ndarray) -> pd.DataFrame:
    """``class_name,bucket_low,bucket_high,total,incorrect,pct_correct``, one row per class and bucket
    (lowest bucket first), then per bucket a TOTALS row and a CLASS_AVERAGE row.

    frame: validated review records (class_name, confidence on the input scale, correct); edges: (B+1,) on
    the same scale. ``pct_correct`` is empty (NaN) for an empty bucket; CLASS_AVERAGE averages the classes'
    counts and, for ``pct_correct``, the percentages of the classes that have items in the bucket.
    """
    classes = list(classes)
    k, b = len(classes), len(edges) - 1
    code = pd.Categorical(frame["class_name"], categories=classes).codes.astype(np.int64)
    bucket = assign_buckets(frame["confidence"].to_numpy(), edges)
    inside = bucket >= 0
    cell = code[inside] * b + bucket[inside]
    total = np.bincount(cell, minlength=k * b).reshape(k, b)
    incorrect = np.bincount(cell, weights=~frame["correct"].to_numpy()[inside], minlength=k * b)
    incorrect = incorrect.reshape(k, b).astype(np.int64)
    pct = _pct(total - incorrect, total)

    low, high = np.asarray(edges[:-1], dtype=np.float64), np.asarray(edges[1:], dtype=np.float64)
    rows = pd.DataFrame({
        "class_name": np.repeat(np.asarray(classes, dtype=object), b),
        "bucket_low": np.tile(low, k), "bucket_high": np.tile(high, k),
        "total": total.ravel(), "incorrect": incorrect.ravel(), "pct_correct": np.round(pct.ravel(), _PCT_DECIMALS),
    })
    tot_total, tot_incorrect = total.sum(axis=0), incorrect.sum(axis=0)
    has_items = total > 0
    n_with = has_items.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_pct = np.where(n_with > 0, np.where(has_items, pct, 0.0).sum(axis=0) / n_with, np.nan)
    summary = pd.DataFrame({
        "class_name": [TOTALS] * b + [CLASS_AVERAGE] * b,
        "bucket_low": np.concatenate([low, low]), "bucket_high": np.concatenate([high, high]),
        "total": np.concatenate([tot_total, np.round(tot_total / max(k, 1), 2)]),
        "incorrect": np.concatenate([tot_incorrect, np.round(tot_incorrect / max(k, 1), 2)]),
        "pct_correct": np.round(np.concatenate([_pct(tot_total - tot_incorrect, tot_total), avg_pct]), _PCT_DECIMALS),
    })
    return pd.concat([rows, summary], ignore_index=True)[list(BUCKET_TABLE_COLUMNS)]
