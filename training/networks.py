"""The segmentation networks by name, and the parts both of them share.

`build_network("unet" | "enet", width=1.0)` is the one way the rest of segqa makes a network; ``width`` scales
every layer's filter count (tiny variants such as ``width=0.125`` keep the tests fast). Both networks are Gluon
HybridBlocks that map a batch of normalised single-channel slices (N, 1, H, W) float32 to class logits
(N, 4, H, W); `SegmentationNet.predict_proba` turns them into softmax probabilities.

Input geometry: the U-Net pools four times and the ENet downsamples three times, so H and W must be multiples
of 16 (U-Net) or 8 (ENet); 176 x 208 is valid for both. A wrong size is refused with the nearest valid sizes
rather than silently padded, so a prediction always lines up pixel for pixel with its input.

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

from qa_workflow.contract import NUM_CLASSES, SegqaError

__all__ = ["NETWORKS", "SpatialDropout", "SegmentationNet", "build_network", "check_input_shape",
           "nearest_valid_sizes", "load_params", "count_parameters"]

NETWORKS = ("unet", "enet")


class SpatialDropout(nn.Dropout):
    """Channel-wise ("spatial") dropout: whole feature maps are dropped, ``Dropout(rate, axes=(2, 3))``.

    With ``always=True`` the maps are dropped in inference too (MC-dropout); BatchNorm stays in inference
    mode because the network itself is not switched to training. The ``always`` variant is never exported:
    the MXNet -> ONNX converter only knows the training-mode Dropout (an Identity at inference).
    """

    def __init__(self, rate: float, always: bool = False, **kwargs: Any) -> None:
        super().__init__(rate, axes=(2, 3), **kwargs)
        self._always = bool(always)

    def hybrid_forward(self, F, x):  # noqa: N803 (Gluon's signature)
        if self._always and self._rate > 0:
            return F.Dropout(x, p=self._rate, axes=self._axes, mode="always", name="fwd", cudnn_off=False)
        return super().hybrid_forward(F, x)


def nearest_valid_sizes(size: int, divisor: int) -> tuple[int, int]:
    """The multiples of ``divisor`` just below and just above ``size`` (below is at least ``divisor``)."""
    low = max(divisor, (size // divisor) * divisor)
    high = -(-size // divisor) * divisor
    return low, max(high, divisor)


def check_input_shape(shape: tuple[int, ...], in_channels: int, divisor: int, name: str = "input") -> None:
    """Raise SegqaError unless ``shape`` is (N, in_channels, H, W) with H and W multiples of ``divisor``."""
    if len(shape) != 4:
        raise SegqaError(f"{name}: expected a batch of shape (N, {in_channels}, H, W), got {tuple(shape)}")
    if shape[1] != in_channels:
        raise SegqaError(f"{name}: expected {in_channels} channel(s) (grayscale MRI), got {shape[1]} "
                         f"in shape {tuple(shape)}")
    bad = []
    for axis, size in (("height", shape[2]), ("width", shape[3])):
        if size < divisor or size % divisor:
            low, high = nearest_valid_sizes(size, divisor)
            nearest = f"{low}" if low == high else f"{low} or {high}"
            bad.append(f"{axis} {size} (nearest valid: {nearest})")
    if bad:
        raise SegqaError(f"{name}: {' and '.join(bad)} is not a multiple of {divisor}; this network needs H and W "
                         f"divisible by {divisor} (176x208 is valid); crop or pad the slice first")


class SegmentationNet(nn.HybridBlock):
    """Base of the two networks: input checks, ``predict_proba``, and the facts a model card records.

    Subclasses set ``network`` ("unet"/"enet"), ``divisor`` and build their layers; ``hybrid_forward``
    returns logits (N, num_classes, H, W).
    """

    network = ""
    divisor = 1

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: float = 1.0,
                 mc_dropout: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not width > 0:
            raise SegqaError(f"width multiplier must be > 0, got {width}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.width = float(width)
        self.mc_dropout = bool(mc_dropout)

    def forward(self, x, *args):
        if isinstance(x, nd.NDArray):
            check_input_shape(x.shape, self.in_channels, self.divisor, name=f"{self.network} input")
        return super().forward(x, *args)

    def predict_proba(self, x: nd.NDArray) -> np.ndarray:
        """Softmax probabilities (N, num_classes, H, W) float32 for normalised input ``x`` (N, C, H, W)."""
        return nd.softmax(self(x), axis=1).asnumpy().astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """The architecture facts that rebuild this network (stored in the model card)."""
        return {"network": self.network, "in_channels": self.in_channels, "num_classes": self.num_classes,
                "width": self.width, "divisor": self.divisor}


def build_network(network: str, width: float = 1.0, num_classes: int = NUM_CLASSES, in_channels: int = 1,
                  mc_dropout: bool = False, dropout: Any = None) -> SegmentationNet:
    """A fresh, uninitialised U-Net or ENet; ``mc_dropout`` keeps spatial dropout on at inference.

    ``dropout`` overrides the spatial-dropout rate(s): a number for the U-Net, (stage 1, later) for the ENet;
    None keeps the defaults (U-Net 0.1; ENet 0.01 and 0.1 as in the paper).
    """
    name = str(network).lower()
    extra = {} if dropout is None else {"dropout": dropout if name == "unet" else tuple(dropout)}
    if name == "unet":
        from training.unet import UNet

        return UNet(in_channels=in_channels, num_classes=num_classes, width=width, mc_dropout=mc_dropout, **extra)
    if name == "enet":
        from training.enet import ENet

        return ENet(in_channels=in_channels, num_classes=num_classes, width=width, mc_dropout=mc_dropout, **extra)
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
