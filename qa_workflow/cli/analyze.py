"""`segqa analyze`: acceptance tables, per-class auto-accept thresholds and the report (issue #6).

A thin command over `analysis.run`: parse options, load the review records (CSV or store), analyse, write,
print the thresholds. See docs/analysis.md.
"""

from __future__ import annotations

import typer

_METHODS = ("clopper-pearson", "bucket-walk", "isotonic")


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze(
        out: str = typer.Option(..., "--out", "-o", help="Folder (or s3:// prefix) for the tables, thresholds.json "
                                "and report.html."),
        reviews: str | None = typer.Option(None, "--reviews", "-r", help="Review-record CSV "
                                              "(item_id,class_name,confidence,confirm_count,disconfirm_count,...)."),
        store: str | None = typer.Option(None, "--store", "-s", help="Read straight from the confirmation "
                                            "store instead: sqlite:///<path> or dynamodb://<table>."),
        round_: str | None = typer.Option(None, "--round", help="With --store: only this round."),
        model_version: str | None = typer.Option(None, "--model-version", help="With --store: only the reviews "
                                                 "of this model's masks, so that its thresholds hold for it "
                                                 "(segqa select applies thresholds only to the model they were "
                                                 "fitted on)."),
        votes: str | None = typer.Option(None, "--votes", help="Per-vote CSV item_id,worker_id,decision[,gold] "
                                            "for per-reviewer agreement and gold accuracy."),
        method: str = typer.Option("clopper-pearson", "--method", "-m",
                                   help=f"Threshold written to thresholds.json: {' | '.join(_METHODS)}."),
        max_error: float = typer.Option(0.05, "--max-error", help="clopper-pearson / isotonic: largest acceptable "
                                        "share of auto-accepted masks that reviewers would reject."),
        confidence: float = typer.Option(0.95, "--confidence", help="clopper-pearson: confidence level of the "
                                         "upper bound on that share."),
        start_coverage: float = typer.Option(0.05, "--start-coverage", help="clopper-pearson: start the scan "
                                             "where this share of the class lies above the threshold (and never "
                                             "before the bound can reach --max-error). Fix it before looking at "
                                             "results."),
        min_above: int | None = typer.Option(None, "--min-above", help="clopper-pearson: ...or where this "
                                                "many reviewed items lie above it."),
        max_error_ratio: float = typer.Option(0.1, "--max-error-ratio", help="bucket-walk: largest "
                                              "incorrect:correct ratio a bucket may have."),
        buckets: str | None = typer.Option(None, "--buckets", help="Bucket edges on the input's confidence "
                                              "scale, e.g. 80,85,90,95,100 (default: 5 equal-width buckets from "
                                              "the lowest confidence to the top)."),
        split_policy: str = typer.Option("incorrect", "--split-policy", help="Items whose reviewers disagree: "
                                         "incorrect (default) | majority."),
        confidence_scale: str = typer.Option("auto", "--confidence-scale", help="auto (detect) | unit [0,1] | "
                                             "percent [0,100]."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.html and its plots."),
    ) -> None:
        """Acceptance by confidence per class -> per-class auto-accept thresholds, tables and report."""
        from analysis.run import AnalysisOptions, load_inputs, write_outputs
        from analysis.run import analyze as run_analysis
        from qa_workflow.cli.console import console, progress

        err = console()
        options = AnalysisOptions(method=method, max_error=max_error, confidence=confidence,
                                  max_error_ratio=max_error_ratio, buckets=buckets,
                                  start_coverage=start_coverage, min_above=min_above)
        options.check()
        with progress(err, transient=True, spinner=True) as bar:
            step = bar.add_task("reading review records", total=None)
            records, vote_frame = load_inputs(reviews=reviews, store=store, votes=votes, round=round_,
                                              split_policy=split_policy, scale=confidence_scale,
                                              model_version=model_version)

            def say(msg: str) -> None:
                bar.update(step, description=msg)

            result = run_analysis(records, options, vote_frame, calibration=report, progress=say)
            written = write_outputs(result, out, report=report, progress=say)
        _print_summary(result, written)


def _print_summary(result, written: list[str]) -> None:
    from rich.table import Table

    from qa_workflow.cli.console import console as make_console

    console = make_console(stderr=False)
    rec = result.records
    o = result.options
    target = (f"max error {o.max_error:g} at confidence {o.confidence:g}" if o.method != "bucket-walk"
              else f"max incorrect:correct {o.max_error_ratio:g}")
    table = Table(title=f"auto-accept thresholds: {o.method}, {target}; confidence scale {rec.scale}",
                  title_justify="left")
    for col in ("class", "threshold", "coverage", "rejected/above", "bound", "reviewed"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    reasons = []
    for name in result.classes:
        s = result.chosen(name).summary()
        table.add_row(name, "none" if s.threshold is None else f"{s.threshold:.6g}", f"{s.coverage:.1%}",
                      f"{s.errors_above}/{s.n_above}",
                      "-" if s.error_upper_bound is None else f"{s.error_upper_bound:.2%}", str(s.n_reviewed))
        if s.reason:
            reasons.append(f"{name}: {s.reason}")
    console.print(table)
    for line in reasons:
        console.print(line, highlight=False)
    for uri in written:
        if "/plots/" not in uri.replace("\\", "/"):
            typer.echo(f"wrote {uri}")
