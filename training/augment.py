"""Training-time augmentation: left-right flips, a small random affine, intensity jitter (numpy + scipy).

Pure functions of their inputs and a ``numpy.random.Generator``: the same generator state gives the same
batch, which is what makes ``--resume`` reproduce an uninterrupted run.

Shapes: ``images`` (B, H, W) float32 intensities in [0, 1] (before normalisation), ``masks`` (B, H, W)
uint8 labels (0..3 or 255 = ignore). Masks are resampled with nearest neighbour so labels stay labels
(and 255 stays 255); what the affine brings in from outside the field of view is background (0).

Only left-right flips: axial brain slices are roughly left-right symmetric, whereas an up-down flip makes
anatomy that a scanner never produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["AugmentConfig", "augment_batch", "random_affine"]


@dataclass(frozen=True)
class AugmentConfig:
    flip_prob: float = 0.5
    affine_prob: float = 0.8
    max_rotation_deg: float = 10.0
    max_scale: float = 0.08  # zoom in [1 - s, 1 + s]
    max_shift_px: float = 8.0
    gamma_range: tuple[float, float] = (0.8, 1.25)
    contrast_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05
    noise_std: float = 0.01


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
        if rng.random() < cfg.flip_prob:
            img, mask = img[:, ::-1], mask[:, ::-1]
        if rng.random() < cfg.affine_prob:
            matrix, offset = random_affine(rng, img.shape, cfg)
            img = ndimage.affine_transform(img, matrix, offset, order=1, mode="constant", cval=0.0)
            mask = ndimage.affine_transform(mask, matrix, offset, order=0, mode="constant", cval=0)
        gamma = rng.uniform(*cfg.gamma_range)
        contrast = rng.uniform(*cfg.contrast_range)
        brightness = rng.uniform(-cfg.brightness, cfg.brightness)
        img = np.clip(img, 0.0, 1.0) ** gamma * contrast + brightness
        if cfg.noise_std > 0:
            img = img + rng.normal(0.0, cfg.noise_std, size=img.shape)
        out_img[i] = np.clip(img, 0.0, 1.0)
        out_mask[i] = mask
    return out_img, out_mask
