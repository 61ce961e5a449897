"""Loss (ignore label, weights) and metrics (Dice, HD95, volume difference, confusion matrix).

The loss tests run on both implementations: the native operator (`training.native`, where make built it) and
the MXNet composition every other context uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mxnet import autograd, nd

from qa_workflow.contract import IGNORE_LABEL, SegqaError
from training import native
from training.losses import (
    class_weights_from_labels,
    parse_class_weights,
    resolve_class_weights,
    segmentation_loss_mxnet,
    segmentation_loss_native,
    segmentation_loss_nchw,
)
from training.metrics import (
    absolute_volume_difference,
    confusion_matrix,
    dice_per_class,
    hd95,
    mean_foreground_dice,
    segmentation_report,
)

LOSSES = [pytest.param(segmentation_loss_native, id="native",
                       marks=pytest.mark.skipif(not native.load(), reason=native.status())),
          pytest.param(segmentation_loss_mxnet, id="mxnet")]


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 4, 16, 20)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 16, 20)).astype(np.float32)
    return logits, labels


@pytest.mark.parametrize("segmentation_loss", LOSSES)
@pytest.mark.parametrize("dice_weight, ce_weight", [(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)])
def test_ignored_pixels_get_zero_gradient(dice_weight, ce_weight, segmentation_loss):
    logits, labels = _batch()
    labels[0, :5] = IGNORE_LABEL
    labels[1, :, -3:] = IGNORE_LABEL
    x = nd.array(logits)
    x.attach_grad()
    with autograd.record():
        loss, _ = segmentation_loss(x, nd.array(labels), nd.array([0.5, 2.0, 1.0, 1.5]), dice_weight, ce_weight)
    loss.backward()
    grad = x.grad.asnumpy()
    ignored = np.broadcast_to((labels == IGNORE_LABEL)[:, None], grad.shape)
    assert np.all(grad[ignored] == 0.0)
    assert np.abs(grad[~ignored]).sum() > 0  # the labelled pixels do learn


@pytest.mark.parametrize("segmentation_loss", LOSSES)
@pytest.mark.parametrize("dice_weight, ce_weight", [(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)])
def test_loss_and_gradient_equal_the_nchw_formulation(dice_weight, ce_weight, segmentation_loss):
    logits, labels = _batch(4)
    labels[1, 2:6] = IGNORE_LABEL
    w = nd.array([0.5, 2.0, 1.0, 1.5])
    values, grads = [], []
    for fn in (lambda x: segmentation_loss(x, nd.array(labels), w, dice_weight, ce_weight)[0],
               lambda x: segmentation_loss_nchw(x, nd.array(labels), w, dice_weight, ce_weight)[0]):
        x = nd.array(logits)
        x.attach_grad()
        with autograd.record():
            loss = fn(x)
        loss.backward()
        values.append(loss.asscalar())
        grads.append(x.grad.asnumpy())
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4 * np.abs(grads[1]).max())


@pytest.mark.parametrize("segmentation_loss", LOSSES)
def test_ignored_pixels_do_not_change_the_loss(segmentation_loss):
    logits, labels = _batch(1)
    labels[:, 4:9, 2:11] = IGNORE_LABEL
    other = logits.copy()
    other[:, :, 4:9, 2:11] = 50.0  # anything under the ignored region
    w = nd.ones(4)
    a = segmentation_loss(nd.array(logits), nd.array(labels), w)[0].asscalar()
    b = segmentation_loss(nd.array(other), nd.array(labels), w)[0].asscalar()
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("segmentation_loss", LOSSES)
def test_loss_is_small_for_a_confident_correct_prediction_and_large_otherwise(segmentation_loss):
    _, labels = _batch(2)
    onehot = np.eye(4, dtype=np.float32)[labels.astype(int)].transpose(0, 3, 1, 2)
    w = nd.ones(4)
    good = segmentation_loss(nd.array(20 * onehot), nd.array(labels), w)[0].asscalar()
    bad = segmentation_loss(nd.array(-20 * onehot), nd.array(labels), w)[0].asscalar()
    assert good < 0.01 < 1.0 < bad


def test_class_weights_from_labels_are_inverse_frequency():
    labels = np.zeros((1, 10, 10), np.uint8)
    labels[0, :5] = 1  # 50 % background, 50 % csf, none of 2 or 3
    labels[0, 0, 0] = IGNORE_LABEL
    w = class_weights_from_labels(labels)
    assert w[0] * 50 == pytest.approx(w[1] * 49, rel=1e-6)
    assert w[2] == w[3] == w.max()
    with pytest.raises(SegqaError, match="255"):
        class_weights_from_labels(np.full((1, 4, 4), IGNORE_LABEL, np.uint8))


def test_parse_class_weights():
    np.testing.assert_allclose(parse_class_weights("1.35,17.18,8.29,12.42"), [1.35, 17.18, 8.29, 12.42], rtol=1e-6)
    assert parse_class_weights("auto") is None
    assert parse_class_weights(" Uniform ") is None and parse_class_weights("sqrt") is None
    for bad in ("1,2,3", "1,2,x,4", "1,0,1,1", "balanced"):
        with pytest.raises(SegqaError, match="class weights"):
            parse_class_weights(bad)


def test_resolve_class_weights_words_and_numbers():
    labels = np.zeros((1, 10, 10), np.uint8)
    labels[0, :2] = 1  # 80 % background, 20 % csf
    labels[0, 2, :4] = 2  # 4 % gray matter; no white matter
    counts = np.array([76, 20, 4])
    np.testing.assert_array_equal(resolve_class_weights("uniform", labels), np.ones(4, np.float32))
    auto = resolve_class_weights("auto", labels)
    np.testing.assert_allclose(auto, resolve_class_weights(None, labels))
    np.testing.assert_allclose(auto[:3] * counts, (auto[:3] * counts)[0], rtol=1e-5)  # inverse frequency
    sqrt = resolve_class_weights("sqrt", labels)
    np.testing.assert_allclose(sqrt[:3] ** 2 * counts, (sqrt[:3] ** 2 * counts)[0], rtol=1e-5)
    for w in (auto, sqrt):  # pixel-weighted mean 1 over the present classes; the absent class gets the largest
        assert (w[:3] * counts).sum() / counts.sum() == pytest.approx(1.0, rel=1e-5)
        assert w[3] == w.max()
    assert auto[2] / auto[0] == pytest.approx(19.0, rel=1e-5) and sqrt[2] / sqrt[0] == pytest.approx(19.0 ** 0.5)
    np.testing.assert_allclose(resolve_class_weights("1,2,3,4", labels), [1, 2, 3, 4])


def test_dice_and_confusion_on_a_known_example():
    truth = np.array([[0, 1, 1, 2], [2, 2, 3, 255]])
    pred = np.array([[0, 1, 2, 2], [2, 3, 3, 0]])
    cm = confusion_matrix(pred, truth)
    assert cm.sum() == 7  # the 255 pixel is left out
    assert cm[1, 2] == 1 and cm[2, 3] == 1
    d = dice_per_class(pred, truth)
    np.testing.assert_allclose(d, [1.0, 2 / 3, 4 / 6, 2 / 3])
    assert mean_foreground_dice(d) == pytest.approx((2 / 3 + 4 / 6 + 2 / 3) / 3)
    # a class absent from both sides has no Dice and is left out of the mean
    d2 = dice_per_class(np.zeros((3, 3)), np.zeros((3, 3)))
    assert d2[0] == 1.0 and all(math.isnan(v) for v in d2[1:])
    assert math.isnan(mean_foreground_dice(d2))
    # labels outside the classes are refused, never clipped into one (HD95 and the volume difference ignored them)
    with pytest.raises(ValueError, match="predicted labels must be 0..3; found 255"):
        confusion_matrix(np.array([[3, 255]]), np.array([[3, 3]]))
    with pytest.raises(ValueError, match="true labels must be 0..3"):
        confusion_matrix(np.array([[3, 0]]), np.array([[3, 7]]))


def test_hd95_of_shifted_squares_in_mm():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)  # shifted 3 px along the columns
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 0.5)) == pytest.approx(1.5)  # column spacing 0.5 mm
    assert math.isnan(hd95(a, np.zeros_like(a)))
    stack = np.stack([a, np.zeros_like(a)])
    assert hd95(stack, np.stack([b, np.zeros_like(a)])) == pytest.approx(3.0)


def test_volume_difference_and_report():
    a = np.zeros((2, 10, 10), np.uint8)
    a[:, 2:6, 2:6] = 3  # 32 px
    b = a.copy()
    b[0, 2:4, 2:6] = 0  # 24 px of class 3
    mm2, pct = absolute_volume_difference(b == 3, a == 3, spacing=(0.5, 2.0))
    assert mm2 == pytest.approx(8.0) and pct == pytest.approx(25.0)
    r = segmentation_report(b, a, spacing=(1.0, 1.0))
    assert r["dice"][3] == pytest.approx(2 * 24 / (24 + 32))
    assert math.isnan(r["hd95_mm"][1])
    assert np.asarray(r["confusion"]).sum() == a.size


def test_evaluation_reports_dice_per_site_only_when_sites_exist():
    from training.evaluate import evaluate_predictions

    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 2
    pred = truth.copy()
    pred[2:, 2:6, 2:4] = 0  # the site-B slices lose half their gray matter
    report = evaluate_predictions(pred, truth, ["a1", "a1", "b1", "b2"], sites=["A", "A", "B", "B"])
    assert report["sites"]["A"]["dice"]["gray_matter"] == 1.0
    assert report["sites"]["B"]["dice"]["gray_matter"] == pytest.approx(2 * 8 / (8 + 16))
    assert report["sites"]["B"]["subjects"] == 2 and report["sites"]["B"]["slices"] == 2
    assert {p["subject"]: p["site"] for p in report["per_subject"]} == {"a1": "A", "b1": "B", "b2": "B"}
    assert "sites" not in evaluate_predictions(pred, truth, ["a1", "a1", "b1", "b2"])


def test_reviewer_bar_counts_the_routable_masks_that_meet_the_reviewers_standard():
    from training.evaluate import evaluate_predictions

    truth = np.zeros((4, 40, 40), np.uint8)
    truth[:, 8:32, 8:32] = 3  # white matter block
    truth[:, 16:20, 16:20] = 1  # a 16-pixel CSF spot: below min_pixels, never routed
    pred = truth.copy()
    pred[1] = np.roll(truth[1], 1, axis=1)  # off by one pixel: a reviewer accepts it
    pred[2:, 8:32, 20:32] = 0  # site B slices lose half their white matter: rejected
    report = evaluate_predictions(pred, truth, ["a", "a", "b", "b"], sites=["A", "A", "B", "B"], reviewer_tau=0.9)
    bar = report["reviewer_bar"]
    assert bar["tau"] == 0.9 and bar["tolerance_px"] == 1.0 and bar["min_pixels"] == 30
    wm = bar["classes"]["white_matter"]
    assert (wm["masks"], wm["passed"], wm["share"]) == (4, 2, 0.5)
    assert bar["classes"]["csf"] == {"masks": 0, "passed": 0, "share": None, "median_surface_dice": None}
    assert bar["sites"]["A"]["white_matter"]["share"] == 1.0 and bar["sites"]["B"]["white_matter"]["share"] == 0.0
    assert "reviewer_bar" not in evaluate_predictions(pred, truth, ["a", "a", "b", "b"])


def _square(shape=(40, 40), top=10, left=10, size=16) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


def test_surface_dice_forgives_a_one_pixel_shift_but_not_a_missing_blob():
    from training.metrics import surface_dice, volume_dice

    truth = _square()
    shifted = _square(left=11)
    assert surface_dice(shifted, truth) == 1.0  # every boundary pixel within 1 px of the other boundary
    assert volume_dice(shifted, truth) == pytest.approx(2 * 15 * 16 / (2 * 256))  # 0.9375 < 1
    assert surface_dice(_square(left=12), truth) < 1.0  # 2 px is visible at tolerance 1
    assert surface_dice(_square(left=12), truth, tolerance_px=2.0) == 1.0
    two_blobs = truth | _square(top=30, left=30, size=6)
    missing = surface_dice(truth, two_blobs)  # the prediction misses the small blob
    border_small, border_big = 4 * 6 - 4, 4 * 16 - 4
    assert missing == pytest.approx(2 * border_big / (2 * border_big + border_small))
    assert volume_dice(truth, two_blobs) > missing  # the missing blob weighs less in volume than in surface
    empty = np.zeros_like(truth)
    assert surface_dice(empty, empty) == 1.0 and surface_dice(truth, empty) == 0.0
    stack = surface_dice(np.stack([shifted, truth, empty]), np.stack([truth, two_blobs, truth]))
    assert stack.shape == (3,) and np.allclose(stack, [1.0, missing, 0.0])  # (N, H, W) -> (N,), slice by slice
    with pytest.raises(ValueError):
        surface_dice(truth, truth[:-1])


def test_boundary_and_band_match_scipy_morphology():
    from scipy import ndimage

    from training.metrics import boundary, within

    rng = np.random.default_rng(5)
    masks = ndimage.gaussian_filter(rng.normal(size=(4, 30, 33)), (0, 1.5, 1.5)) > 0.1
    cross = np.zeros((1, 3, 3), bool)
    cross[0, 1, :] = cross[0, :, 1] = True
    assert (boundary(masks) == (masks & ~ndimage.binary_erosion(masks, cross, border_value=0))).all()
    for tol in (1.0, 1.5, 2.0):
        r = int(tol)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (yy ** 2 + xx ** 2 <= tol ** 2)[None]
        assert (within(masks, tol) == ndimage.binary_dilation(masks, disk)).all()
    bits = masks.view(np.uint8) | (np.roll(masks, 3, axis=2).view(np.uint8) << 1)
    spread = within(bits, 1.0)  # each bit dilated on its own
    assert ((spread & 1).astype(bool) == within(masks, 1.0)).all()
    assert ((spread >> 1).astype(bool) == within(np.roll(masks, 3, axis=2), 1.0)).all()
