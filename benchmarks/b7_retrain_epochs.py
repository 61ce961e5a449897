"""B7's retraining length, side by side: warm-started challengers of a finished quick demo, trained for several
epoch counts and seeds on the same retraining sets, each judged by the promotion rule against the champion it
started from.

Every run starts from the demo's initial model of its network (``WORKSPACE/initial/<network>-initial``), trains on
one round's retraining set (``WORKSPACE/rounds/round-NN/training-set``; round 0 = the labelled ``train`` split
alone, the control that shows what the learning-rate restart does without new labels) with the demo's retrain
options (batch size, learning rate) and only the epoch count and seed changed, and is evaluated on the cohort's
``test`` split with the demo's test-time augmentation. The runs go two at a time, one thread each.

    .venv/bin/python benchmarks/b7_retrain_epochs.py --workspace demo --rounds 0 1 3 --epochs 8 16 --seeds 0 1 2

``--pseudo-labels T`` adds, for every round >= 1, the same set plus the round's pool slices that nobody
reviewed, labelled by the probability maps the round predicted them with: the most probable class where its
probability is at least T, ignored elsewhere (self-training; not something the loop does). Such a set is larger,
so an epoch is more gradient steps: compare at equal images seen (the ``images`` column, epochs x slices).

    .venv/bin/python benchmarks/b7_retrain_epochs.py --workspace demo --rounds 1 --epochs 8 16 32 --seeds 0 1 2 \
        --networks unet --pseudo-labels 0.9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.dataset import read_index  # noqa: E402
from training.threads import ENV_VAR  # noqa: E402  (no MXNet: the thread count must be set before it loads)

RESULTS = Path(__file__).resolve().parent / "results"


def _run(job: dict[str, Any]) -> dict[str, Any]:
    """One challenger: train, evaluate on test, judge against the champion's metrics."""
    from qa_workflow.loop.registry import decide_promotion
    from training.train import TrainConfig, train_model

    start = time.perf_counter()
    cfg = TrainConfig(data_dir=job["data"], out_dir=job["out"], network=job["network"], epochs=job["epochs"],
                      seed=job["seed"], init_from=job["init"], width=job["width"], **job["options"])
    train_model(cfg)
    metrics = _test_metrics(Path(job["out"]), Path(job["cohort"]), job["tta"])
    promote, reasons = decide_promotion(metrics, job["champion"], job["tolerance"])
    return {k: job[k] for k in ("network", "round", "epochs", "seed", "slices")} | {
        "seconds": round(time.perf_counter() - start, 1), "promote": promote, "reasons": reasons,
        "mean": metrics["mean_foreground_dice"], "dice": metrics["dice"],
        "sites": {s: v["mean_foreground"] for s, v in metrics["sites"].items()},
        "site_gray_matter": {s: v["gray_matter"] for s, v in metrics["sites"].items()}}


def pseudo_labelled_set(workspace: Path, rnd: int, threshold: float, out: Path) -> Path:
    """Round ``rnd``'s retraining set plus its unreviewed pool slices, each labelled by the round's probability
    maps where the most probable class reaches ``threshold`` and IGNORE_LABEL elsewhere; written to ``out``
    (replacing what is there) by the project's `DatasetWriter`."""
    import numpy as np

    from qa_workflow.contract import IGNORE_LABEL
    from qa_workflow.rounds.predict import load_probability_file, prob_file
    from training.dataset import DatasetWriter, load_png

    round_dir = workspace / "rounds" / f"round-{rnd:02d}"
    base = round_dir / "training-set"
    records = read_index(base)
    have = {(r.subject, r.slice) for r in records}
    with DatasetWriter(out, overwrite=True, source="b7-pseudo-labels", base_dataset=str(base),
                       pseudo_label_threshold=threshold) as writer:
        for rec in records:
            writer.add(rec.subject, rec.slice, load_png(base / rec.image), load_png(base / rec.mask, "mask"),
                       rec.split, rec.site)
        for rec in read_index(workspace / "cohort", splits=["pool"]):
            if (rec.subject, rec.slice) in have:
                continue
            probs, _ = load_probability_file(str(round_dir / "predictions" / prob_file(rec.subject, rec.slice)))
            labels = probs.argmax(axis=0).astype(np.uint8)
            labels[probs.max(axis=0) < threshold] = IGNORE_LABEL
            writer.add(rec.subject, rec.slice, load_png(workspace / "cohort" / rec.image), labels, "train", rec.site)
    return out


def _test_metrics(model_dir: Path, cohort: Path, tta: str) -> dict[str, Any]:
    """The metrics the promotion rule compares: the model on the cohort's test split, as `retrain_round` has them."""
    from qa_workflow.loop.retraining import evaluation_metrics
    from training.evaluate import evaluate_model

    return evaluation_metrics(evaluate_model(model_dir, cohort, split="test", tta=tta))


def _stats(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report(rows: list[dict[str, Any]], champions: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# B7 — retraining length, side by side ({meta['date']})", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; {meta['minutes']:.1f} min in all.", "",
             "Challengers warm-started from the demo's initial champion, test split (mean ± sd over seeds); "
             "`promoted` counts the seeds the promotion rule takes.", "",
             "| network | round | epochs | images | test Dice | site A | site B | gray matter | promoted | s/run |",
             "|---|---|---|---:|---|---|---|---|---|---|"]
    for net, champ in champions.items():
        lines.append(f"| {net} | champion | – | – | {champ['mean_foreground_dice']:.4f} | "
                     f"{champ['sites']['A']['mean_foreground']:.4f} | {champ['sites']['B']['mean_foreground']:.4f} | "
                     f"{champ['dice']['gray_matter']:.4f} | – | – |")
        keys = sorted({(str(r["round"]), r["epochs"]) for r in rows if r["network"] == net})
        for rnd, epochs in keys:
            group = [r for r in rows if (r["network"], str(r["round"]), r["epochs"]) == (net, rnd, epochs)]
            lines.append(
                f"| {net} | {'train only' if rnd == '0' else rnd} | {epochs} | {epochs * group[0]['slices']} | "
                f"{_stats([r['mean'] for r in group])} | "
                f"{_stats([r['sites']['A'] for r in group])} | {_stats([r['sites']['B'] for r in group])} | "
                f"{_stats([r['dice']['gray_matter'] for r in group])} | {sum(r['promote'] for r in group)}/"
                f"{len(group)} | {statistics.mean(r['seconds'] for r in group):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="demo", help="a finished quick demo's workspace")
    ap.add_argument("--rounds", type=int, nargs="+", default=[0, 1, 3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--networks", nargs="+", default=["unet", "enet"])
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    ap.add_argument("--pseudo-labels", type=float, default=None, metavar="T",
                    help="also train on each round's set plus its unreviewed pool slices, labelled where the "
                         "round's most probable class reaches probability T (ignored elsewhere)")
    ap.add_argument("--work", default="/tmp/segqa-b7-retrain")
    ap.add_argument("--out", default=str(RESULTS / "B7_retrain_epochs"))
    args = ap.parse_args(argv)

    ws = Path(args.workspace)
    demo = json.loads((ws / "demo.json").read_text())
    cfg = demo["config"]
    cohort = ws / "cohort"
    os.environ[ENV_VAR] = "1"  # read by the spawned workers before MXNet loads
    t0 = time.perf_counter()
    champions, jobs = {}, []
    for net in args.networks:
        initial = ws / "initial" / f"{net}-initial"
        card = json.loads((initial / "model_card.json").read_text())
        champions[net] = _test_metrics(initial, cohort, cfg["tta"])
        sets: list[tuple[int | str, Path, str]] = []
        for rnd in args.rounds:
            data = cohort if rnd == 0 else ws / "rounds" / f"round-{rnd:02d}" / "training-set"
            if not (data / "index.csv").is_file():
                print(f"{data}: no retraining set (is the demo finished?)", file=sys.stderr)
                return 2
            sets.append((rnd, data, f"r{rnd}"))
            if rnd and args.pseudo_labels is not None:
                pseudo = pseudo_labelled_set(ws, rnd, args.pseudo_labels,
                                             Path(args.work) / f"round-{rnd:02d}-pseudo-{args.pseudo_labels:g}")
                sets.append((f"{rnd} + pseudo-labels ≥ {args.pseudo_labels:g}", pseudo, f"r{rnd}-pseudo"))
        for rnd, data, tag in sets:
            n_slices = len(read_index(data, splits=["train"]))
            for epochs in args.epochs:
                for seed in args.seeds:
                    jobs.append(dict(network=net, round=rnd, epochs=epochs, seed=seed, data=str(data),
                                     slices=n_slices,
                                     init=str(initial), width=card["architecture"]["width"], cohort=str(cohort),
                                     out=f"{args.work}/{net}-{tag}-e{epochs}-s{seed}", tta=cfg["tta"],
                                     options={k: v for k, v in cfg["retrain"][net].items()
                                              if k in ("batch_size", "lr")},
                                     champion=champions[net], tolerance=cfg["tolerance"]))
    rows = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run, job) for job in jobs]
        for k, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            print(f"[{k}/{len(jobs)}] {row['network']} round {row['round']} {row['epochs']} epochs seed {row['seed']}:"
                  f" test {row['mean']:.4f} (B {row['sites']['B']:.4f}) promote={row['promote']} {row['seconds']}s",
                  flush=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.node()}, "
            f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "command": "python benchmarks/b7_retrain_epochs.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "minutes": (time.perf_counter() - t0) / 60}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "champions": champions, "runs": rows}, indent=1))
    text = report(rows, champions, meta)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
