"""ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation").

Layout (channels at ``width=1``; H x W relative to the input):

=========  ==========================================================  ========  ======
stage      blocks                                                      channels  size
=========  ==========================================================  ========  ======
initial    3x3 stride-2 conv (13 filters) || 2x2 max-pool, concat      13 + 1    1/2
1          downsampling bottleneck, 4 x regular (dropout 0.01)         64        1/4
2          downsampling, regular, dilated 2, asymmetric 5, dilated 4,   128       1/8
           regular, dilated 8, asymmetric 5, dilated 16 (dropout 0.1)
3          stage 2 without its downsampling bottleneck                 128       1/8
4          upsampling bottleneck, 2 x regular (ReLU)                   64        1/4
5          upsampling bottleneck, regular (ReLU)                       16        1/2
full conv  2x2 stride-2 transposed convolution to the class logits     4         1
=========  ==========================================================  ========  ======

Every bottleneck is 1x1 projection to a quarter of the output channels (2x2 stride 2 when downsampling),
BatchNorm, activation, the main convolution (3x3 / dilated 3x3 / 5x1 then 1x5 / 3x3 transposed stride 2),
BatchNorm, activation, 1x1 expansion, BatchNorm, spatial dropout, added to the shortcut, activation.
Encoder activations are PReLU (one slope per channel), decoder ones ReLU. About 0.36 M parameters.

Two deliberate deviations from the paper, both for a clean ONNX export:
- the upsampling bottleneck's shortcut is 1x1 conv + BatchNorm + nearest-neighbour upsampling (ONNX
  ``Resize``) instead of max-unpooling with the encoder's pooling indices (no exportable MXNet op);
- transposed convolutions use ``padding``/``output_padding`` (``adj``), never ``target_shape``.
Spatial dropout is ``Dropout(rate, axes=(2, 3))`` (`SpatialDropout`).

Shapes: input (N, 1, H, W) float32 with H, W multiples of 8 -> logits (N, 4, H, W).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from mxnet import init
from mxnet.gluon import nn

from training.nets.blocks import SegmentationNet, SpatialDropout

__all__ = ["ENet", "InitialBlock", "Bottleneck", "PReLU", "PRELU_FORMULATIONS", "resolve_prelu"]

INITIAL_FILTERS = 13
STAGE_CHANNELS = (16, 64, 128)
#: Spatial dropout in stage 1 and in every later bottleneck (the paper's 0.01 and 0.1).
DROPOUT_RATES = (0.01, 0.1)


#: How `PReLU` computes (see its docstring). "fused" (the native kernel) trains when it is built, else "conv";
#: "native" (MXNet's LeakyReLU op) is what inference and the ONNX export build; "mul" is the training form before
#: the speed-up, kept for the side-by-side benchmark.
PRELU_FORMULATIONS = ("fused", "conv", "mul", "native")


def resolve_prelu(formulation: str) -> str:
    """``"auto"``: "fused" when the native kernel is available (`training.native.load`), else "conv"; any
    other formulation as it is."""
    if formulation != "auto":
        if formulation not in PRELU_FORMULATIONS:
            raise ValueError(f"unknown PReLU formulation {formulation!r}; expected auto or one of "
                             f"{', '.join(PRELU_FORMULATIONS)}")
        return formulation
    from training import native

    return "fused" if native.load() else "conv"


class PReLU(nn.HybridBlock):
    """Per-channel PReLU ``y = max(x, 0) + alpha * min(x, 0)``; parameter ``alpha`` (C,), initial 0.25.

    Same parameter name and shape as ``gluon.nn.PReLU``, so checkpoints load with any formulation:

    - "fused" (training's default where it is built): the native operator ``segqa_prelu``
      (`training.native`): one pass forward, one pass backward computing the input gradient and the slope
      gradient together. The ENet step's PReLUs then cost about what ReLUs would (docs/segmenter.md). A network
      built "fused" also computes each bottleneck's tail (residual add, spatial dropout, activation) and its
      max-pooling with native operators (`Bottleneck`, `InitialBlock`); same function, same parameters.
    - "conv" (training's fallback): ``relu(x) + conv1x1_depthwise(min(x, 0), alpha)``. The slope gradient is the
      per-channel sum of ``min(x, 0) * dy`` over batch and pixels; as a depthwise 1x1 convolution oneDNN
      computes it (weight gradient), instead of MXNet's generic broadcast reduction. ~1.9x faster ENet step.
    - "mul": ``relu(x) - relu(-x) * alpha`` (broadcast multiply). Its slope gradient goes through MXNet's
      broadcast-reduce kernel, which took ~45 % of the ENet training step (mx.profiler).
    - "native": MXNet 1.9.1's ``LeakyReLU(act_type="prelu")``: one ONNX ``PRelu`` node, so inference and export
      use it; wrong in training (a hybridized graph multiplies the slope gradient by the slope, a quarter at
      initialisation; tests/training/test_prelu.py checks every formulation against float64 finite differences)
      and as slow as "mul".
    """

    def __init__(self, channels: int, formulation: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.formulation = resolve_prelu(formulation)
        with self.name_scope():
            self.alpha = self.params.get("alpha", shape=(self.channels,), init=init.Constant(0.25))

    def hybrid_forward(self, F, x, *residual, alpha):  # noqa: N803
        if residual:  # a bottleneck's tail, "fused" only: prelu(x + mask * ext) (`Bottleneck`)
            ext, mask = residual
            return F.segqa_residual_prelu(ext, x, mask, alpha, name="fwd")
        if self.formulation == "fused":
            return F.segqa_prelu(x, alpha, name="fwd")
        if self.formulation == "native":
            return F.LeakyReLU(x, gamma=alpha, act_type="prelu", name="fwd")
        if self.formulation == "mul":
            return F.relu(x) - F.broadcast_mul(F.relu(-x), F.reshape(alpha, shape=(1, -1, 1, 1)))
        negative = F.Convolution(F.minimum(x, 0.0), F.reshape(alpha, shape=(-1, 1, 1, 1)), kernel=(1, 1),
                                 num_filter=self.channels, num_group=self.channels, no_bias=True, name="slope")
        return F.relu(x) + negative


def _activation(kind: str, channels: int, prelu: str = "auto") -> nn.HybridBlock:
    """PReLU with one slope per channel (initial slope 0.25, as in the paper's Torch code) or ReLU."""
    if kind == "prelu":
        return PReLU(channels, formulation=prelu)
    return nn.Activation("relu")


class InitialBlock(nn.HybridBlock):
    """3x3 stride-2 conv (``filters``) concatenated with a 2x2 max-pool of the input, BatchNorm, PReLU.

    (N, C_in, H, W) -> (N, filters + C_in, H/2, W/2).
    """

    def __init__(self, filters: int, in_channels: int, prelu: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fused = resolve_prelu(prelu) == "fused"
        with self.name_scope():
            self.conv = nn.Conv2D(filters, 3, strides=2, padding=1, use_bias=False)
            self.pool = nn.MaxPool2D(pool_size=2, strides=2)
            self.bn = nn.BatchNorm()
            self.act = _activation("prelu", filters + in_channels, prelu)

    def hybrid_forward(self, F, x):
        pooled = F.segqa_maxpool2(x) if self.fused else self.pool(x)
        return self.act(self.bn(F.concat(self.conv(x), pooled, dim=1)))


class Bottleneck(nn.HybridBlock):
    """One ENet bottleneck; ``kind`` is regular | dilated | asymmetric | downsample | upsample.

    (N, in_channels, H, W) -> (N, out_channels, H', W') with H' = H/2 (downsample), 2H (upsample), else H.
    Built with the "fused" PReLU it runs its tail, ``out_act(main + dropout(ext))``, as one native operator
    (``segqa_residual_prelu``; a ReLU is the same operator with zero slopes) and its max-pooling as
    ``segqa_maxpool2``: the ENet's training step at batch 4 went from ~21 to ~28 images/s with these and the native
    loss (docs/segmenter.md). Same layers, same parameters, same outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "regular", dilation: int = 1,
                 dropout: float = 0.1, activation: str = "prelu", mc_dropout: bool = False,
                 prelu: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("regular", "dilated", "asymmetric", "downsample", "upsample"):
            raise ValueError(f"unknown bottleneck kind {kind!r}")
        if kind == "downsample" and out_channels < in_channels:
            raise ValueError("a downsampling bottleneck cannot reduce channels")
        self.kind = kind
        self.activation = activation
        self.fused = resolve_prelu(prelu) == "fused"
        self.pad_channels = out_channels - in_channels if kind == "downsample" else 0
        internal = max(1, out_channels // 4)
        with self.name_scope():
            ext = nn.HybridSequential(prefix="ext_")
            with ext.name_scope():
                if kind == "downsample":
                    ext.add(nn.Conv2D(internal, 2, strides=2, use_bias=False))
                else:
                    ext.add(nn.Conv2D(internal, 1, use_bias=False))
                ext.add(nn.BatchNorm(), _activation(activation, internal, prelu))
                if kind == "asymmetric":
                    ext.add(nn.Conv2D(internal, (5, 1), padding=(2, 0), use_bias=False),
                            nn.Conv2D(internal, (1, 5), padding=(0, 2), use_bias=False))
                elif kind == "upsample":
                    ext.add(nn.Conv2DTranspose(internal, 3, strides=2, padding=1, output_padding=1, use_bias=False))
                else:
                    ext.add(nn.Conv2D(internal, 3, padding=dilation, dilation=dilation, use_bias=False))
                ext.add(nn.BatchNorm(), _activation(activation, internal, prelu),
                        nn.Conv2D(out_channels, 1, use_bias=False), nn.BatchNorm(),
                        SpatialDropout(dropout, always=mc_dropout))
            self.ext = ext
            if kind == "downsample":
                self.shortcut = nn.MaxPool2D(pool_size=2, strides=2)
            elif kind == "upsample":
                self.shortcut = nn.HybridSequential(prefix="short_")
                with self.shortcut.name_scope():
                    self.shortcut.add(nn.Conv2D(out_channels, 1, use_bias=False), nn.BatchNorm())
            else:
                self.shortcut = None
            self.out_act = _activation(activation, out_channels, prelu)

    def hybrid_forward(self, F, x):
        if self.kind == "downsample":
            main = F.segqa_maxpool2(x) if self.fused else self.shortcut(x)
            if self.pad_channels:  # zero channels up to out_channels
                # Padded as (N, H, W, C) because `pad` only pads trailing axes. A concat with zeros (the
                # obvious way) crashes oneDNN's backward in stage 2 ("could not construct a sub-memory") once
                # the activations before it are oneDNN ops (ReLU, this module's PReLU formulations).
                main = F.transpose(main, axes=(0, 2, 3, 1))
                main = F.pad(main, mode="constant", constant_value=0,
                             pad_width=(0, 0, 0, 0, 0, 0, 0, self.pad_channels))
                main = F.transpose(main, axes=(0, 3, 1, 2))
        elif self.kind == "upsample":
            main = F.UpSampling(self.shortcut(x), scale=2, sample_type="nearest", num_args=1)
        else:
            main = x
        if not self.fused:
            return self.out_act(main + self.ext(x))
        # The tail in one native operator: out_act(main + dropout(ext)). The dropout's channel mask is drawn by
        # the same SpatialDropout block on an (N, C, 1, 1) tensor of ones, so it drops and scales exactly as it
        # would on the maps, in training and (MC-dropout) at inference alike.
        ext = x
        for i in range(len(self.ext) - 1):
            ext = self.ext[i](ext)
        mask = self.ext[-1](F.ones_like(F.slice(ext, begin=(None, None, 0, 0), end=(None, None, 1, 1))))
        if self.activation == "prelu":
            return self.out_act(main, ext, mask)
        no_slope = F.zeros_like(F.reshape(F.slice_axis(mask, axis=0, begin=0, end=1), shape=(-1,)))  # (C,)
        return F.segqa_residual_prelu(ext, main, mask, no_slope, name="relu")  # a ReLU: slope 0


class ENet(SegmentationNet):
    """ENet; see the module docstring. ``width`` scales every channel count (at least 1)."""

    network = "enet"
    divisor = 8

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: float = 1.0, mc_dropout: bool = False,
                 dropout: tuple[float, float] = DROPOUT_RATES, prelu: str = "auto", **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "enet_")
        super().__init__(in_channels, num_classes, width, mc_dropout, **kwargs)
        prelu = self.prelu = resolve_prelu(prelu)  # once, so every PReLU of the network computes alike
        w = lambda c: max(1, int(round(c * width)))  # noqa: E731
        c0 = w(INITIAL_FILTERS) + in_channels
        c1, c2 = w(STAGE_CHANNELS[1]), w(STAGE_CHANNELS[2])
        c5 = w(STAGE_CHANNELS[0])
        self.channels = {"initial": c0, "stage1": c1, "stage2": c2, "stage5": c5}
        mc = mc_dropout
        self.dropout = (float(dropout[0]), float(dropout[1]))
        p1, p2 = self.dropout

        def stage23(prefix: str, downsample: bool) -> nn.HybridSequential:
            seq = nn.HybridSequential(prefix=prefix)
            with seq.name_scope():
                if downsample:
                    seq.add(Bottleneck(c1, c2, "downsample", dropout=p2, mc_dropout=mc, prelu=prelu))
                for kind, d in (("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
                                ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16)):
                    seq.add(Bottleneck(c2, c2, kind, dilation=d, dropout=p2, mc_dropout=mc, prelu=prelu))
            return seq

        with self.name_scope():
            self.initial = InitialBlock(w(INITIAL_FILTERS), in_channels, prelu=prelu, prefix="init_")
            self.stage1 = nn.HybridSequential(prefix="s1_")
            with self.stage1.name_scope():
                self.stage1.add(Bottleneck(c0, c1, "downsample", dropout=p1, mc_dropout=mc, prelu=prelu))
                for _ in range(4):
                    self.stage1.add(Bottleneck(c1, c1, "regular", dropout=p1, mc_dropout=mc, prelu=prelu))
            self.stage2 = stage23("s2_", downsample=True)
            self.stage3 = stage23("s3_", downsample=False)
            decoder = partial(Bottleneck, dropout=p2, activation="relu", mc_dropout=mc, prelu=prelu)
            self.stage4 = nn.HybridSequential(prefix="s4_")
            with self.stage4.name_scope():
                self.stage4.add(decoder(c2, c1, "upsample"))
                for _ in range(2):
                    self.stage4.add(decoder(c1, c1, "regular"))
            self.stage5 = nn.HybridSequential(prefix="s5_")
            with self.stage5.name_scope():
                self.stage5.add(decoder(c1, c5, "upsample"))
                self.stage5.add(decoder(c5, c5, "regular"))
            self.fullconv = nn.Conv2DTranspose(num_classes, kernel_size=2, strides=2, prefix="full_")

    def hybrid_forward(self, F, x):
        x = self.initial(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fullconv(self.stage5(self.stage4(x)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channels": self.channels, "dropout": list(self.dropout)}
