"""Segmentation metrics: pure numpy/scipy functions on label maps, no I/O.

Shapes: ``pred`` and ``truth`` are integer label maps of the same shape, (H, W) for one slice or (N, H, W)
for a stack (a subject's slices, or a whole split). ``truth`` may hold ``IGNORE_LABEL`` (255): those pixels are
left out of every metric. Classes are 0..K-1 (contract.TISSUE_CLASSES); "foreground" means classes 1..K-1.

Conventions (as in MONAI with ``ignore_empty=True``): a class absent from both prediction and truth has no
Dice (NaN) and is left out of means; HD95 is NaN when either side is empty.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from qa_workflow.contract import IGNORE_LABEL, NUM_CLASSES

__all__ = ["confusion_matrix", "dice_from_confusion", "dice_per_class", "mean_foreground_dice", "hd95",
           "absolute_volume_difference", "segmentation_report", "surface_dice", "volume_dice", "boundary", "within"]


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(K, K) int64 pixel counts, rows = truth class, columns = predicted class; ignored pixels left out."""
    pred = np.asarray(pred).ravel()
    truth = np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in size: {pred.size} vs {truth.size}")
    keep = truth != IGNORE_LABEL
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    # labels outside 0..K-1 were clipped into a class here and ignored by HD95 and the volume difference: refuse
    for name, values in (("predicted", p), ("true", t)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = int(values.min()) if values.min() < 0 else int(values.max())
            allowed = f"0..{num_classes - 1}" + (" (or 255, ignored)" if name == "true" else "")
            raise ValueError(f"{name} labels must be {allowed}; found {bad}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes)[: num_classes ** 2].reshape(
        num_classes, num_classes)


def dice_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class Dice (K,) float64 from a confusion matrix: 2 TP / (2 TP + FP + FN); NaN if the class is absent."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Dice of the hard labels per class (K,), pooled over all pixels given; NaN where a class is absent."""
    return dice_from_confusion(confusion_matrix(pred, truth, num_classes))


def mean_foreground_dice(dice: np.ndarray) -> float:
    """Mean of the per-class Dice over classes 1..K-1, ignoring NaN (absent classes); NaN if all absent."""
    fg = np.asarray(dice, dtype=np.float64)[1:]
    return float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")


def _disk_offsets(tolerance_px: float) -> list[tuple[int, int]]:
    """The (dy, dx) of a Euclidean disk of radius ``tolerance_px`` (the centre included)."""
    r = int(np.floor(tolerance_px))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= tolerance_px ** 2]


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of boolean masks (..., H, W), per (H, W) plane: mask pixels with a 4-neighbour outside
    the mask or on the image edge (the mask minus its 4-connected erosion, outside the image counting as empty).

    Done as shifted ANDs, several times faster on stacks than ``scipy.ndimage.binary_erosion`` (a test checks that
    both agree)."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    inner[..., 1:, :] &= m[..., :-1, :]
    inner[..., :-1, :] &= m[..., 1:, :]
    inner[..., :, 1:] &= m[..., :, :-1]
    inner[..., :, :-1] &= m[..., :, 1:]
    inner[..., (0, -1), :] = False
    inner[..., :, (0, -1)] = False
    return m & ~inner


def within(pixels: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Pixels within ``tolerance_px`` (Euclidean) of a set pixel of the same (H, W) plane: a binary dilation of
    (..., H, W) by a disk, done as shifted ORs. ``pixels`` is boolean, or unsigned integers holding bit sets
    (each bit is then dilated on its own)."""
    m = np.asarray(pixels)
    if m.dtype.kind not in "bu":
        raise ValueError(f"within needs boolean or unsigned integer pixels, got {m.dtype}")
    out = m.copy()
    h, w = m.shape[-2:]
    for dy, dx in _disk_offsets(tolerance_px):
        if (dy, dx) == (0, 0) or abs(dy) >= h or abs(dx) >= w:
            continue
        dst = (Ellipsis, slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
        src = (Ellipsis, slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0)))
        out[dst] |= m[src]
    return out


def surface_dice(pred_mask: np.ndarray, truth_mask: np.ndarray, tolerance_px: float = 1.0) -> float | np.ndarray:
    """Surface Dice at a tolerance (Nikolov et al. 2018): the share of both boundaries that lies within
    ``tolerance_px`` pixels (Euclidean) of the other boundary.

    pred_mask, truth_mask: boolean masks of the same shape (..., H, W): one slice (H, W) or a stack (N, H, W);
    each (H, W) plane is measured on its own. A boundary pixel is a mask pixel with a 4-neighbour outside the mask
    (or on the image edge). Returns a float for (H, W), else an array of the leading shape (e.g. (N,)), in [0, 1]:
    1 when both masks are empty, 0 when exactly one is. A boundary off by one pixel scores 1 at tolerance 1
    (invisible on an overlay), a missing blob costs its whole boundary.
    """
    p = np.asarray(pred_mask, dtype=bool)
    t = np.asarray(truth_mask, dtype=bool)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"surface_dice needs two masks of one shape (..., H, W); got {p.shape} and {t.shape}")
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    border_p, border_t = boundary(p), boundary(t)
    plane = (-2, -1)
    agree = (np.count_nonzero(border_p & within(border_t, tolerance_px), axis=plane)
             + np.count_nonzero(border_t & within(border_p, tolerance_px), axis=plane))
    total = np.count_nonzero(border_p, axis=plane) + np.count_nonzero(border_t, axis=plane)
    out = np.where(total > 0, agree / np.maximum(total, 1), 1.0)
    return float(out) if p.ndim == 2 else out


def volume_dice(pred_mask: np.ndarray, truth_mask: np.ndarray) -> float | np.ndarray:
    """Dice of two boolean masks (..., H, W) per (H, W) plane: 2 |P ∩ T| / (|P| + |T|), 1 when both are empty.
    A float for (H, W), else an array of the leading shape."""
    p = np.asarray(pred_mask, dtype=bool)
    t = np.asarray(truth_mask, dtype=bool)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"volume_dice needs two masks of one shape (..., H, W); got {p.shape} and {t.shape}")
    plane = (-2, -1)
    total = p.sum(plane) + t.sum(plane)
    out = np.where(total > 0, 2.0 * (p & t).sum(plane) / np.maximum(total, 1), 1.0)
    return float(out) if p.ndim == 2 else out


def _directed_distances(from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) from every pixel of ``from_surface`` to the nearest pixel of ``to_surface`` (2-D)."""
    dist = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return dist[from_surface]


def hd95(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two binary masks.

    (H, W): the usual 2-D HD95. (N, H, W): a stack of 2-D slices (a subject's slices, which need not be
    adjacent): surface distances are measured within each slice with the in-plane ``spacing`` (row, col) and
    pooled over the slices in which both masks are non-empty; slices where exactly one side is empty are
    skipped (their error shows in Dice and volume). HD95 = max of the two directed 95th percentiles
    (MONAI's definition). NaN when no slice has both masks non-empty.
    """
    pred_mask = np.asarray(pred_mask, bool)
    truth_mask = np.asarray(truth_mask, bool)
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(f"masks differ in shape: {pred_mask.shape} vs {truth_mask.shape}")
    if pred_mask.ndim == 2:
        pred_mask, truth_mask = pred_mask[None], truth_mask[None]
    forward, backward = [], []
    for p, t in zip(pred_mask, truth_mask):
        if not p.any() or not t.any():
            continue
        sp, st = boundary(p), boundary(t)
        forward.append(_directed_distances(sp, st, spacing))
        backward.append(_directed_distances(st, sp, spacing))
    if not forward:
        return float("nan")
    return float(max(np.percentile(np.concatenate(forward), 95), np.percentile(np.concatenate(backward), 95)))


def absolute_volume_difference(pred_mask: np.ndarray, truth_mask: np.ndarray,
                               spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """(|V_pred - V_truth| in mm^2 of slice area summed over the slices, the same as % of V_truth).

    The dataset records in-plane spacing only, so "volume" is the summed slice area; the relative figure
    (AVD %, as in MRBrainS) does not depend on slice thickness. The percentage is NaN if the truth is empty.
    """
    area = float(spacing[0]) * float(spacing[1])
    vp = float(np.count_nonzero(pred_mask)) * area
    vt = float(np.count_nonzero(truth_mask)) * area
    diff = abs(vp - vt)
    return diff, (100.0 * diff / vt if vt > 0 else float("nan"))


def segmentation_report(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0),
                        num_classes: int = NUM_CLASSES) -> dict:
    """All metrics for one stack of slices (N, H, W): Dice, HD95 and AVD per class, confusion matrix.

    Returns ``{"dice": [K], "mean_foreground_dice", "hd95_mm": [K], "avd_mm2": [K], "avd_pct": [K],
    "confusion": [[K x K]]}`` with NaN kept as float('nan') (callers turn it into null for JSON).
    Ignored truth pixels (255) are removed from the prediction too before distances and volumes.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    cm = confusion_matrix(pred, truth, num_classes)
    dice = dice_from_confusion(cm)
    keep = truth != IGNORE_LABEL
    hd, avd, avd_pct = [], [], []
    for c in range(num_classes):
        pm = (pred == c) & keep
        tm = (truth == c) & keep
        hd.append(hd95(pm, tm, spacing))
        a, b = absolute_volume_difference(pm, tm, spacing)
        avd.append(a)
        avd_pct.append(b)
    return {"dice": dice.tolist(), "mean_foreground_dice": mean_foreground_dice(dice), "hd95_mm": hd,
            "avd_mm2": avd, "avd_pct": avd_pct, "confusion": cm.tolist()}
