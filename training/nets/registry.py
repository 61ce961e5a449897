"""The segmentation networks by name: building one, counting and loading its parameters.

`build_network("unet" | "enet", width=1.0)` is the one way the rest of segqa makes a network; ``width`` scales
every layer's filter count (tiny variants such as ``width=0.125`` keep the tests fast). The network names are
`qa_workflow.contract.NETWORKS`.

Parameters are named with a fixed prefix per network (``unet_`` / ``enet_``), so checkpoints written by
``save_parameters`` and the ``arg:``/``aux:`` params of an exported symbol map onto the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd
from mxnet.gluon import nn

from qa_workflow.contract import NETWORKS, NUM_CLASSES, SegqaError
from training.nets.blocks import SegmentationNet
from training.nets.enet import ENet
from training.nets.unet import UNet

__all__ = ["NETWORKS", "build_network", "load_params", "count_parameters"]


def build_network(network: str, width: float = 1.0, num_classes: int = NUM_CLASSES, in_channels: int = 1,
                  mc_dropout: bool = False, dropout: Any = None, prelu: str = "auto") -> SegmentationNet:
    """A fresh, uninitialised U-Net or ENet; ``mc_dropout`` keeps spatial dropout on at inference.

    ``dropout`` overrides the spatial-dropout rate(s): a number for the U-Net, (stage 1, later) for the ENet;
    None keeps the defaults (U-Net 0.1; ENet 0.01 and 0.1 as in the paper). ``prelu``: how the ENet computes
    its PReLUs (`training.nets.enet.PReLU`; "auto" for training: the native kernel when it is built, else
    "conv"; "native" is fine for inference only); the parameters are the same either way.
    """
    name = str(network).lower()
    extra: dict[str, Any] = {} if dropout is None else {"dropout": dropout if name == "unet" else tuple(dropout)}
    if name == "unet":
        return UNet(in_channels=in_channels, num_classes=num_classes, width=width, mc_dropout=mc_dropout, **extra)
    if name == "enet":
        return ENet(in_channels=in_channels, num_classes=num_classes, width=width, mc_dropout=mc_dropout,
                    prelu=prelu, **extra)
    raise SegqaError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")


def count_parameters(net: nn.Block, input_shape: tuple[int, int] = (176, 208), trainable_only: bool = True) -> int:
    """Number of parameters (initialises the network on the CPU with one dummy forward if needed)."""
    params = net.collect_params()
    if any(p._data is None for p in params.values()):  # deferred init needs one forward
        net.initialize(mx.init.Xavier(), ctx=mx.cpu(), force_reinit=False)
        net(nd.zeros((1, getattr(net, "in_channels", 1), *input_shape)))
    return int(sum(int(np.prod(p.shape)) for p in params.values()
                   if not trainable_only or p.grad_req != "null"))


def load_params(net: nn.Block, path: str | Path, ctx: mx.Context | None = None) -> None:
    """Load a ``.params`` file written by ``save_parameters`` or by ``HybridBlock.export`` into ``net``.

    Every parameter must be present with the right shape and nothing may be left over; otherwise one
    SegqaError names the file and what does not match (a corrupted file, or params of another network/width).
    """
    path = Path(path)
    ctx = ctx or mx.cpu()
    if not path.is_file():
        raise SegqaError(f"{path}: params file missing")
    try:
        loaded = nd.load(str(path))
    except Exception as exc:  # mxnet raises MXNetError with a C++ stack trace; keep its first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegqaError(f"{path}: not a readable MXNet params file (corrupted or truncated?): {first}") from None
    if not isinstance(loaded, dict):
        raise SegqaError(f"{path}: expected named parameters, found an unnamed list of arrays")
    arrays = {(k[4:] if k[:4] in ("arg:", "aux:") else k): v for k, v in loaded.items()}
    params = net.collect_params()
    # save_parameters writes structural names (``enc0.conv0.weight``); export writes full prefixed names.
    by_structure = {k: p for k, p in net._collect_params_with_prefix().items()}
    table = by_structure if set(arrays) & set(by_structure) else dict(params.items())
    missing = sorted(set(table) - set(arrays))
    extra = sorted(set(arrays) - set(table))
    if missing or extra:
        what = []
        if missing:
            what.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            what.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise SegqaError(f"{path}: parameters do not match this {getattr(net, 'network', 'network')} "
                         f"(width {getattr(net, 'width', '?')}): {', '.join(what)}; was it written for another "
                         "network or width?")
    for name, param in table.items():
        value = arrays[name]
        known = tuple(param.shape or ())  # 0 marks a dimension still unknown (deferred initialisation)
        if len(known) != len(value.shape) or any(a not in (0, b) for a, b in zip(known, value.shape)):
            raise SegqaError(f"{path}: parameter {name} has shape {tuple(value.shape)}, this network expects "
                             f"{tuple(param.shape)}; was it written for another network or width?")
        if not np.isfinite(value.asnumpy()).all():
            raise SegqaError(f"{path}: parameter {name} contains NaN or inf (a diverged or corrupted model)")
    for name, param in table.items():
        param._load_init(arrays[name], ctx)
