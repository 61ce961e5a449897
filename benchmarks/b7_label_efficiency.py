"""B7 — label efficiency: test Dice against cumulative human seconds, three arms, several seeds.

Arms (ARCHITECTURE §12), all starting from the same initial model per seed (trained on site A only) and spending
about the same human seconds per round (``--budget-seconds``, the cost model of `contract.CostModel`):

1. ``scratch`` — the classical way: random pool slices drawn from scratch (``scratch_s`` each, 240 s by
   default), ``floor(budget / scratch_s)`` of them per round, added with their true label maps.
2. ``random-review`` — random masks through verify -> adjust: the loop's own round (`loop.demo.run_round`) with
   ``strategy="random"`` and ``verify_min=0`` (every chosen mask is verified; the rejected ones are corrected).
3. ``segqa`` — the loop as it ships: routing by calibrated acceptance within the seconds budget.

A fourth arm runs only when asked for (``--arms no-labels``): ``no-labels`` retrains every round exactly as the
others do, on the labelled train and val splits alone, with no human second spent: the control that says how
much of an arm's gain is the retraining itself and how much its labels. A run without all three main arms
writes its JSON and a table per arm (no targets, no plot).

Every arm retrains with the same options and promotion rule; the curve is the champion's pooled test Dice
(overall and on site B) after each round against the human seconds spent so far (arms 2-3: the seconds the
store booked for votes and corrections; arm 1: slices x scratch_s). Mean and standard deviation over seeds, and
segqa's difference from each other arm paired by seed (the arms of a seed share its cohort and initial model),
with a 95 % t interval: the report's last section and the plot's third panel.

    .venv/bin/python benchmarks/b7_label_efficiency.py --seeds 0 1 2 --rounds 3 --work /tmp/segqa-b7
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from qa_workflow.contract import CostModel
from qa_workflow.loop.demo import LoopConfig, Workspace, _site_dice, _test_dice, prepare, round_id, run_round

ARMS = ("scratch", "random-review", "segqa")
CONTROL = "no-labels"
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ curve arithmetic

def seconds_to_reach(seconds: Sequence[float], dice: Sequence[float], target: float) -> float | None:
    """Human seconds at which a curve (points in order of seconds) first reaches ``target``, interpolating
    linearly between points; None when it never does."""
    for k, (s, d) in enumerate(zip(seconds, dice, strict=True)):
        if d >= target:
            if k == 0:
                return float(s)
            s0, d0 = seconds[k - 1], dice[k - 1]
            return float(s0 + (s - s0) * (target - d0) / (d - d0))
    return None


def interpolate(seconds: Sequence[float], dice: Sequence[float], at: float) -> float:
    """The curve's Dice at ``at`` human seconds (linear between points, flat after the last)."""
    return float(np.interp(at, seconds, dice))


# ------------------------------------------------------------------------------------------ the arms

def _point(ws: Workspace, network: str, seconds: float, r: int, **extra: object) -> dict:
    overall = _test_dice(ws, network).get("mean_foreground", math.nan)
    sites = _site_dice(ws, network)
    return {"round": r, "seconds": seconds, "dice": overall,
            "site_dice": {s: v.get("mean_foreground", math.nan) for s, v in sites.items()}, **extra}


def run_scratch(cfg: LoopConfig, ws: Workspace, rounds: int, costs: CostModel, seed: int, draw: bool = True
                ) -> list[dict]:
    """Arm 1: random pool slices labelled from scratch, floor(budget / scratch_s) per round; with ``draw``
    False, none (the no-labels control: the same retraining on the labelled splits alone)."""
    from qa_workflow.loop.retraining import RetrainSet, retrain_round
    from training.dataset import DatasetWriter, load_png, read_index

    net = cfg.networks[0]
    base = read_index(ws.cohort)
    pool = [r for r in base if r.split == "pool"]
    order = np.random.default_rng(seed).permutation(len(pool))
    per_round = int((cfg.budget_seconds or 0.0) // costs.scratch_s) if draw else 0
    curve = [_point(ws, net, 0.0, 0, slices=0)]
    for r in range(1, rounds + 1):
        chosen = [pool[i] for i in order[: per_round * r]]
        out = ws.root / "rounds" / round_id(r) / "training-set"
        with DatasetWriter(out, overwrite=True, source="b7-scratch", base_dataset=str(ws.cohort)) as writer:
            for rec in [*(b for b in base if b.split in ("train", "val")), *chosen]:
                writer.add(rec.subject, rec.slice, load_png(ws.cohort / rec.image),
                           load_png(ws.cohort / rec.mask, "mask"), "train" if rec.split == "pool" else rec.split,
                           rec.site)
        n_base = sum(1 for b in base if b.split == "train")
        retrain_round(round_id(r), ws.registry, ws.cohort, RetrainSet(out, n_base, len(chosen), 0, 0, 0, 0),
                      ws.root / "rounds" / round_id(r) / "train", cfg.retrain, warm_start=cfg.warm_start,
                      tolerance=cfg.tolerance, networks=cfg.networks)
        curve.append(_point(ws, net, len(chosen) * costs.scratch_s, r, slices=len(chosen)))
    return curve


def run_loop_arm(cfg: LoopConfig, ws: Workspace, rounds: int) -> list[dict]:
    """Arms 2 and 3: the loop's own rounds; seconds are what the store booked (votes and corrections)."""
    net = cfg.networks[0]
    curve = [_point(ws, net, 0.0, 0, verified=0, corrected=0)]
    spent = 0.0
    for r in range(1, rounds + 1):
        s = run_round(cfg, ws, r)
        spent += s.verify_seconds + s.adjust_seconds
        curve.append(_point(ws, net, spent, r, verified=s.reviewed, corrected=s.corrected_slices,
                            auto_accepted=s.auto_accepted, promoted=s.promoted.get(net, False)))
    return curve


def arm_config(cfg: LoopConfig, arm: str, workspace: Path) -> LoopConfig:
    cfg = replace(cfg, workspace=str(workspace))
    if arm == "random-review":
        return replace(cfg, strategy="random", verify_min=0.0)
    return cfg


def attach_challengers(curve: list[dict], workspace: Path, network: str) -> None:
    """Add each round's challenger Dice, overall and per site, to the curve's points: the model retrained on
    everything the arm had labelled by then, promoted or not (the label-efficiency measure; the champion only
    moves when the promotion rule lets it). Round 0 is the initial model. Per-site Dice comes from the decision
    log (the promotion's own evaluation) or, for runs logged before it kept them, from evaluating the challenger
    on test (cached beside the arm's registry)."""
    from qa_workflow import storage
    from training.evaluate import evaluate_model

    ws = Workspace(workspace)
    decisions = {d["round"]: d for d in ws.registry.decisions() if d["network"] == network and d["round"]}
    for p in curve:
        if not p["round"]:
            p["challenger"], p["challenger_site"] = p["dice"], dict(p["site_dice"])
            continue
        d = decisions[p["round"]]
        p["challenger"] = d["challenger_metrics"]["mean_foreground_dice"]
        if "sites" in d["challenger_metrics"]:  # recorded by the promotion's own evaluation
            p["challenger_site"] = {s: v["mean_foreground"] for s, v in d["challenger_metrics"]["sites"].items()}
            continue
        cache = workspace / "site-dice-challengers" / f"{d['challenger']}.json"
        if not cache.is_file():
            report = evaluate_model(storage.local_path(ws.registry.model_uri(network, d["challenger"])), ws.cohort,
                                    split="test")
            storage.write_json(str(cache), {site: row["mean_foreground_dice"]
                                            for site, row in report.get("sites", {}).items()})
        p["challenger_site"] = json.loads(cache.read_text())


# ------------------------------------------------------------------------------------------ report

def _mean_curve(curves: list[list[dict]], key: str, site: str | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    secs = np.array([[p["seconds"] for p in c] for c in curves], dtype=float)
    per_site = "site_dice" if key == "dice" else "challenger_site"
    vals = np.array([[p[per_site].get(site, math.nan) if site else p[key] for p in c] for c in curves],
                    dtype=float)
    return secs.mean(axis=0), vals.mean(axis=0), vals.std(axis=0)


def _per_seed(curves: list[list[dict]], site: str | None) -> np.ndarray:
    """Challenger Dice (seeds, rounds), overall or on ``site``."""
    return np.array([[p["challenger_site"].get(site, math.nan) if site else p["challenger"] for p in c]
                     for c in curves], dtype=float)


def _paired(curves: dict[str, list[list[dict]]], other: str, site: str | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """segqa's challenger Dice minus ``other``'s, paired by seed (overall or on ``site``): the per-seed gaps
    (seeds, rounds), their mean per round and the half width of its 95 % t interval (0 with one seed)."""
    from scipy import stats

    gaps = _per_seed(curves["segqa"], site) - _per_seed(curves[other], site)
    n = gaps.shape[0]
    half = (stats.t.ppf(0.975, n - 1) * gaps.std(axis=0, ddof=1) / math.sqrt(n) if n > 1
            else np.zeros(gaps.shape[1]))
    return gaps, gaps.mean(axis=0), half


def plot(curves: dict[str, list[list[dict]]], path: Path, site: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), sharex=True)
    colors = {"scratch": "#7f7f7f", "random-review": "#1f77b4", "segqa": "#d62728"}
    for ax, (title, which) in zip(axes[:2], (("overall", None), (f"site {site}", site)), strict=True):
        for arm, cs in curves.items():
            s, m, sd = _mean_curve(cs, "challenger", which)
            hours = s / 3600.0
            ax.plot(hours, m, "o-", color=colors[arm], label=arm)
            ax.fill_between(hours, m - sd, m + sd, color=colors[arm], alpha=0.15)
        ax.set_title(f"model retrained on the labels: test Dice ({title}),\nmean ± sd over "
                     f"{len(next(iter(curves.values())))} seeds", fontsize=10)
        ax.set_xlabel("cumulative human time (hours, cost model)")
        ax.set_ylabel("mean foreground Dice")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    # the arms of a seed share its cohort and initial model: their per-seed differences show what the spread
    # between seeds (the bands) hides
    ax = axes[2]
    n_seeds = len(curves["segqa"])
    hours = _mean_curve(curves["segqa"], "challenger")[0] / 3600.0
    series = [(other, which, style) for other in ("random-review", "scratch")
              for which, style in ((None, "o-"), (site, "s--"))]
    for k, (other, which, style) in enumerate(series):
        dodge = 0.01 * (k - (len(series) - 1) / 2)  # hours, so that the intervals do not hide each other
        _, mean, half = _paired(curves, other, which)
        ax.errorbar(hours + dodge, mean, yerr=half, fmt=style, color=colors[other], capsize=3,
                    label=f"segqa − {other}, {'overall' if which is None else 'site ' + which}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_title(f"paired by seed: segqa minus the other arm,\nmean and 95 % t interval over {n_seeds} seeds",
                 fontsize=10)
    ax.set_xlabel("cumulative human time (hours, segqa's)")
    ax.set_ylabel("difference in mean foreground Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def targets(curves: dict[str, list[list[dict]]], site: str) -> list[str]:
    """The issue's three targets, computed on the mean challenger curves (the model retrained on each arm's
    labels: what the labels bought, whatever the promotion rule then decided)."""
    s1, d1, _ = _mean_curve(curves["scratch"], "challenger")
    s2, d2, _ = _mean_curve(curves["random-review"], "challenger")
    s3, d3, _ = _mean_curve(curves["segqa"], "challenger")
    s2b, d2b, _ = _mean_curve(curves["random-review"], "challenger", site)
    s3b, d3b, _ = _mean_curve(curves["segqa"], "challenger", site)
    lines = []
    need = seconds_to_reach(s3, d3, d1[-1])
    share = None if need is None else need / s1[-1]
    verdict = "met" if share is not None and share <= 1 / 3 else "missed"
    # when the initial model already reaches it, say so: the comparison then says nothing about segqa
    trivial = f", trivially: scratch's labels left its model below the initial one ({d1[0]:.4f})" if need == 0 else ""
    lines.append(f"- segqa reaches scratch's final Dice ({d1[-1]:.4f}, {s1[-1] / 3600:.2f} h) with "
                 + ("— never, within its rounds" if share is None else f"{need / 3600:.2f} h = {share:.2f}x of its "
                    "seconds") + f" (target ≤ 0.33x): **{verdict}**{trivial}")
    below = [(float(s), float(d), interpolate(s2, d2, float(s))) for s, d in zip(s3[1:], d3[1:], strict=True)
             if d < interpolate(s2, d2, float(s)) - 1e-9]
    lines.append("- segqa at or above random review at every budget point (mean curves, random review "
                 "interpolated at segqa's seconds): "
                 + ("**met**" if not below else "**missed** at " + ", ".join(
                     f"{s / 3600:.2f} h ({d:.4f} vs {o:.4f})" for s, d, o in below)))
    need_b = seconds_to_reach(s3b, d3b, d2b[-1])
    share_b = None if need_b is None else need_b / s2b[-1]
    lines.append(f"- segqa reaches random review's final site-{site} Dice ({d2b[-1]:.4f}) with "
                 + ("— never, within its rounds" if share_b is None else f"{share_b:.2f}x of its seconds")
                 + f" (target ≤ 0.67x): **{'met' if share_b is not None and share_b <= 2 / 3 else 'missed'}**")
    return lines


def paired_gaps(curves: dict[str, list[list[dict]]], site: str) -> list[str]:
    """Per seed, segqa's last-round challenger Dice minus each other arm's (overall and on ``site``): the arms of
    one seed share the cohort and the initial model, so the paired difference removes what the seeds share. Mean,
    a 95 % t interval and how many seeds favour segqa."""
    lines = []
    for other in ("random-review", "scratch"):
        for label, which in (("overall", None), (f"site {site}", site)):
            gaps, mean, half = _paired(curves, other, which)
            n = gaps.shape[0]
            if n < 2:
                continue
            lines.append(f"- segqa − {other}, {label}: {mean[-1]:+.4f} (95 % t interval {mean[-1] - half[-1]:+.4f} "
                         f"to {mean[-1] + half[-1]:+.4f}); segqa ahead in {int((gaps[:, -1] > 0).sum())} of {n} seeds")
    return lines


def report(curves: dict[str, list[list[dict]]], args: argparse.Namespace, argv: Sequence[str], minutes: float,
           load: float, png: Path) -> str:
    site = args.site
    lines = [f"# B7 — label efficiency ({datetime.now(UTC).isoformat(timespec='seconds')})", "",
             f"- command: `.venv/bin/python benchmarks/b7_label_efficiency.py {' '.join(argv)}`",
             f"- machine: 2-core dev machine, no GPU ({platform.machine()}), Python {platform.python_version()}; "
             f"load average at start {load:.1f}; wall time {minutes:.1f} min",
             f"- cohort {args.subjects} subjects × {args.slices} slices on sites A,B; initial {args.network} (width "
             f"{args.width}) trained on site A; {args.rounds} rounds of {args.budget_seconds:.0f} human seconds each; "
             f"seeds {', '.join(map(str, args.seeds))}; simulated verifiers judge by surface Dice at 1 px (§10)",
             "- cost model: verify 3 s per mask, adjust 60 s per slice, scratch 240 s per slice",
             f"- plot: `benchmarks/results/{png.name}`", "",
             "*challenger*: the model retrained (warm start from the champion) on everything the arm had labelled "
             "by then, promoted or not: what the labels bought, and what the targets and the plot use. *champion*: "
             "the model the loop ships, which a challenger replaces only under the promotion rule (mean foreground "
             "Dice must not drop and no class may drop more than 0.01 on the test split).",
             "",
             "| arm | round | human hours (mean) | challenger overall | challenger site " + site
             + " | champion overall | champion site " + site + " | work |",
             "|---|---:|---:|---|---|---|---|---|"]
    for arm, cs in curves.items():
        s, m, sd = _mean_curve(cs, "dice")
        _, mb, sdb = _mean_curve(cs, "dice", site)
        _, mc, sdc = _mean_curve(cs, "challenger")
        _, mcb, sdcb = _mean_curve(cs, "challenger", site)
        for r in range(len(s)):
            pts = [c[r] for c in cs]
            if arm == "scratch":
                work = f"{np.mean([p['slices'] for p in pts]):.0f} slices drawn"
            else:
                work = (f"{np.mean([p['verified'] for p in pts]):.0f} verified, "
                        f"{np.mean([p['corrected'] for p in pts]):.0f} corrected (this round)")
            cells = [f"{a[r]:.4f} ± {b[r]:.4f}" for a, b in ((mc, sdc), (mcb, sdcb), (m, sd), (mb, sdb))]
            work = work if r else "initial model"
            lines.append(f"| {arm} | {r} | {s[r] / 3600:.2f} | {' | '.join(cells)} | {work} |")
    lines += ["", "Targets (ARCHITECTURE §12, issue #13):", *targets(curves, site), "",
              "Paired by seed, last round (challengers; the arms of a seed share its cohort and initial model):",
              *paired_gaps(curves, site), ""]
    return "\n".join(lines)


def arms_table(curves: dict[str, list[list[dict]]], args: argparse.Namespace, argv: Sequence[str], minutes: float,
               site: str) -> str:
    """For a run of some arms only: each arm's challenger Dice per round, mean ± sd over seeds."""
    lines = [f"# B7 — arms {', '.join(curves)} ({datetime.now(UTC).isoformat(timespec='seconds')})", "",
             f"- command: `.venv/bin/python benchmarks/b7_label_efficiency.py {' '.join(argv)}`",
             f"- machine: 2-core dev machine, no GPU ({platform.machine()}); wall time {minutes:.1f} min; seeds "
             f"{', '.join(map(str, args.seeds))}", "",
             f"| arm | round | human hours (mean) | challenger overall | challenger site {site} |",
             "|---|---:|---:|---|---|"]
    for arm, cs in curves.items():
        s, m, sd = _mean_curve(cs, "challenger")
        _, mb, sdb = _mean_curve(cs, "challenger", site)
        lines += [f"| {arm} | {r} | {s[r] / 3600:.2f} | {m[r]:.4f} ± {sd[r]:.4f} | {mb[r]:.4f} ± {sdb[r]:.4f} |"
                  for r in range(len(s))]
    if CONTROL in curves and getattr(args, "against", None):
        lines += ["", *control_gaps(curves[CONTROL], json.loads(Path(args.against).read_text()), site,
                                    args.against)]
    return "\n".join(lines) + "\n"


def control_gaps(control: list[list[dict]], others: dict[str, list[list[dict]]], site: str, source: str
                 ) -> list[str]:
    """What each arm of another run (``others``, its JSON) bought beyond the no-labels control, paired by seed at
    the last round: the arms of a seed must share the initial model (checked on round 0), and the gap is then
    the labels' part of the arm's gain; the rest is the retraining itself."""
    from scipy import stats

    lines = [f"Against `{source}`, paired by seed, last round (challengers): arm − {CONTROL}, and the arm's gain "
             "over round 0 it makes up:"]
    for arm, cs in others.items():
        if len(cs) != len(control) or any(abs(a[0]["challenger"] - c[0]["challenger"]) > 1e-9
                                           for a, c in zip(cs, control, strict=True)):
            raise SystemExit(f"{source}: arm {arm} does not share this run's seeds and initial models")
        for label, which in (("overall", None), (f"site {site}", site)):
            arm_dice, ctl_dice = _per_seed(cs, which), _per_seed(control, which)
            gaps = arm_dice[:, -1] - ctl_dice[:, -1]
            n = len(gaps)
            half = stats.t.ppf(0.975, n - 1) * gaps.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
            gain = float((arm_dice[:, -1] - arm_dice[:, 0]).mean())
            share = f"{gaps.mean() / gain:.0%}" if gain else "—"
            lines.append(f"- {arm}, {label}: {gaps.mean():+.4f} (95 % t interval {gaps.mean() - half:+.4f} to "
                         f"{gaps.mean() + half:+.4f}), ahead in {int((gaps > 0).sum())} of {n} seeds; of its gain "
                         f"{gain:+.4f} over round 0, {share} from the labels")
    return lines


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget-seconds", type=float, default=None,
                    help="human seconds per round (default: the quick demo's)")
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--network", default="unet", choices=["enet", "unet"])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--initial-epochs", type=int, default=30)
    ap.add_argument("--retrain-epochs", type=int, default=16)
    ap.add_argument("--site", default="B", help="the shifted site reported on its own")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=[*ARMS, CONTROL])
    ap.add_argument("--against", default=None, metavar="JSON",
                    help=f"with --arms {CONTROL}: another run's JSON (same seeds and settings) whose arms the "
                         "control is paired with")
    ap.add_argument("--work", default="/tmp/segqa-b7")
    ap.add_argument("--out", default=str(RESULTS / "B7.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report and plot from the run's JSON and workspaces (same options as the run, "
                         "with --wall-min and --load from its log)")
    ap.add_argument("--wall-min", type=float, default=None, help="with --report-only: the run's wall time")
    ap.add_argument("--load", type=float, default=None, help="with --report-only: load average at the run's start")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    out = Path(args.out)
    if args.report_only:
        curves = json.loads(out.with_suffix(".json").read_text())
        run_argv = [a for a in argv if a != "--report-only"]
        for flag in ("--wall-min", "--load"):
            if flag in run_argv:
                k = run_argv.index(flag)
                del run_argv[k:k + 2]
        if args.budget_seconds is None:
            args.budget_seconds = float(LoopConfig.preset(quick=True).budget_seconds or 0.0)
        finish(curves, args, run_argv, args.wall_min or math.nan, args.load or math.nan, out)
        return 0

    t0 = time.perf_counter()
    load = os.getloadavg()
    quick = LoopConfig.preset(quick=True)
    if args.budget_seconds is None:
        args.budget_seconds = float(quick.budget_seconds or 0.0)
    costs = CostModel()
    work = Path(args.work)
    curves: dict[str, list[list[dict]]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        net = args.network
        cfg = replace(quick, workspace=str(work / f"seed-{seed}" / "base"), rounds=args.rounds,
                      subjects=args.subjects, slices=args.slices, seed=seed, budget_seconds=args.budget_seconds,
                      networks=(net,), review_network=net, export=False,
                      initial_train={net: {**quick.initial_train[net], "epochs": args.initial_epochs,
                                           "width": args.width, "seed": seed}},
                      retrain={net: {**quick.retrain[net], "epochs": args.retrain_epochs, "seed": seed}})
        prepare(cfg)
        for arm in args.arms:
            arm_dir = work / f"seed-{seed}" / arm
            if arm_dir.exists():
                shutil.rmtree(arm_dir)
            shutil.copytree(cfg.workspace, arm_dir, symlinks=True)
            acfg = arm_config(cfg, arm, arm_dir)
            ws = Workspace(arm_dir)
            curve = (run_scratch(acfg, ws, args.rounds, costs, seed, draw=arm == "scratch")
                     if arm in ("scratch", CONTROL) else run_loop_arm(acfg, ws, args.rounds))
            curves[arm].append(curve)
            print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] seed {seed} {arm}: " + ", ".join(
                f"r{p['round']} {p['seconds'] / 3600:.2f} h Dice {p['dice']:.3f} "
                f"(site {args.site} {p['site_dice'].get(args.site, math.nan):.3f})" for p in curve), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1, default=str))
    finish(curves, args, argv, (time.perf_counter() - t0) / 60, load[0], out)
    return 0


def finish(curves: dict[str, list[list[dict]]], args: argparse.Namespace, argv: Sequence[str], minutes: float,
           load: float, out: Path) -> None:
    """Challenger Dice from the arms' decision logs, then the plot and the Markdown report (atomic writes)."""
    for arm, cs in curves.items():
        for seed, curve in zip(args.seeds, cs, strict=True):
            attach_challengers(curve, Path(args.work) / f"seed-{seed}" / arm, args.network)
    tmp_json = out.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(curves, indent=1, default=str))
    tmp_json.replace(out.with_suffix(".json"))
    if set(curves) == set(ARMS):
        png = out.with_suffix(".png")
        plot(curves, png, args.site)
        text = report(curves, args, argv, minutes, load, png)
    else:  # some arms only: no targets, no plot
        text = arms_table(curves, args, argv, minutes, args.site)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
