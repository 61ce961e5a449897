"""B3 — Python work off the critical path: training images/s with and without `TrainConfig.pipeline`.

With it, batches are prepared (augmented, normalised) in a background thread and each step's loss is read only
after the next step has been handed to MXNet, so the engine computes while Python prepares and dispatches.

    SEGQA_THREADS=2 .venv/bin/python benchmarks/b3_pipeline.py --data COHORT [--epochs 3] [--repeats 2]

Trains the demo's networks (U-Net width 0.25, batch 8; ENet width 0.5, batch 4; augmentation on) on the
cohort's ``train`` split with ``pipeline`` on and off, interleaved (on, off, on, off, ...) so that the machine's
mood hits both alike; reports the median training images/s (validation excluded) and cores busy per epoch.
Writes benchmarks/results/b3_pipeline.md (included in B3.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NETWORKS = {"unet": dict(width=0.25, batch_size=8), "enet": dict(width=0.5, batch_size=4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    from training.threads import threads
    from training.train import TrainConfig, train_model

    load0 = [round(v, 2) for v in os.getloadavg()]
    runs: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="segqa-b3p-") as tmp:
        for rep in range(args.repeats):
            for network, opts in NETWORKS.items():
                for pipelined in (True, False):
                    out = Path(tmp) / f"{network}-{pipelined}-{rep}"
                    model = train_model(TrainConfig(data_dir=args.data, out_dir=str(out), network=network,
                                                    epochs=args.epochs, lr=5e-3, seed=rep, pipeline=pipelined,
                                                    **opts))
                    epochs = json.loads((Path(model) / "metrics.json").read_text())["epochs"]
                    runs.setdefault((network, pipelined), []).extend(epochs[1:] or epochs)  # first epoch warms up
    lines = ["## Python work off the critical path (`TrainConfig.pipeline`)", "",
             f"- command: `SEGQA_THREADS={threads()} .venv/bin/python benchmarks/b3_pipeline.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- machine: 2-core dev machine, no GPU; load average at start {load0}, at end "
             f"{[round(v, 2) for v in os.getloadavg()]}; {threads()} OpenMP thread(s); augmentation on; "
             f"{args.repeats} interleaved repeats of {args.epochs} epochs (first epoch of each left out)", "",
             "| network | pipeline | training images/s (median epoch) | cores busy | ratio |",
             "|---|---|---:|---:|---:|"]
    for network, opts in NETWORKS.items():
        base = median(e["images_per_s"] for e in runs[(network, False)])
        for pipelined in (False, True):
            eps = runs[(network, pipelined)]
            ips = median(e["images_per_s"] for e in eps)
            busy = median(e["cores_busy"] for e in eps if e.get("cores_busy") is not None)
            lines.append(f"| {network} width {opts['width']:g}, batch {opts['batch_size']} | "
                         f"{'on' if pipelined else 'off'} | {ips:.2f} | {busy:.2f} | {ips / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "b3_pipeline.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
