"""Adam with its updates batched: up to 50 tensors per operator call instead of one (issue #14).

MXNet 1.9's ``Adam`` runs one ``adam_update`` per parameter array. The ENet has 325 of them, most smaller than
a thousand numbers, so its optimizer step is per-operator overhead: ~27 ms of a ~200 ms training step on the
2-core machine. `BatchedAdam` hands MXNet's ``Updater`` lists of up to `MAX_TENSORS_PER_CALL` arrays and updates
them with one call of MXNet's multi-tensor AdamW kernel (``contrib.multi_adamw_update``), ~11 ms per step.

Same update: AdamW with eta 1 and no weight decay *is* Adam, the bias correction going into each array's
learning rate exactly as ``Adam.update`` does (``lr · sqrt(1 − β2^t) / (1 − β1^t)``, t counted per array).
With weight decay (Adam couples it into the gradient, AdamW does not) it falls back to Adam's own update.
The state (mean, variance per array) and the update counts are Adam's, so ``Trainer.save_states`` /
``load_states`` checkpoints move between the two. tests/training/test_optimizer.py checks the weights step by
step against ``mx.optimizer.Adam``.
"""

from __future__ import annotations

import math
from typing import Any

import mxnet as mx

__all__ = ["BatchedAdam", "MAX_TENSORS_PER_CALL"]

#: The most arrays MXNet 1.9.1's multi-tensor AdamW kernel takes in one call: 50 runs, 51 aborts the process
#: (a failed shape check in C++, not a Python exception), so the limit is enforced here.
MAX_TENSORS_PER_CALL = 50


@mx.optimizer.register
class BatchedAdam(mx.optimizer.Adam):
    """``mx.optimizer.Adam`` whose updates run ``MAX_TENSORS_PER_CALL`` arrays per operator call.
    ``gluon.Trainer(params, "batchedadam", {...})`` takes the same options as ``"adam"``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aggregate_num = MAX_TENSORS_PER_CALL  # the Updater then passes lists of at most this many

    def update_multi_precision(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        if not isinstance(index, (list, tuple)):
            super().update_multi_precision(index, weight, grad, state)
            return
        wds = self._get_wds(index)
        if any(wds) or any(w.dtype != weight[0].dtype or w.stype != "default" for w in weight):
            for i, w, g, s in zip(index, weight, grad, state):
                super().update_multi_precision(i, w, g, s)
            return
        if len(index) > MAX_TENSORS_PER_CALL:  # the Updater never passes more; a direct caller may
            for a in range(0, len(index), MAX_TENSORS_PER_CALL):
                part = slice(a, a + MAX_TENSORS_PER_CALL)
                self.update_multi_precision(index[part], weight[part], grad[part], state[part])
            return
        self._update_count(index)
        lrs = self._get_lrs(index)
        for k, idx in enumerate(index):
            t = self._index_update_count[idx]
            lrs[k] *= math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        mx.nd.contrib.multi_adamw_update(
            list(weight), list(grad), [s[0] for s in state], [s[1] for s in state], rescale_grad=self.rescale_grad,
            lrs=lrs, wds=wds, etas=[1.0] * len(index), beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
            clip_gradient=self.clip_gradient if self.clip_gradient else -1.0, out=list(weight))
