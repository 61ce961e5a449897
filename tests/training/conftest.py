"""Tests of `training/`: data formats and importers, networks, training, export.

Tiny synthetic segmentation data for the model tests: concentric ellipses (WM inside GM inside CSF).

Not the atlas cohort (the tests must not depend on it): intensity alone separates the classes, so a small
network learns them in a few steps, and the geometry varies per slice so validation is not trivial.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from qa_workflow.contract import IMAGE_HEIGHT, IMAGE_WIDTH


def _ellipse_slice(rng: np.random.Generator, h: int = IMAGE_HEIGHT, w: int = IMAGE_WIDTH,
                   noise: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-0.06, 0.06) * h, w / 2 + rng.uniform(-0.06, 0.06) * w
    r = np.hypot((yy - cy) / (rng.uniform(0.34, 0.42) * h), (xx - cx) / (rng.uniform(0.34, 0.42) * w))
    mask = np.zeros((h, w), np.uint8)
    mask[r < 1.0] = 1
    mask[r < rng.uniform(0.78, 0.86)] = 2
    mask[r < rng.uniform(0.45, 0.6)] = 3
    image = np.choose(mask, [5.0, 70.0, 130.0, 200.0]) + rng.normal(0.0, noise, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write_dataset(out, splits=("train", "train", "val", "test"), slices_per_subject: int = 3, seed: int = 0):
    from training.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(out, source="test-ellipses", seed=seed) as writer:
        for s, split in enumerate(splits):
            for k in range(slices_per_subject):
                image, mask = _ellipse_slice(rng)
                writer.add(f"sub-{s:03d}", k, image, mask, split)
    return out


@pytest.fixture(scope="session")
def ellipse_slice() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory: ``ellipse_slice(rng, h=IMAGE_HEIGHT, w=IMAGE_WIDTH, noise=8.0)`` -> (image uint8 (h, w),
    mask uint8 (h, w)) with labels 0 background, 1 csf ring, 2 gm ring, 3 wm core."""
    return _ellipse_slice


@pytest.fixture(scope="session")
def write_dataset() -> Callable:
    """Factory: ``write_dataset(out, splits=("train", "train", "val", "test"), slices_per_subject=3, seed=0)``
    writes a dataset folder with one subject per entry of ``splits`` and returns its path."""
    return _write_dataset
