"""B9 — prediction at scale: slices/s of one `segqa predict` process, and the cost of 10,000 volumes on paper.

    .venv/bin/python benchmarks/b9_prediction.py [--subjects 4] [--slices 48] [--price-per-hour 0.23]

An ENet (full width; one training batch, so realistic weights do not matter: the time per slice does not depend
on the values) is exported, and `run_predictions` — the very function a Processing instance runs — predicts a
phantom pool end to end: PNG reads, the forward pass, softmax, scoring, the .npz and mask writes and the score
table, with ONNX Runtime on every core and with MXNet. The figure is wall-clock slices/s of one process.

Cost on paper: seconds per slice x slices per volume x 10,000 volumes, at the hourly price of the Processing
instance type given (``--instance-type``, ``--price-per-hour``, ``--price-source``: stated, not looked up; this
script runs offline). The sharded plan's rate is the one-process rate times the instances, on the assumption that
an instance of the stated type is as fast per core as this machine — a paper figure, not a measurement.
Results: benchmarks/results/B9.md and b9.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def _phantom_pool(root: Path, subjects: int, slices: int) -> Path:
    import numpy as np

    from training.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:176, :208]
    with DatasetWriter(root, source="b9-phantom", seed=0) as w:
        for s in range(subjects):
            for k in range(slices):
                r = np.hypot((yy - 88) / (60 + k % 9), (xx - 104) / (75 + k % 7))
                labels = np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
                image = np.clip(np.array([5, 40, 120, 200], np.float32)[labels] + rng.normal(0, 8, labels.shape),
                                0, 255).astype(np.uint8)
                w.add(f"sub-{s:03d}", k, image, labels, "pool" if s else "train")
                if s == 0 and k == 1:
                    w.add("sub-val", 0, image, labels, "val")
    return root


def _export_enet(data: Path, work: Path) -> Path:
    from training.export import export_model
    from training.train import TrainConfig, train_model

    model = train_model(TrainConfig(data_dir=str(data), out_dir=str(work / "enet"), network="enet", epochs=1,
                                    batch_size=2, max_batches_per_epoch=1, max_val_slices=1, augment=False))
    export_model(model, work / "export")
    return work / "export"


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subjects", type=int, default=4, help="pool subjects (one more is the training seed)")
    p.add_argument("--slices", type=int, default=48, help="slices per subject")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--slices-per-volume", type=int, default=176, help="axial slices of one 176x208x176 volume")
    p.add_argument("--instance-type", default="ml.c5.xlarge")
    p.add_argument("--price-per-hour", type=float, default=0.204, help="USD per instance-hour")
    p.add_argument("--price-source", default="aws.amazon.com/sagemaker/pricing, on-demand, Processing, us-east-1; "
                   "the figure as the author recalled it on 2026-12-01, not re-read then (this machine is offline): "
                   "check the page before quoting")
    p.add_argument("--instances", type=int, default=20, help="instances of the sharded plan on paper")
    args = p.parse_args(argv)

    import numpy as np

    from qa_workflow.rounds.predict import run_predictions
    from training.dataset import load_png, read_index
    from training.predict import cpu_threads, open_predictor

    results = []
    with tempfile.TemporaryDirectory(prefix="segqa-b9-") as tmp:
        work = Path(tmp)
        data = _phantom_pool(work / "data", args.subjects + 1, args.slices)
        export = _export_enet(data, work)
        for runtime in ("onnxruntime", "mxnet"):
            predictor = open_predictor(export, runtime=runtime)
            run_predictions(predictor, data, str(work / f"warm-{runtime}"), limit=args.batch_size)  # warm-up
            load = _loadavg()
            start = time.perf_counter()
            summary = run_predictions(predictor, data, str(work / f"pred-{runtime}"), batch_size=args.batch_size)
            seconds = time.perf_counter() - start
            images = np.stack([load_png(data / r.image) for r in read_index(data, ["pool"])])
            start = time.perf_counter()
            predictor.predict_proba(images, batch_size=args.batch_size)
            forward_s = time.perf_counter() - start
            cell: dict[str, Any] = {
                "runtime": runtime, "threads": getattr(predictor, "threads", None) or cpu_threads(),
                "slices": summary.slices_scored, "seconds": round(seconds, 3),
                "slices_per_s": round(summary.slices_scored / seconds, 2),
                "ms_per_slice": round(1000 * seconds / summary.slices_scored, 2),
                "forward_ms_per_slice": round(1000 * forward_s / len(images), 2), "load_avg_before": load}
            results.append(cell)
            print(f"{runtime:11s}: {cell['slices']} slices in {seconds:.1f} s = {cell['slices_per_s']:.1f} slices/s "
                  f"({cell['ms_per_slice']:.1f} ms/slice; forward pass alone {cell['forward_ms_per_slice']:.1f} ms; "
                  f"load {load})", flush=True)
    best = min(results, key=lambda r: r["ms_per_slice"])
    hours = 10_000 * args.slices_per_volume * best["ms_per_slice"] / 1000 / 3600
    cost = {"volumes": 10_000, "slices_per_volume": args.slices_per_volume, "runtime": best["runtime"],
            "ms_per_slice": best["ms_per_slice"], "instance_hours": round(hours, 1),
            "instance_type": args.instance_type, "price_per_hour_usd": args.price_per_hour,
            "price_source": args.price_source, "usd": round(hours * args.price_per_hour, 2),
            "plan_instances": args.instances, "plan_slices_per_s": round(args.instances * best["slices_per_s"], 1),
            "plan_wall_hours": round(hours / args.instances, 2)}
    command = " ".join(["python benchmarks/b9_prediction.py", *(argv if argv is not None else sys.argv[1:])]).strip()
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
            "machine": f"{os.cpu_count()}-core dev machine, no GPU ({platform.machine()}), shared with other jobs",
            "load_avg_end": _loadavg()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "b9.json").write_text(json.dumps({"meta": meta, "results": results, "cost": cost}, indent=2) + "\n")
    lines = ["# B9 — prediction at scale (one process; 10,000 volumes on paper)", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}; load average at the end "
             f"{' / '.join(map(str, meta['load_avg_end']))}", f"- command: `.venv/bin/{command}`",
             "- what: `run_predictions` end to end (PNG reads, ENet forward pass, softmax, scores, .npz + mask "
             "writes, score table) on a phantom pool of 176x208 slices, batch "
             f"{args.batch_size}; ONNX Runtime on every core vs MXNet; wall clock after one warm-up batch", "",
             "| runtime | threads | slices | seconds | slices/s | ms/slice | forward pass alone, ms/slice | "
             "load avg before (1/5/15 min) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        load_text = " / ".join(str(v) for v in r["load_avg_before"])
        lines.append(f"| {r['runtime']} | {r['threads']} | {r['slices']} | {r['seconds']:.1f} | "
                     f"{r['slices_per_s']:.1f} | {r['ms_per_slice']:.1f} | {r['forward_ms_per_slice']:.1f} | "
                     f"{load_text} |")
    lines += ["", "Cost of predicting 10,000 volumes, on paper:", "",
              f"- {cost['ms_per_slice']:.1f} ms/slice ({cost['runtime']}, this machine) x {args.slices_per_volume} "
              f"slices/volume x 10,000 volumes = **{cost['instance_hours']} instance-hours**",
              f"- at {args.instance_type} ${args.price_per_hour:.3f}/h ({args.price_source}): "
              f"**${cost['usd']:,.2f}**",
              f"- sharded over {args.instances} instances: about {cost['plan_slices_per_s']:,} slices/s, "
              f"{cost['plan_wall_hours']} h of wall clock, same cost (plus each job's start-up, a few minutes per "
              "instance, not counted)",
              "- assumption: one instance of that type is as fast as this shared 2-core machine; measure one "
              "job's slices/s (its CloudWatch log prints each shard's count and time) before budgeting"]
    (RESULTS / "B9.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'B9.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
