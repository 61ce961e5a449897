"""B3 engine settings — can MXNet's own scheduler put the ENet's second core to work?

    .venv/bin/python benchmarks/b3_engine.py [--steps 12] [--network enet]

The ENet's training step is a chain of small, memory-bound operators (B3.md): two OpenMP threads per operator
keep both cores busy but gain little. This script measures the two other ways MXNet 1.9 offers to use a second
core, each in its own child process (the variables are read once, when MXNet loads):

- ``MXNET_CPU_WORKER_NTHREADS=2``: the dependency engine runs independent operators at the same time (the
  ENet's bottlenecks have two branches each), one OpenMP thread per operator;
- data parallel over two CPU contexts (``mx.cpu(0)``, ``mx.cpu(1)``): the batch split in two halves whose
  forward and backward passes the engine may run concurrently, gradients summed by the Trainer.

Against the default (every core as OpenMP threads, one engine worker) and one thread. Per setting: images/s
and cores busy over ``--steps`` steps after 3 warm-up steps, the same random batch and the real loss and
optimizer (`training.losses.segmentation_loss`, Adam). Writes benchmarks/results/b3_engine.json and .md
(included in B3.md by b3_training.write_markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: (label, OpenMP threads, engine workers, contexts, batch)
SETTINGS = [
    ("2 OpenMP threads (the default here)", 2, 1, 1, 4),
    ("1 OpenMP thread", 1, 1, 1, 4),
    ("2 engine workers, 1 OpenMP thread", 1, 2, 1, 4),
    ("2 engine workers, 2 OpenMP threads", 2, 2, 1, 4),
    ("2 contexts (2 + 2 slices), 2 engine workers", 1, 2, 2, 4),
    ("2 contexts (4 + 4 slices), 2 engine workers", 1, 2, 2, 8),
    ("2 OpenMP threads, batch 8", 2, 1, 1, 8),
]


def child(network: str, contexts: int, batch: int, steps: int) -> dict:
    """One setting, in this (child) process: the environment was set by the parent before MXNet loads."""
    sys.path.insert(0, str(ROOT))
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon, nd

    from training.losses import segmentation_loss
    from training.nets import build_network

    ctxs = [mx.cpu(i) for i in range(contexts)]
    rng = np.random.default_rng(0)
    x = nd.array(rng.normal(size=(batch, 1, 176, 208)).astype(np.float32))
    y = nd.array(rng.integers(0, 4, size=(batch, 176, 208)).astype(np.float32))
    mx.random.seed(0)
    net = build_network(network)
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    net.hybridize(static_alloc=True)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-4})
    xs, ys = gluon.utils.split_and_load(x, ctxs), gluon.utils.split_and_load(y, ctxs)
    weights = [nd.array([1.0, 4.0, 2.0, 2.0], ctx=c) for c in ctxs]

    def step() -> None:
        with autograd.record():
            losses = [segmentation_loss(net(a), b, w, 0.5, 0.5)[0] for a, b, w in zip(xs, ys, weights, strict=True)]
        autograd.backward(losses)
        trainer.step(batch)
        nd.waitall()

    for _ in range(3):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": round(steps * batch / wall, 2), "cores_busy": round(cpu / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--network", default="enet", choices=("enet", "unet"))
    p.add_argument("--child", nargs=2, type=int, metavar=("CONTEXTS", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.network, args.child[0], args.child[1], args.steps)))
        return 0
    rows = []
    load_start = [round(v, 2) for v in os.getloadavg()]
    for label, omp, workers, contexts, batch in SETTINGS:
        env = {**os.environ, "OMP_NUM_THREADS": str(omp), "OPENBLAS_NUM_THREADS": str(omp),
               "MXNET_CPU_WORKER_NTHREADS": str(workers)}
        env.pop("SEGQA_THREADS", None)
        out = subprocess.run([sys.executable, __file__, "--network", args.network, "--steps", str(args.steps),
                              "--child", str(contexts), str(batch)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return out.returncode
        row = {"setting": label, "omp_threads": omp, "engine_workers": workers, "contexts": contexts,
               "batch": batch, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{label}: {row['images_per_s']} images/s, cores busy {row['cores_busy']}", flush=True)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "network": args.network,
              "command": "python benchmarks/b3_engine.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{os.cpu_count()}-core dev machine, no GPU ({platform.machine()})", "steps": args.steps,
              "load_avg_start": load_start, "load_avg_end": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "b3_engine.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "b3_engine.md").write_text(markdown(result))
    return 0


def markdown(r: dict) -> str:
    label = {"enet": "ENet", "unet": "U-Net"}[r["network"]]
    lines = [f"## Engine settings for the {label} training step ({r['date']})", "",
             f"- command: `.venv/bin/{r['command'].strip()}`",
             f"- machine: {r['machine']}; load average at start {r['load_avg_start']}, at end {r['load_avg_end']}; "
             f"{r['steps']} steps per setting after 3 warm-up steps, each setting in its own process", "",
             "| setting | images/s | cores busy |", "|---|---:|---:|"]
    lines += [f"| {row['setting']} | {row['images_per_s']} | {row['cores_busy']} |" for row in r["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
