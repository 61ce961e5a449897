"""`training.optimizer.BatchedAdam`: MXNet's Adam, its updates run 50 arrays per operator call."""

from __future__ import annotations

import pickle

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from training.optimizer import MAX_TENSORS_PER_CALL, BatchedAdam


def _run(optimizer, steps=6, n=MAX_TENSORS_PER_CALL + 13, seed=0):
    """Weights after ``steps`` updates of ``n`` arrays (more than one call's worth) from the same gradients."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 4)))) for _ in range(n)]
    weights = [nd.array(rng.normal(size=s)) for s in shapes]
    updater = mx.optimizer.get_updater(optimizer)
    for _ in range(steps):
        grads = [nd.array(rng.normal(scale=float(rng.choice([1e-6, 1.0, 30.0])), size=s)) for s in shapes]
        updater(list(range(n)), grads, weights)
    return [w.asnumpy() for w in weights], updater


@pytest.mark.parametrize("options", [{}, {"clip_gradient": 0.5}, {"wd": 1e-3}],
                         ids=["plain", "clipped", "weight-decay"])
def test_batched_adam_updates_as_adam_does(options):
    settings = {"learning_rate": 0.01, "rescale_grad": 0.25, **options}
    expected, _ = _run(mx.optimizer.Adam(**settings))
    got, updater = _run(BatchedAdam(**settings))
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert updater.optimizer._index_update_count == {i: 6 for i in range(MAX_TENSORS_PER_CALL + 13)}


def test_batched_adam_state_is_adams():
    _, updater = _run(BatchedAdam(learning_rate=0.01), steps=2)
    states = updater.get_states(dump_optimizer=True)
    plain = mx.optimizer.get_updater(mx.optimizer.Adam(learning_rate=0.01))
    plain.set_states(states)  # a checkpoint of one loads into the other (same moments, same counts)
    restored, optimizer = pickle.loads(states)
    assert isinstance(optimizer, BatchedAdam) and optimizer._index_update_count[0] == 2
    assert all(len(s) == 2 for s in restored.values())


def test_more_arrays_than_one_call_takes_are_split():
    rng = np.random.default_rng(1)
    n = 2 * MAX_TENSORS_PER_CALL + 1
    weights = [nd.array(rng.normal(size=(3,))) for _ in range(n)]
    grads = [nd.array(rng.normal(size=(3,))) for _ in range(n)]
    opt = BatchedAdam(learning_rate=0.1)
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    before = [w.asnumpy() for w in weights]
    opt.update_multi_precision(list(range(n)), weights, grads, states)  # one direct call: must not abort
    assert all(np.abs(w.asnumpy() - b).max() > 0 for w, b in zip(weights, before, strict=True))
