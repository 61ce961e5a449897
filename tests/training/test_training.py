"""Training: it learns, it resumes exactly, it refuses bad data; the predictor and MC-dropout on its output."""

from __future__ import annotations

import json
from dataclasses import replace

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from qa_workflow.cli import main
from qa_workflow.contract import IGNORE_LABEL, SegqaError
from training.losses import segmentation_loss
from training.metrics import dice_per_class, mean_foreground_dice
from training.nets import build_network
from training.predict import Mirrored, load_predictor, with_tta
from training.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, write_dataset):
    return write_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def enet_model(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "enet"
    return train_model(TrainConfig(data_dir=str(dataset), out_dir=str(out), network="enet", width=0.25, epochs=1,
                                   batch_size=3, lr=5e-3))


@pytest.mark.slow
@pytest.mark.parametrize("name, width, lr, steps", [("unet", 0.25, 0.01, 80), ("enet", 1.0, 0.005, 70)])
def test_network_overfits_one_batch(name, width, lr, steps, ellipse_slice):
    # proves the loss and the optimizer work: the network memorises two 64x64 slices. Dropout is off (it is
    # a regulariser, not what is tested); the ENet runs at full width because at 1/4 width its decoder keeps a
    # single internal channel. Dice is measured in inference mode (BatchNorm running statistics).
    rng = np.random.default_rng(0)
    pairs = [ellipse_slice(rng, 64, 64, noise=4.0) for _ in range(2)]
    x = nd.array(np.stack([p[0] for p in pairs])[:, None].astype(np.float32) / 255.0 - 0.4)
    y = nd.array(np.stack([p[1] for p in pairs]).astype(np.float32))
    mx.random.seed(0)
    net = build_network(name, width=width, dropout=0.0 if name == "unet" else (0.0, 0.0))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": lr})
    for _ in range(steps):
        with autograd.record():
            loss, _ = segmentation_loss(net(x), y, nd.ones(4))
        loss.backward()
        trainer.step(1)
    pred = net(x).argmax(axis=1).asnumpy()
    dice = dice_per_class(pred, y.asnumpy())
    assert mean_foreground_dice(dice) > 0.9, dice


def test_train_writes_the_model_folder(enet_model, dataset):
    for rel in ("model_card.json", "metrics.json", "config.json", "checkpoints/best.params",
                "checkpoints/last.params", "checkpoints/last.states", "checkpoints/last.json"):
        assert (enet_model / rel).is_file(), rel
    card = json.loads((enet_model / "model_card.json").read_text())
    assert card["network"] == "enet" and card["version"].startswith("enet-")
    assert [c["name"] for c in card["classes"]] == ["background", "csf", "gray_matter", "white_matter"]
    assert card["input"]["shape"] == [1, 176, 208]
    assert card["normalization"]["std"] > 0 and card["training"]["data_hash"].startswith("sha256:")
    assert card["training"]["train_slices"] == 6 and card["training"]["val_slices"] == 3
    hist = json.loads((enet_model / "metrics.json").read_text())["epochs"]
    assert len(hist) == 1 and set(hist[0]["val_dice"]) == {"background", "csf", "gray_matter", "white_matter"}
    assert card["metrics"]["val"]["mean_foreground_dice"] == hist[0]["val_mean_fg_dice"]


def test_predictor_and_mc_dropout(enet_model, dataset):
    from training.dataset import load_slices, read_index

    images, _ = load_slices(dataset, read_index(dataset, ["test"]), masks=False)
    pred = load_predictor(enet_model)
    assert pred.network == "enet"
    assert pred.version == json.loads((enet_model / "model_card.json").read_text())["version"]
    p1 = pred.predict_proba(images, batch_size=2)
    assert p1.shape == (3, 4, 176, 208) and p1.dtype == np.float32
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p1, pred.predict_proba(images, batch_size=2))  # deterministic in eval mode
    # another batch size may change float rounding once oneDNN runs on several threads (issue #14), no more
    np.testing.assert_allclose(p1, pred.predict_proba(images), rtol=0, atol=1e-4)
    mc = pred.predict_mc(images, samples=4, seed=1)
    assert mc.mean.shape == p1.shape and mc.entropy.shape == mc.mutual_info.shape == (3, 176, 208)
    assert mc.mutual_info.max() > 0 and mc.mutual_info.min() >= 0  # dropout makes the passes disagree
    assert not np.allclose(mc.mean, p1)
    again = pred.predict_mc(images, samples=4, seed=1)
    np.testing.assert_array_equal(mc.mean, again.mean)
    np.testing.assert_array_equal(mc.mutual_info, again.mutual_info)
    assert not np.array_equal(mc.mean, pred.predict_mc(images, samples=4, seed=2).mean)


def test_resume_after_a_kill_equals_an_uninterrupted_run(dataset, tmp_path):
    def cfg(out, progress=None, resume=False):
        return TrainConfig(data_dir=str(dataset), out_dir=str(out), network="enet", width=0.125, epochs=3,
                           batch_size=2, lr=5e-3, seed=7, max_batches_per_epoch=2, resume=resume, progress=progress)

    straight = train_model(cfg(tmp_path / "straight"))

    def kill_in_epoch_3(ev):
        if ev.kind == "batch" and ev.epoch == 3:
            raise KeyboardInterrupt  # as if the job were killed halfway through epoch 3

    with pytest.raises(KeyboardInterrupt):
        train_model(cfg(tmp_path / "killed", kill_in_epoch_3))
    assert json.loads((tmp_path / "killed/checkpoints/last.json").read_text())["epoch"] == 2
    resumed = train_model(cfg(tmp_path / "killed", resume=True))
    a = nd.load(str(straight / "checkpoints/last.params"))
    b = nd.load(str(resumed / "checkpoints/last.params"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    ha = json.loads((straight / "metrics.json").read_text())["epochs"]
    hb = json.loads((resumed / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in hb] == [1, 2, 3]
    assert [round(e["train_loss"], 5) for e in ha] == [round(e["train_loss"], 5) for e in hb]
    # resuming with different training options is refused
    with pytest.raises(SegqaError, match="cannot resume.*lr"):
        train_model(TrainConfig(**{**cfg(tmp_path / "killed", resume=True).to_json(), "lr": 1e-2, "epochs": 4}))


def test_ignore_label_masks_train(tmp_path, ellipse_slice):
    # a mask that is mostly 255 still trains, and the ignored pixels are not counted as any class
    from training.dataset import DatasetWriter

    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "ds") as w:
        for s, split in enumerate(["train", "val"]):
            image, mask = ellipse_slice(rng)
            mask[:, :100] = IGNORE_LABEL
            w.add(f"sub-{s}", 0, image, mask, split)
            w.add(f"sub-{s}", 1, *ellipse_slice(rng), split)
    out = train_model(TrainConfig(data_dir=str(tmp_path / "ds"), out_dir=str(tmp_path / "m"), network="enet",
                                  width=0.125, epochs=1, batch_size=2))
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["epochs"][0]["train_loss"])


def test_empty_training_split_is_one_clear_error(tmp_path, write_dataset):
    ds = write_dataset(tmp_path / "ds", splits=("val", "test"), slices_per_subject=1)
    with pytest.raises(SegqaError, match="train split is empty"):
        train_model(TrainConfig(data_dir=str(ds), out_dir=str(tmp_path / "m"), network="enet", width=0.125))
    assert not (tmp_path / "m").exists()


def test_bad_images_are_refused_by_the_predictor(enet_model):
    pred = load_predictor(enet_model)
    bad = np.zeros((2, 176, 208), np.float32)
    bad[1, 5, 5] = np.nan
    with pytest.raises(SegqaError, match="slice 1 contains NaN or inf"):
        pred.predict_proba(bad)
    with pytest.raises(SegqaError, match=r"nearest valid: 96 or 104"):
        pred.predict_proba(np.zeros((1, 100, 208), np.uint8))
    with pytest.raises(SegqaError, match="channel"):
        pred.predict_proba(np.zeros((1, 3, 176, 208), np.uint8))


def test_corrupted_or_mismatched_params_are_one_clear_error(enet_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(enet_model, broken)
    (broken / "checkpoints/best.params").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SegqaError, match="not a readable MXNet params file"):
        load_predictor(broken)
    data = (enet_model / "checkpoints/best.params").read_bytes()
    (broken / "checkpoints/best.params").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SegqaError, match="best.params"):
        load_predictor(broken)
    # params of another width (card says 0.5, weights are 0.25)
    shutil.copyfile(enet_model / "checkpoints/best.params", broken / "checkpoints/best.params")
    card = json.loads((broken / "model_card.json").read_text())
    card["architecture"]["width"] = 0.5
    (broken / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(SegqaError, match="another network or width"):
        load_predictor(broken)
    card["network"] = "unet"
    card["architecture"] = build_network("unet", width=0.25).describe()
    (broken / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(SegqaError, match="do not match this unet"):
        load_predictor(broken)
    with pytest.raises(SegqaError, match="not a segqa model folder"):
        load_predictor(tmp_path)


def test_cli_train_evaluate_and_user_errors(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--data", str(dataset), "--network", "unet", "--width", "0.125", "--epochs", "1",
                 "--batch-size", "3", "--out", str(out)]) == 0
    assert "val mean foreground Dice" in capsys.readouterr().out
    report_file = tmp_path / "eval" / "report.json"
    assert main(["evaluate", "--model", str(out), "--data", str(dataset), "--out", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert report["data"]["slices"] == 3 and report["subjects"]["n"] == 1
    assert set(report["pooled"]["dice"]) == {"background", "csf", "gray_matter", "white_matter"}
    assert np.asarray(report["pooled"]["confusion"]["matrix"]).sum() == 3 * 176 * 208
    assert report_file.with_suffix(".png").stat().st_size > 1000
    assert "sites" not in report  # a dataset without sites has no per-site figures
    # a dataset whose index names sites: Dice per site, in the JSON and as a second table
    import shutil

    from training.dataset import read_index, write_index

    sited = tmp_path / "sited"
    shutil.copytree(dataset, sited)
    write_index(sited, [replace(r, site="B" if r.split == "test" else "A") for r in read_index(sited)])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(sited), "--out", str(tmp_path / "e2.json")]) == 0
    assert "per acquisition site" in capsys.readouterr().out
    by_site = json.loads((tmp_path / "e2.json").read_text())["sites"]
    assert list(by_site) == ["B"] and by_site["B"]["slices"] == 3
    assert by_site["B"]["dice"] == pytest.approx(report["pooled"]["dice"], nan_ok=True)
    # mirrored at test time by default (contract.DEFAULT_TTA): recorded in the report and the table's title
    assert report["model"]["tta"] == "flip"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(dataset), "--out", str(tmp_path / "e3.json"),
                 "--tta", "none"]) == 0
    assert "mirrored left-right" not in capsys.readouterr().out
    assert json.loads((tmp_path / "e3.json").read_text())["model"]["tta"] == "none"
    assert main(["evaluate", "--model", str(out), "--data", str(dataset), "--tta", "rotate"]) == 2
    assert "'rotate': expected one of none, flip" in capsys.readouterr().err
    # user mistakes: one line, exit 2
    assert main(["train", "--data", str(dataset), "--network", "unet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--resume" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--data", str(tmp_path / "nope"), "--network", "enet", "--out", str(tmp_path / "x")]) == 2
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(dataset)]) == 2
    assert main(["train", "--data", str(dataset), "--network", "segnet", "--out", str(tmp_path / "y")]) == 2


def test_sagemaker_entry_point_and_kvstore(dataset, tmp_path, monkeypatch):
    import training.train as tt

    seen = {}
    real_trainer = tt.gluon.Trainer

    def recording_trainer(params, optimizer, optimizer_params=None, kvstore="device", **kw):
        seen["kvstore"] = kvstore
        return real_trainer(params, optimizer, optimizer_params, kvstore=kvstore, **kw)

    monkeypatch.setattr(tt.gluon, "Trainer", recording_trainer)
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(dataset))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_HOSTS", '["algo-1"]')
    # SageMaker passes hyperparameters as --key value strings, and an s3:// model_dir that is not ours to use
    rc = tt.main(["--network", "enet", "--width", "0.125", "--epochs", "1", "--batch-size", "3", "--augment", "false",
                  "--kvstore", "local", "--model_dir", "s3://bucket/prefix/model"])
    assert rc == 0 and seen["kvstore"] == "local"
    card = json.loads((tmp_path / "model/model_card.json").read_text())
    assert card["network"] == "enet" and card["training"]["kvstore"] == "local"
    # several hosts: distributed synchronous kvstore unless told otherwise
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    cfg, _ = tt.config_from_args(["--network", "unet"])
    assert cfg.kvstore == "dist_sync" and cfg.data_dir == str(dataset)
    monkeypatch.delenv("SM_CHANNEL_TRAIN")
    assert tt.main(["--network", "unet"]) == 2  # no data: one logged error, exit 2


def test_mirrored_predictor_is_left_right_symmetric_and_averages_both_orientations(enet_model, dataset):
    from training.dataset import load_slices, read_index

    images, _ = load_slices(dataset, read_index(dataset, ["test"]), masks=False)
    plain = load_predictor(enet_model)
    mirrored = with_tta(plain, "flip")
    assert isinstance(mirrored, Mirrored) and mirrored.tta == "flip" and plain.tta == "none"
    assert (mirrored.version, mirrored.network, mirrored.runtime) == (plain.version, plain.network, "mxnet")
    p = mirrored.predict_proba(images, batch_size=2)
    expected = (plain.predict_proba(images, 2) + plain.predict_proba(images[:, ::-1, :], 2)[:, :, ::-1, :]) / 2
    np.testing.assert_allclose(p, expected, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # mirroring the patient's left and right (the rows of a stored slice) mirrors the answer exactly, which the
    # network alone does not do
    np.testing.assert_allclose(mirrored.predict_proba(images[:, ::-1, :], 2), p[:, :, ::-1, :], atol=1e-5)
    asymmetry = plain.predict_proba(images[:, ::-1, :], 2) - plain.predict_proba(images, 2)[:, :, ::-1, :]
    assert np.abs(asymmetry).max() > 1e-3
    mc = mirrored.predict_mc(images, samples=3, seed=1)
    assert mc.samples == 6 and mc.mean.shape == p.shape and mc.mutual_info.min() >= 0
    a, b = plain.predict_mc(images, 3, seed=1), plain.predict_mc(images[:, ::-1, :], 3, seed=1)
    np.testing.assert_allclose(mc.mean, (a.mean + b.mean[:, :, ::-1, :]) / 2, atol=1e-6)
    # the 2T passes' mean entropy is the two halves' mean; mutual information = entropy of the mean minus it
    halves = ((a.entropy - a.mutual_info) + (b.entropy - b.mutual_info)[:, ::-1, :]) / 2
    np.testing.assert_allclose(mc.mutual_info, np.maximum(mc.entropy - halves, 0), atol=1e-5)
    with pytest.raises(SegqaError, match="expected one of none, flip"):
        with_tta(plain, "mirror")
