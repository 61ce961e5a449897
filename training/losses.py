"""Training losses: weighted soft Dice + weighted cross-entropy, with an ignore label.

`segmentation_loss` takes MXNet NDArrays (it runs under ``autograd.record()``) with shapes

- ``logits`` (N, K, H, W) float32, raw network outputs;
- ``labels`` (N, H, W) float32 holding class ids 0..K-1 or ``IGNORE_LABEL`` (255);
- ``class_weights`` (K,) float32;

and is computed by a native operator where it is built (`segmentation_loss_native`), else by MXNet operators on
pixel-major (N*H*W, K) views (`segmentation_loss_mxnet`, see `_pixels`: ~1.8x cheaper than on NCHW).

Pixels labelled 255 contribute nothing to either term, so their logits receive exactly zero gradient (the
retraining loop marks rejected or unreviewed regions that way).

`class_weights_from_labels` is the numpy helper that derives inverse-frequency weights from training masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mxnet import nd

from qa_workflow.contract import IGNORE_LABEL, NUM_CLASSES, SegqaError
from training import native

__all__ = ["segmentation_loss", "segmentation_loss_native", "segmentation_loss_mxnet", "segmentation_loss_nchw",
           "weighted_cross_entropy", "soft_dice_loss", "class_weights_from_labels", "parse_class_weights",
           "resolve_class_weights"]


def _pixels(logits: nd.NDArray, labels: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray, nd.NDArray, nd.NDArray]:
    """Pixel-major views: (logits (M, K), safe labels (M,), valid (M,), one-hot (M, K) zero at ignored pixels).

    M = N * H * W. Channels last, so that the softmax, the label pick and the per-class sums run along contiguous
    rows; MXNet 1.9's reductions and broadcasts along a middle axis (class axis of NCHW, or batch + pixels) are
    generic strided kernels that cost more than the ENet's forward pass (issue #14, mx.profiler).
    """
    k = logits.shape[1]
    z = nd.transpose(logits, axes=(0, 2, 3, 1)).reshape((-1, k))
    lab = labels.reshape((-1,))
    valid = (lab != IGNORE_LABEL).astype("float32")
    safe = lab * valid  # ignored pixels become class 0, then are zeroed by ``valid``
    onehot = nd.one_hot(safe, k) * valid.reshape((-1, 1))
    return z, safe, valid, onehot


def weighted_cross_entropy(log_proba: nd.NDArray, safe: nd.NDArray, valid: nd.NDArray,
                           class_weights: nd.NDArray) -> nd.NDArray:
    """Class-weighted mean cross-entropy over the labelled pixels (weights normalise, as in PyTorch's CE).

    log_proba (M, K); safe labels (M,) in 0..K-1; valid (M,) 1/0; class_weights (K,) -> scalar.
    """
    pixel_weight = nd.take(class_weights, safe) * valid  # 0 where ignored
    nll = -nd.pick(log_proba, safe, axis=-1)
    return nd.dot(pixel_weight, nll) / nd.maximum(nd.sum(pixel_weight), 1e-6)


def soft_dice_loss(proba: nd.NDArray, onehot: nd.NDArray, valid: nd.NDArray, class_weights: nd.NDArray,
                   smooth: float = 1.0) -> nd.NDArray:
    """Weighted mean over classes of 1 - soft Dice, pooled over the batch (stable for classes absent in a slice).

    proba, onehot (M, K); valid (M,); class_weights (K,) -> scalar. Per-class sums over the pixels are matrix
    products with a row of ones (BLAS), not MXNet reductions.
    """
    m = proba.shape[0]
    p = proba * nd.broadcast_to(valid.reshape((-1, 1)), shape=proba.shape)  # elementwise: cheap backward
    ones = nd.ones((1, m), ctx=proba.context)
    inter = nd.dot(ones, p * onehot).reshape((-1,))
    denom = nd.dot(ones, p).reshape((-1,)) + nd.sum(onehot, axis=0)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return nd.sum(class_weights * (1.0 - dice)) / nd.sum(class_weights)


def segmentation_loss(logits: nd.NDArray, labels: nd.NDArray, class_weights: nd.NDArray,
                      dice_weight: float = 0.5, ce_weight: float = 0.5) -> tuple[nd.NDArray, dict[str, nd.NDArray]]:
    """``dice_weight * soft_dice_loss + ce_weight * weighted_cross_entropy``; returns (total, parts).

    logits (N, K, H, W); labels (N, H, W) with 255 = ignore; class_weights (K,). On a CPU with the native kernels
    built (`training.native`) this is `segmentation_loss_native`, else `segmentation_loss_mxnet`: the same value
    and gradient (tests/training/test_losses_metrics.py).
    """
    if logits.context.device_type == "cpu" and native.load():
        return segmentation_loss_native(logits, labels, class_weights, dice_weight, ce_weight)
    return segmentation_loss_mxnet(logits, labels, class_weights, dice_weight, ce_weight)


def segmentation_loss_native(logits: nd.NDArray, labels: nd.NDArray, class_weights: nd.NDArray,
                             dice_weight: float = 0.5, ce_weight: float = 0.5
                             ) -> tuple[nd.NDArray, dict[str, nd.NDArray]]:
    """The loss as one native operator (``segqa_seg_loss``, CPU): softmax, both terms and their gradient in one
    pass over the logits each way, on NCHW as they come (~5 ms forward and backward for a batch of 4 slices
    against ~26 ms for `segmentation_loss_mxnet`, issue #14)."""
    dice, ce, _ = nd.segqa_seg_loss(logits, labels.astype(logits.dtype, copy=False),
                                    class_weights.astype(logits.dtype, copy=False), smooth=1.0)
    return dice_weight * dice + ce_weight * ce, {"dice": dice, "ce": ce}


def segmentation_loss_mxnet(logits: nd.NDArray, labels: nd.NDArray, class_weights: nd.NDArray,
                            dice_weight: float = 0.5, ce_weight: float = 0.5
                            ) -> tuple[nd.NDArray, dict[str, nd.NDArray]]:
    """The loss composed of MXNet operators on pixel-major views (any context)."""
    z, safe, valid, onehot = _pixels(logits, labels)
    log_proba = nd.log_softmax(z, axis=-1)
    ce = weighted_cross_entropy(log_proba, safe, valid, class_weights)
    dice = soft_dice_loss(nd.exp(log_proba), onehot, valid, class_weights)
    total = dice_weight * dice + ce_weight * ce
    return total, {"dice": dice, "ce": ce}


def segmentation_loss_nchw(logits: nd.NDArray, labels: nd.NDArray, class_weights: nd.NDArray,
                           dice_weight: float = 0.5, ce_weight: float = 0.5, smooth: float = 1.0
                           ) -> tuple[nd.NDArray, dict[str, nd.NDArray]]:
    """The same loss written directly on NCHW, as it was before issue #14: reductions along the middle axes,
    which MXNet 1.9 runs slowly. Kept as the reference that `segmentation_loss` is tested against and the
    "before" variant of benchmarks/b3_speed.py; never used for training."""
    valid = (labels != IGNORE_LABEL).astype("float32")
    onehot = nd.one_hot(labels * valid, logits.shape[1]).transpose((0, 3, 1, 2)) * valid.expand_dims(1)
    log_proba = nd.log_softmax(logits, axis=1)
    pixel_weight = nd.sum(onehot * class_weights.reshape((1, -1, 1, 1)), axis=1)
    ce = nd.sum(pixel_weight * -nd.sum(onehot * log_proba, axis=1)) / nd.maximum(nd.sum(pixel_weight), 1e-6)
    p = nd.exp(log_proba) * valid.expand_dims(1)
    inter = nd.sum(p * onehot, axis=(0, 2, 3))
    dice = (2 * inter + smooth) / (nd.sum(p, axis=(0, 2, 3)) + nd.sum(onehot, axis=(0, 2, 3)) + smooth)
    dice_loss = nd.sum(class_weights * (1 - dice)) / nd.sum(class_weights)
    return dice_weight * dice_loss + ce_weight * ce, {"dice": dice_loss, "ce": ce}


def class_weights_from_labels(labels: np.ndarray, num_classes: int = NUM_CLASSES, power: float = 1.0) -> np.ndarray:
    """Inverse-frequency weights (K,) float32 from masks (N, H, W): ``w_c ∝ (n / (K * n_c)) ** power``, scaled so
    that their pixel-weighted mean is 1 (``power`` 1: ``w_c = n / (K * n_c)``; 0.5: the square root, milder).

    Ignored pixels (255) are not counted; a class that never occurs gets the largest weight of the others (it
    cannot contribute anyway).
    """
    counts = np.bincount(labels[labels != IGNORE_LABEL].ravel(), minlength=num_classes)[:num_classes].astype(float)
    total = counts.sum()
    if total == 0:
        raise SegqaError("training masks contain no labelled pixels (everything is 255 = ignore)")
    w = np.zeros(num_classes)
    present = counts > 0
    w[present] = (total / (num_classes * counts[present])) ** power
    w[present] /= (w[present] * counts[present]).sum() / total
    w[~present] = w[present].max()
    return w.astype(np.float32)


#: ``--class-weights`` words: what each derives from the training labels (K numbers are taken as given).
DERIVED_WEIGHTS = {"uniform": 0.0, "sqrt": 0.5, "auto": 1.0}


def resolve_class_weights(spec: str | Sequence[float] | None, labels: np.ndarray,
                          num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The (K,) weights a ``--class-weights`` spec gives for these training masks: "uniform" (all 1), "sqrt"
    (square root of inverse frequency), "auto" or None (inverse frequency), or K numbers."""
    given = parse_class_weights(spec, num_classes)
    if given is not None:
        return given
    word = "auto" if spec is None or not str(spec).strip() else str(spec).strip().lower()
    return class_weights_from_labels(labels, num_classes, power=DERIVED_WEIGHTS[word])


def parse_class_weights(text: str | Sequence[float] | None, num_classes: int = NUM_CLASSES) -> np.ndarray | None:
    """``"1.35,17.18,8.29,12.42"`` -> array (K,); None or a word of `DERIVED_WEIGHTS` -> None (derived from the
    labels by `resolve_class_weights`). Anything else raises SegqaError."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", *DERIVED_WEIGHTS)):
        return None
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise SegqaError(f"class weights: expected {num_classes} comma-separated numbers, 'uniform', 'sqrt' or 'auto', "
                         f"got {text!r}") from None
    if len(values) != num_classes or not all(np.isfinite(v) and v > 0 for v in values):
        raise SegqaError(f"class weights: expected {num_classes} positive numbers (background, csf, gray_matter, "
                         f"white_matter), got {text!r}")
    return np.asarray(values, np.float32)
