"""Overlays: plain slice beside fill and contour, the PNG size budget, bad inputs refused."""

import io

import numpy as np
import pytest
from PIL import Image

from qa_workflow.contract import SegqaError, tissue_class
from qa_workflow.rounds.overlays import GAP_PX, MAX_OVERLAY_BYTES, overlay_png, render_overlay


def test_overlay_shows_plain_slice_next_to_fill_and_contour(phantom):
    image, labels = phantom(np.random.default_rng(0))
    mask = labels == 2
    im = render_overlay(image, mask, "gray_matter", scale=2, crop=False).convert("RGB")
    rgb = np.asarray(im)
    assert rgb.shape == (176 * 2, 208 * 4 + GAP_PX, 3)
    left, right = rgb[:, :416], rgb[:, 416 + GAP_PX:]
    colour = np.array(tissue_class("gray_matter").rgb)
    big = mask.repeat(2, 0).repeat(2, 1)
    # the left panel is grey everywhere; the right panel is tinted inside the mask and equal outside it
    assert (left[..., 0] == left[..., 1]).all() and (left[..., 1] == left[..., 2]).all()
    assert (np.abs(right[~big].astype(int) - left[~big]) <= 1).all()
    tinted = right[big].astype(int) - left[big]
    assert (np.sign(tinted.mean(0)) == np.sign(colour - left[big].mean(0))).all()
    # the contour pixels carry the class colour itself
    assert (np.all(right == colour, axis=-1) & big).sum() > 200


@pytest.mark.parametrize("class_name", ["csf", "gray_matter", "white_matter"])
def test_overlay_png_stays_under_the_size_budget(class_name, phantom):
    rng = np.random.default_rng(1)
    image, labels = phantom(rng)
    data = overlay_png(image, labels == tissue_class(class_name).id, class_name)
    assert len(data) <= MAX_OVERLAY_BYTES
    # cropped to the head plus a margin: smaller than the slice, never cutting the head
    head_rows = int((labels > 0).any(1).sum())
    assert 2 * head_rows <= Image.open(io.BytesIO(data)).size[1] < 2 * 176


def test_worst_case_noise_falls_back_and_stays_under_budget():
    noise = np.random.default_rng(2).integers(0, 256, size=(176, 208)).astype(np.uint8)
    mask = np.random.default_rng(3).random((176, 208)) > 0.5
    assert len(overlay_png(noise, mask, "csf")) <= MAX_OVERLAY_BYTES


def test_overlay_rejects_background_and_shape_mismatch():
    image = np.zeros((10, 10), np.uint8)
    with pytest.raises(SegqaError, match="background"):
        render_overlay(image, image > 0, "background")
    with pytest.raises(SegqaError, match="same shape"):
        render_overlay(image, np.zeros((5, 5), bool), "csf")
