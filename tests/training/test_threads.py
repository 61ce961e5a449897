"""Thread count: the precedence SEGQA_THREADS > OMP_NUM_THREADS > affinity, set before MXNet loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa_workflow.contract import SegqaError
from training.threads import CpuMeter, available_cores, configure_threads, resolve_threads

ROOT = Path(__file__).resolve().parents[2]


def test_affinity_is_the_default():
    assert resolve_threads({}) == (available_cores(), "affinity")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_segqa_threads_wins_over_omp_and_overrides_the_pool_variables():
    env = {"SEGQA_THREADS": "3", "OMP_NUM_THREADS": "1"}
    assert resolve_threads(env) == (3, "SEGQA_THREADS")
    assert configure_threads(env) == 3
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"


def test_an_existing_omp_num_threads_is_respected():
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "5"}
    assert configure_threads(env) == 1
    assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "5", "OPENBLAS_NUM_THREADS": "1"}


def test_unset_variables_get_the_affinity_count():
    env: dict[str, str] = {}
    assert configure_threads(env) == available_cores()
    assert env["OMP_NUM_THREADS"] == str(available_cores())


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_an_invalid_value_names_the_variable(value):
    with pytest.raises(SegqaError, match=f"SEGQA_THREADS={value!r}"):
        resolve_threads({"SEGQA_THREADS": value})


def test_configure_falls_back_to_affinity_on_an_invalid_value(capsys):
    env = {"SEGQA_THREADS": "lots", "OMP_NUM_THREADS": "1"}
    assert configure_threads(env) == available_cores()
    assert env["OMP_NUM_THREADS"] == str(available_cores()) and "SEGQA_THREADS" not in env
    assert "SEGQA_THREADS='lots'" in capsys.readouterr().err


def test_cpu_meter_sees_a_busy_loop():
    meter = CpuMeter()
    while meter.read()[0] < 0.2:
        sum(range(1000))
    assert meter.cores_busy() > 0.1  # a shared machine may preempt us; zero would mean nothing was measured


def test_mxnet_loaded_through_segqa_gets_the_affinity_count():
    """In a fresh interpreter without the variables, importing the CLI sets them before MXNet loads."""
    code = ("import os, json, qa_workflow.cli, training.nets, mxnet; "
            "print(json.dumps([os.environ.get('OMP_NUM_THREADS'), len(os.sched_getaffinity(0))]))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "SEGQA_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    omp, cores = json.loads(out.stdout.strip().splitlines()[-1])
    assert omp == str(cores)
