"""Review work (issue #4): predict + score, select, batch, Ground Truth jobs. See docs/review-work.md.

Thin commands over `qa_workflow.rounds.predict`, `selection`/`round_dir`, `batching` and `review.ground_truth`:
they parse options, call one library function, and print a summary (tables and progress on stderr; `job create
--dry-run` prints the request JSON on stdout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from qa_workflow.cli.console import console as _console
from qa_workflow.cli.console import print_rejects, progress

_ENV = {"role": "SEGQA_GT_ROLE_ARN", "workteam": "SEGQA_GT_WORKTEAM_ARN", "pre": "SEGQA_GT_PRE_LAMBDA_ARN",
        "post": "SEGQA_GT_CONSOLIDATION_LAMBDA_ARN", "prefix": "SEGQA_GT_JOB_PREFIX", "kms": "SEGQA_GT_KMS_KEY_ID"}


def _sagemaker_client(region: str | None):
    from qa_workflow.review.ground_truth import sagemaker_client

    return sagemaker_client(region)


def _require(value: str | None, option: str, env: str) -> str:
    from qa_workflow.contract import SegqaError

    if not value:
        raise SegqaError(f"{option} is required (or set {env})")
    return value


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        data: Path = typer.Option(..., "--data", help="Dataset folder (index.csv + images)."),
        out: str = typer.Option(..., "--out", help="Prediction folder to write (local or s3://bucket/prefix)."),
        model: Path | None = typer.Option(None, "--model", help="Model folder (segqa train) or export folder."),
        split: str = typer.Option("pool", "--split", help="Dataset split to predict."),
        mc_samples: int = typer.Option(0, "--mc-samples", help="MC-dropout passes T (0 = one deterministic "
                                       "pass; T >= 2 adds mutual information)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Slices per forward pass."),
        min_pixels: int = typer.Option(30, "--min-pixels", help="Smallest predicted region that is reviewable."),
        seed: int = typer.Option(0, "--seed", help="Seed of the MC-dropout passes."),
        table_format: str = typer.Option("parquet", "--table-format", help="parquet or csv."),
        limit: int | None = typer.Option(None, "--limit", help="Predict only the first N slices of the split."),
        probs: str | None = typer.Option(None, "--probs", help="Score existing probability maps "
                                            "(<subject>/<slice:03d>.npz) instead of running a model."),
        model_version: str | None = typer.Option(None, "--model-version", help="Model version to record with "
                                                    "--probs."),
    ) -> None:
        """Predict a dataset split, store probability maps and masks, and score every (slice, class)."""
        from qa_workflow.contract import SegqaError
        from qa_workflow.rounds.predict import REJECTS_FILE, run_predictions, score_probability_files

        console = _console()
        if (model is None) == (probs is None):
            raise SegqaError("give exactly one of --model (run a segmenter) or --probs (score existing maps)")
        from training.dataset import read_index

        n = len(read_index(data, [split]))
        n = min(n, limit) if limit else n
        with progress(console) as bar:
            task = bar.add_task(f"predict {split}" if model else f"score {split}", total=n)

            def advance(k: int) -> None:
                bar.advance(task, k)

            if model is not None:
                from training.predict import load_predictor

                predictor = load_predictor(model)
                console.print(f"model {predictor.version} ({predictor.network}) on {n} {split} slices"
                              f"{f', {mc_samples} MC-dropout passes' if mc_samples else ''}")
                summary = run_predictions(predictor, data, out, split=split, mc_samples=mc_samples,
                                          batch_size=batch_size, min_pixels=min_pixels, seed=seed,
                                          table_format=table_format, limit=limit, model_path=str(model),
                                          progress=advance)
            else:
                summary = score_probability_files(probs, data, out, model_version=model_version or "unknown",
                                                  split=split, min_pixels=min_pixels, table_format=table_format,
                                                  limit=limit, progress=advance)
        console.print(f"scored {summary.slices_scored}/{summary.slices} slices -> {summary.items} items, "
                      f"{summary.reviewable} reviewable (>= {min_pixels} px); table {summary.score_table}")
        print_rejects(console, summary.rejects, os.fspath(summary.rejects_file) or REJECTS_FILE, "slice")

    @app.command("select")
    def select(
        predictions: str = typer.Option(..., "--predictions", help="Prediction folder from 'segqa predict'."),
        out: str = typer.Option(..., "--out", help="Round folder to write."),
        thresholds: str | None = typer.Option(None, "--thresholds", help="thresholds.json from 'segqa "
                                                 "analyze' (none = cold start)."),
        budget: int | None = typer.Option(None, "--budget", help="At most this many 'review' items "
                                             "(audit and random-arm items come on top)."),
        per_subject_cap: int | None = typer.Option(None, "--per-subject-cap", help="At most this many "
                                                      "'review' items per subject."),
        audit_rate: float = typer.Option(0.05, "--audit-rate", help="Share of auto-accepted items reviewed blind."),
        random_arm: int = typer.Option(0, "--random-arm", help="Size of a uniform random control sample."),
        measure: str = typer.Option("soft_dice", "--measure", help="Confidence measure: soft_dice, mean_prob, "
                                    "entropy or mutual_info."),
        strategy: str = typer.Option("uncertainty", "--strategy", help="uncertainty (default) or random."),
        slice_gap: int = typer.Option(2, "--slice-gap", help="Slices within this distance count as neighbours."),
        seed: int = typer.Option(0, "--seed", help="Seed of the audit, random arm and cold-start sampling."),
        exclude: str | None = typer.Option(None, "--exclude", help="Items already reviewed: a CSV with an "
                                              "item_id column (e.g. 'segqa store export') or one id per line."),
        round_id: str | None = typer.Option(None, "--round-id", help="Round id (default: the --out folder name)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a round made with other inputs."),
    ) -> None:
        """Assign every scored item to auto_accept / review / audit / random_arm / skip for one round."""
        from rich.table import Table

        from qa_workflow.contract import ASSIGNMENTS
        from qa_workflow.rounds.predict import REJECTS_FILE
        from qa_workflow.rounds.round_dir import read_item_ids, select_round
        from qa_workflow.rounds.selection import SelectionPolicy

        console = _console()
        policy = SelectionPolicy(budget=budget, per_subject_cap=per_subject_cap, audit_rate=audit_rate,
                                 random_arm=random_arm, measure=measure, strategy=strategy, slice_gap=slice_gap,
                                 seed=seed)
        excluded = read_item_ids(exclude) if exclude else []
        result = select_round(predictions, out, policy, thresholds=thresholds, round_id=round_id, overwrite=overwrite,
                              exclude=excluded)
        for w in result.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        classes = [c for c in next(iter(result.counts.values())) if c != "total"]
        table = Table(title=f"round {result.round_id}"
                      f"{' (cold start)' if not thresholds else ''}{' — unchanged' if result.unchanged else ''}")
        table.add_column("assignment")
        for c in classes + ["total"]:
            table.add_column(c, justify="right")
        for a in ASSIGNMENTS:
            table.add_row(a, *(str(result.counts[a][c]) for c in classes + ["total"]))
        console.print(table)
        console.print(f"{'unchanged: ' if result.unchanged else ''}{out}/round.json, assignments.csv")
        print_rejects(console, result.rejects, f"{out}/{REJECTS_FILE}", "row")

    @app.command("batch")
    def batch(
        round_dir: str = typer.Option(..., "--round", help="Round folder from 'segqa select'."),
        dest: str | None = typer.Option(None, "--dest", help="Where overlays, batches and the manifest go: a "
                                           "folder or s3://bucket/prefix (default: the round folder)."),
        batch_size: int = typer.Option(25, "--batch-size", help="Items per batch (one class per batch)."),
        workers: int = typer.Option(8, "--workers", help="Parallel render/upload threads."),
        scale: int = typer.Option(2, "--scale", help="Overlay upscaling factor."),
    ) -> None:
        """Render overlays, write batch JSONs and manifest.jsonl; resumes an interrupted upload."""
        from qa_workflow.rounds.batching import BATCH_REJECTS_FILE, write_batches

        console = _console()
        with progress(console) as bar:
            task = bar.add_task("slices", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = write_batches(round_dir, dest, batch_size=batch_size, workers=workers, scale=scale,
                                   progress=on_progress)
        if result.unchanged:
            console.print(f"unchanged: {len(result.batches)} batches, {result.items} items already at {result.dest}")
        else:
            console.print(f"{len(result.batches)} batches, {result.items} items -> {result.dest} "
                          f"({result.uploaded} objects written, {result.skipped_existing} already there)")
        console.print(f"manifest: {result.manifest}")
        print_rejects(console, result.rejects, f"{round_dir}/{BATCH_REJECTS_FILE}")

    job_app = typer.Typer(help="Ground Truth labeling jobs for a round.", no_args_is_help=True)
    app.add_typer(job_app, name="job")

    @job_app.command("create")
    def create_(
        round_dir: str = typer.Option(..., "--round", help="Round folder (batched to S3 with 'segqa batch')."),
        role_arn: str | None = typer.Option(None, "--role-arn", envvar=_ENV["role"],
                                               help="Ground Truth execution role ARN."),
        workteam_arn: str | None = typer.Option(None, "--workteam-arn", envvar=_ENV["workteam"],
                                                   help="Private work team ARN."),
        pre_lambda_arn: str | None = typer.Option(None, "--pre-lambda-arn", envvar=_ENV["pre"],
                                                     help="Pre-labeling Lambda ARN."),
        consolidation_lambda_arn: str | None = typer.Option(None, "--consolidation-lambda-arn", envvar=_ENV["post"],
                                                               help="Post-labeling (consolidation) Lambda ARN."),
        output: str | None = typer.Option(None, "--output", help="S3OutputPath (default <dest>/gt-output)."),
        template: Path | None = typer.Option(None, "--template", help="Liquid template to upload "
                                      "(default templates/mask_review.liquid.html)."),
        template_s3_uri: str | None = typer.Option(None, "--template-s3-uri", help="Where to upload it."),
        job_name: str | None = typer.Option(None, "--job-name", help="Default <job-name-prefix>-<round>-<hash>."),
        job_name_prefix: str = typer.Option("segqa", "--job-name-prefix", envvar=_ENV["prefix"],
                                            help="The stack's <prefix>-<env>: its retrain rule reacts to these jobs."),
        label_attribute_name: str = typer.Option("segqa-review", "--label-attribute-name"),
        title: str | None = typer.Option(None, "--title"),
        description: str | None = typer.Option(None, "--description"),
        keyword: list[str] | None = typer.Option(None, "--keyword", help="Task keyword (repeat, up to 5)."),
        workers: int = typer.Option(3, "--workers", help="Reviewers per batch (1-9)."),
        task_time_limit: int = typer.Option(3600, "--task-time-limit", help="Seconds a reviewer has per batch."),
        task_lifetime: int = typer.Option(864000, "--task-lifetime", help="Seconds a batch stays available."),
        max_concurrent_tasks: int = typer.Option(1000, "--max-concurrent-tasks"),
        kms_key_id: str | None = typer.Option(None, "--kms-key-id", envvar=_ENV["kms"],
                                              help="KMS key for the output (the stack's DataKeyArn)."),
        sns_topic_arn: str | None = typer.Option(None, "--sns-topic-arn", help="Output notifications topic."),
        price_usd: float | None = typer.Option(None, "--price-usd", help="Per-task price (public workforce only)."),
        allow_public_workforce: bool = typer.Option(False, "--allow-public-workforce",
                                                    help="Allow the public Mechanical Turk crowd (refused otherwise)."),
        tag: list[str] | None = typer.Option(None, "--tag", help="KEY=VALUE (repeat)."),
        region: str | None = typer.Option(None, "--region", help="AWS region (default from the environment)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the CreateLabelingJob request and stop."),
    ) -> None:
        """Create the round's Ground Truth custom labeling job (or print its request with --dry-run)."""
        from qa_workflow.cli.options import key_values
        from qa_workflow.review.ground_truth import DEFAULT_TEMPLATE, JobSettings, create_job

        console = _console()
        tags = key_values(tag or [], "--tag")
        defaults = JobSettings("", "", "", "")
        settings = JobSettings(
            role_arn=_require(role_arn, "--role-arn", _ENV["role"]),
            workteam_arn=_require(workteam_arn, "--workteam-arn", _ENV["workteam"]),
            pre_lambda_arn=_require(pre_lambda_arn, "--pre-lambda-arn", _ENV["pre"]),
            consolidation_lambda_arn=_require(consolidation_lambda_arn, "--consolidation-lambda-arn", _ENV["post"]),
            output_s3=output, template_s3_uri=template_s3_uri, template_path=str(template or DEFAULT_TEMPLATE),
            job_name=job_name, label_attribute_name=label_attribute_name, title=title or defaults.title,
            description=description or defaults.description, keywords=tuple(keyword or defaults.keywords),
            workers_per_object=workers, task_time_limit_s=task_time_limit, task_lifetime_s=task_lifetime,
            max_concurrent_tasks=max_concurrent_tasks, kms_key_id=kms_key_id, sns_topic_arn=sns_topic_arn,
            price_usd=price_usd, tags=tags, job_name_prefix=job_name_prefix,
            allow_public_workforce=allow_public_workforce)
        client = None if dry_run else _sagemaker_client(region)
        request, warnings, record = create_job(client, round_dir, settings, dry_run=dry_run)
        for w in warnings:
            console.print(f"[yellow]warning:[/] {w}")
        if dry_run:
            typer.echo(json.dumps(request, indent=2))
            console.print("dry run: nothing uploaded or created (the request passed botocore's service model)")
        else:
            console.print(f"labeling job {record['LabelingJobName']}: {record['LabelingJobArn']}")

    @job_app.command("status")
    def status_(
        round_dir: str = typer.Option(..., "--round", help="Round folder with job/job.json."),
        job_name: str | None = typer.Option(None, "--job-name", help="Another job than the recorded one."),
        region: str | None = typer.Option(None, "--region"),
    ) -> None:
        """Show the job's status and progress (DescribeLabelingJob counters)."""
        from qa_workflow.review.ground_truth import describe_job, summarize_status

        console = _console()
        s = summarize_status(describe_job(_sagemaker_client(region), round_dir, job_name))
        pct = 100.0 * s["labeled"] / s["total"] if s["total"] else 0.0
        console.print(f"{s['name']}: {s['status']} — {s['labeled']}/{s['total']} batches labeled ({pct:.0f} %), "
                      f"{s['unlabeled']} waiting, {s['failed']} failed")
        if s["failure_reason"]:
            console.print(f"[red]failure:[/] {s['failure_reason']}")
        if s["output_manifest"]:
            console.print(f"output manifest: {s['output_manifest']}")

    @job_app.command("sync")
    def sync_(
        round_dir: str = typer.Option(..., "--round", help="Round folder with job/job.json."),
        job_name: str | None = typer.Option(None, "--job-name"),
        region: str | None = typer.Option(None, "--region"),
    ) -> None:
        """Download the output manifest and worker responses into ROUND_DIR/job/output/."""
        from qa_workflow.review.ground_truth import sync_job

        console = _console()
        with progress(console) as bar:
            task = bar.add_task("download", total=None)
            result = sync_job(_sagemaker_client(region), round_dir, job_name,
                              progress=lambda i, n: bar.update(task, completed=i, total=n))
        console.print(f"{result['status']}: {result['downloaded']} files downloaded, {result['skipped']} already "
                      f"here, from {result['prefix']}")
        if result["output_manifest"]:
            console.print(f"output manifest: {result['output_manifest']}")
