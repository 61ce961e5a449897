"""The Greengrass v2 edge component (`segqa export --greengrass`): the recipe, and its inference script run on
the exported ENet, whose masks must be those of `segqa predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from qa_workflow.cli import main
from qa_workflow.contract import SegqaError
from training import greengrass
from training.dataset import scale_to_uint8
from training.predict import open_predictor
from training.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def export(tmp_path_factory, write_dataset):
    """A barely trained ENet, exported with its component: (export folder, dataset with a 'test' split)."""
    root = tmp_path_factory.mktemp("edge")
    data = write_dataset(root / "ds", splits=("train", "val", "test", "test"), slices_per_subject=3)
    model = train_model(TrainConfig(data_dir=str(data), out_dir=str(root / "enet"), network="enet", width=0.25,
                                    epochs=1, batch_size=2))
    assert main(["export", "--model", str(model), "--out", str(root / "export"), "--greengrass",
                 "--component-version", "1.2.3", "--threads", "2"]) == 0
    return root / "export", data


def artifacts(export_dir):
    return greengrass.artifact_dir(export_dir / "greengrass", greengrass.COMPONENT_NAME, "1.2.3")


def run_script(export_dir, source, out):
    folder = artifacts(export_dir)
    return subprocess.run([sys.executable, str(folder / "segment.py"), "--model", str(folder / "model.onnx"),
                           "--card", str(folder / "model_card.json"), "--input", str(source), "--output", str(out),
                           "--once"], capture_output=True, text=True, timeout=300, check=True)


def test_component_recipe_names_its_artifacts_lifecycle_and_configuration(export):
    export_dir, _ = export
    recipe = yaml.safe_load((export_dir / "greengrass" / "recipe.yaml").read_text())
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == (greengrass.COMPONENT_NAME, "1.2.3")
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert {"InputFolder", "OutputFolder", "InputTopic", "OutputTopic", "Threads"} <= set(config)
    assert config["Threads"] == 2
    manifest = recipe["Manifests"][0]
    files = [a["URI"].rsplit("/", 1)[1] for a in manifest["Artifacts"]]
    assert files == ["model.onnx", "model_card.json", "segment.py", "requirements.txt"]
    assert sorted(p.name for p in artifacts(export_dir).iterdir()) == sorted(files)
    assert (artifacts(export_dir) / "model.onnx").read_bytes() == (export_dir / "model.onnx").read_bytes()
    run = manifest["Lifecycle"]["Run"]["Script"]
    for key in config:
        if key != "accessControl":
            assert "{configuration:/" + key + "}" in run
    assert "requirements.txt" in manifest["Lifecycle"]["Install"]["Script"]
    assert manifest["Lifecycle"]["Install"]["Script"].startswith(greengrass.PYTHON_CHECK + " && ")


def test_script_masks_equal_segqa_predicts(export, tmp_path):
    export_dir, data = export
    # the edge runs one pass (no test-time mirroring: its latency is B2's), so compare with one pass
    assert main(["predict", "--model", str(export_dir), "--data", str(data), "--split", "test", "--out",
                 str(tmp_path / "pred"), "--tta", "none"]) == 0
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    slices = sorted((data / "images").glob("sub-00[23]/*.png"))
    for png in slices:
        shutil.copyfile(png, inbox / f"{png.parent.name}_{png.stem}.png")
    run_script(export_dir, inbox, tmp_path / "out")
    for png in slices:
        name = f"{png.parent.name}_{png.stem}"
        edge = np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png"))
        predicted = np.asarray(Image.open(tmp_path / "pred" / "masks" / png.parent.name / f"{png.stem}.png"))
        np.testing.assert_array_equal(edge, predicted)
        summary = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert summary["slices"] == 1 and sum(summary["class_voxels"].values()) == 176 * 208
        assert summary["model_version"] == json.loads((export_dir / "model_card.json").read_text())["version"]


def test_script_segments_a_volume_slice_by_slice_as_the_project_would(export, tmp_path, ellipse_slice):
    import nibabel as nib

    export_dir, _ = export
    rng = np.random.default_rng(3)
    volume = np.stack([ellipse_slice(rng)[0] for _ in range(4)], axis=2).astype(np.int16) * 7 + 100  # 16-bit range
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "scan.nii.gz")
    run_script(export_dir, tmp_path / "scan.nii.gz", tmp_path / "out")
    written: Any = nib.load(tmp_path / "out" / "scan_mask.nii.gz")
    mask = np.asarray(written.dataobj)
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    # the project's own scaling and ONNX Runtime predictor, slice by slice
    expected = open_predictor(export_dir, runtime="onnxruntime").predict_labels(
        np.moveaxis(scale_to_uint8(volume), 2, 0), batch_size=1)
    np.testing.assert_array_equal(np.moveaxis(mask, 2, 0), expected)
    summary = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert summary["kind"] == "volume" and summary["slices"] == 4 and summary["ms_per_slice"] > 0


def test_script_mirrors_the_training_scaling(tmp_path):
    edge_segment = _edge_module()
    vol = np.random.default_rng(0).gamma(2.0, 300.0, size=(20, 30, 5)).astype(np.float32)
    vol[0, 0, 0] = np.nan
    np.testing.assert_array_equal(edge_segment.scale_to_uint8(vol), scale_to_uint8(vol))


def test_a_bad_input_gets_a_summary_with_the_reason_and_the_rest_goes_on(export, tmp_path):
    export_dir, data = export
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(inbox / "small.png")
    shutil.copyfile(next((data / "images").glob("*/*.png")), inbox / "good.png")
    run_script(export_dir, inbox, tmp_path / "out")
    assert "the model takes 176x208" in json.loads((tmp_path / "out" / "small.json").read_text())["error"]
    assert (tmp_path / "out" / "good_mask.png").is_file()


def test_component_mistakes_are_named(export, tmp_path):
    export_dir, _ = export
    with pytest.raises(SegqaError, match="major.minor.patch"):
        greengrass.write_component(export_dir, version="1.0")
    card = json.loads((export_dir / "model_card.json").read_text())
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "model.onnx").write_bytes(b"")
    (unet / "model_card.json").write_text(json.dumps({**card, "network": "unet"}))
    with pytest.raises(SegqaError, match="built for the ENet"):
        greengrass.write_component(unet)


def _edge_module():
    """The edge script as the device runs it (loaded from its source file, not as a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_segment", greengrass.SCRIPT_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mqtt_mode_answers_with_a_real_ipc_message(export, tmp_path):
    """The MQTT mode's answer is built from awsiotsdk's own model classes and serialises as the IPC request does
    (a plain dict there raised in the subscription callback, and no result was ever published)."""
    from awsiot.greengrasscoreipc.model import (
        BinaryMessage,
        JsonMessage,
        PublishToTopicRequest,
        SubscriptionResponseMessage,
    )

    export_dir, data = export
    edge = _edge_module()
    folder = artifacts(export_dir)
    segmenter = edge.Segmenter(str(folder / "model.onnx"), str(folder / "model_card.json"), threads=1)
    image = next((data / "images").glob("*/*.png"))
    for event in (SubscriptionResponseMessage(json_message=JsonMessage(message={"path": str(image)})),
                  SubscriptionResponseMessage(binary_message=BinaryMessage(message=json.dumps({"path": str(image)})
                                                                           .encode()))):
        payload = PublishToTopicRequest(topic="segqa/segment/results",
                                        publish_message=edge.result_message(event, segmenter, tmp_path))._to_payload()
        summary = payload["publishMessage"]["jsonMessage"]["message"]
        assert summary["slices"] == 1 and "error" not in summary
    bad = SubscriptionResponseMessage(json_message=JsonMessage(message={"file": "x"}))
    summary = edge.result_message(bad, segmenter, tmp_path).json_message.message
    assert "expected a message" in summary["error"]


def test_the_device_installs_every_package_the_script_imports():
    import ast

    tree = ast.parse(greengrass.SCRIPT_SOURCE.read_text())
    imported = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "__future__"}
    package = {"PIL": "pillow", "awsiot": "awsiotsdk"}
    installed = {r.split("==")[0] for r in greengrass.DEVICE_REQUIREMENTS}
    assert {package.get(m, m) for m in third_party} <= installed, third_party
    assert "awsiotsdk" in installed and greengrass.DEVICE_PYTHON in greengrass.PYTHON_CHECK
