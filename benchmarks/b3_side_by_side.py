"""B3 side by side — the loop's two networks trained one after the other, or side by side on a share of the cores.

    SEGQA_THREADS=2 .venv/bin/python benchmarks/b3_side_by_side.py --data COHORT [--epochs 10]

Both ways train the quick demo's initial U-Net and ENet (`LoopConfig.preset(quick=True).initial_train`, epochs
set by ``--epochs``) on the cohort's ``train`` split with `training.parallel.train_all`: "one after the other"
calls it once per network (each run in this process with all of its threads), "side by side" once with both
(each run in its own process with half the threads). The two ways alternate (``--repeats`` times, the order
flipped each time) so a change of load on a shared machine hits both. Reports wall seconds, CPU seconds (this
process and its children) and cores busy per way, and each network's best validation Dice.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.threads import configure_threads  # noqa: E402  (sizes MXNet's pool before it loads)

configure_threads()


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _best_val(model_dir: Path) -> float:
    metrics = json.loads((model_dir / "metrics.json").read_text())
    return max((e["val_mean_fg_dice"] for e in metrics["epochs"] if e["val_mean_fg_dice"] is not None),
               default=float("nan"))


def run_way(way: str, configs: dict, work: Path) -> dict:
    from training.parallel import train_all

    configs = {n: replace(c, out_dir=str(work / way / n)) for n, c in configs.items()}
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    if way == "side by side":
        out = train_all(configs)
    else:
        out = {n: train_all({n: c})[n] for n, c in configs.items()}
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    return {"way": way, "wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall,
            "val_dice": {n: _best_val(Path(d)) for n, d in out.items()}}


def main(argv: list[str] | None = None) -> int:
    from qa_workflow.loop.demo import LoopConfig
    from training.threads import threads
    from training.train import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset folder (e.g. the quick demo's cohort)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    quick = LoopConfig.preset(quick=True).initial_train
    configs = {n: TrainConfig(data_dir=args.data, out_dir="", network=n, **{**opts, "epochs": args.epochs})
               for n, opts in quick.items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="segqa-b3-side-") as tmp:
        for k in range(args.repeats):
            order = ["one after the other", "side by side"]
            for way in (order if k % 2 == 0 else order[::-1]):
                rows.append(run_way(way, configs, Path(tmp) / str(k)))
                r = rows[-1]
                print(f"{way}: {r['wall_s']:.1f} s wall, {r['cores_busy']:.2f} cores busy", file=sys.stderr)
    cmd = "SEGQA_THREADS=2 .venv/bin/python benchmarks/b3_side_by_side.py " + shlex.join(sys.argv[1:] if argv is None
                                                                                          else argv)
    names = list(configs)
    lines = [f"### The loop's two networks, one after the other or side by side "
             f"({datetime.now(UTC).isoformat(timespec='minutes')})", "",
             f"- command: `{cmd}`",
             f"- machine: {platform.machine()}, {threads()} thread(s) for this process, Python "
             f"{platform.python_version()}",
             "- configs: the quick demo's initial models: " + "; ".join(
                 f"{n} width {c.width:g}, batch {c.batch_size}, {c.epochs} epochs" for n, c in configs.items()), "",
             "| way | wall s | CPU s | cores busy | " + " | ".join(f"{n} best val Dice" for n in names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        lines.append(f"| {r['way']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['cores_busy']:.2f} | "
                     + " | ".join(f"{r['val_dice'][n]:.3f}" for n in names) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
