"""Parts both segmentation networks share: spatial dropout, the input-geometry check, and the base class.

Both networks are Gluon HybridBlocks that map a batch of normalised single-channel slices (N, 1, H, W) float32
to class logits (N, 4, H, W); `SegmentationNet.predict_proba` turns them into softmax probabilities.

Input geometry: the U-Net pools four times and the ENet downsamples three times, so H and W must be multiples
of 16 (U-Net) or 8 (ENet); 176 x 208 is valid for both. A wrong size is refused with the nearest valid sizes
rather than silently padded, so a prediction always lines up pixel for pixel with its input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mxnet import nd
from mxnet.gluon import nn

from qa_workflow.contract import NUM_CLASSES, SegqaError

__all__ = ["SpatialDropout", "SegmentationNet", "check_input_shape", "nearest_valid_sizes"]


class SpatialDropout(nn.Dropout):
    """Channel-wise ("spatial") dropout: whole feature maps are dropped, ``Dropout(rate, axes=(2, 3))``.

    With ``always=True`` the maps are dropped in inference too (MC-dropout); BatchNorm stays in inference
    mode because the network itself is not switched to training. The ``always`` variant is never exported:
    the MXNet -> ONNX converter only knows the training-mode Dropout (an Identity at inference).
    """

    def __init__(self, rate: float, always: bool = False, **kwargs: Any) -> None:
        super().__init__(rate, axes=(2, 3), **kwargs)
        self._always = bool(always)

    def hybrid_forward(self, F, x):  # Gluon's signature
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
