"""U-Net and ENet: shapes, parameter counts, input checks, MC-dropout switch."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from qa_workflow.contract import SegqaError
from training.nets import build_network, count_parameters, nearest_valid_sizes


def _tiny(name: str, **kw):
    net = build_network(name, width=0.125, **kw)
    net.initialize(mx.init.Xavier())
    return net


@pytest.mark.parametrize("name", ["unet", "enet"])
@pytest.mark.parametrize("hw", [(176, 208), (64, 96), (32, 48), (208, 176)])
def test_logits_keep_the_input_size(name, hw):
    net = _tiny(name)
    out = net(nd.zeros((2, 1, *hw)))
    assert out.shape == (2, 4, *hw)
    net.hybridize()
    assert net(nd.ones((1, 1, *hw))).shape == (1, 4, *hw)


@pytest.mark.parametrize("name, expected", [("unet", 7.8e6), ("enet", 0.36e6)])
def test_full_size_parameter_counts(name, expected):
    n = count_parameters(build_network(name), input_shape=(32, 32))
    assert abs(n - expected) / expected < 0.05, n


def test_width_multiplier_shrinks_the_network():
    assert count_parameters(build_network("unet", width=0.125), (32, 32)) < 0.02 * 7.8e6


@pytest.mark.parametrize("name", ["unet", "enet"])
def test_wrong_channel_count_is_one_clear_error(name):
    net = _tiny(name)
    with pytest.raises(SegqaError, match="expected 1 channel"):
        net(nd.zeros((1, 3, 64, 64)))


def test_size_not_divisible_names_the_nearest_valid_size():
    net = _tiny("unet")
    with pytest.raises(SegqaError, match=r"height 100 \(nearest valid: 96 or 112\)"):
        net(nd.zeros((1, 1, 100, 208)))
    assert nearest_valid_sizes(100, 16) == (96, 112)
    assert nearest_valid_sizes(5, 16) == (16, 16)
    # the ENet downsamples 3 times: multiples of 8 suffice
    assert _tiny("enet")(nd.zeros((1, 1, 40, 48))).shape == (1, 4, 40, 48)


def test_unknown_network():
    with pytest.raises(SegqaError, match="unet, enet"):
        build_network("segnet")


@pytest.mark.parametrize("name", ["unet", "enet"])
def test_mc_dropout_twin_is_stochastic_and_the_plain_network_is_not(name, tmp_path):
    from training.nets import load_params

    net = _tiny(name)
    x = nd.array(np.random.default_rng(0).normal(size=(2, 1, 64, 64)))
    a, b = net(x).asnumpy(), net(x).asnumpy()
    np.testing.assert_array_equal(a, b)  # inference: dropout off, BatchNorm frozen
    net.save_parameters(str(tmp_path / "w.params"))
    twin = build_network(name, width=0.125, mc_dropout=True)
    twin.initialize()
    load_params(twin, tmp_path / "w.params")
    c, d = twin(x).asnumpy(), twin(x).asnumpy()
    assert not np.allclose(c, d)  # spatial dropout stays on
    mx.random.seed(3)
    e = twin(x).asnumpy()
    mx.random.seed(3)
    np.testing.assert_array_equal(e, twin(x).asnumpy())  # reproducible for a seed
