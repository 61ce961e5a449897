"""benchmarks/gpu_h200.sh: valid bash, and its --dry-run (the same driver on the CPU, a tiny dataset) ends
with a report that has the device check, images/s and Dice for both networks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_h200.sh"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_reports_check_speed_and_dice(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "SEGQA_THREADS": "1"}
    subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], env=env, check=True, capture_output=True,
                   timeout=600)
    report = json.loads((tmp_path / "b3_gpu.json").read_text())
    assert report["dry_run"] and report["verdict"] == "ran"
    assert report["check"]["convolution"] == {"context": "cpu(0)", "max_abs_diff_vs_cpu": 0.0, "ok": True}
    assert [r["network"] for r in report["runs"]] == ["unet", "enet"]
    for run in report["runs"]:
        assert run["images_per_s_median"] > 0 and run["epochs_run"] >= 1
        assert 0.0 <= run["test_mean_fg_dice_pooled"] <= 1.0
