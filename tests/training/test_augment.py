"""Augmentation: labels stay labels, the same generator state gives the same batch, and the appearance
augmentation produces what another scanner would (shading, blur, a different contrast curve)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from training.augment import AugmentConfig, appearance, augment_batch, bias_field

OFF = AugmentConfig(flip_prob=0.0, affine_prob=0.0, gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0),
                    brightness=0.0, noise_std=(0.0, 0.0), bias_prob=0.0, blur_prob=0.0)


def _batch(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, size=(n, 40, 48)).astype(np.uint8)
    masks[:, :3] = 255
    images = ndimage.gaussian_filter(masks.astype(np.float32) / 4, (0, 1, 1))
    return images.astype(np.float32), masks


def test_same_generator_state_gives_the_same_batch_and_labels_stay_labels():
    images, masks = _batch()
    a_img, a_mask = augment_batch(images, masks, np.random.default_rng(7))
    b_img, b_mask = augment_batch(images, masks, np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert set(np.unique(a_mask)) <= {0, 1, 2, 3, 255}
    assert a_img.dtype == np.float32 and 0.0 <= a_img.min() and a_img.max() <= 1.0
    assert not np.array_equal(a_img, images)


def test_everything_off_is_the_identity():
    images, masks = _batch()
    out_img, out_mask = augment_batch(images, masks, np.random.default_rng(0), OFF)
    np.testing.assert_allclose(out_img, np.clip(images, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(out_mask, masks)


def test_bias_field_is_smooth_positive_and_of_the_asked_strength():
    fields = np.stack([bias_field(np.random.default_rng(s), (176, 208), 0.25, 70.0) for s in range(40)])
    assert fields.shape == (40, 176, 208) and fields.min() > 0
    logs = np.log(fields)
    # smooth: neighbouring pixels differ by a few hundredths of the field's range across the slice (white
    # noise of the same strength: ~1.5)
    spread = (logs.max(axis=(1, 2)) - logs.min(axis=(1, 2))).min()
    for axis in (1, 2):
        assert np.abs(np.diff(logs, axis=axis)).max() < 0.1 * spread
    assert 0.15 < logs[:, ::20, ::20].std() < 0.35


def test_bias_and_blur_change_shading_and_sharpness_as_configured():
    images, _ = _batch(1)
    img = images[0]
    bias_only = replace(OFF, bias_prob=1.0)
    shaded = appearance(img, np.random.default_rng(3), bias_only)
    ratio = shaded[img > 0.1] / img[img > 0.1]
    assert ratio.std() > 0.05  # a multiplicative field that varies across the slice
    blur_only = replace(OFF, blur_prob=1.0, blur_sigma_px=(1.0, 1.0))
    blurred = appearance(img, np.random.default_rng(3), blur_only)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(img, axis=1)).mean()


def test_gamma_range_reaches_flat_and_steep_contrast_curves():
    img = np.full((8, 8), 0.5, np.float32)
    cfg = replace(OFF, gamma_range=(0.5, 1.5))
    values = [float(appearance(img, np.random.default_rng(s), cfg)[0, 0]) for s in range(200)]
    assert min(values) < 0.5 ** 1.3 and max(values) > 0.5 ** 0.6  # both ends of the range are drawn


def test_flip_mirrors_the_patients_left_and_right_never_front_and_back():
    # A stored slice's rows run the patient's left -> right, its columns posterior -> anterior: a marker in the
    # left-posterior corner must end up in the right-posterior corner.
    images = np.zeros((1, 40, 48), np.float32)
    masks = np.zeros((1, 40, 48), np.uint8)
    images[0, :10, :12] = 0.8
    masks[0, :10, :12] = 2
    flip_only = replace(OFF, flip_prob=1.0)
    out_img, out_mask = augment_batch(images, masks, np.random.default_rng(0), flip_only)
    np.testing.assert_array_equal(out_mask[0], masks[0][::-1, :])
    np.testing.assert_allclose(out_img[0], images[0][::-1, :])
    assert out_mask[0, -10:, :12].min() == 2 and out_mask[0, :, 12:].max() == 0
