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
``surface_agreement``
    how exactly the model places the mask's boundary, in the reviewers' own measure: the mean, over probability
    levels t in `AGREEMENT_LEVELS` (0.05 … 0.95, symmetric about 0.5), of the surface Dice at the reviewers'
    tolerance (1 px, ``contract.SURFACE_TOLERANCE_PX``) between ``P_c`` and the level set ``{p_c > t}``. 1 when
    the boundary stays within 1 px wherever the map is cut; low when a cut at another level moves it or adds or
    drops blobs. It ranks masks by what reviewers accept far better than the three above (docs/DECISIONS.md:
    gray matter, where ``soft_dice`` ranks backwards, AUC 0.95 against entropy's 0.79); NaN when ``P_c`` is empty.
``mutual_info``
    BALD mutual information ``H[E p] − E H[p]`` from T > 1 MC-dropout samples, averaged over the same dilated
    region and normalised by log 4 (so also in [0, 1]); NaN when no MC samples exist.

The ``confidence`` of an item is one of these, named by the round (``contract.CONFIDENCE_MEASURES``), always in
[0, 1] with 1 = most confident: ``soft_dice``, ``mean_prob`` and ``surface_agreement`` as they are; ``entropy``
and ``mutual_info`` as ``1 − normalised value``. See `confidence_from`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qa_workflow.contract import CONFIDENCE_MEASURES, NUM_CLASSES, REVIEW_CLASSES, SURFACE_TOLERANCE_PX, SegqaError
from training.metrics import boundary, within

__all__ = [
    "ClassScores", "score_probabilities", "predicted_labels", "pixel_entropy", "dilate", "confidence_from",
    "check_probabilities", "surface_agreement", "DILATION_PX", "PROB_SUM_TOLERANCE", "AGREEMENT_LEVELS",
]

#: Dilation of the predicted region for the entropy / mutual-information means (ARCHITECTURE §5).
DILATION_PX = 2
#: How far the class probabilities of a pixel may sum away from 1 (float16 storage rounds to ~1e-3).
PROB_SUM_TOLERANCE = 0.02
#: Probability levels at which `surface_agreement` cuts each class's map: symmetric about 0.5, from nearly
#: every pixel the model gives the class some chance to only the ones it is sure of.
AGREEMENT_LEVELS = (0.05, 0.2, 0.35, 0.65, 0.8, 0.95)
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
    surface_agreement: np.ndarray

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
    agreement = np.zeros((n, k), np.float64)
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
        agreement[a:b] = surface_agreement(pred, p[:, _REVIEW_IDS])

    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(count > 0, inside / np.maximum(count, 1), np.nan)
        denom = sum_p + count
        soft_dice = np.where(denom > 0, 2.0 * inside / np.where(denom > 0, denom, 1.0), np.nan)
        agreement = np.where(count > 0, agreement, np.nan)
        entropy = np.where(region_size > 0, ent_sum / np.maximum(region_size, 1), np.nan)
        if mutual_info is not None:
            mi_mean = np.where(region_size > 0, mi_sum / np.maximum(region_size, 1), np.nan)
        else:
            mi_mean = np.full((n, k), np.nan)
    return ClassScores(count.astype(np.int64), mean_prob, np.clip(soft_dice, 0.0, 1.0),
                       np.clip(entropy, 0.0, 1.0), np.clip(mi_mean, 0.0, 1.0), agreement)


def surface_agreement(masks: np.ndarray, class_probs: np.ndarray, levels: tuple[float, ...] = AGREEMENT_LEVELS,
                      tolerance_px: float = SURFACE_TOLERANCE_PX) -> np.ndarray:
    """Mean surface Dice (`training.metrics.surface_dice`) between each mask and its own probability map cut at
    ``levels`` (each in (0, 1)).

    masks (..., H, W) bool, the predicted regions; class_probs (..., H, W), each mask's class probability.
    Returns the leading shape, in [0, 1] (1 where a mask and every cut of its map are empty).

    The same numbers as cutting the map at every level and calling ``surface_dice`` (a test checks it), without
    drawing the cuts: a pixel x lies on the boundary of the cut ``{p > t}`` exactly when ``low[x] <= t < p[x]``,
    ``low`` being the lowest probability among x and its 4-neighbours (0 on the image edge, where the outside
    counts as empty). So each pixel gets, in one pass, the set of cuts whose boundary it lies on (a bit set);
    dilating the bit sets by the tolerance tells which cuts pass near each pixel, and every count the surface
    Dice needs is a histogram of bit sets over the right pixels (all of them, the mask's boundary, or the band
    around it).
    """
    m = np.asarray(masks, dtype=bool)
    lead, (h, w) = m.shape[:-2], m.shape[-2:]
    m = m.reshape(-1, h, w)
    p = np.asarray(class_probs, dtype=np.float32).reshape(m.shape)
    cuts = np.asarray(levels, dtype=np.float32)
    if not (((cuts > 0) & (cuts < 1)).all() and (np.diff(cuts) > 0).all() and 0 < len(cuts) <= 8):
        raise ValueError(f"agreement levels must be 1 to 8 increasing values in (0, 1), got {levels}")
    low = p.copy()
    np.minimum(low[:, 1:, :], p[:, :-1, :], out=low[:, 1:, :])
    np.minimum(low[:, :-1, :], p[:, 1:, :], out=low[:, :-1, :])
    np.minimum(low[:, :, 1:], p[:, :, :-1], out=low[:, :, 1:])
    np.minimum(low[:, :, :-1], p[:, :, 1:], out=low[:, :, :-1])
    low[:, (0, -1), :] = 0.0
    low[:, :, (0, -1)] = 0.0
    n, size, n_bits = m.shape[0], h * w, 1 << len(cuts)
    # the pixels that can lie on a cut's boundary (p above the lowest level, low at most the highest), each as a
    # bit set: bit k when it lies on the boundary of the cut at level k
    p_flat, low_flat = p.reshape(-1), low.reshape(-1)
    above = np.flatnonzero((p_flat > cuts[0]) & (low_flat <= cuts[-1]))
    p_above, low_above = p_flat[above], low_flat[above]
    code = np.zeros(len(above), np.uint8)
    for k, t in enumerate(cuts):
        code |= ((low_above <= t) & (p_above > t)).view(np.uint8) << k
    codes = np.zeros(n * size, np.uint8)
    codes[above] = code
    bits = (np.arange(n_bits)[:, None] >> np.arange(len(cuts))) & 1  # (bit sets, levels)

    def per_mask(flat: np.ndarray, sets: np.ndarray) -> np.ndarray:
        """Per mask and level, how many of the pixels ``flat`` (flat indices) have the level's bit in ``sets``."""
        hist = np.bincount(flat // size * n_bits + sets, minlength=n * n_bits).reshape(n, n_bits)
        return hist @ bits

    cut_length = per_mask(above, code)
    border = boundary(m)
    mask_length = np.count_nonzero(border, axis=(1, 2))[:, None]
    # cut boundary pixels within the tolerance of the mask's boundary
    band = np.flatnonzero(within(border, tolerance_px))
    cut_near = per_mask(band, codes[band])
    # mask boundary pixels with a cut boundary pixel within the tolerance
    edge = np.flatnonzero(border)
    mask_near = per_mask(edge, within(codes.reshape(m.shape), tolerance_px).reshape(-1)[edge])
    total = mask_length + cut_length
    dice = np.where(total > 0, (cut_near + mask_near) / np.maximum(total, 1), 1.0)
    return dice.mean(axis=1).reshape(lead)


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
