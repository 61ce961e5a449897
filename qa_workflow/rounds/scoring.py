"""Per (slice, tissue class) confidence scores of a segmenter's probability maps (ARCHITECTURE §5).

Pure numpy, vectorised over slices and classes; no I/O.

For a probability map ``p`` of shape (4, H, W), the prediction ``ŷ = argmax_c p_c`` and a tissue class c with
predicted region ``P_c = {ŷ = c}``:

``pixel_count``
    ``|P_c|``. Items with fewer than ``min_pixels`` (default 30) are not reviewable.
``mean_prob``
    mean of ``p_c`` over ``P_c``: how sure the model is of the pixels it called c.
``soft_dice``
    ``2·Σ p_c·[ŷ=c] / (Σ p_c + Σ [ŷ=c])``: the model's own estimate of the Dice of its mask, if the truth were
    drawn from p. Low when probability mass of c lies outside the predicted region (possible under-segmentation)
    or when the region is uncertain.
``entropy``
    mean predictive entropy ``-Σ_k p_k log p_k`` over ``P_c`` dilated by 2 px (chessboard distance: a 5×5
    square), so uncertainty just outside an under-segmented region is seen. Reported **normalised by log 4**,
    so it lies in [0, 1] (1 = uniform over the four classes).
``mutual_info``
    BALD mutual information ``H[E p] − E H[p]`` from T > 1 MC-dropout samples, averaged over the same dilated
    region and normalised by log 4 (so also in [0, 1]); NaN when no MC samples exist.

The ``confidence`` of an item is one of these, named by the round (``contract.CONFIDENCE_MEASURES``), always in
[0, 1] with 1 = most confident: ``soft_dice`` and ``mean_prob`` as they are; ``entropy`` and ``mutual_info`` as
``1 − normalised value``. See `confidence_from`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qa_workflow.contract import CONFIDENCE_MEASURES, NUM_CLASSES, REVIEW_CLASSES, SegqaError

__all__ = [
    "ClassScores", "score_probabilities", "predicted_labels", "pixel_entropy", "dilate", "confidence_from",
    "check_probabilities", "DILATION_PX", "PROB_SUM_TOLERANCE",
]

#: Dilation of the predicted region for the entropy / mutual-information means (ARCHITECTURE §5).
DILATION_PX = 2
#: How far the class probabilities of a pixel may sum away from 1 (float16 storage rounds to ~1e-3).
PROB_SUM_TOLERANCE = 0.02
_LOG_K = math.log(NUM_CLASSES)
_REVIEW_IDS = np.array([c.id for c in REVIEW_CLASSES])


@dataclass(frozen=True)
class ClassScores:
    """Scores of N slices × the 3 tissue classes (csf, gray_matter, white_matter), each an array (N, 3).

    Values are NaN where undefined: ``mean_prob`` and ``entropy`` when the predicted region is empty,
    ``mutual_info`` when no MC samples were given.
    """

    pixel_count: np.ndarray  # int64
    mean_prob: np.ndarray  # float64
    soft_dice: np.ndarray
    entropy: np.ndarray
    mutual_info: np.ndarray

    def measure(self, name: str) -> np.ndarray:
        if name not in CONFIDENCE_MEASURES:
            raise SegqaError(f"unknown confidence measure {name!r}; expected one of {', '.join(CONFIDENCE_MEASURES)}")
        return getattr(self, name)


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """``argmax`` over the class axis: probs (N, K, H, W) -> labels (N, H, W) uint8 (ties go to the lower id)."""
    return _argmax_and_max(probs)[0]


def _argmax_and_max(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, H, W) uint8, max probability (N, H, W)) for probs (N, K, H, W).

    Same result as ``probs.argmax(1)`` (ties go to the lower id) but several times faster: a running maximum,
    and because k increases, "class k beats the best so far" can be folded in with ``maximum(labels, k·beats)``.
    """
    best = probs[:, 0].copy()
    labels = np.zeros(best.shape, np.uint8)
    beats = np.empty(best.shape, bool)
    tmp = np.empty(best.shape, np.uint8)
    for k in range(1, probs.shape[1]):
        np.greater(probs[:, k], best, out=beats)
        np.multiply(beats.view(np.uint8), np.uint8(k), out=tmp)
        np.maximum(labels, tmp, out=labels)
        np.maximum(best, probs[:, k], out=best)
    return labels, best


def pixel_entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy per pixel normalised by log K: probs (N, K, H, W) -> (N, H, W) float32 in [0, 1]."""
    p = np.asarray(probs, dtype=np.float32)
    plogp = np.maximum(p, np.float32(1e-12))
    np.log(plogp, out=plogp)
    plogp *= p
    ent = plogp[:, 0].copy()
    for k in range(1, p.shape[1]):
        ent += plogp[:, k]
    ent *= np.float32(-1.0 / math.log(p.shape[1]))
    return ent


def dilate(masks: np.ndarray, px: int = DILATION_PX) -> np.ndarray:
    """Binary dilation of the last two axes by ``px`` pixels (chessboard distance, i.e. a (2px+1)² square).

    masks (..., H, W) bool -> same shape bool. Equal to ``scipy.ndimage.binary_dilation`` with a (2px+1)²
    square structuring element (8-connectivity iterated ``px`` times; a test checks this), done as shifted ORs
    along each axis because that is ~10x faster on stacks of slices.
    """
    m = np.asarray(masks, dtype=bool)
    rows = m.copy()
    for s in range(1, px + 1):
        rows[..., s:] |= m[..., :-s]
        rows[..., :-s] |= m[..., s:]
    out = rows.copy()
    for s in range(1, px + 1):
        out[..., s:, :] |= rows[..., :-s, :]
        out[..., :-s, :] |= rows[..., s:, :]
    return out


#: Slices scored at once: keeps the temporaries of one chunk in cache (a few MB).
_CHUNK = 16


def score_probabilities(probs: np.ndarray, mutual_info: np.ndarray | None = None,
                        dilation_px: int = DILATION_PX) -> ClassScores:
    """Score probability maps per (slice, tissue class).

    probs: (N, 4, H, W) float, each pixel's probabilities summing to 1 (check with `check_probabilities`).
    mutual_info: optional (N, H, W) per-pixel BALD mutual information in nats (from MC-dropout, T > 1).
    Returns `ClassScores` with arrays (N, 3) for csf, gray_matter, white_matter.
    """
    if probs.ndim != 4 or probs.shape[1] != NUM_CLASSES:
        raise SegqaError(f"probability maps must have shape (N, {NUM_CLASSES}, H, W), got {probs.shape}")
    n, _, h, w = probs.shape
    if mutual_info is not None and mutual_info.shape != (n, h, w):
        raise SegqaError(f"mutual information maps must have shape {(n, h, w)}, got {mutual_info.shape}")
    k = len(_REVIEW_IDS)
    count = np.zeros((n, k), np.float64)
    sum_p = np.zeros((n, k), np.float64)
    inside = np.zeros((n, k), np.float64)
    region_size = np.zeros((n, k), np.float64)
    ent_sum = np.zeros((n, k), np.float64)
    mi_sum = np.zeros((n, k), np.float64)
    ids = _REVIEW_IDS.astype(np.uint8)[None, :, None, None]
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        p = np.asarray(probs[a:b], dtype=np.float32)
        c = b - a
        labels, best = _argmax_and_max(p)
        pred = labels[:, None, :, :] == ids  # (c, 3, H, W) predicted region of each tissue class
        pred_f = pred.reshape(c, k, h * w).astype(np.float32)
        count[a:b] = pred_f.sum(axis=2)
        # inside the predicted region of c, p_c is the pixel's maximum probability
        inside[a:b] = np.matmul(pred_f, best.reshape(c, h * w, 1))[..., 0]
        sum_p[a:b] = p[:, _REVIEW_IDS].reshape(c, k, h * w).sum(axis=2)
        region = dilate(pred, dilation_px).reshape(c, k, h * w).astype(np.float32)
        region_size[a:b] = region.sum(axis=2)
        ent_sum[a:b] = np.matmul(region, pixel_entropy(p).reshape(c, h * w, 1))[..., 0]
        if mutual_info is not None:
            mi = np.asarray(mutual_info[a:b], dtype=np.float32).reshape(c, h * w, 1) / np.float32(_LOG_K)
            mi_sum[a:b] = np.matmul(region, mi)[..., 0]

    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(count > 0, inside / np.maximum(count, 1), np.nan)
        denom = sum_p + count
        soft_dice = np.where(denom > 0, 2.0 * inside / np.where(denom > 0, denom, 1.0), np.nan)
        entropy = np.where(region_size > 0, ent_sum / np.maximum(region_size, 1), np.nan)
        if mutual_info is not None:
            mi_mean = np.where(region_size > 0, mi_sum / np.maximum(region_size, 1), np.nan)
        else:
            mi_mean = np.full((n, k), np.nan)
    return ClassScores(count.astype(np.int64), mean_prob, np.clip(soft_dice, 0.0, 1.0),
                       np.clip(entropy, 0.0, 1.0), np.clip(mi_mean, 0.0, 1.0))


def confidence_from(values: np.ndarray, measure: str) -> np.ndarray:
    """Turn a score column into a confidence in [0, 1] (1 = most confident); NaN stays NaN.

    ``soft_dice``/``mean_prob`` are confidences already; ``entropy``/``mutual_info`` (normalised to [0, 1] by
    log 4) become ``1 − value``.
    """
    if measure not in CONFIDENCE_MEASURES:
        raise SegqaError(f"unknown confidence measure {measure!r}; expected one of {', '.join(CONFIDENCE_MEASURES)}")
    v = np.asarray(values, dtype=np.float64)
    if measure in ("entropy", "mutual_info"):
        v = 1.0 - v
    return np.clip(v, 0.0, 1.0)


def check_probabilities(probs: np.ndarray, tolerance: float = PROB_SUM_TOLERANCE) -> list[str | None]:
    """Why each slice's probability map is unusable, or None when it is fine: probs (N, K, H, W) -> N entries.

    Checks the class count, finiteness, the range [0, 1] and that each pixel's probabilities sum to 1
    within ``tolerance``.
    """
    if probs.ndim != 4:
        raise SegqaError(f"probability maps must have shape (N, {NUM_CLASSES}, H, W), got {probs.shape}")
    n, k = probs.shape[:2]
    if k != NUM_CLASSES:
        return [f"class-count mismatch: {k} probability channels, expected {NUM_CLASSES}"] * n
    reasons: list[str | None] = []
    for i in range(n):
        p = probs[i]
        finite = np.isfinite(p)
        if not finite.all():
            bad = int((~finite).sum())
            reasons.append(f"non-finite probabilities ({bad} NaN/inf values)")
            continue
        lo, hi = float(p.min()), float(p.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            reasons.append(f"probabilities outside [0, 1] (min {lo:.3g}, max {hi:.3g})")
            continue
        err = float(np.abs(p.sum(axis=0, dtype=np.float32) - 1.0).max())
        if err > tolerance:
            reasons.append(f"class probabilities do not sum to 1 (off by up to {err:.3g}; softmax output expected)")
            continue
        reasons.append(None)
    return reasons
