"""Training-time augmentation: left-right flips, a small random affine, and scanner appearance (numpy + scipy).

Pure functions of their inputs and a ``numpy.random.Generator``: the same generator state gives the same
batch, which is what makes ``--resume`` reproduce an uninterrupted run.

Shapes: ``images`` (B, H, W) float32 intensities in [0, 1] (before normalisation), ``masks`` (B, H, W)
uint8 labels (0..3 or 255 = ignore). Masks are resampled with nearest neighbour so labels stay labels
(and 255 stays 255); what the affine brings in from outside the field of view is background (0).

Only left-right flips, along the rows of a stored slice (`contract.LEFT_RIGHT_AXIS`; the head lies on its side,
anterior to the right): axial brain slices are roughly left-right symmetric, whereas a front-back flip makes
anatomy that a scanner never produces. (Until 2026-12-02 the flip ran along the columns, front <-> back;
docs/segmenter.md has what the fix bought.)

Appearance ("another scanner"): a random gamma over a wide range, a smooth multiplicative bias field, an
in-plane blur and Rician-like noise of random strength, each drawn per slice, so that a model trained on one
site's images has seen the contrast curves, shading, resolution and noise of others (the augmentations of
nnU-Net and the domain randomisation of SynthSeg, cut to what a 2-D slice can show). Ranges are in
`AugmentConfig`; docs/segmenter.md gives them and what they bought on B3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from qa_workflow.contract import LEFT_RIGHT_AXIS
from training.cohort import smooth_random_field

__all__ = ["AugmentConfig", "appearance", "augment_batch", "bias_field", "random_affine"]


@dataclass(frozen=True)
class AugmentConfig:
    flip_prob: float = 0.5
    affine_prob: float = 0.8
    max_rotation_deg: float = 10.0
    max_scale: float = 0.08  # zoom in [1 - s, 1 + s]
    max_shift_px: float = 8.0
    gamma_range: tuple[float, float] = (0.5, 1.5)  # log-uniform
    contrast_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05
    noise_std: tuple[float, float] = (0.0, 0.06)  # Gaussian noise std, uniform in the range, per slice
    bias_prob: float = 0.5
    bias_log_std: float = 0.25  # std of the log bias field at its control points
    bias_spacing_px: float = 70.0  # control points this far apart: a 4 x 4 lattice on a 176 x 208 slice
    blur_prob: float = 0.3
    blur_sigma_px: tuple[float, float] = (0.4, 1.4)


def random_affine(rng: np.random.Generator, shape: tuple[int, int],
                  cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """A (2, 2) matrix and (2,) offset mapping output pixel coordinates to input ones (scipy convention),
    rotating by up to ``max_rotation_deg`` and zooming by up to ``max_scale`` about the slice centre, then
    shifting by up to ``max_shift_px``."""
    angle = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    scale = rng.uniform(1 - cfg.max_scale, 1 + cfg.max_scale)
    shift = rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, size=2)
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / scale
    centre = (np.asarray(shape, float) - 1) / 2
    offset = centre - matrix @ centre + shift
    return matrix, offset


def augment_batch(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                  cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of (B, H, W) float32 images in [0, 1] and (B, H, W) uint8 masks."""
    out_img = np.empty_like(images, dtype=np.float32)
    out_mask = np.empty_like(masks)
    for i in range(len(images)):
        img, mask = images[i], masks[i]
        if rng.random() < cfg.flip_prob:  # the patient's left <-> right (rows of a stored slice)
            img, mask = np.flip(img, LEFT_RIGHT_AXIS), np.flip(mask, LEFT_RIGHT_AXIS)
        if rng.random() < cfg.affine_prob:
            matrix, offset = random_affine(rng, img.shape, cfg)
            img = ndimage.affine_transform(img, matrix, offset, order=1, mode="constant", cval=0.0)
            mask = ndimage.affine_transform(mask, matrix, offset, order=0, mode="constant", cval=0)
        out_img[i] = np.clip(appearance(np.asarray(img, np.float32), rng, cfg), 0.0, 1.0)
        out_mask[i] = mask
    return out_img, out_mask


def bias_field(rng: np.random.Generator, shape: tuple[int, int], log_std: float, spacing_px: float) -> np.ndarray:
    """A smooth multiplicative field of ``shape``: exp of the cohort's smooth random field (Gaussian values of
    std ``log_std`` on control points ``spacing_px`` apart, cubic-upsampled), i.e. its bias model in 2-D."""
    return np.exp(smooth_random_field(rng, shape, (spacing_px, spacing_px), log_std))


def appearance(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One (H, W) slice in [0, 1] as another scanner might show it: blur, bias field, gamma, contrast and
    brightness, noise (in that order: the optics and the coil act before the intensity curve, noise last)."""
    if rng.random() < cfg.blur_prob:
        img = ndimage.gaussian_filter(img, rng.uniform(*cfg.blur_sigma_px), mode="constant")
    if rng.random() < cfg.bias_prob:
        height, width = img.shape
        img = img * bias_field(rng, (height, width), cfg.bias_log_std, cfg.bias_spacing_px)
    lo, hi = np.log(cfg.gamma_range)
    gamma = np.exp(rng.uniform(lo, hi))
    contrast = rng.uniform(*cfg.contrast_range)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness)
    img = np.clip(img, 0.0, 1.0) ** gamma * contrast + brightness
    std = rng.uniform(*cfg.noise_std)
    if std > 0:
        img = img + rng.normal(0.0, std, size=img.shape)
    return img
