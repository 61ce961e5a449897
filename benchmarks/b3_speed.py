"""B3 speed — training steps per second of each network and width, side by side in one process.

    SEGQA_THREADS=2 .venv/bin/python benchmarks/b3_speed.py [--rounds 5] [--batch-size 4]

Every variant is built, hybridized and warmed up first; then the rounds take turns (one step of each variant
per turn), so a change of load on a shared machine hits every variant alike and the ratios stay meaningful.
Per variant: images/s (median step), CPU seconds per image, cores busy (CPU / wall), and the convolution
GFLOP/s it achieves as a share of the machine's dense matmul rate measured in the same run (1024^3 float32
``nd.dot``). FLOPs of a step: 3x the forward convolutions' multiply-adds x 2 (backward = two convolutions of
the same size); other layers are not counted, so the figure is a lower bound of the work done.

Variants: the U-Net at widths 1, 0.5, 0.25; the ENet as trained now (where `training.native` is built: its
PReLU, bottleneck tails, max-pooling and loss by the native operators), "enet conv" (pure MXNet: PReLU slopes as
a depthwise 1x1 convolution, the loss on pixel-major views; what a machine without a C++ compiler trains),
"enet mul" (PReLU as relu(x) - relu(-x)*alpha, the NCHW loss: the ENet of 2026-12-01, 4.1 images/s) and "enet
before #14" (MXNet's PReLU op, zero channels by concat in
the downsampling bottleneck, the NCHW loss). A variant name ending in " nchw-loss" uses the loss as it was before
#14 (`training.losses.segmentation_loss_nchw`, same value and gradient) and MXNet's Adam, one update per array;
the others use training's `training.optimizer.BatchedAdam` (the same update, 50 arrays per call). The step is the
real one: Dice + cross-entropy loss, Adam, random slices and labels (speed does not depend on content).
``--profile VARIANT`` prints mx.profiler's per-operator table of 3 steps of that variant instead.
Writes benchmarks/results/b3_speed[TAG].json and .md (all included in B3.md by b3_training.write_markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from training.threads import CpuMeter, configure_threads  # noqa: E402  (sizes MXNet's pool before it loads)

THREADS = configure_threads()

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from training import native, optimizer  # noqa: E402, F401  (optimizer registers "batchedadam")
from training.losses import segmentation_loss, segmentation_loss_mxnet, segmentation_loss_nchw  # noqa: E402
from training.nets import build_network, enet  # noqa: E402

SHAPE = (176, 208)


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = nd.random.normal(shape=(n, n)), nd.random.normal(shape=(n, n))
    nd.dot(a, b).wait_to_read()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        nd.dot(a, b).wait_to_read()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def conv_forward_flops(net: gluon.HybridBlock, batch: int) -> float:
    """Multiply-adds x 2 of every (transposed) convolution in one forward pass of ``batch`` slices."""
    total = [0.0]

    def hook(block, inputs, output):
        w = block.weight.shape  # Conv2D: (out, in/groups, kh, kw); Conv2DTranspose: (in, out, kh, kw)
        if isinstance(block, gluon.nn.Conv2DTranspose):
            total[0] += 2.0 * inputs[0].size * w[1] * w[2] * w[3]
        else:
            total[0] += 2.0 * output.size * w[1] * w[2] * w[3]

    handles = []

    def visit(block):
        if isinstance(block, (gluon.nn.Conv2D, gluon.nn.Conv2DTranspose)):
            handles.append(block.register_forward_hook(hook))
        for child in block._children.values():
            visit(child)

    visit(net)
    net(nd.zeros((batch, 1, *SHAPE)))
    for h in handles:
        h.detach()
    return total[0]


def _concat_pad_forward(self, F, x):  # noqa: N803  the downsampling bottleneck before issue #14
    ext = self.ext(x)
    if self.kind == "downsample":
        main = self.shortcut(x)
        if self.pad_channels:
            zeros = F.slice_axis(F.zeros_like(ext), axis=1, begin=0, end=self.pad_channels)
            main = F.concat(main, zeros, dim=1)
    elif self.kind == "upsample":
        main = F.UpSampling(self.shortcut(x), scale=2, sample_type="nearest", num_args=1)
    else:
        main = x
    return self.out_act(main + ext)


class _ConcatPadBottleneck(enet.Bottleneck):
    hybrid_forward = _concat_pad_forward


def before_14(variant: str) -> bool:
    """A variant of the step as it was before issue #14: the NCHW loss and one Adam update per array."""
    return variant.endswith(" nchw-loss") or variant.startswith("enet before") or variant == "enet mul"


def loss_fn(variant: str):
    if before_14(variant):
        return segmentation_loss_nchw
    return segmentation_loss_mxnet if variant == "enet conv" else segmentation_loss


def build(variant: str) -> gluon.HybridBlock:
    network, _, rest = variant.removesuffix(" nchw-loss").partition(" ")
    if network == "unet":
        return build_network("unet", width=float(rest.split("=")[1]))
    if rest == "before #14":  # MXNet's PReLU op and the concat: the ENet as it was
        current = enet.Bottleneck
        enet.Bottleneck = _ConcatPadBottleneck
        try:
            return build_network("enet", prelu="native")
        finally:
            enet.Bottleneck = current
    if rest in ("mul", "conv"):
        return build_network("enet", prelu=rest)
    if rest.startswith("width="):  # the demo's narrower ENet
        return build_network("enet", width=float(rest.split("=")[1]))
    return build_network("enet")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--variants", default="enet before #14,enet mul,enet conv,enet,unet width=1 nchw-loss,"
                                         "unet width=1,unet width=0.5,unet width=0.25")
    p.add_argument("--tag", default="", help="suffix of the result files (b3_speed<TAG>.json/.md)")
    p.add_argument("--profile", metavar="VARIANT", help="print mx.profiler's operator table for VARIANT and stop")
    args = p.parse_args(argv)
    if args.profile:
        args.variants = args.profile
    bs = args.batch_size
    variants = [v.strip() for v in args.variants.split(",")]
    load_start = [round(v, 2) for v in os.getloadavg()]
    rng = np.random.default_rng(0)
    x = nd.array(rng.normal(size=(bs, 1, *SHAPE)).astype(np.float32))
    y = nd.array(rng.integers(0, 4, size=(bs, *SHAPE)).astype(np.float32))
    weights = nd.array([1.0, 4.0, 2.0, 2.0])
    runs = {}
    for v in variants:
        mx.random.seed(0)
        net = build(v)
        net.initialize(mx.init.Xavier())
        flops = 3 * conv_forward_flops(net, bs)
        net.hybridize(static_alloc=True)
        trainer = gluon.Trainer(net.collect_params(), "adam" if before_14(v) else "batchedadam",
                                {"learning_rate": 1e-4})
        runs[v] = {"net": net, "trainer": trainer, "flops": flops, "steps": [], "loss": loss_fn(v)}

    def step(run):
        with autograd.record():
            loss, _ = run["loss"](run["net"](x), y, weights, 0.5, 0.5)
        loss.backward()
        run["trainer"].step(bs)
        nd.waitall()  # backward and update run asynchronously: without this they would bill the next variant

    for run in runs.values():  # warm-up: graph planning and first allocations
        step(run)
        step(run)
    if args.profile:
        return profile(step, runs[variants[0]])
    peak = matmul_gflops()
    for _ in range(args.rounds):
        for run in runs.values():
            meter = CpuMeter()
            step(run)
            run["steps"].append(meter.read())
    peak = max(peak, matmul_gflops())  # the better of two readings, before and after the rounds
    rows = []
    for v, run in runs.items():
        wall = np.array([w for w, _ in run["steps"]])
        cpu = np.array([c for _, c in run["steps"]])
        step_s = float(np.median(wall))
        gflops = run["flops"] / step_s / 1e9
        rows.append({"variant": v, "images_per_s": round(bs / step_s, 2),
                     "cpu_s_per_image": round(float(np.median(cpu)) / bs, 3),
                     "cores_busy": round(float(cpu.sum() / wall.sum()), 2),
                     "gflop_per_step": round(run["flops"] / 1e9, 2), "gflops": round(gflops, 1),
                     "share_of_matmul": round(gflops / peak, 3)})
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "python benchmarks/b3_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{os.cpu_count()}-core dev machine, no GPU ({platform.machine()}), shared with other jobs",
              "threads": THREADS, "enet_prelu": native.status(), "batch_size": bs, "rounds": args.rounds,
              "matmul_gflops": round(peak, 1),
              "load_avg_start": load_start, "load_avg_end": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"b3_speed{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"b3_speed{args.tag}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def profile(step, run, steps: int = 3) -> int:
    """mx.profiler's aggregate table (operators by total time) for ``steps`` training steps."""
    mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                           filename=os.path.join(tempfile.gettempdir(), "b3_profile.json"))
    mx.profiler.set_state("run")
    for _ in range(steps):
        step(run)
    mx.profiler.set_state("stop")
    table = mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False)
    print(table[table.find("operator"):])
    return 0


def markdown(r: dict) -> str:
    lines = [f"## Training speed, side by side ({r['date']})", "",
             f"- command: `SEGQA_THREADS={r['threads']} .venv/bin/{r['command'].strip()}`",
             f"- machine: {r['machine']}; load average at start {r['load_avg_start']}, at end {r['load_avg_end']}; "
             f"{r['threads']} OpenMP thread(s); batch {r['batch_size']} of 176x208, median of {r['rounds']} "
             f"interleaved steps; dense matmul in the same run: {r['matmul_gflops']} GFLOP/s"
             + (f"; native kernels: {r['enet_prelu']}" if r.get("enet_prelu") else ""), "",
             "| variant | images/s | CPU s / image | cores busy | conv GFLOP / step | GFLOP/s | share of matmul |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['variant']} | {row['images_per_s']} | {row['cpu_s_per_image']} | {row['cores_busy']} | "
                     f"{row['gflop_per_step']} | {row['gflops']} | {100 * row['share_of_matmul']:.0f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
