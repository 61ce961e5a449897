"""The segmenter (issue #3): train, evaluate, export. Thin commands over `training.train`,
`training.evaluate` and `training.export`; see docs/segmenter.md."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from qa_workflow.contract import DEFAULT_TTA


def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        data: Path = typer.Option(..., "--data", help="Dataset folder (trains on split 'train', validates on 'val')."),
        network: str = typer.Option("unet", "--network", help="unet or enet."),
        out: Path = typer.Option(..., "--out", help="Model folder to write (checkpoints, metrics, model card)."),
        epochs: int = typer.Option(30, "--epochs", help="Epochs to train (the total, also with --resume)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Slices per batch (per device)."),
        lr: float | None = typer.Option(None, "--lr", help="Adam learning rate at the start of the schedule "
                                           "[default: 2e-3 U-Net, 5e-3 ENet]."),
        lr_schedule: str = typer.Option("cosine", "--lr-schedule", help="cosine, step or constant."),
        seed: int = typer.Option(0, "--seed", help="Seed for initial weights, data order, augmentation, dropout."),
        class_weights: str = typer.Option("auto", "--class-weights",
                                          help="'auto' or 'sqrt' (inverse frequency of the training labels, or "
                                               "its square root), 'uniform' (every class 1) or 4 numbers, "
                                               "e.g. 1.35,17.18,8.29,12.42."),
        dice_weight: float = typer.Option(0.5, "--dice-weight", help="Weight of the soft Dice term in the loss."),
        ce_weight: float = typer.Option(0.5, "--ce-weight", help="Weight of the cross-entropy term in the loss."),
        width: float = typer.Option(1.0, "--width", help="Filter-count multiplier (e.g. 0.25 for a quick model)."),
        augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, small affine, intensity jitter."),
        val_data: Path | None = typer.Option(None, "--val-data", help="Validate on this dataset's 'val' split."),
        init_from: Path | None = typer.Option(None, "--init-from", help="Start from this model's weights."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out after its last epoch."),
        max_slices: int | None = typer.Option(None, "--max-slices", help="Train on at most this many slices."),
        max_batches: int | None = typer.Option(None, "--max-batches-per-epoch", help="Cap batches per epoch."),
        max_val_slices: int | None = typer.Option(None, "--max-val-slices", help="Validate on at most this many."),
        time_budget: float | None = typer.Option(None, "--time-budget", help="Stop after the epoch that ends "
                                                    "past this many seconds."),
        kvstore: str = typer.Option("device", "--kvstore", help="device, local, dist_sync, dist_device_sync."),
        context: str = typer.Option("auto", "--context", help="auto (GPUs if any, else CPU), cpu, gpu, gpu:0,1."),
    ) -> None:
        """Train a U-Net or ENet with a progress bar (loss, validation Dice per epoch)."""
        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.console import progress as make_progress
        from training.train import TrainConfig, TrainEvent, train_model

        console = make_console()
        progress = make_progress(console, field="info")
        tasks: dict[int, int] = {}
        state: dict = {}

        def on_event(ev: TrainEvent) -> None:
            if ev.kind == "start":  # the bar starts once data and options are checked: errors stay one line
                progress.start()
                state["started"] = True
                prelu = "" if ev.prelu is None else f", PReLU {ev.prelu}"
                console.print(f"training {network} {ev.message} -> {out} (epochs {ev.epoch}..{ev.epochs}, "
                              f"{ev.threads} threads{prelu})")
            elif ev.kind == "batch":
                if ev.epoch not in tasks:
                    tasks[ev.epoch] = progress.add_task(f"epoch {ev.epoch}/{ev.epochs}", total=ev.steps, info="")
                progress.update(tasks[ev.epoch], completed=ev.step, info=f"loss {ev.loss:.4f}  lr {ev.lr:.1e}")
            elif ev.kind == "epoch":
                dice = ev.val_dice or {}
                per = " ".join(f"{k}={_fmt(v)}" for k, v in dice.items() if k != "background")
                info = (f"loss {ev.loss:.4f}  val mean Dice {_fmt(ev.val_mean_dice)} ({per})  "
                        f"best {_fmt(ev.best_mean_dice)} @ {ev.best_epoch}  {ev.images_per_s or 0:.1f} img/s, "
                        f"{ev.cores_busy or 0:.1f} cores busy")
                if ev.epoch in tasks:
                    progress.remove_task(tasks.pop(ev.epoch))
                progress.console.print(f"epoch {ev.epoch}/{ev.epochs}  {info}")
            elif ev.kind == "end" and ev.message:
                console.print(ev.message)

        cfg = TrainConfig(
            data_dir=str(data), out_dir=str(out), network=network, val_dir=str(val_data) if val_data else None,
            epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed,
            class_weights=class_weights, dice_weight=dice_weight, ce_weight=ce_weight, width=width, augment=augment,
            init_from=str(init_from) if init_from else None, resume=resume, max_slices=max_slices,
            max_batches_per_epoch=max_batches, max_val_slices=max_val_slices, time_budget_s=time_budget,
            kvstore=kvstore, context=context, progress=on_event)
        try:
            model_dir = train_model(cfg)
        finally:
            if state.get("started"):
                progress.stop()
        card = json.loads((model_dir / "model_card.json").read_text())
        val = (card.get("metrics") or {}).get("val") or {}
        typer.echo(f"model {card['version']} in {model_dir}: best epoch {val.get('epoch', '—')}, "
                   f"val mean foreground Dice {_fmt(val.get('mean_foreground_dice'))}")

    @app.command("evaluate")
    def evaluate(
        model: Path = typer.Option(..., "--model", help="Model folder (segqa train) or export folder."),
        data: Path = typer.Option(..., "--data", help="Dataset folder."),
        split: str = typer.Option("test", "--split", help="Split to evaluate (train, pool, val, test)."),
        out: Path | None = typer.Option(None, "--out", help="Write the JSON report here (and a PNG beside it)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        max_slices: int | None = typer.Option(None, "--max-slices", min=1, help="Evaluate at most this many slices."),
        tta: str = typer.Option(DEFAULT_TTA, "--tta", help="Test-time augmentation: flip (each slice and its "
                                "left-right mirror, averaged) or none; as `segqa predict --tta`."),
    ) -> None:
        """Per-class Dice, mean foreground Dice, HD95 (mm), volume difference, confusion matrix."""
        from rich.table import Table

        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.console import progress
        from training.evaluate import evaluate_model
        from training.modelcard import write_json_atomic

        console = make_console(stderr=False)
        figure = out.with_suffix(".png") if out else None
        with progress(make_console(), transient=True) as bar:
            task = bar.add_task(f"predicting {split}", total=None)
            report = evaluate_model(model, data, split=split, batch_size=batch_size, max_slices=max_slices, tta=tta,
                                    figure=figure, progress=lambda d, t: bar.update(task, completed=d, total=t))
        if out:
            write_json_atomic(out, report)
        subj = report["subjects"]
        table = Table(title=f"{report['model']['version']} on {data} [{split}]: {report['data']['slices']} slices, "
                            f"{subj['n']} subjects{', mirrored left-right' if tta == 'flip' else ''}")
        for col in ("class", "Dice (pooled)", "Dice (subjects, mean ± sd)", "HD95 mm (mean)", "AVD % (mean)"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, d in report["pooled"]["dice"].items():
            if name == "background":
                continue
            table.add_row(name, _fmt(d), f"{_fmt(subj['dice_mean'][name])} ± {_fmt(subj['dice_std'][name])}",
                          _fmt(subj["hd95_mm_mean"][name], 2), _fmt(subj["avd_pct_mean"][name], 1))
        table.add_row("mean foreground", _fmt(report["pooled"]["mean_foreground_dice"]),
                      f"{_fmt(subj['mean_foreground_dice_mean'])} ± {_fmt(subj['mean_foreground_dice_std'])}", "", "")
        console.print(table)
        if report.get("sites"):
            by_site = Table(title="per acquisition site (pooled Dice)")
            names = [n for n in report["pooled"]["dice"] if n != "background"]
            for col in ("site", "subjects", "slices", *names, "mean foreground"):
                by_site.add_column(col, justify="left" if col == "site" else "right")
            for site, row in report["sites"].items():
                by_site.add_row(site, str(row["subjects"]), str(row["slices"]), *(_fmt(row["dice"][n]) for n in names),
                                _fmt(row["mean_foreground_dice"]))
            console.print(by_site)
        if out:
            typer.echo(f"wrote {out} and {figure}")

    @app.command("export")
    def export(
        model: Path = typer.Option(..., "--model", help="Model folder from segqa train."),
        out: Path = typer.Option(..., "--out", help="Export folder to write."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export folder."),
        min_agreement: float = typer.Option(0.999, "--min-agreement", help="Required ONNX/MXNet argmax agreement."),
        samples: int = typer.Option(4, "--parity-samples", min=1, help="Random inputs for the parity check."),
        greengrass: bool = typer.Option(False, "--greengrass", help="Add the Greengrass v2 component (recipe + "
                                        "artifacts) in OUT/greengrass/ (ENet only)."),
        component_name: str = typer.Option("com.segqa.BrainSegmenter", "--component-name"),
        component_version: str = typer.Option("1.0.0", "--component-version", help="major.minor.patch."),
        threads: int = typer.Option(1, "--threads", help="The component's default ONNX Runtime threads."),
    ) -> None:
        """MXNet symbol/params + ONNX + model card, with an ONNX Runtime vs MXNet parity check."""
        from training.export import export_model

        if greengrass:  # the component's settings are checked before the (long) export starts
            from training.greengrass import check_component_settings

            check_component_settings(component_name, component_version, threads)
        res = export_model(model, out, parity_samples=samples, min_agreement=min_agreement, overwrite=overwrite)
        p = res.parity
        typer.echo(f"exported {res.version} to {res.out_dir}: {', '.join(sorted(res.files))}, model_card.json")
        typer.echo(f"parity on {p['inputs']} random inputs: argmax agreement {100 * p['argmax_agreement']:.3f} %, "
                   f"max abs logit difference {p['max_abs_diff']:.2e}")
        if greengrass:
            from training.greengrass import write_component

            folder = write_component(res.out_dir, name=component_name, version=component_version, threads=threads)
            typer.echo(f"Greengrass component {component_name} {component_version} in {folder} "
                       "(publish with: segqa deploy --greengrass ...)")
