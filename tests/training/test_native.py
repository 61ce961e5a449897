"""The native training kernels (`training.native`): built where a compiler is, exact where they run, and a
clear fallback where they cannot be built or are turned off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from training import native

needs_native = pytest.mark.skipif(not native.load(), reason=native.status())


def test_make_built_the_kernels_wherever_a_compiler_is(tmp_path):
    if shutil.which(os.environ.get("CXX") or "g++") is None:
        pytest.skip("no C++ compiler on this machine: training uses the pure-MXNet PReLU")
    assert native.build(tmp_path / "again.so").stat().st_size > 0  # the source compiles as it stands
    assert native.library_path().is_file(), "make builds the native kernels when it sets up .venv: run make"
    assert native.load(), native.status()
    from training.nets import build_network

    assert build_network("enet", width=0.125).prelu == "fused"


@needs_native
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


@needs_native
def test_segqa_prelu_refuses_a_slope_of_the_wrong_shape():
    with pytest.raises(mx.base.MXNetError, match="alpha must have shape"):
        nd.segqa_prelu(nd.ones((1, 4, 2, 2)), nd.ones((3,))).wait_to_read()


@needs_native
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_segqa_residual_prelu_is_exact_both_ways(dtype):
    rng = np.random.default_rng(1)
    shape = (3, 5, 6, 7)
    ext, main, dy = (nd.array(rng.normal(size=shape), dtype=dtype) for _ in range(3))
    mask = nd.array(rng.choice([0.0, 1.25], size=(3, 5, 1, 1)), dtype=dtype)  # dropout at p = 0.2
    alpha = nd.array(rng.uniform(-0.3, 0.6, size=5), dtype=dtype)
    inputs = (ext, main, mask, alpha)
    for t in inputs:
        t.attach_grad()
    with autograd.record():
        y = nd.segqa_residual_prelu(*inputs)
    y.backward(dy)
    e, m, k, a, g = ext.asnumpy(), main.asnumpy(), mask.asnumpy(), alpha.asnumpy()[None, :, None, None], dy.asnumpy()
    z = m + k * e
    dz = g * np.where(z > 0, 1.0, a)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(y.asnumpy(), np.maximum(z, 0) + a * np.minimum(z, 0), **tol)
    np.testing.assert_allclose(main.grad.asnumpy(), dz, **tol)
    np.testing.assert_allclose(ext.grad.asnumpy(), dz * k, **tol)
    np.testing.assert_allclose(mask.grad.asnumpy(), (dz * e).sum(axis=(2, 3), keepdims=True), **tol)
    np.testing.assert_allclose(alpha.grad.asnumpy(), (g * np.minimum(z, 0)).sum(axis=(0, 2, 3)), **tol)


@needs_native
@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 9)], ids=["even", "odd"])
def test_segqa_maxpool2_is_mxnet_max_pooling(shape):
    rng = np.random.default_rng(2)
    x = nd.array(rng.normal(size=shape))
    dy = nd.array(rng.normal(size=(shape[0], shape[1], shape[2] // 2, shape[3] // 2)))
    results = []
    for pool in (nd.segqa_maxpool2, lambda v: nd.Pooling(v, kernel=(2, 2), stride=(2, 2), pool_type="max")):
        v = x.copy()
        v.attach_grad()
        with autograd.record():
            y = pool(v)
        y.backward(dy)
        results.append((y.asnumpy(), v.grad.asnumpy()))
    (y, dx), (y_ref, dx_ref) = results
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)  # odd: the last row and column get no gradient


@needs_native
def test_segqa_maxpool2_gives_a_tied_window_s_gradient_to_its_first_maximum():
    x = nd.array(np.array([[[[1.0, 3.0], [3.0, 3.0]]]]))
    x.attach_grad()
    with autograd.record():
        y = nd.segqa_maxpool2(x)
    y.backward(nd.array([[[[5.0]]]]))
    assert y.asscalar() == 3.0
    np.testing.assert_array_equal(x.grad.asnumpy()[0, 0], [[0.0, 5.0], [0.0, 0.0]])


@needs_native
def test_segqa_seg_loss_gradient_matches_central_differences_in_float64():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, 5, 6)) * 2
    labels = nd.array(rng.integers(0, 4, size=(2, 5, 6)), dtype="float64")
    labels[0, 0] = 255  # a row of ignored pixels
    weights = nd.array([0.5, 2.0, 1.0, 1.5], dtype="float64")

    def loss(z):
        dice, ce, _ = nd.segqa_seg_loss(z, labels, weights, smooth=1.0)
        return 0.3 * dice + 0.7 * ce

    z = nd.array(logits, dtype="float64")
    z.attach_grad()
    with autograd.record():
        value = loss(z)
    value.backward()
    grad = z.grad.asnumpy()
    assert np.all(grad[0, :, 0] == 0.0)
    eps = 1e-6
    for idx in [(0, 0, 1, 2), (0, 3, 4, 5), (1, 1, 0, 0), (1, 2, 3, 1)]:
        sides = []
        for step in (eps, -eps):
            moved = logits.copy()
            moved[idx] += step
            sides.append(loss(nd.array(moved, dtype="float64")).asscalar())
        assert grad[idx] == pytest.approx((sides[0] - sides[1]) / (2 * eps), rel=1e-6, abs=1e-10), idx


@needs_native
def test_segqa_seg_loss_does_not_depend_on_the_thread_count():
    code = ("import numpy as np\nfrom mxnet import nd\nfrom training import native\nassert native.load()\n"
            "rng = np.random.default_rng(4)\nz = nd.array(rng.normal(size=(4, 4, 96, 80)))\n"
            "y = nd.array(rng.integers(0, 4, size=(4, 96, 80)))\n"
            "d, c, _ = nd.segqa_seg_loss(z, y, nd.array([1.0, 4.0, 2.0, 2.0]))\n"
            "print(repr(float(d.asscalar())), repr(float(c.asscalar())))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": t}).stdout for t in ("1", "2", "3")}
    assert len(outs) == 1, outs


@needs_native
def test_the_native_operators_refuse_wrong_shapes():
    with pytest.raises(mx.base.MXNetError, match="mask must hold one value per"):
        maps = nd.ones((2, 3, 4, 4))
        nd.segqa_residual_prelu(maps, maps, nd.ones((2, 2)), nd.ones(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="labels must have shape"):
        nd.segqa_seg_loss(nd.ones((2, 4, 4, 4)), nd.ones((2, 4, 5)), nd.ones(4))[0].wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="input .N, C, H, W."):
        nd.segqa_maxpool2(nd.ones((2, 4, 4))).wait_to_read()


@needs_native
def test_a_library_without_every_operator_is_not_used(tmp_path):
    """A library built from an older source (here: one holding only segqa_prelu) falls back as a whole."""
    source = native.SOURCE.read_text()
    older = tmp_path / "older.cc"
    cut = source.index("REGISTER_OP(segqa_residual_prelu)")
    older.write_text(source[:cut] + source[source.index("MXReturnValue initialize"):])
    code = ("from training import native\nfrom training.nets import build_network\n"
            "print(build_network('enet', width=0.125).prelu, '|', native.status())")
    lib = tmp_path / "older.so"
    subprocess.run([sys.executable, "-c", f"from pathlib import Path\nfrom training import native\n"
                    f"native.SOURCE = Path({str(older)!r})\nnative.build(Path({str(lib)!r}))"], check=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SEGQA_NATIVE_LIB": str(lib)}).stdout
    assert out.startswith("conv |") and "has no segqa_residual_prelu, segqa_maxpool2, segqa_seg_loss" in out, out


def test_the_sagemaker_entry_point_builds_the_library_where_none_was_built(tmp_path, write_dataset):
    """A SageMaker container runs training/train.py from the source bundle, with no make before it: the entry point
    builds the operators into a temporary folder when a compiler is there, and trains without them when not."""
    if shutil.which(os.environ.get("CXX") or "g++") is None:
        pytest.skip("no C++ compiler on this machine")
    data = write_dataset(tmp_path / "data")
    cmd = [sys.executable, "-m", "training.train", "--train", str(data), "--network", "enet", "--width", "0.125",
           "--epochs", "1", "--batch-size", "3", "--augment", "false"]
    env = {**os.environ, "SEGQA_NATIVE_LIB": str(tmp_path / "not-built.so"), "TMPDIR": str(tmp_path)}
    for compiler, expected in (("g++", "fused"), ("no-such-compiler-segqa", "conv")):
        out = tmp_path / f"model-{expected}"
        proc = subprocess.run([*cmd, "--model-dir", str(out)], capture_output=True, text=True,
                              env={**env, "CXX": compiler})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        card = json.loads((out / "model_card.json").read_text())
        assert card["training"]["prelu"] == expected
    assert [p.name for p in tmp_path.glob("segqa-native-*/*")] == ["libsegqa_ops.so"]  # the failed build left none
    assert "native training operators not built (no C++ compiler 'no-such-compiler-segqa'" in proc.stdout


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
