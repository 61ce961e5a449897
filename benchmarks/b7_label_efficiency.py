"""B7 — label efficiency: active (uncertainty) vs random selection at equal review budgets.

For each seed: one atlas cohort and one initial model (shared by both arms, so they start equal), then R
rounds of the real loop (`qa_workflow.loop.demo.run_round`: predict -> select -> batch -> simulated reviewers through
the real handlers -> analyze -> retrain -> champion/challenger) per arm; the arms differ only in the selection
strategy (`uncertainty` vs `random`). Reported: the champion's mean foreground Dice on the held-out `test`
subjects after each round, mean ± standard deviation over seeds, and the confirmed masks each arm gained.

    .venv/bin/python benchmarks/b7_label_efficiency.py --seeds 0 1 2 --rounds 3 --budget 60 --work /tmp/b7
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from qa_workflow.loop.demo import LoopConfig, Workspace, _test_dice, prepare, run_round


def run_arm(base: Path, arm_dir: Path, cfg: LoopConfig, rounds: int) -> list[dict]:
    if arm_dir.exists():
        shutil.rmtree(arm_dir)
    shutil.copytree(base, arm_dir, symlinks=True)
    cfg = replace(cfg, workspace=str(arm_dir))
    ws = Workspace(arm_dir)
    net = cfg.networks[0]
    first = _test_dice(ws, net)
    out = [{"round": 0, "dice": first, "challenger": first, "accepted": 0, "reviewed": 0, "pool_slices": 0}]
    for r in range(1, rounds + 1):
        s = run_round(cfg, ws, r)
        decision = [d for d in ws.registry.decisions() if d["network"] == net and d["round"] == r][-1]
        m = decision["challenger_metrics"]
        challenger = {**m["dice"], "mean_foreground": m["mean_foreground_dice"]}
        out.append({"round": r, "dice": s.dice[net], "challenger": challenger,
                    "accepted": s.accepted_items, "reviewed": s.reviewed, "pool_slices": s.training_pool_slices,
                    "promoted": s.promoted[net]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--network", default="unet", choices=["enet", "unet"])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--initial-epochs", type=int, default=30)
    ap.add_argument("--retrain-epochs", type=int, default=5)
    ap.add_argument("--work", default="/tmp/segqa-b7")
    ap.add_argument("--out", default="benchmarks/results/B7.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    work = Path(args.work)
    curves: dict[str, list[list[dict]]] = {"uncertainty": [], "random": []}
    for seed in args.seeds:
        cfg = LoopConfig(workspace=str(work / f"seed-{seed}" / "base"), rounds=args.rounds, subjects=args.subjects,
                         slices=args.slices, seed=seed, budget=args.budget, networks=(args.network,),
                         review_network=args.network, export=False,
                         initial_train={args.network: dict(epochs=args.initial_epochs, width=args.width, seed=seed,
                                                           lr=args.lr)},
                         retrain={args.network: dict(epochs=args.retrain_epochs, seed=seed, lr=args.lr / 2.5)})
        prepare(cfg)
        for strategy in curves:
            arm = run_arm(Path(cfg.workspace), work / f"seed-{seed}" / strategy, replace(cfg, strategy=strategy),
                          args.rounds)
            curves[strategy].append(arm)
            print(f"seed {seed} {strategy}: " + ", ".join(
                f"r{c['round']} challenger {c['challenger'].get('mean_foreground', float('nan')):.3f} "
                f"(+{c['accepted']} confirmed)" for c in arm), flush=True)
    lines = [f"## B7 — label efficiency ({datetime.now(UTC).isoformat(timespec='seconds')})", "",
             "- command: `.venv/bin/python benchmarks/b7_label_efficiency.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- machine: 2-core dev machine, no GPU ({platform.machine()}), Python {platform.python_version()}",
             f"- network {args.network} (width {args.width}); cohort {args.subjects} subjects × {args.slices} slices; "
             f"review budget {args.budget} masks per round; "
             f"{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); "
             f"initial training {args.initial_epochs} epochs, warm-started retraining {args.retrain_epochs} epochs",
             "- metric: mean foreground Dice on the held-out test subjects (mean ± sd over seeds) of the challenger "
             "retrained on the round's training set, and of the champion after the promotion rule; confirmed = masks "
             "every simulated reviewer accepted (added to training)", "",
             "| round | model retrained on | active (uncertainty) | random | active − random | confirmed masks "
             "(active / random) | pool slices in training (active / random) |",
             "|---|---|---|---|---|---|---|"]
    for r in range(args.rounds + 1):
        for key, label in (("challenger", "this round's confirmed masks (challenger)"),
                           ("dice", "champion after promotion rule")):
            if r == 0 and key == "dice":
                continue
            a = np.array([c[r][key].get("mean_foreground", np.nan) for c in curves["uncertainty"]])
            b = np.array([c[r][key].get("mean_foreground", np.nan) for c in curves["random"]])
            d = a - b
            ca = sum(c[r]["accepted"] for c in curves["uncertainty"]) / len(args.seeds)
            cb = sum(c[r]["accepted"] for c in curves["random"]) / len(args.seeds)
            pa = sum(c[r]["pool_slices"] for c in curves["uncertainty"]) / len(args.seeds)
            pb = sum(c[r]["pool_slices"] for c in curves["random"]) / len(args.seeds)
            lines.append(f"| {r} | {'initial model' if r == 0 else label} | {a.mean():.4f} ± {a.std():.4f} | "
                         f"{b.mean():.4f} ± {b.std():.4f} | {d.mean():+.4f} ± {d.std():.4f} | {ca:.1f} / {cb:.1f} | "
                         f"{pa:.1f} / {pb:.1f} |")
    lines += ["", f"wall time {(time.perf_counter() - t0) / 60:.1f} min", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
