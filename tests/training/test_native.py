"""The native training kernels (`training.native`): built where a compiler is, exact where they run, and a
clear fallback where they cannot be built or are turned off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from training import native


def test_make_built_the_kernels_wherever_a_compiler_is(tmp_path):
    if shutil.which(os.environ.get("CXX") or "g++") is None:
        pytest.skip("no C++ compiler on this machine: training uses the pure-MXNet PReLU")
    assert native.build(tmp_path / "again.so").stat().st_size > 0  # the source compiles as it stands
    assert native.library_path().is_file(), "make builds the native kernels when it sets up .venv: run make"
    assert native.load(), native.status()
    from training.nets import build_network

    assert build_network("enet", width=0.125).prelu == "fused"


@pytest.mark.skipif(not native.load(), reason=native.status())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_segqa_prelu_is_exact_both_ways(dtype):
    rng = np.random.default_rng(0)
    x = nd.array(rng.normal(size=(3, 5, 7, 9)), dtype=dtype)
    alpha = nd.array(rng.uniform(-0.3, 0.6, size=5), dtype=dtype)
    dy = nd.array(rng.normal(size=x.shape), dtype=dtype)
    x.attach_grad()
    alpha.attach_grad()
    with autograd.record():
        y = nd.segqa_prelu(x, alpha)
    y.backward(dy)
    xn, an, gn = x.asnumpy(), alpha.asnumpy()[None, :, None, None], dy.asnumpy()
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(y.asnumpy(), np.maximum(xn, 0) + an * np.minimum(xn, 0), **tol)
    np.testing.assert_allclose(x.grad.asnumpy(), gn * np.where(xn > 0, 1.0, an), **tol)
    np.testing.assert_allclose(alpha.grad.asnumpy(), (gn * np.minimum(xn, 0)).sum(axis=(0, 2, 3)),
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.skipif(not native.load(), reason=native.status())
def test_segqa_prelu_refuses_a_slope_of_the_wrong_shape():
    with pytest.raises(mx.base.MXNetError, match="alpha must have shape"):
        nd.segqa_prelu(nd.ones((1, 4, 2, 2)), nd.ones((3,))).wait_to_read()


def test_without_the_library_the_enet_trains_with_the_pure_mxnet_prelu(tmp_path):
    code = ("import training\nfrom training import native\nfrom training.nets import build_network\n"
            "print(build_network('enet', width=0.125).prelu, '|', native.status())")
    for env, expected in (({"SEGQA_NATIVE": "0"}, "turned off (SEGQA_NATIVE=0)"),
                          ({"SEGQA_NATIVE_LIB": str(tmp_path / "none.so")}, "not built")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout
        assert out.startswith("conv |") and expected in out, out


def test_building_without_a_compiler_says_why(tmp_path):
    cmd = [sys.executable, "-m", "training.native", "--out", str(tmp_path / "lib.so")]
    env = {**os.environ, "CXX": "no-such-compiler-segqa"}
    optional = subprocess.run([*cmd, "--optional"], capture_output=True, text=True, env=env)
    assert optional.returncode == 0 and "no C++ compiler 'no-such-compiler-segqa'" in optional.stderr
    required = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert required.returncode == 1 and required.stderr.startswith("error: native training kernels not built")
    assert not list(tmp_path.iterdir())  # nothing half-written
