"""The ENet as an AWS IoT Greengrass v2 component (`segqa export --greengrass`), beside the ONNX model.

Greengrass v1 ML inference, where the original brain-segmentation sample ran, reached end of life in October
2026 (ARCHITECTURE §11); the edge target is ONNX Runtime in a custom v2 component. `write_component` adds::

    EXPORT/greengrass/recipe.yaml                                  RecipeFormatVersion 2020-01-25
    EXPORT/greengrass/artifacts/<name>/<version>/model.onnx        the exported network
    EXPORT/greengrass/artifacts/<name>/<version>/model_card.json   normalisation, version, class names
    EXPORT/greengrass/artifacts/<name>/<version>/segment.py        the inference script (training/edge_segment.py)
    EXPORT/greengrass/artifacts/<name>/<version>/requirements.txt  what the script needs on the device

The artifact layout is the one ``greengrass-cli deployment create --recipeDir ... --artifactDir ...`` reads, so a
device can run the component before it is published. The recipe's artifact URIs point at ``ARTIFACT_BUCKET``
until `qa_workflow.cloud.greengrass.publish_component` uploads the artifacts and rewrites them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import SegqaError
from training import modelcard

__all__ = ["write_component", "check_component_settings", "recipe", "COMPONENT_NAME", "RECIPE_FILE", "SCRIPT",
           "REQUIREMENTS", "ARTIFACT_PLACEHOLDER", "artifact_dir"]

COMPONENT_NAME = "com.segqa.BrainSegmenter"
RECIPE_FILE = "recipe.yaml"
SCRIPT = "segment.py"
REQUIREMENTS = "requirements.txt"
ARTIFACT_PLACEHOLDER = "s3://ARTIFACT_BUCKET/segqa/greengrass"
SCRIPT_SOURCE = Path(__file__).with_name("edge_segment.py")
#: The device installs these with pip (versions of requirements.lock; wheels exist for aarch64 and x86_64). The core
#: device needs Python 3.11: onnxruntime 1.31 and pillow 13 require >= 3.11, numpy 1.23.5 has wheels up to 3.11.
#: awsiotsdk is the MQTT mode's Greengrass IPC client.
DEVICE_REQUIREMENTS = ("numpy==1.23.5", "onnxruntime==1.31.1", "pillow==13.0.0", "nibabel==5.3.3",
                       "awsiotsdk==1.31.0")
DEVICE_PYTHON = "3.11"
#: The Install step's first command: a device with another python3 fails with this line in its log, not with pip's.
PYTHON_CHECK = ("python3 -c \"import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(None if v == '"
                + DEVICE_PYTHON + "' else 'segqa needs Python " + DEVICE_PYTHON
                + " on the core device (onnxruntime 1.31, pillow 13, numpy 1.23.5); found ' + v)\"")
_SEMVER = re.compile(r"\d+\.\d+\.\d+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def artifact_dir(component_dir: Path, name: str, version: str) -> Path:
    return Path(component_dir) / "artifacts" / name / version


def recipe(name: str, version: str, model_version: str, artifact_base: str = ARTIFACT_PLACEHOLDER,
           threads: int = 1) -> dict[str, Any]:
    """The component recipe (a dict, written as YAML). Configuration: ``InputFolder`` / ``OutputFolder``
    (relative to the component's work folder), ``InputTopic`` (MQTT mode when not empty: local pub/sub requests
    ``{"path": FILE}``), ``OutputTopic``, ``Threads``, ``PollSeconds``."""
    base = f"{artifact_base.rstrip('/')}/{name}/{version}"
    run = ("python3 -u {artifacts:path}/" + SCRIPT + " --model {artifacts:path}/model.onnx"
           " --card {artifacts:path}/model_card.json --input '{configuration:/InputFolder}'"
           " --output '{configuration:/OutputFolder}' --threads {configuration:/Threads}"
           " --topic '{configuration:/InputTopic}' --result-topic '{configuration:/OutputTopic}'"
           " --poll {configuration:/PollSeconds}")
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentType": "aws.greengrass.generic",
        "ComponentDescription": f"Brain-tissue segmentation of MRI slices and volumes (segqa ENet {model_version}, "
                                "ONNX Runtime): writes masks and a JSON summary per input.",
        "ComponentPublisher": "segqa",
        "ComponentConfiguration": {"DefaultConfiguration": {
            "InputFolder": "input", "OutputFolder": "output", "InputTopic": "",
            "OutputTopic": "segqa/segment/results", "Threads": threads, "PollSeconds": 2,
            "accessControl": {"aws.greengrass.ipc.pubsub": {f"{name}:pubsub:1": {
                "policyDescription": "Receive segmentation requests and publish their summaries.",
                "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                "resources": ["segqa/segment/*"]}}},
        }},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Install": {"Script": PYTHON_CHECK + " && python3 -m pip install --user -r {artifacts:path}/"
                                      + REQUIREMENTS, "Timeout": 900},
                "Run": {"Script": run},
            },
            "Artifacts": [{"URI": f"{base}/{file}", "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}
                          for file in (modelcard.EXPORT_ONNX, modelcard.CARD_FILE, SCRIPT, REQUIREMENTS)],
        }],
    }


def check_component_settings(name: str, version: str, threads: int) -> None:
    """SegqaError naming the option when a setting would make an invalid recipe."""
    if not _NAME.fullmatch(name):
        raise SegqaError(f"--component-name {name!r}: letters, digits, '.', '-' and '_' (e.g. {COMPONENT_NAME})")
    if not _SEMVER.fullmatch(version):
        raise SegqaError(f"--component-version {version!r}: Greengrass needs major.minor.patch, e.g. 1.0.0")
    if not 1 <= threads <= 64:
        raise SegqaError(f"--threads must be 1..64, got {threads}")


def write_component(export_dir: str | os.PathLike[str], name: str = COMPONENT_NAME, version: str = "1.0.0",
                    threads: int = 1) -> Path:
    """Write ``EXPORT/greengrass/`` (see the module docstring) for the export folder ``export_dir``; returns it.
    The folder is replaced as a whole (written aside, then renamed)."""
    import yaml

    check_component_settings(name, version, threads)
    export_dir = Path(export_dir)
    card = modelcard.read_card(export_dir)
    onnx_file = export_dir / modelcard.EXPORT_ONNX
    if not onnx_file.is_file():
        raise SegqaError(f"{export_dir}: no {modelcard.EXPORT_ONNX}; the component runs the ONNX model of an export")
    if card.get("network") != "enet":
        raise SegqaError(f"{export_dir}: a {card.get('network')} model; the edge component is built for the ENet "
                         "(the U-Net is too slow for a core device, BENCHMARKS.md B2)")
    with storage.atomic_folder(export_dir / "greengrass") as tmp:
        artifacts = artifact_dir(tmp, name, version)
        artifacts.mkdir(parents=True)
        shutil.copyfile(onnx_file, artifacts / modelcard.EXPORT_ONNX)
        shutil.copyfile(export_dir / modelcard.CARD_FILE, artifacts / modelcard.CARD_FILE)
        shutil.copyfile(SCRIPT_SOURCE, artifacts / SCRIPT)
        (artifacts / REQUIREMENTS).write_text("\n".join(DEVICE_REQUIREMENTS) + "\n", encoding="utf-8")
        text = yaml.safe_dump(recipe(name, version, card["version"], threads=threads), sort_keys=False, width=1000)
        (tmp / RECIPE_FILE).write_text(text, encoding="utf-8")
    return export_dir / "greengrass"
