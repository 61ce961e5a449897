"""U-Net (Ronneberger et al. 2015) for 2-D brain-tissue segmentation, as a Gluon HybridBlock.

Five levels of 32-64-128-256-512 filters (times ``width``); each level is two 3x3 convolutions with
BatchNorm and ReLU; 2x2 max-pooling down, 2x2 stride-2 transposed convolutions up, skips concatenated,
a 1x1 convolution to the class logits. About 7.8 M parameters at ``width=1``.

For MC-dropout the two deepest levels carry spatial dropout (rate 0.1 on the pooled 256-filter maps entering
the bottom level and on the 512-filter bottom output, the "central" placement of Bayesian SegNet; skips are
never dropped); it is off at inference unless the network
is built with ``mc_dropout=True``.

Shapes: input (N, 1, H, W) float32 with H, W multiples of 16 -> logits (N, 4, H, W).
"""

from __future__ import annotations

from typing import Any

from mxnet.gluon import nn

from training.nets.blocks import SegmentationNet, SpatialDropout

__all__ = ["UNet", "ConvBlock"]

BASE_FILTERS = (32, 64, 128, 256, 512)
DROPOUT_RATE = 0.1


class ConvBlock(nn.HybridBlock):
    """Two (3x3 conv -> BatchNorm -> ReLU); (N, C_in, H, W) -> (N, channels, H, W)."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential()
            for _ in range(2):
                self.body.add(nn.Conv2D(channels, 3, padding=1, use_bias=False),
                              nn.BatchNorm(), nn.Activation("relu"))

    def hybrid_forward(self, F, x):
        return self.body(x)


class UNet(SegmentationNet):
    """U-Net; see the module docstring. ``width`` scales every filter count (at least 1 filter)."""

    network = "unet"
    divisor = 16

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: float = 1.0, mc_dropout: bool = False,
                 dropout: float = DROPOUT_RATE, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "unet_")
        super().__init__(in_channels, num_classes, width, mc_dropout, **kwargs)
        filters = [max(1, int(round(f * width))) for f in BASE_FILTERS]
        self.filters = filters
        self.dropout = float(dropout)
        with self.name_scope():
            self.enc = nn.HybridSequential(prefix="enc_")
            with self.enc.name_scope():
                for f in filters:
                    self.enc.add(ConvBlock(f))
            self.pool = nn.MaxPool2D(pool_size=2, strides=2)
            self.drop4 = SpatialDropout(dropout, always=mc_dropout)
            self.drop5 = SpatialDropout(dropout, always=mc_dropout)
            self.up = nn.HybridSequential(prefix="up_")
            self.dec = nn.HybridSequential(prefix="dec_")
            with self.up.name_scope():
                for f in reversed(filters[:-1]):
                    # kernel 2, stride 2, no padding: exactly doubles H and W (no target_shape: ONNX-exportable)
                    self.up.add(nn.Conv2DTranspose(f, kernel_size=2, strides=2))
            with self.dec.name_scope():
                for f in reversed(filters[:-1]):
                    self.dec.add(ConvBlock(f))
            self.head = nn.Conv2D(num_classes, kernel_size=1)

    def hybrid_forward(self, F, x):
        skips = []
        depth = len(self.enc)
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < depth - 1:
                skips.append(x)
                x = self.pool(x)
                if i == depth - 2:  # the pooled 256-filter maps going down to the bottom level
                    x = self.drop4(x)
        x = self.drop5(x)
        for up, block, skip in zip(self.up, self.dec, reversed(skips)):
            x = block(F.concat(up(x), skip, dim=1))
        return self.head(x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "filters": self.filters, "dropout": self.dropout}
