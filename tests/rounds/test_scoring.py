"""Confidence scores hand-checked on tiny maps; vectorised parts against reference implementations."""

import math

import numpy as np
import pytest
from scipy import ndimage

from qa_workflow.contract import SegqaError
from qa_workflow.rounds.scoring import (
    AGREEMENT_LEVELS,
    check_probabilities,
    confidence_from,
    dilate,
    pixel_entropy,
    predicted_labels,
    score_probabilities,
    surface_agreement,
)
from training.metrics import surface_dice


def one_hot_map(labels: np.ndarray, p_true: float) -> np.ndarray:
    """(H, W) labels -> (4, H, W) with p_true on the label and the rest spread evenly."""
    rest = (1 - p_true) / 3
    p = np.full((4, *labels.shape), rest, np.float64)
    for k in range(4):
        p[k][labels == k] = p_true
    return p


def test_scores_hand_checked_on_a_tiny_map():
    # 6x6 slice: csf predicted on a 2x2 block (p=0.7), gray matter elsewhere (p=0.9), no white matter
    labels = np.full((6, 6), 2)
    labels[:2, :2] = 1
    p = one_hot_map(labels, 0.9)
    p[:, :2, :2] = one_hot_map(np.ones((2, 2), int), 0.7)
    s = score_probabilities(p[None])
    assert s.pixel_count.tolist() == [[4, 32, 0]]
    # mean_prob: mean of p_c over the predicted region
    assert s.mean_prob[0, 0] == pytest.approx(0.7)
    assert s.mean_prob[0, 1] == pytest.approx(0.9)
    assert math.isnan(s.mean_prob[0, 2])
    # soft Dice = 2 Σ p_c [ŷ=c] / (Σ p_c + |ŷ=c|); csf mass outside its region: 32 px × 0.1/3
    sum_p_csf = 4 * 0.7 + 32 * (0.1 / 3)
    assert s.soft_dice[0, 0] == pytest.approx(2 * 4 * 0.7 / (sum_p_csf + 4))
    sum_p_gm = 32 * 0.9 + 4 * (0.3 / 3)
    assert s.soft_dice[0, 1] == pytest.approx(2 * 32 * 0.9 / (sum_p_gm + 32))
    assert s.soft_dice[0, 2] == pytest.approx(0.0)  # mass but no predicted region
    # entropy: mean normalised entropy over the csf block dilated by 2 px = a 4x4 block (clipped at the edge)
    h = lambda q: -(q * np.log(q) + 3 * ((1 - q) / 3) * np.log((1 - q) / 3)) / math.log(4)  # noqa: E731
    expected = (4 * h(0.7) + 12 * h(0.9)) / 16
    assert s.entropy[0, 0] == pytest.approx(expected, rel=1e-5)
    assert math.isnan(s.mutual_info[0, 0])


def test_mutual_information_is_averaged_over_the_dilated_region():
    labels = np.full((8, 8), 0)
    labels[3:5, 3:5] = 3
    p = one_hot_map(labels, 0.97)[None]
    mi = np.zeros((1, 8, 8))
    mi[0, 0, 0] = math.log(4)  # outside the dilated region (rows/cols 1..6): must not count
    mi[0, 1, 1] = math.log(4) * 0.5  # inside the dilation ring
    s = score_probabilities(p, mutual_info=mi)
    assert s.mutual_info[0, 2] == pytest.approx(0.5 / 36)
    assert confidence_from(s.mutual_info[:, 2], "mutual_info")[0] == pytest.approx(1 - 0.5 / 36)


def test_vectorised_parts_match_the_reference_implementations():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 4, 20, 24)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p[0, :, 0, 0] = [0.4, 0.4, 0.1, 0.1]  # a tie goes to the lower class id, like argmax
    assert (predicted_labels(p) == p.argmax(1)).all()
    ref_h = -(p * np.log(p)).sum(1) / math.log(4)
    assert np.allclose(pixel_entropy(p), ref_h, atol=1e-6)
    masks = rng.random((5, 3, 20, 24)) > 0.97
    ref = ndimage.binary_dilation(masks, structure=np.ones((1, 1, 5, 5), bool))
    assert (dilate(masks, 2) == ref).all()


def test_confidence_is_in_unit_range_and_ordered_like_the_measure():
    assert confidence_from(np.array([0.2, 0.9]), "soft_dice").tolist() == [0.2, 0.9]
    assert confidence_from(np.array([0.2, 0.9]), "entropy") == pytest.approx([0.8, 0.1])
    with pytest.raises(SegqaError, match="unknown confidence measure"):
        confidence_from(np.array([0.5]), "dice")


def test_bad_probability_maps_get_a_reason_each():
    good = one_hot_map(np.zeros((4, 4), int), 0.9)
    nan = good.copy()
    nan[1, 0, 0] = np.nan
    unnormalised = good * 1.5
    reasons = check_probabilities(np.stack([good, nan, unnormalised]))
    assert reasons[0] is None
    assert "non-finite" in reasons[1]
    assert reasons[2] is not None
    three = np.ones((2, 3, 4, 4)) / 3
    assert all("class-count mismatch" in r for r in check_probabilities(three))
    with pytest.raises(SegqaError, match="shape"):
        score_probabilities(three)


def _blob_map(width: float, faint: float = 0.0) -> np.ndarray:
    """(4, 40, 40): a white-matter disc of radius 10 whose probability falls from 1 to 0 over ``width`` px
    across its edge (the rest gray matter), plus a faint white-matter blob of probability ``faint`` elsewhere."""
    yy, xx = np.mgrid[:40, :40]
    dist = np.hypot(yy - 20, xx - 14) - 10.0
    wm = np.clip(0.5 - dist / max(width, 1e-6), 0.0, 1.0)
    wm = np.maximum(wm, faint * (np.hypot(yy - 20, xx - 33) < 3))
    p = np.zeros((4, 40, 40))
    p[3], p[2] = wm, 1.0 - wm
    return p


def test_surface_agreement_scores_how_sharply_the_boundary_is_placed():
    sharp, blurred, faint_blob = _blob_map(0.5), _blob_map(12.0), _blob_map(0.5, faint=0.4)
    s = score_probabilities(np.stack([sharp, blurred, faint_blob]))
    wm = s.surface_agreement[:, 2]
    assert wm[0] == pytest.approx(1.0)  # every cut of a sharp map is the mask itself, within 1 px
    assert wm[1] < 0.6  # cuts of a 12-px ramp move the boundary by up to 5 px
    assert 0.6 < wm[2] < 0.95  # cuts below 0.4 add a blob the mask does not have
    assert math.isnan(s.surface_agreement[0, 0])  # no csf predicted
    assert confidence_from(wm, "surface_agreement").tolist() == wm.tolist()


def test_surface_agreement_equals_surface_dice_of_the_cuts():
    rng = np.random.default_rng(3)
    logits = ndimage.gaussian_filter(rng.normal(size=(6, 4, 30, 36)), (0, 0, 2, 2)) * 15
    p = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    masks = predicted_labels(p)[:, None] == np.array([1, 2, 3])[None, :, None, None]
    masks[0, 0] = False  # an empty mask
    masks[1, 1, :, :3] = True  # a mask touching the image edge
    for tol in (1.0, 2.0):
        expected = np.mean([surface_dice(masks, p[:, 1:] > np.float32(t), tol) for t in AGREEMENT_LEVELS], axis=0)
        assert np.allclose(surface_agreement(masks, p[:, 1:], tolerance_px=tol), expected, atol=1e-12)
    with pytest.raises(ValueError, match="levels"):
        surface_agreement(masks, p[:, 1:], levels=(0.5, 0.2))
