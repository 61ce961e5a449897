"""Stage the SageMaker training source bundle for `training/train.py` (script mode).

SageMaker copies ``source_dir`` to ``/opt/ml/code``, installs its ``requirements.txt`` and runs the entry
point with the hyperparameters as ``--key value``. The bundle this module stages::

    SOURCE/requirements.txt                 training/requirements.txt (numpy < 1.24, scipy, pillow)
    SOURCE/training/*.py                    this package (networks, losses, train entry point, ...)
    SOURCE/qa_workflow/__init__.py          the shared contract and storage layer, nothing heavier
    SOURCE/qa_workflow/contract.py
    SOURCE/qa_workflow/storage.py

Entry point: ``training/train.py`` (it puts SOURCE on ``sys.path`` when run as a script). Use it with
``sagemaker.train.ModelTrainer`` (SDK v3) and an MXNet 1.9 training image, e.g.::

    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import SourceCode, InputData
    source_dir, entry = stage_source_dir("build/sagemaker-source")
    trainer = ModelTrainer(training_image=MXNET_19_IMAGE_URI, role=ROLE,
                           source_code=SourceCode(source_dir=str(source_dir), entry_script=entry,
                                                  requirements="requirements.txt"),
                           hyperparameters={"network": "enet", "epochs": 40, "batch-size": 16})
    trainer.train(input_data_config=[InputData(channel_name="train", data_source="s3://.../cohort/")])

Standard library only, so building the bundle needs neither mxnet nor the SDK.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["stage_source_dir", "ENTRY_POINT"]

ENTRY_POINT = "training/train.py"
_ROOT = Path(__file__).resolve().parent.parent
_SHARED = ("__init__.py", "contract.py", "storage.py")


def stage_source_dir(dest: str | os.PathLike[str]) -> tuple[Path, str]:
    """Build the bundle in ``dest`` (replaced if it exists); returns (source_dir, entry point relative to it)."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "training").mkdir(parents=True)
    (tmp / "qa_workflow").mkdir()
    for src in sorted((_ROOT / "training").glob("*.py")):
        shutil.copy2(src, tmp / "training" / src.name)
    for name in _SHARED:
        shutil.copy2(_ROOT / "qa_workflow" / name, tmp / "qa_workflow" / name)
    shutil.copy2(_ROOT / "training" / "requirements.txt", tmp / "requirements.txt")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest, ENTRY_POINT
