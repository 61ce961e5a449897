"""ENet gradients (PReLU slopes included) against float64 central differences, imperative and hybridized.

With MXNet 1.9.1's own PReLU (``LeakyReLU(act_type="prelu")``) the hybridized slope gradients come out
multiplied by the slopes (exactly a quarter at initialisation) while the imperative ones are right; the
network's `training.nets.enet.PReLU` is right in both modes, in its training formulations ("fused", the native
kernel of `training.native`; "conv", a depthwise 1x1 convolution for the slopes, where the kernel is not built)
and the one before them ("mul"). The slopes are drawn in [-0.3, 0.6] so that a
gradient scaled by the slope cannot pass.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from training import native
from training.nets import build_network

#: The formulations training may use; "fused" needs the native kernel, which make builds wherever a C++
#: compiler is (tests/training/test_native.py fails when it should be there and is not).
TRAINING_FORMULATIONS = [pytest.param("fused", marks=pytest.mark.skipif(not native.load(), reason=native.status())),
                         "conv", "mul"]

SHAPE = (2, 1, 16, 16)
#: Parameters checked: the first PReLU slopes of the encoder (several kinds of block) and a convolution.
CHECKED = ("enet_init_prelu0_alpha", "enet_s1_bottleneck0_ext_prelu0_alpha", "enet_s1_bottleneck0_prelu0_alpha",
           "enet_s1_bottleneck1_ext_prelu1_alpha", "enet_s2_bottleneck0_ext_prelu0_alpha",
           "enet_init_conv0_weight")


def _net(hybridize: bool, prelu: str):
    mx.random.seed(3)
    net = build_network("enet", width=0.125, dropout=(0.0, 0.0), prelu=prelu)
    net.initialize(mx.init.Xavier())
    net(nd.zeros((1, *SHAPE[1:])))
    net.cast("float64")
    rng = np.random.default_rng(1)
    for name, p in net.collect_params().items():  # slopes away from 0.25 and of both signs
        if name.endswith("alpha"):
            p.set_data(nd.array(rng.uniform(-0.3, 0.6, size=p.shape), dtype="float64"))
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


@pytest.mark.parametrize("prelu", TRAINING_FORMULATIONS)
@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_gradients_match_central_differences_in_float64(hybridize, prelu):
    net = _net(hybridize, prelu)
    x = nd.array(np.random.default_rng(0).normal(size=SHAPE), dtype="float64")

    def loss():
        return (net(x) ** 2).mean()

    with autograd.record():  # training mode: BatchNorm on batch statistics, dropout rates are 0
        value = loss()
    value.backward()
    params = net.collect_params()
    eps = 1e-7  # the loss is piecewise smooth (ReLU, max-pool): a kink lies within 1e-5 of some slopes
    for name in CHECKED:
        p = params[name]
        base = p.data().asnumpy()
        grad = p.grad().asnumpy().ravel()
        for i in range(min(3, base.size)):
            sides = []
            for step in (eps, -eps):
                moved = base.copy().ravel()
                moved[i] += step
                p.set_data(nd.array(moved.reshape(base.shape), dtype="float64"))
                with autograd.train_mode():
                    sides.append(loss().asscalar())
            p.set_data(nd.array(base, dtype="float64"))
            numeric = (sides[0] - sides[1]) / (2 * eps)
            assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, i)


@pytest.mark.parametrize("prelu", TRAINING_FORMULATIONS)
def test_training_and_inference_formulations_compute_the_same_network(prelu):
    """Training builds the ENet with the "fused" or "conv" PReLU ("mul" before), inference and export with
    MXNet's op; same weights, same logits."""
    from training.nets.enet import ENet

    x = nd.array(np.random.default_rng(2).normal(size=(2, 1, 32, 48)))
    mx.random.seed(0)
    train_net = ENet(width=0.25, prelu=prelu)
    train_net.initialize(mx.init.Xavier())
    train_net(x)
    infer_net = ENet(width=0.25, prelu="native")
    infer_net.initialize()
    infer_net(x)
    for (_, a), (_, b) in zip(sorted(train_net.collect_params().items()), sorted(infer_net.collect_params().items()),
                                  strict=True):
        b.set_data(a.data())
    for net in (train_net, infer_net):
        net.hybridize(static_alloc=True)
    np.testing.assert_allclose(train_net(x).asnumpy(), infer_net(x).asnumpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not native.load(), reason=native.status())
@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_the_fused_tail_drops_whole_channels_and_scales_the_rest(activation):
    """"fused" computes a bottleneck's tail, out_act(x + dropout(ext)), in one operator with the dropout mask
    drawn per (sample, channel): in training every output map is the activation of x + 0 * ext or of
    x + ext / (1 - p); at inference nothing is dropped, unless the network is built for MC-dropout."""
    from training.nets.enet import Bottleneck

    x = nd.array(np.random.default_rng(5).normal(size=(4, 8, 6, 6)))

    def act(z):
        return np.maximum(z, 0) + (0.25 if activation == "prelu" else 0.0) * np.minimum(z, 0)

    for mc in (False, True):
        mx.random.seed(1)
        block = Bottleneck(8, 8, "regular", dropout=0.5, activation=activation, mc_dropout=mc, prelu="fused")
        block.initialize(mx.init.Xavier())
        block.hybridize(static_alloc=True)
        with autograd.record():  # training mode: batch statistics, dropout on
            y = block(x).asnumpy()
            ext = x
            for i in range(len(block.ext) - 1):
                ext = block.ext[i](ext)
        kept, dropped = act(x.asnumpy() + 2.0 * ext.asnumpy()), act(x.asnumpy())
        is_kept = np.isclose(y, kept, atol=1e-5).all(axis=(2, 3))
        is_dropped = np.isclose(y, dropped, atol=1e-5).all(axis=(2, 3))
        assert np.all(is_kept ^ is_dropped)  # every map one or the other, never a mix
        assert 4 <= is_dropped.sum() <= 28  # of 32 maps at p = 0.5
        first, second = block(x).asnumpy(), block(x).asnumpy()  # inference
        if mc:
            assert not np.allclose(first, second)
        else:
            ext = x
            for i in range(len(block.ext) - 1):
                ext = block.ext[i](ext)
            np.testing.assert_allclose(first, act(x.asnumpy() + ext.asnumpy()), rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(first, second)
