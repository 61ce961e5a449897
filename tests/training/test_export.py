"""Export: the four files, ONNX Runtime agrees with MXNet, and a disagreement fails loudly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa_workflow.cli import main
from qa_workflow.contract import SegqaError
from training.export import export_model, onnx_session, parity_inputs
from training.modelcard import normalize
from training.predict import load_predictor
from training.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def models(tmp_path_factory, write_dataset):
    root = tmp_path_factory.mktemp("export")
    ds = write_dataset(root / "ds", splits=("train", "val"), slices_per_subject=2)
    return {name: train_model(TrainConfig(data_dir=str(ds), out_dir=str(root / name), network=name, width=0.125,
                                          epochs=1, batch_size=2))
            for name in ("unet", "enet")}


@pytest.mark.parametrize("name", ["unet", "enet"])
def test_export_parity(models, tmp_path, name):
    out = tmp_path / "export"
    res = export_model(models[name], out)
    assert sorted(p.name for p in out.iterdir()) == ["model-0000.params", "model-symbol.json", "model.onnx",
                                                     "model_card.json"]
    assert res.parity["argmax_agreement"] >= 0.999 and res.parity["argmax_agreement_strict"] > 0.95
    assert res.parity["max_abs_diff"] < 1e-3
    card = json.loads((out / "model_card.json").read_text())
    assert card["export"]["parity"]["max_abs_diff"] == res.parity["max_abs_diff"]
    assert card["export"]["onnx"]["input"] == "data" and card["params_file"] == "model-0000.params"
    if name == "enet":  # every PReLU slope was made broadcastable for ONNX Runtime
        assert card["export"]["parity"]["fixes"]["prelu_slopes_reshaped"] > 0
    # independent check: the ONNX model and the training checkpoint give the same probabilities
    images = parity_inputs(2, (176, 208), seed=5)
    trained = load_predictor(models[name])
    session = onnx_session(out / "model.onnx", threads=1)
    logits = session.run(None, {"data": normalize(images, trained.mean, trained.std)})[0]  # batch of 2: dynamic N
    ref = trained.predict_proba(images)
    picked = np.take_along_axis(ref, logits.argmax(1)[:, None], axis=1)[:, 0]
    assert (ref.max(1) - picked <= 1e-5).mean() >= 0.999  # same class, or a tie within float noise
    # the export folder is itself a model folder for the predictor
    exported = load_predictor(out)
    assert exported.version == trained.version
    np.testing.assert_allclose(exported.predict_proba(images), ref, atol=1e-6)
    if name == "enet":  # ONNX Runtime refuses bad pixels as the MXNet predictor does (one shared check)
        from training.predict import open_predictor

        onnx_pred = open_predictor(out, runtime="onnxruntime", threads=1)
        bad = images.astype(np.float32)
        bad[1, 3, 3] = np.inf
        with pytest.raises(SegqaError, match="slice 1 contains NaN or inf"):
            onnx_pred.predict_proba(bad)
        with pytest.raises(SegqaError, match="one slice"):
            onnx_pred.predict_proba(images[0])
        with pytest.raises(SegqaError, match="numeric pixels"):
            onnx_pred.predict_proba(np.full((1, 176, 208), "x"))


def test_export_fails_loudly_and_writes_nothing_when_onnx_disagrees(models, tmp_path, monkeypatch):
    import training.export as ex

    real_fix = ex.fix_onnx_for_runtime

    def sabotage(model):  # a broken converter: flip the sign of the last layer's weights
        counts = real_fix(model)
        for init in model.graph.initializer:
            if init.name.endswith("_full_weight"):
                from onnx import numpy_helper

                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        return counts

    monkeypatch.setattr(ex, "fix_onnx_for_runtime", sabotage)
    with pytest.raises(SegqaError, match=r"export parity failed: .* agree on .* max abs logit difference"):
        export_model(models["enet"], tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert not list(tmp_path.glob(".export*"))


def test_cli_export(models, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["export", "--model", str(models["enet"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "argmax agreement 100" in text or "argmax agreement 99.9" in text
    assert main(["export", "--model", str(models["enet"]), "--out", str(out)]) == 2  # exists: refuse
    assert "--overwrite" in capsys.readouterr().err
