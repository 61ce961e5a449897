"""Retraining sets: confirmed label maps, and which slices (latest round, reviewed) train next."""

import numpy as np
import pytest

from qa_workflow.contract import IGNORE_LABEL, to_display
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
    images = {r.slice: load_png(data / r.image) for r in read_index(data)}  # distinct per slice (shifted)
    pred = tmp_path / "pred"
    (pred / "masks" / "sub-001").mkdir(parents=True)
    for k in (2, 3):
        predicted = truth[k].copy()
        predicted[:, :20] = 1  # the model paints CSF where there is none
        Image.fromarray(predicted).save(pred / "masks" / "sub-001" / f"{k:03d}.png")
    corrected = truth[2].copy()
    corrected[0, 0] = 3
    Image.fromarray(np.ascontiguousarray(to_display(corrected))).save(tmp_path / "corrected.png")  # as drawn
    outcomes = [_o("sub-001/002/csf", "round-01", "reject"), _o("sub-001/002/gray_matter", "round-01", "accept"),
                _o("sub-001/003/csf", "round-01", "reject"), _o("sub-001/003/gray_matter", "round-01", "accept")]
    corrections = [{"slice_id": "sub-001/002", "round": "round-01", "job": "adj",
                    "mask_uri": str(tmp_path / "corrected.png")}]
    out = build_retraining_set(data, outcomes, {"round-01": str(pred)}, tmp_path / "set", corrections=corrections)

    assert (out.pool_slices, out.corrected_slices) == (2, 1)
    assert out.sources == {"sub-001/002": "corrected", "sub-001/003": "confirmed"}
    written = {(r.slice, r.split): load_png(tmp_path / "set" / r.mask, "mask") for r in read_index(tmp_path / "set")}
    # the person's label map back in the stored layout, pixel for pixel: every class, no ignore
    assert np.array_equal(written[(2, "train")], corrected)
    assert (written[(3, "train")] == IGNORE_LABEL).any()  # the confirmed-only slice still ignores what was rejected
    for r in read_index(tmp_path / "set"):  # every slice, corrected ones included, trains on its own image
        assert np.array_equal(load_png(tmp_path / "set" / r.image), images[r.slice]), r
        assert r.site == "AB"[r.slice % 2], r
    sources = (tmp_path / "set" / "sources.csv").read_text().splitlines()
    assert sources[0] == "slice_id,round,source,mask_uri" and sources[1].startswith("sub-001/002,round-01,corrected,")


def test_pseudo_labels_of_a_later_round_never_replace_a_persons_earlier_label():
    outcomes = [_o("s1/001/gray_matter", "round-01", "accept"), _o("s1/001/white_matter", "round-01", "accept")]
    corrections = [{"slice_id": "s1/002", "round": "round-01", "job": "adj-1", "mask_uri": "/c/s1_002.png"}]
    auto = [{"item_id": "s1/001/csf", "round": "round-02"}, {"item_id": "s1/002/csf", "round": "round-02"},
            {"item_id": "s1/009/csf", "round": "round-01"}, {"item_id": "s1/009/csf", "round": "round-02"}]
    plans = {(p.subject, p.slice_index): p for p in plan_slices(outcomes, auto, corrections)}
    assert (plans[("s1", 1)].round, plans[("s1", 1)].source) == ("round-01", "confirmed")
    assert plans[("s1", 1)].confirmed == ("gray_matter", "white_matter")
    assert (plans[("s1", 2)].round, plans[("s1", 2)].source) == ("round-01", "corrected")
    assert (plans[("s1", 9)].round, plans[("s1", 9)].source) == ("round-02", "pseudo")  # no person labelled it


def test_one_correction_per_slice_and_round_the_latest_recorded_for_training_and_verdicts():
    from qa_workflow.loop.retraining import latest_corrections

    rows = [{"slice_id": "s1/003", "round": "round-01", "job": "z-routed", "mask_uri": "/c/first.png",
             "recorded_at": "2026-12-03T10:00:00Z"},
            {"slice_id": "s1/003", "round": "round-01", "job": "a-chained", "mask_uri": "/c/later.png",
             "recorded_at": "2026-12-03T10:05:00Z"},
            {"slice_id": "s1/004", "round": "round-01", "job": "a", "mask_uri": "/c/a.png"},
            {"slice_id": "s1/004", "round": "round-01", "job": "b", "mask_uri": "/c/b.png"},
            {"slice_id": "s1/005", "round": "round-01", "job": "a", "mask_uri": ""}]
    assert latest_corrections(rows) == {("round-01", "s1/003"): "/c/later.png", ("round-01", "s1/004"): "/c/b.png"}
    assert latest_corrections(reversed(rows)) == latest_corrections(rows)  # not the order they come in
    plans = {p.slice_index: p.corrected_mask_uri for p in plan_slices([], corrections=rows)}
    assert plans == {3: "/c/later.png", 4: "/c/b.png"}


def test_segqa_retrain_trains_on_corrected_slices_too(tmp_path):
    """`retrain_from_rounds` (segqa retrain, the scheduled jobs' channels) takes the store's corrections like the
    demo: a slice with a rejected mask that a person corrected, and one routed straight to correction."""
    import json

    from PIL import Image

    from qa_workflow.confirmations.records import ConsolidatedMask, Correction, ItemRecord, Vote
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.loop.registry import Registry
    from qa_workflow.loop.retraining import retrain_from_rounds
    from qa_workflow.rounds.round_dir import ROUND_SCHEMA
    from training.dataset import DatasetWriter

    h, w = 176, 208
    lab = np.zeros((h, w), np.uint8)
    lab[20:150, 20:180], lab[50:120, 50:150], lab[70:90, 70:100] = 2, 3, 1
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "data", source="t") as writer:
        for k, split in enumerate(["train", "val", "pool", "pool", "test"]):
            writer.add("sub-001" if split != "test" else "sub-009", k, rng.integers(0, 255, (h, w), dtype=np.uint8),
                       lab, split, "A")
    pred = tmp_path / "pred" / "masks" / "sub-001"
    pred.mkdir(parents=True)
    for k in (2, 3):
        Image.fromarray(lab).save(pred / f"{k:03d}.png")
    rdir = tmp_path / "round"
    rdir.mkdir()
    (rdir / "round.json").write_text(json.dumps({"schema": ROUND_SCHEMA, "round": "round-01",
                                                 "inputs": {"predictions": str(tmp_path / "pred")}}))
    uri = f"sqlite:///{tmp_path}/store.db"
    store = open_store(uri)
    for cls, decision in (("csf", "reject"), ("gray_matter", "accept")):
        item = ItemRecord(f"sub-001/002/{cls}", cls, 0.8, "round-01", subject="sub-001", slice_id="sub-001/002")
        store.record_votes([(item, Vote("verify-1", item.item_id, reviewer, decision)) for reviewer in "abc"])
    Image.fromarray(np.ascontiguousarray(to_display(lab))).save(tmp_path / "corrected.png")
    for slice_id in ("sub-001/002", "sub-001/003"):
        store.record_corrections([Correction("adjust-1", slice_id, "w1", "round-01", str(tmp_path / "corrected.png"),
                                             True, 60.0)])
        store.put_consolidated_mask(ConsolidatedMask("adjust-1", slice_id, "round-01", str(tmp_path / "corrected.png")))
    store.close()
    done = retrain_from_rounds(tmp_path / "data", uri, [str(rdir)], Registry(tmp_path / "models"), tmp_path / "work",
                               train=False)
    assert done.training_set.corrected_slices == 2 and done.training_set.pool_slices == 2
    assert done.training_set.sources == {"sub-001/002": "corrected", "sub-001/003": "corrected"}


def test_a_failed_export_leaves_the_champion_and_the_decision_log_as_they_were(tmp_path, monkeypatch):
    """The ENet is exported before the champion changes: an export that fails (parity, disk) must not leave a
    promoted champion that nothing will export. Training and evaluation are stubbed (control flow only)."""
    import json
    from pathlib import Path

    import training.evaluate
    import training.export
    import training.parallel
    from qa_workflow.loop import retraining
    from qa_workflow.loop.registry import Registry

    versions = iter(range(1, 10))

    def train_all(configs, progress=None):
        out = {}
        for network, cfg in configs.items():
            folder = Path(cfg.out_dir)
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            (folder / "checkpoints" / "best.params").write_bytes(b"x")
            (folder / "model_card.json").write_text(json.dumps({"version": f"{network}-v{next(versions)}",
                                                                "network": network, "architecture": {"width": 1}}))
            out[network] = folder
        return out

    score = {"enet-v1": 0.70, "enet-v2": 0.75, "enet-v3": 0.75}

    def evaluate(model_dir, data_dir, split="test", tta="flip", **kw):
        m = score[json.loads((Path(model_dir) / "model_card.json").read_text())["version"]]
        return {"pooled": {"dice": {"csf": m, "gray_matter": m, "white_matter": m}, "mean_foreground_dice": m},
                "data": {"split": split, "slices": 10}}

    attempts = []

    def export(src, out, overwrite=False):
        attempts.append(Path(src))
        if len(attempts) == 1:
            raise RuntimeError("parity check failed")
        Path(out).mkdir(parents=True)

    monkeypatch.setattr(training.parallel, "train_all", train_all)
    monkeypatch.setattr(training.evaluate, "evaluate_model", evaluate)
    monkeypatch.setattr(training.export, "export_model", export)
    registry = Registry(tmp_path / "models")
    first = train_all({"enet": type("Cfg", (), {"out_dir": str(tmp_path / "init")})()})["enet"]
    registry.add("enet", "enet-v1", first)
    registry.set_champion("enet", "enet-v1")
    training_set = retraining.RetrainSet(tmp_path / "set", 0, 0, 0, 0, 0, 0)
    run = lambda: retraining.retrain_round("round-01", registry, tmp_path / "data", training_set,  # noqa: E731
                                           tmp_path / "work", {}, networks=("enet",),
                                           export_dir=tmp_path / "exports" / "round-01", warm_start=False)
    with pytest.raises(RuntimeError, match="parity"):
        run()
    assert registry.champion("enet") == "enet-v1" and [d for d in registry.decisions() if d["round"] == 1] == []
    result = run()  # the rerun of the round promotes and exports
    assert result.networks["enet"].decision.promote and result.export_dir == tmp_path / "exports" / "round-01"
    assert registry.champion("enet") == "enet-v3" and len(attempts) == 2
    assert [d["challenger"] for d in registry.decisions() if d["round"] == 1] == ["enet-v3"]
