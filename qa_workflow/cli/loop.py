"""The loop: `segqa retrain` (operators, cron) and `segqa demo` (the whole loop offline) — issue #8."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from qa_workflow.contract import DEFAULT_TTA, SegqaError, check_tta


def _networks(text: str) -> tuple[str, ...]:
    from qa_workflow.contract import NETWORKS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in NETWORKS]
    if bad or not names:
        raise SegqaError(f"--networks: expected a comma-separated subset of {','.join(NETWORKS)}, got {text!r}")
    return names


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"




def _round_table(summaries, initial, networks, initial_sites=None, sites=()):
    from rich.table import Table

    from qa_workflow.contract import NETWORK_LABELS
    from qa_workflow.loop.demo_report import human_time, running_cost

    initial_sites = initial_sites or {}
    shown_sites = [s for s in sites if any(s in initial_sites.get(n, {}) for n in networks)
                   or any(s in r.site_dice.get(n, {}) for r in summaries for n in networks)]
    t = Table(title="segqa demo — per round: human time verify / adjust, running cost against drawing the same "
                    "slices from scratch, auto-accepted masks (audited/rejected), thresholds after the round, and "
                    "each champion's mean test Dice, all and per site")
    for col in ("round", "verified", "adjust routed/chained", "auto-acc. (audit/rej.)", "human verify / adjust",
                "so far: human / scratch", "thresholds CSF/GM/WM"):
        t.add_column(col, justify="right")
    for n in networks:
        for site in ("all", *shown_sites):
            t.add_column(f"{NETWORK_LABELS.get(n, n)} {site}", justify="right")
    t.add_column("promoted")

    def dice(pooled, by_site, n):
        return [_fmt(pooled.get(n, {}).get("mean_foreground"))] + [
            _fmt(by_site.get(n, {}).get(site, {}).get("mean_foreground")) for site in shown_sites]

    t.add_row("initial", "", "", "", "", "", "", *[v for n in networks for v in dice(initial, initial_sites, n)], "")
    for s, (human, scratch) in zip(summaries, running_cost(summaries), strict=True):
        audit = f"{s.audit}/{s.audit_errors}" if s.audit else "0"
        thr = "/".join("—" if s.thresholds.get(c) is None else f"{s.thresholds[c]:.2f}"
                       for c in ("csf", "gray_matter", "white_matter"))
        deferred = f" (+{s.deferred_adjust_slices} deferred)" if s.deferred_adjust_slices else ""
        t.add_row(s.round, str(s.reviewed), f"{s.routed_adjust_slices}/{s.chained_adjust_slices}{deferred}",
                  f"{s.auto_accepted + s.audit} ({audit})",
                  f"{human_time(s.verify_seconds)} / {human_time(s.adjust_seconds)}",
                  f"{human_time(human)} / {human_time(scratch)}", thr,
                  *[v for n in networks for v in dice(s.dice, s.site_dice, n)],
                  ", ".join(NETWORK_LABELS.get(n, n) for n, p in s.promoted.items() if p) or "none")
    return t


def _network_dirs(values: list[str]) -> dict[str, str]:
    """``["unet=DIR", …]`` -> {"unet": "DIR", …} (`options.key_values`); a folder left empty is an error."""
    from qa_workflow.cli.options import key_values

    dirs = key_values(values, "--initial-model", form="NETWORK=DIR, e.g. unet=models/unet-site-a", unique=True)
    for network, folder in dirs.items():
        if not folder.strip():
            raise SegqaError(f"--initial-model {network}=: expected NETWORK=DIR, e.g. unet=models/unet-site-a")
    return {network: folder.strip() for network, folder in dirs.items()}


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        rounds: int = typer.Option(3, "--rounds", "-r", min=1, help="Active-learning rounds."),
        quick: bool = typer.Option(False, "--quick", help="Small cohort and short training (<= 15 min on 2 cores)."),
        workspace: Path = typer.Option(Path("demo"), "--workspace", "-w", help="Folder for everything the demo makes."),
        seed: int = typer.Option(0, "--seed", help="Seed of the cohort, selection and simulated reviewers."),
        subjects: int | None = typer.Option(None, "--subjects", min=4, help="Cohort size (default by preset)."),
        budget_seconds: float | None = typer.Option(None, "--budget-seconds", min=0,
                                                    help="Human seconds of review work per round (default by "
                                                         "preset: 60 verify-equivalents, 1980 s, with --quick)."),
        budget: int | None = typer.Option(None, "--budget", min=1, help="Also at most this many verify + adjust "
                                          "masks per round."),
        strategy: str = typer.Option("uncertainty", "--strategy", help="uncertainty (active) or random."),
        interactive: bool = typer.Option(False, "--interactive",
                                         help="Review in the local portal yourself instead of simulated reviewers."),
        fresh: bool = typer.Option(False, "--fresh", help="Delete the workspace first (default: continue it)."),
        implied: bool = typer.Option(True, "--implied-verdicts/--votes-only",
                                     help="Corrected slices also judge the model's masks there at the reviewers' "
                                          "bar, so analysis and routing learn from corrections (docs/loop.md)."),
        tta: str | None = typer.Option(None, "--tta", help="Test-time augmentation of the pool's predictions and "
                                       "the test evaluations: flip or none (default: the preset's)."),
        escalate_to: int | None = typer.Option(None, "--escalate-to", min=2,
                                               help="Masks the 3 reviewers split on go to this many reviewers in "
                                                    "all (a second verify job) before any correction (docs/loop.md)."),
        initial_model: list[str] = typer.Option([], "--initial-model", metavar="NETWORK=DIR",
                                                help="Start from this trained model (a segqa train --out folder) "
                                                     "instead of training the network's first one; repeatable."),
    ) -> None:
        """The whole loop on the atlas cohort, offline: cohort -> train -> R x (predict, select, batch, review,
        analyze, retrain, promote, export) -> demo/report.html."""
        from qa_workflow.cli.console import TrainBar
        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.console import progress as make_progress
        from qa_workflow.loop.demo import LoopConfig, run_loop
        from qa_workflow.loop.demo_report import why_no_threshold

        console = make_console(stderr=False, wide_when_piped=True)
        cfg = LoopConfig.preset(quick, workspace=str(workspace), rounds=rounds, seed=seed, subjects=subjects,
                                budget=budget, budget_seconds=budget_seconds, strategy=strategy, tta=tta,
                                escalate_to=escalate_to, initial_model=_network_dirs(initial_model))
        if fresh and workspace.exists():  # after the options are checked: a typo deletes nothing
            import shutil

            shutil.rmtree(workspace)
        if not implied:
            cfg.implied_bar = None
        review = None
        if interactive:
            from qa_workflow.review.portal.interactive import review_round_in_browser

            review = review_round_in_browser
        # progress (and the one-line summary of each round) on stderr: stdout keeps the round table
        with make_progress(make_console(), transient=True, spinner=True) as progress:
            step_task = progress.add_task("starting", total=None)
            bar = TrainBar(progress)

            def on_step(step: str, info: dict[str, Any]) -> None:
                if step == "round-done":
                    s = info["summary"]
                    progress.console.print(f"{s.round}: verified {s.reviewed}, accepted {s.accepted_items}, "
                                           f"corrected {s.corrected_slices} slices (judging "
                                           f"{s.implied_verdicts} masks, {s.implied_accepted} passed), "
                                           + (f"escalated {s.escalated} split ({s.escalated_accepted} then "
                                              "accepted), " if s.escalated else "") + "auto-accepted "
                                           f"{s.auto_accepted + s.audit}, promoted "
                                           f"{', '.join(n for n, p in s.promoted.items() if p) or 'none'}",
                                           markup=False)
                    return
                text = {"cohort": "synthesising the atlas cohort", "initial": "initial training",
                        "predict": "{round}: predicting the pool", "select": "{round}: selecting review work",
                        "batch": "{round}: overlays and batches", "review": "{round}: reviewers at work",
                        "correct": "{round}: correctors at work (routed and rejected slices)",
                        "analyze": "{round}: threshold analysis",
                        "retrain": "{round}: retraining"}.get(step, step)
                bar.label = text.format(**info)
                progress.update(step_task, description=text.format(**info))

            summaries = run_loop(cfg, progress=on_step, train_progress=bar, review=review)
        import json

        record = json.loads((workspace / "demo.json").read_text())
        console.print(_round_table(summaries, record.get("initial_dice", {}), cfg.networks,
                                   record.get("initial_site_dice", {}), cfg.sites))
        why_none = why_no_threshold(summaries[-1].analysis_report) if summaries else []
        if why_none:
            console.print(f"\nNo auto-accept threshold after {summaries[-1].round} for:", markup=False)
            for name, reason in why_none:
                console.print(f"  {name}: {reason}", markup=False)
        console.print(f"\nreport: {workspace / 'report.html'}  (opens offline)")
        last = workspace / "rounds" / summaries[-1].round / "round"
        console.print("\nReview for real:  segqa review add-reviewer alice  &&  "
                      f"segqa review serve --round {last} --store sqlite:///{(workspace / 'store.sqlite').resolve()}")
        console.print("Go to AWS:        make lambdas && segqa deploy --help   (docs/aws.md)")

    @app.command("retrain")
    def retrain(
        data: Path = typer.Option(..., "--data", help="The base dataset (its pool slices were reviewed)."),
        store: str = typer.Option(..., "--store", help="Confirmation store URI (sqlite:///PATH or dynamodb://TABLE)."),
        round_dirs: list[str] = typer.Option(..., "--round", help="A reviewed round folder (repeat for several)."),
        registry: str = typer.Option("models", "--registry", help="Model registry folder or s3:// prefix."),
        work: Path = typer.Option(Path("retrain-work"), "--work", help="Scratch folder for the training set and runs."),
        networks: str = typer.Option("unet,enet", "--networks", help="Networks to retrain."),
        epochs: int = typer.Option(5, "--epochs", min=1),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        from_scratch: bool = typer.Option(False, "--from-scratch", help="Do not warm-start from the champion."),
        use_auto_accepted: bool = typer.Option(False, "--use-auto-accepted",
                                               help="Add auto-accepted masks as pseudo-labels."),
        tolerance: float = typer.Option(0.01, "--tolerance", help="Largest per-class Dice drop a promotion tolerates."),
        export: Path | None = typer.Option(None, "--export", help="Export a newly promoted ENet here."),
        publish: str | None = typer.Option(None, "--publish",
                                              help="Also upload the training set to URI/train/ and URI/validation/ "
                                                   "(the channels of the scheduled SageMaker retraining jobs)."),
        train: bool = typer.Option(True, "--train/--no-train",
                                   help="--no-train: build (and publish) the training set only."),
        tta: str = typer.Option(DEFAULT_TTA, "--tta", help="Test-time augmentation of the champion/challenger "
                                "evaluation: flip or none (as `segqa evaluate --tta`)."),
    ) -> None:
        """Retrain U-Net and ENet on the labelled train split + confirmed pool masks; promote if not worse."""
        from qa_workflow.cli.console import TrainBar
        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.console import progress as make_progress
        from qa_workflow.loop.registry import Registry
        from qa_workflow.loop.retraining import RetrainSet, retrain_from_rounds

        console = make_console(stderr=False)
        nets = _networks(networks)
        check_tta(tta)  # before hours of training, not after

        def on_training_set(tset: RetrainSet, published: int | None) -> None:
            console.print(f"training set: {tset.base_train_slices} labelled slices + {tset.pool_slices} reviewed "
                          f"pool slices ({tset.confirmed_masks} confirmed masks, {tset.pseudo_masks} pseudo-labels; "
                          f"{tset.ignored_pixels} pixels ignored)")
            if publish:
                console.print(f"published the training set ({published} files per channel) to "
                              f"{publish.rstrip('/')}/train/ and /validation/")

        with make_progress(make_console(), transient=True) as bar:
            done = retrain_from_rounds(data, store, round_dirs, Registry(registry), work, networks=nets, epochs=epochs,
                                       batch_size=batch_size, warm_start=not from_scratch,
                                       use_auto_accepted=use_auto_accepted, tolerance=tolerance, export_dir=export,
                                       publish=publish, train=train, on_training_set=on_training_set,
                                       progress=TrainBar(bar, "retraining"), tta=tta)
        result = done.result
        if result is None:
            return
        for n, o in result.networks.items():
            verdict = "promoted" if o.decision.promote else "kept the champion"
            console.print(f"{n}: challenger {o.challenger} -> {verdict}: {'; '.join(o.decision.reasons)}")
        if result.export_dir:
            console.print(f"exported the new ENet to {result.export_dir}")
