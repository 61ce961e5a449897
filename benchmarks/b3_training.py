"""B3 — training: throughput (images/s) per network and Dice on held-out atlas-cohort subjects within a budget.

    .venv/bin/segqa data synth --subjects 20 --out data/cohort --seed 0      # once (about 6 min on 1 core)
    .venv/bin/python benchmarks/b3_training.py --data data/cohort --network enet --budget-min 15
    .venv/bin/python benchmarks/b3_training.py --data data/cohort --network unet --budget-min 15

Trains on the cohort's ``train`` split (its labeled seed set), selects the epoch on ``val`` and reports Dice on
the ``test`` subjects (never seen in training or selection). The wall-clock budget covers training and
per-epoch validation: a short probe measures images/s, the number of epochs is chosen to fit the budget
(the cosine schedule then runs to its end), and ``time_budget_s`` stops training if the machine slows down.
Process CPU time is reported next to wall time ("cores busy" = CPU / wall) because the machine is shared;
the OpenMP thread count is `training.threads` (``SEGQA_THREADS=1`` when other jobs load the cores: with
more threads than free cores, OpenMP's barriers make a step several times slower). Throughput per network
and width, side by side in one process, and the ratio to the machine's matmul rate: b3_speed.py. Results:
benchmarks/results/B3.md (all networks run so far, and the speed table) and b3_<network>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"unet": 0.90, "enet": 0.85}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _probe_images_per_s(data: str, network: str, batch_size: int, batches: int, width: float) -> float:
    """Train a throw-away model for a few batches and return images/s (after one warm-up batch)."""
    from training.train import TrainConfig, train_model

    times = []

    def on_event(ev):
        if ev.kind == "batch":
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="segqa-b3-probe-") as tmp:
        train_model(TrainConfig(data_dir=data, out_dir=str(Path(tmp) / "m"), network=network, epochs=1,
                                batch_size=batch_size, width=width, max_batches_per_epoch=batches + 1,
                                max_val_slices=1, progress=on_event))
    return batch_size * (len(times) - 1) / (times[-1] - times[0])


def main(argv=None) -> int:
    from qa_workflow.review.simulated_reviewers import DEFAULT_TAU  # loads no MXNet (threads are set later)

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="atlas cohort dataset (segqa data synth)")
    p.add_argument("--network", choices=("unet", "enet"), required=True)
    p.add_argument("--budget-min", type=float, default=15.0, help="wall-clock budget for training + validation")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (U-Net 1, 0.5, 0.25; ENet 1)")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU,
                   help="reviewers' bar (surface Dice at 1 px) for the share of test masks a reviewer would accept")
    p.add_argument("--lr", type=float, default=None, help="default: training.train.DEFAULT_LR")
    p.add_argument("--class-weights", default=None, help="default: training.train.TrainConfig's (docs/segmenter.md)")
    p.add_argument("--max-val-slices", type=int, default=None,
                   help="validation slices per epoch, evenly strided (default: training.train.val_slice_cap)")
    p.add_argument("--max-test-slices", type=int, default=None, help="default: the whole test split")
    p.add_argument("--epochs", type=int, default=None, help="skip the probe and train this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="model folder to keep (default: a temporary one)")
    p.add_argument("--results", default=None,
                   help="folder for b3_<network>.json and the test figure; B3.md is rewritten only without it "
                        "(default: benchmarks/results)")
    args = p.parse_args(argv)

    from qa_workflow.contract import SegqaError
    from training.dataset import read_index
    from training.evaluate import evaluate_model
    from training.threads import threads
    from training.train import TrainConfig, train_model

    try:
        n_train = len(read_index(args.data, ["train"]))
        n_val = len(read_index(args.data, ["val"]))
        n_test_subjects = len({r.subject for r in read_index(args.data, ["test"])})
    except SegqaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from training.train import DEFAULT_LR, val_slice_cap

    lr = args.lr or DEFAULT_LR[args.network]
    budget_s = args.budget_min * 60
    load_start = [round(v, 2) for v in os.getloadavg()]
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    probe_ips = None
    if args.epochs is None:
        probe_ips = _probe_images_per_s(args.data, args.network, args.batch_size, 3, args.width)
        # per epoch: the train split plus validation (inference is ~3x cheaper per image than a training step)
        epoch_s = n_train / probe_ips + val_slice_cap(n_train, n_val, args.max_val_slices) / (3 * probe_ips)
        epochs = max(1, int((budget_s - (time.perf_counter() - wall0)) * 0.9 // epoch_s))
    else:
        epochs = args.epochs
    print(f"{args.network}: {n_train} training slices, probe {probe_ips and round(probe_ips, 2)} img/s -> "
          f"{epochs} epochs in a {args.budget_min:g} min budget", flush=True)

    history = []

    def on_event(ev):
        if ev.kind == "epoch":
            history.append(ev)
            print(f"  epoch {ev.epoch}/{ev.epochs} loss {ev.loss:.4f} val mean fg Dice {ev.val_mean_dice:.4f} "
                  f"({ev.images_per_s:.2f} img/s, {ev.elapsed_s / 60:.1f} min)", flush=True)

    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="segqa-b3-")
        out = str(Path(tmp.name) / args.network)
    weights = {"class_weights": args.class_weights} if args.class_weights else {}
    train_start = time.perf_counter()
    remaining = budget_s - (train_start - wall0)
    model = train_model(TrainConfig(data_dir=args.data, out_dir=out, network=args.network, epochs=epochs,
                                    batch_size=args.batch_size, lr=lr, seed=args.seed, width=args.width,
                                    max_val_slices=args.max_val_slices, time_budget_s=remaining,
                                    progress=on_event, **weights))
    train_wall = time.perf_counter() - train_start
    train_cpu = _cpu_seconds() - cpu0
    metrics = json.loads((Path(model) / "metrics.json").read_text())
    card = json.loads((Path(model) / "model_card.json").read_text())
    epochs_run = metrics["epochs"]
    results = Path(args.results) if args.results is not None else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    eval_start = time.perf_counter()
    report = evaluate_model(model, args.data, split="test", max_slices=args.max_test_slices,
                            figure=results / f"b3_{args.network}_test.png", reviewer_tau=args.tau)
    eval_wall = time.perf_counter() - eval_start
    ips = [e["images_per_s"] for e in epochs_run if e.get("images_per_s")]
    result = {
        "network": args.network, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/b3_training.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"2-core dev machine, no GPU ({platform.machine()}), shared with other jobs",
        "load_avg_start": load_start, "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "budget_min": args.budget_min, "train_slices": n_train, "test_subjects": n_test_subjects,
        "test_slices": report["data"]["slices"], "batch_size": args.batch_size, "lr": lr,
        "epochs_planned": epochs, "epochs_run": len(epochs_run), "best_epoch": metrics["best_epoch"],
        "probe_images_per_s": probe_ips, "train_images_per_s_median": sorted(ips)[len(ips) // 2] if ips else None,
        "wall_s_train_incl_probe_and_val": round(train_wall + (train_start - wall0), 1),
        "cpu_s_train": round(train_cpu, 1), "wall_s_test_eval": round(eval_wall, 1), "threads": threads(),
        "cores_busy_train": round(train_cpu / (train_wall + (train_start - wall0)), 2),
        "val_slices_per_epoch": card["training"].get("val_slices"),
        "val_share_median": _median([e.get("val_share") for e in epochs_run]),
        "val_history": [{"epoch": e["epoch"], "val_mean_fg_dice": e["val_mean_fg_dice"]} for e in epochs_run],
        "test_pooled_dice": report["pooled"]["dice"],
        "test_mean_fg_dice_pooled": report["pooled"]["mean_foreground_dice"],
        "test_subject_mean_fg_dice": report["subjects"]["mean_foreground_dice_mean"],
        "test_subject_dice_mean": report["subjects"]["dice_mean"],
        "test_hd95_mm_mean": report["subjects"]["hd95_mm_mean"], "width": args.width,
        "class_weights": card["training"]["class_weights"],
        "test_sites": {site: {"mean_fg_dice": v["mean_foreground_dice"], "dice": v["dice"]}
                       for site, v in report.get("sites", {}).items()},
        "test_reviewer_bar": report["reviewer_bar"],
        "target_mean_fg_dice": TARGETS[args.network], "version": report["model"]["version"],
    }
    (results / f"b3_{args.network}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.results is None:
        write_markdown()
    print(json.dumps({k: result[k] for k in ("network", "epochs_run", "train_images_per_s_median",
                                             "test_mean_fg_dice_pooled", "test_pooled_dice")}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


def _median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def write_markdown() -> None:
    rows = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("b3_*.json"))
            if f.stem in ("b3_unet", "b3_enet")]
    lines = ["# B3 — training throughput and held-out Dice on the atlas cohort", ""]
    speed = sorted(p.name for p in RESULTS.glob("b3_speed*.md"))
    for name in ("b3_status.md", *speed, "b3_engine.md", "b3_gpu.md"):  # by hand / b3_speed / b3_engine / gpu_train
        part = RESULTS / name
        if part.is_file():
            lines += [part.read_text().strip(), ""]
    for r in rows:
        d = r["test_pooled_dice"]
        hd = r["test_hd95_mm_mean"]
        ok = "meets" if r["test_mean_fg_dice_pooled"] >= r["target_mean_fg_dice"] else "MISSES"
        width = f" width {r['width']:g}" if "width" in r else ""
        lines += [f"## {r['network']}{width} ({r['date']})", "",
                  f"- command: `.venv/bin/{r['command']}`", f"- machine: {r['machine']}; load average at start "
                  f"{r['load_avg_start']}, at end {r['load_avg_end']}",
                  f"- budget: {r['budget_min']:g} min wall clock for training + validation; used "
                  f"{r['wall_s_train_incl_probe_and_val'] / 60:.1f} min wall, {r['cpu_s_train'] / 60:.1f} min CPU "
                  f"(process); {r['epochs_run']} epochs of {r['train_slices']} slices (batch {r['batch_size']}, "
                  f"Adam lr {r['lr']:g}, cosine), best epoch {r['best_epoch']}",
                  f"- training throughput: {r['train_images_per_s_median']:.2f} images/s (median over epochs; "
                  "augmentation included)" + (f"; {r['threads']} OpenMP thread(s), {r['cores_busy_train']} cores busy; "
                                              f"validation on {r['val_slices_per_epoch']} slices, median "
                                              f"{100 * (r['val_share_median'] or 0):.0f} % of an epoch"
                                              if "threads" in r else ""),
                  f"- held-out test: {r['test_subjects']} subjects, {r['test_slices']} slices; mean foreground Dice "
                  f"**{r['test_mean_fg_dice_pooled']:.4f}** pooled, {r['test_subject_mean_fg_dice']:.4f} mean over "
                  f"subjects; target {r['target_mean_fg_dice']:.2f}: {ok}", "",
                  "| class | Dice (pooled) | Dice (subject mean) | HD95 mm (subject mean) |", "|---|---|---|---|"]
        for name in ("csf", "gray_matter", "white_matter"):
            lines.append(f"| {name} | {d[name]:.4f} | {r['test_subject_dice_mean'][name]:.4f} | "
                         f"{hd[name] if hd[name] is None else round(hd[name], 2)} |")
        if r.get("test_sites"):
            lines += ["", "| site | CSF | gray matter | white matter | mean foreground (pooled Dice) |",
                      "|---|---|---|---|---|"]
            for site, v in r["test_sites"].items():
                lines.append(f"| {site} | " + " | ".join(f"{v['dice'][n]:.4f}" for n in
                                                         ("csf", "gray_matter", "white_matter"))
                             + f" | {v['mean_fg_dice']:.4f} |")
        bar = r.get("test_reviewer_bar")
        if bar:
            lines += ["", f"Test masks a reviewer would accept (surface Dice >= {bar['tau']:g} at "
                      f"{bar['tolerance_px']:g} px, masks of >= {bar['min_pixels']} px; the ceiling of B8's coverage "
                      "for this model):", "", "| class | masks | accepted | share | median surface Dice |"
                      + "".join(f" share site {s} |" for s in bar.get("sites", {})),
                      "|---|---:|---:|---:|---:|" + "---:|" * len(bar.get("sites", {}))]
            for name, c in bar["classes"].items():
                share = "—" if c["share"] is None else f"{100 * c['share']:.0f} %"
                med = "—" if c["median_surface_dice"] is None else f"{c['median_surface_dice']:.3f}"
                per_site = "".join(" — |" if s[name]["share"] is None else f" {100 * s[name]['share']:.0f} % |"
                                   for s in bar.get("sites", {}).values())
                lines.append(f"| {name} | {c['masks']} | {c['passed']} | {share} | {med} |{per_site}")
        lines += ["", "validation (mean foreground Dice per epoch): " + ", ".join(
            f"{h['epoch']}: {h['val_mean_fg_dice']:.3f}" for h in r["val_history"]), ""]
    (RESULTS / "B3.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
