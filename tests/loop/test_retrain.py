"""Retraining sets: confirmed label maps, and which slices (latest round, reviewed) train next."""

import numpy as np
import pytest

from qa_workflow.contract import IGNORE_LABEL
from qa_workflow.loop.retraining import confirmed_label_map, plan_slices


def test_confirmed_label_map_ignores_unconfirmed_classes():
    pred = np.array([[0, 1, 2, 3],
                     [3, 2, 1, 0]], np.uint8)
    out = confirmed_label_map(pred, ["gray_matter"])
    ig = IGNORE_LABEL
    assert out.tolist() == [[0, ig, 2, ig], [ig, 2, ig, 0]]
    assert confirmed_label_map(pred, ["csf", "gray_matter", "white_matter"]).tolist() == pred.tolist()
    assert pred.tolist() == [[0, 1, 2, 3], [3, 2, 1, 0]]  # input untouched


def _o(item, rnd, outcome):
    return {"item_id": item, "round": rnd, "outcome": outcome}


def test_plan_slices_latest_round_and_confirmed_only():
    outcomes = [
        _o("s1/001/csf", "round-01", "accept"), _o("s1/001/gray_matter", "round-01", "reject"),
        _o("s1/002/csf", "round-01", "split"),                      # nothing confirmed: left out
        _o("s1/003/csf", "round-01", "accept"), _o("s1/003/white_matter", "round-02", "reject"),
        _o("s2/004/white_matter", "round-02", "accept"),
    ]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes)}
    assert set(plans) == {("s1", 1), ("s2", 4)}  # s1/003's latest round (02) confirmed nothing
    assert plans[("s1", 1)].confirmed == ("csf",) and plans[("s1", 1)].round == "round-01"
    assert plans[("s2", 4)].confirmed == ("white_matter",)


def test_plan_slices_pseudo_labels_never_override_a_review():
    outcomes = [_o("s1/001/csf", "round-01", "reject")]
    auto = [{"item_id": "s1/001/csf", "round": "round-01"}, {"item_id": "s1/001/white_matter", "round": "round-01"},
            {"item_id": "s3/007/gray_matter", "round": "round-01"}]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes, auto)}
    assert plans[("s1", 1)].confirmed == ("white_matter",) and plans[("s1", 1)].pseudo == ("white_matter",)
    assert plans[("s3", 7)].pseudo == ("gray_matter",)


def test_plan_slices_rejects_bad_item_ids():
    from qa_workflow.contract import ContractError

    with pytest.raises(ContractError):
        plan_slices([_o("nonsense", "round-01", "accept")])


def test_a_correction_in_the_latest_round_makes_the_slice_a_full_label():
    outcomes = [_o("s1/001/csf", "round-01", "accept"), _o("s1/001/gray_matter", "round-01", "reject"),
                _o("s1/002/csf", "round-02", "reject"), _o("s1/003/csf", "round-02", "accept")]
    corrections = [{"slice_id": "s1/001", "round": "round-01", "job": "adj-1", "mask_uri": "/c/s1_001.png"},
                   {"slice_id": "s1/002", "round": "round-02", "job": "adj-2", "mask_uri": "/c/s1_002.png"},
                   {"slice_id": "s1/003", "round": "round-01", "job": "adj-1", "mask_uri": "/c/old.png"}]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes, corrections=corrections)}
    assert plans[("s1", 1)].source == "corrected" and plans[("s1", 1)].corrected_mask_uri == "/c/s1_001.png"
    assert plans[("s1", 2)].source == "corrected"  # rejected, then corrected: it trains now
    assert plans[("s1", 3)].source == "confirmed" and plans[("s1", 3)].round == "round-02"  # an older correction
    assert plans[("s1", 3)].corrected_mask_uri == ""                                       # never mixes models


def test_build_retraining_set_uses_a_corrected_slice_without_ignore_pixels(tmp_path, phantom):
    from PIL import Image

    from qa_workflow.loop.retraining import build_retraining_set
    from training.dataset import DatasetWriter, load_png, read_index

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    with DatasetWriter(data, source="test") as w:
        for k, split in enumerate(["train", "val", "pool", "pool"]):
            image, labels = phantom(rng, shift=float(k))
            w.add("sub-001", k, image, labels, split, "AB"[k % 2])
    truth = {r.slice: load_png(data / r.mask, "mask") for r in read_index(data)}
    images = {r.slice: load_png(data / r.image) for r in read_index(data)}
    pred = tmp_path / "pred"
    (pred / "masks" / "sub-001").mkdir(parents=True)
    for k in (2, 3):
        predicted = truth[k].copy()
        predicted[:, :20] = 1  # the model paints CSF where there is none
        Image.fromarray(predicted).save(pred / "masks" / "sub-001" / f"{k:03d}.png")
    corrected = truth[2].copy()
    corrected[0, 0] = 3
    Image.fromarray(corrected).save(tmp_path / "corrected.png")
    outcomes = [_o("sub-001/002/csf", "round-01", "reject"), _o("sub-001/002/gray_matter", "round-01", "accept"),
                _o("sub-001/003/csf", "round-01", "reject"), _o("sub-001/003/gray_matter", "round-01", "accept")]
    corrections = [{"slice_id": "sub-001/002", "round": "round-01", "job": "adj",
                    "mask_uri": str(tmp_path / "corrected.png")}]
    out = build_retraining_set(data, outcomes, {"round-01": str(pred)}, tmp_path / "set", corrections=corrections)

    assert (out.pool_slices, out.corrected_slices) == (2, 1)
    assert out.sources == {"sub-001/002": "corrected", "sub-001/003": "confirmed"}
    written = {(r.slice, r.split): load_png(tmp_path / "set" / r.mask, "mask") for r in read_index(tmp_path / "set")}
    assert np.array_equal(written[(2, "train")], corrected)  # the person's label map, every class, no ignore
    assert (written[(3, "train")] == IGNORE_LABEL).any()  # the confirmed-only slice still ignores what was rejected
    for r in read_index(tmp_path / "set"):  # every slice, corrected ones included, trains on its own image
        assert np.array_equal(load_png(tmp_path / "set" / r.image), images[r.slice]), r
        assert r.site == "AB"[r.slice % 2], r
    sources = (tmp_path / "set" / "sources.csv").read_text().splitlines()
    assert sources[0] == "slice_id,round,source,mask_uri" and sources[1].startswith("sub-001/002,round-01,corrected,")
