"""Evaluate a model on a dataset split: Dice, HD95, volume difference, confusion matrix, example figure.

``evaluate_model(model_dir, data_dir, split="test")`` returns a JSON-ready report::

    {"schema": "segqa.evaluation/1", "model": {..., "tta"}, "data": {...},
     "pooled":   {"dice": {class: d}, "mean_foreground_dice", "confusion": {"classes": [...], "matrix": [[...]]}},
     "subjects": {"n", "dice_mean": {class: d}, "dice_std", "mean_foreground_dice_mean", ..._std,
                  "hd95_mm_mean": {class: mm}, "avd_pct_mean": {class: %}},
     "per_subject": [{"subject", "slices", "dice", "mean_foreground_dice", "hd95_mm", "avd_mm2", "avd_pct"
                      [, "site"]}],
     ["sites": {site: {"subjects", "slices", "dice": {class: d}, "mean_foreground_dice"}},]
     ["reviewer_bar": {"tau", "tolerance_px", "min_pixels", "classes": {class: {"masks", "passed", "share",
                       "median_surface_dice"}}, ["sites": {site: {class: {...}}}]},]
     "seconds": ...}

"sites" (pooled Dice per acquisition site, ARCHITECTURE §4) is there when the dataset's index.csv names sites.
"reviewer_bar" (when asked for with ``reviewer_tau``) says how many of the masks the loop would put before a
reviewer (a class predicted on >= ``min_pixels`` pixels of a slice) meet the simulated reviewers' standard
(ARCHITECTURE §10: surface Dice at 1 px >= tau): the share a perfect confidence score could auto-accept, i.e. the
ceiling on B8's coverage for this model.

"pooled" counts every pixel of the split at once; "subjects" averages per-subject figures (a subject's slices
pooled, HD95 over its slices in-plane; see `training.metrics`). NaN (e.g. a class absent from a subject)
becomes null in JSON and is left out of means.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa_workflow.contract import (
    DEFAULT_MIN_PIXELS,
    DEFAULT_TTA,
    NUM_CLASSES,
    REVIEW_CLASSES,
    SURFACE_TOLERANCE_PX,
    TISSUE_CLASSES,
    SegqaError,
)
from training.dataset import load_slices, pixel_spacing_mm, read_index
from training.metrics import (
    confusion_matrix,
    dice_from_confusion,
    mean_foreground_dice,
    segmentation_report,
    surface_dice,
)
from training.predict import Mirrored, Predictor, load_predictor, with_tta

__all__ = ["evaluate_model", "evaluate_predictions", "reviewer_bar", "render_examples"]

EVAL_SCHEMA = "segqa.evaluation/1"
_NAMES = [c.name for c in TISSUE_CLASSES]


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (np.floating,)):
        return _clean(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _by_class(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(_NAMES, values)}


def _nan_stat(rows: list[list[float]], fn: Callable) -> list[float]:
    arr = np.asarray(rows, dtype=np.float64)
    out = []
    for col in arr.T:
        col = col[np.isfinite(col)]
        out.append(float(fn(col)) if col.size else float("nan"))
    return out


def evaluate_predictions(pred: np.ndarray, truth: np.ndarray, subjects: Sequence[str],
                         spacing: tuple[float, float] = (1.0, 1.0), sites: Sequence[str] | None = None,
                         reviewer_tau: float | None = None) -> dict[str, Any]:
    """The metric part of the report from label maps: pred, truth (N, H, W); subjects: N subject ids;
    sites: N site names ("" = unknown) or None. Per-site figures appear when any site is named;
    ``reviewer_tau`` adds `reviewer_bar` at that bar."""
    if pred.shape != truth.shape or len(subjects) != len(pred) or (sites is not None and len(sites) != len(pred)):
        raise ValueError("pred, truth, subjects and sites must describe the same slices")
    cm = confusion_matrix(pred, truth)
    dice = dice_from_confusion(cm)
    subject_of_slice = np.asarray(subjects)
    per_subject = []
    for s in sorted(set(subject_of_slice.tolist())):
        sel = subject_of_slice == s
        r = segmentation_report(pred[sel], truth[sel], spacing)
        per_subject.append({"subject": s, "slices": int(sel.sum()), "dice": _by_class(r["dice"]),
                            "mean_foreground_dice": r["mean_foreground_dice"], "hd95_mm": _by_class(r["hd95_mm"]),
                            "avd_mm2": _by_class(r["avd_mm2"]), "avd_pct": _by_class(r["avd_pct"])})

    def table(key: str) -> list[list[float]]:
        return [[p[key][n] for n in _NAMES] for p in per_subject]

    site_arr = np.asarray(sites if sites is not None else [""] * len(pred), dtype=str)
    if (site_arr != "").any():
        site_of = dict(zip(subject_of_slice.tolist(), site_arr.tolist()))
        for p in per_subject:
            p["site"] = site_of[p["subject"]]
    mfd = [[p["mean_foreground_dice"]] for p in per_subject]
    report = {
        "pooled": {"dice": _by_class(dice), "mean_foreground_dice": mean_foreground_dice(dice),
                   "confusion": {"rows": "truth", "columns": "prediction", "classes": _NAMES, "matrix": cm.tolist()}},
        "subjects": {"n": len(per_subject),
                     "dice_mean": _by_class(_nan_stat(table("dice"), np.mean)),
                     "dice_std": _by_class(_nan_stat(table("dice"), np.std)),
                     "mean_foreground_dice_mean": _nan_stat(mfd, np.mean)[0],
                     "mean_foreground_dice_std": _nan_stat(mfd, np.std)[0],
                     "hd95_mm_mean": _by_class(_nan_stat(table("hd95_mm"), np.mean)),
                     "avd_pct_mean": _by_class(_nan_stat(table("avd_pct"), np.mean))},
        "per_subject": per_subject,
    }
    named = sorted({s for s in site_arr.tolist() if s})
    if named:
        report["sites"] = {site: _site_summary(pred, truth, subject_of_slice, site_arr == site) for site in named}
    if reviewer_tau is not None:
        bar = reviewer_bar(pred, truth, reviewer_tau)
        if named:
            bar["sites"] = {site: reviewer_bar(pred[site_arr == site], truth[site_arr == site], reviewer_tau)["classes"]
                            for site in named}
        report["reviewer_bar"] = bar
    return _clean(report)


def reviewer_bar(pred: np.ndarray, truth: np.ndarray, tau: float, tolerance_px: float = SURFACE_TOLERANCE_PX,
                 min_pixels: int = DEFAULT_MIN_PIXELS) -> dict[str, Any]:
    """Per tissue class, of the (slice, class) masks predicted on >= ``min_pixels`` pixels (those the loop
    would route): how many reach surface Dice >= ``tau`` at ``tolerance_px`` against the truth (the simulated
    reviewers' standard, ARCHITECTURE §10), their share and the median surface Dice. pred, truth: (N, H, W)."""
    classes: dict[str, Any] = {}
    for cls in REVIEW_CLASSES:
        p, t = pred == cls.id, truth == cls.id
        keep = p.sum((1, 2)) >= min_pixels
        sd = np.asarray(surface_dice(p[keep], t[keep], tolerance_px)) if keep.any() else np.zeros(0)
        passed = int((sd >= tau).sum())
        classes[cls.name] = {"masks": int(keep.sum()), "passed": passed,
                             "share": passed / len(sd) if len(sd) else None,
                             "median_surface_dice": float(np.median(sd)) if len(sd) else None}
    return {"tau": tau, "tolerance_px": tolerance_px, "min_pixels": min_pixels, "classes": classes}


def _site_summary(pred: np.ndarray, truth: np.ndarray, subjects: np.ndarray, sel: np.ndarray) -> dict[str, Any]:
    """Pooled Dice of the slices ``sel`` (N,) bool of one site."""
    dice = dice_from_confusion(confusion_matrix(pred[sel], truth[sel]))
    return {"subjects": len(set(subjects[sel].tolist())), "slices": int(sel.sum()), "dice": _by_class(dice),
            "mean_foreground_dice": mean_foreground_dice(dice)}


def evaluate_model(model: str | os.PathLike[str] | Predictor | Mirrored, data_dir: str | os.PathLike[str],
                   split: str = "test", batch_size: int = 8, max_slices: int | None = None,
                   figure: str | os.PathLike[str] | None = None, figure_slices: int = 4,
                   progress: Callable[[int, int], None] | None = None, reviewer_tau: float | None = None,
                   tta: str = DEFAULT_TTA) -> dict[str, Any]:
    """Predict ``split`` of ``data_dir`` with ``model`` (folder or predictor) and measure it.

    ``max_slices``: evaluate that many slices spread evenly over the split (a quicker estimate).
    ``figure``: also write a PNG of a few slices (image, truth, prediction). ``progress(done, total)`` is
    called after each batch of slices. ``reviewer_tau``: also report `reviewer_bar` at that bar. ``tta``: test-time
    augmentation of a model folder (`training.predict.with_tta`); a predictor given is used as it is.
    """
    start = time.perf_counter()
    predictor = model if isinstance(model, (Predictor, Mirrored)) else with_tta(load_predictor(model), tta)
    records = read_index(data_dir, [split])
    if not records:
        raise SegqaError(f"{data_dir}: split {split!r} is empty; nothing to evaluate")
    if max_slices is not None and len(records) > max_slices:  # evenly spaced: every subject stays represented
        records = [records[i] for i in np.linspace(0, len(records) - 1, num=max(1, max_slices)).round().astype(int)]
    images, truth = load_slices(data_dir, records, masks=True)
    assert truth is not None
    pred = np.empty(truth.shape, np.uint8)
    for i in range(0, len(images), batch_size):
        pred[i:i + batch_size] = predictor.predict_labels(images[i:i + batch_size], batch_size)
        if progress:
            progress(min(i + batch_size, len(images)), len(images))
    spacing = pixel_spacing_mm(data_dir)
    report = evaluate_predictions(pred, truth, [r.subject for r in records], spacing, [r.site for r in records],
                                  reviewer_tau=reviewer_tau)
    if figure is not None:
        pick = _figure_slices(truth, figure_slices)
        render_examples(images[pick], truth[pick], pred[pick], [records[i].slice_id for i in pick], figure)
    return {"schema": EVAL_SCHEMA,
            "model": {"path": str(getattr(predictor, "params_file", "")), "version": predictor.version,
                      "network": predictor.network, "tta": predictor.tta},
            "data": {"dir": str(data_dir), "split": split, "slices": len(records),
                     "subjects": len({r.subject for r in records}), "pixel_spacing_mm": list(spacing)},
            **report, "figure": str(figure) if figure is not None else None,
            "seconds": round(time.perf_counter() - start, 3)}


def _figure_slices(truth: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` slices to show: evenly spread over those with at least half the largest tissue area
    (edge slices with a few pixels of brain say little about a model)."""
    area = ((truth > 0) & (truth != 255)).reshape(len(truth), -1).sum(1)
    candidates = np.flatnonzero(area >= 0.5 * area.max()) if area.max() > 0 else np.arange(len(truth))
    return candidates[np.linspace(0, len(candidates) - 1, num=min(n, len(candidates))).round().astype(int)]


def _overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W) uint8 image + (H, W) labels -> (H, W, 3) float RGB with class colours blended in."""
    rgb = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    for cls in TISSUE_CLASSES:
        if cls.rgb is None:
            continue
        sel = labels == cls.id
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(cls.rgb, np.float32) / 255.0
    return rgb


def render_examples(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, titles: Sequence[str],
                    path: str | os.PathLike[str]) -> Path:
    """PNG with one row per slice: image, truth overlay, prediction overlay (and per-slice Dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from qa_workflow.storage import atomic_write_bytes

    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.7 * n + 0.6), squeeze=False)
    for i in range(n):
        d = dice_from_confusion(confusion_matrix(pred[i], truth[i], NUM_CLASSES))
        panels = [(np.repeat(images[i][..., None], 3, 2), titles[i]), (_overlay(images[i], truth[i]), "truth"),
                  (_overlay(images[i], pred[i]), f"prediction (mean fg Dice {mean_foreground_dice(d):.3f})")]
        for ax, (img, title) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    handles = [Patch(color=c.color, label=c.label) for c in TISSUE_CLASSES if c.color]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
