"""Review work (issue #4): predict + score, select, batch, Ground Truth jobs. See docs/review-work.md.

Thin commands over `qa_workflow.rounds.predict`, `selection`/`round_dir`, `batching` and `review.ground_truth`:
they parse options, call one library function, and print a summary (tables and progress on stderr; `job create
--dry-run` prints the request JSON on stdout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from qa_workflow.cli.console import console as _console
from qa_workflow.cli.console import print_rejects, progress
from qa_workflow.contract import CONFIDENCE_MEASURES, DEFAULT_CONFIDENCE_MEASURE, DEFAULT_TTA

_ENV = {"role": "SEGQA_GT_ROLE_ARN", "workteam": "SEGQA_GT_WORKTEAM_ARN", "pre": "SEGQA_GT_PRE_LAMBDA_ARN",
        "post": "SEGQA_GT_CONSOLIDATION_LAMBDA_ARN", "processing_role": "SEGQA_PROCESSING_ROLE_ARN",
        "prefix": "SEGQA_GT_JOB_PREFIX", "kms": "SEGQA_GT_KMS_KEY_ID"}


def _sagemaker_client(region: str | None):
    from qa_workflow.review.ground_truth import sagemaker_client

    return sagemaker_client(region)


def _require(value: str | None, option: str, env: str) -> str:
    from qa_workflow.contract import SegqaError

    if not value:
        raise SegqaError(f"{option} is required (or set {env})")
    return value


def _vote_store(store: str | None):
    """The confirmation store holding a job's votes: ``--store``, else ``$SEGQA_STORE``; never created."""
    from qa_workflow.confirmations.store import open_store, store_uri_from_env

    return open_store(store or store_uri_from_env(), create=False)


def _predict_sagemaker(*, model: str | None, data: str, out: str, index: str | None, region: str | None,
                       dry_run: bool, role: str | None, image: str | None, **options: Any) -> None:
    """`segqa predict --sagemaker`: plan the sharded Processing jobs; print them (dry run) or start them."""
    from qa_workflow.cloud import processing
    from qa_workflow.contract import SegqaError

    if model is None:
        raise SegqaError("--sagemaker needs --model s3://... (a model or export folder in S3)")
    request = processing.ShardedPrediction(
        model_uri=model, data_uri=data, out_uri=out, role_arn=role or os.environ.get(_ENV["processing_role"], ""),
        image_uri=image or os.environ.get("SEGQA_PROCESSING_IMAGE", ""), **options)
    plan, code = processing.prepare_plan(request, index_source=index)
    if dry_run:
        typer.echo(json.dumps(plan.requests, indent=2))
        return
    console = _console()
    processing.upload_staging(plan, code, on_upload=lambda what: console.print(f"uploaded {what}"))
    arns = processing.start_jobs(plan, _sagemaker_client(region))
    console.print(f"{len(arns)} processing job(s) for {plan.slices} slices in {len(plan.shards)} shard(s):")
    for arn in arns:
        typer.echo(arn)
    console.print(f"when they finish: segqa predict --probs {out} --data DATA --out {out}")


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        data: str = typer.Option(..., "--data", help="Dataset folder (index.csv + images); s3:// with --sagemaker."),
        out: str = typer.Option(..., "--out", help="Prediction folder to write (local or s3://bucket/prefix)."),
        model: str | None = typer.Option(None, "--model", help="Model folder (segqa train) or export folder "
                                            "(s3:// with --sagemaker)."),
        split: str = typer.Option("pool", "--split", help="Dataset split to predict."),
        mc_samples: int = typer.Option(0, "--mc-samples", help="MC-dropout passes T (0 = one deterministic "
                                       "pass; T >= 2 adds mutual information)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Slices per forward pass."),
        min_pixels: int = typer.Option(30, "--min-pixels", min=0, help="Smallest predicted region that is reviewable."),
        seed: int = typer.Option(0, "--seed", help="Seed of the MC-dropout passes."),
        table_format: str = typer.Option("parquet", "--table-format", help="parquet or csv."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Predict only the first N slices of the split."),
        probs: str | None = typer.Option(None, "--probs", help="Score existing probability maps "
                                            "(<subject>/<slice:03d>.npz) instead of running a model."),
        model_version: str | None = typer.Option(None, "--model-version", help="Model version to record with "
                                                    "--probs."),
        runtime: str = typer.Option("auto", "--runtime", help="auto (ONNX Runtime for an export folder without "
                                    "MC-dropout, else MXNet), mxnet or onnxruntime."),
        threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads (default: every core)."),
        tta: str = typer.Option(DEFAULT_TTA, "--tta", help="Test-time augmentation: flip (each slice and its "
                                "left-right mirror, probabilities averaged; twice the model time) or none."),
        sagemaker: bool = typer.Option(False, "--sagemaker", help="Run as SageMaker Processing jobs sharded by "
                                       "subject (see docs/aws.md)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="With --sagemaker: print the CreateProcessingJob "
                                     "requests as one JSON array; upload and start nothing."),
        role: str | None = typer.Option(None, "--role", help="Processing role ARN (or SEGQA_PROCESSING_ROLE_ARN; "
                                           "the stack's ProcessingRoleArn)."),
        image: str | None = typer.Option(None, "--image", help="Processing image URI (or SEGQA_PROCESSING_IMAGE; "
                                            "built from docker/processing/Dockerfile)."),
        shards: int = typer.Option(4, "--shards", help="Groups of whole subjects, one instance each."),
        instances_per_job: int = typer.Option(4, "--instances-per-job", help="Instances (shards) per job."),
        instance_type: str = typer.Option("ml.c5.xlarge", "--instance-type"),
        index: str | None = typer.Option(None, "--index", help="With --sagemaker: read the dataset index here "
                                            "(a local copy of --data) instead of from S3."),
        region: str | None = typer.Option(None, "--region", help="AWS region (default from the environment)."),
    ) -> None:
        """Predict a dataset split, store probability maps and masks, and score every (slice, class)."""
        from qa_workflow import storage
        from qa_workflow.contract import SegqaError
        from qa_workflow.rounds.predict import REJECTS_FILE, run_predictions, score_probability_files

        if sagemaker:
            _predict_sagemaker(model=model, data=data, out=out, split=split, mc_samples=mc_samples,
                               batch_size=batch_size, min_pixels=min_pixels, table_format=table_format,
                               runtime=runtime, tta=tta, role=role, image=image, shards=shards,
                               instances_per_job=instances_per_job, instance_type=instance_type, index=index,
                               region=region, dry_run=dry_run)
            return
        if dry_run:
            raise SegqaError("--dry-run plans SageMaker jobs: use it with --sagemaker")
        console = _console()
        if (model is None) == (probs is None):
            raise SegqaError("give exactly one of --model (run a segmenter) or --probs (score existing maps)")
        if probs is not None and not storage.is_s3(probs) and not storage.local_path(probs).is_dir():
            raise SegqaError(f"--probs {probs}: no such folder (expected the folder of <subject>/<slice>.npz "
                             "probability maps)")
        from training.dataset import read_index

        n = len(read_index(data, [split]))
        n = min(n, limit) if limit else n
        with progress(console) as bar:
            task = bar.add_task(f"predict {split}" if model else f"score {split}", total=n)

            def advance(k: int) -> None:
                bar.advance(task, k)

            if model is not None:
                from training.predict import open_predictor, with_tta

                predictor = with_tta(open_predictor(model, runtime=runtime, threads=threads, mc_samples=mc_samples),
                                     tta)
                console.print(f"model {predictor.version} ({predictor.network}, {predictor.runtime}) "
                              f"on {n} {split} slices{f', {mc_samples} MC-dropout passes' if mc_samples else ''}"
                              f"{', mirrored left-right' if tta == 'flip' else ''}")
                summary = run_predictions(predictor, data, out, split=split, mc_samples=mc_samples,
                                          batch_size=batch_size, min_pixels=min_pixels, seed=seed,
                                          table_format=table_format, limit=limit, model_path=str(model),
                                          progress=advance)
            else:
                assert probs is not None, "exactly one of model and probs is given (checked above)"
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
                                                 "analyze' (with no calibration either: cold start)."),
        calibration: str | None = typer.Option(None, "--calibration", help="calibration.json from 'segqa analyze' "
                                                  "(default: the one next to --thresholds, if any): P(accept) "
                                                  "decides verify vs adjust."),
        budget_seconds: float | None = typer.Option(None, "--budget-seconds", min=0,
                                                    help="Human seconds for the round's verify, adjust, audit and "
                                                    "random-arm work (cost model --costs). Default: no limit."),
        budget: int | None = typer.Option(None, "--budget", help="At most this many verify + adjust masks "
                                             "(on top of --budget-seconds)."),
        per_subject_cap: int | None = typer.Option(None, "--per-subject-cap", help="At most this many "
                                                      "verify masks + adjust slices per subject."),
        verify_min: float = typer.Option(0.5, "--verify-min", min=0.0, max=1.0,
                                         help="Calibrated P(accept) from which a mask is verified, below it adjusted."),
        costs: str | None = typer.Option(None, "--costs", help="Cost model in seconds, e.g. "
                                            "verify=3,adjust=60,scratch=240 (the defaults), per person."),
        reviewers: int = typer.Option(1, "--reviewers", min=1, help="People who verify each mask (the budget "
                                      "counts each one's seconds)."),
        correctors: int = typer.Option(1, "--correctors", min=1, help="People who answer each adjust task."),
        audit_rate: float = typer.Option(0.05, "--audit-rate", help="Share of auto-accepted items reviewed blind."),
        random_arm: int = typer.Option(0, "--random-arm", help="Size of a uniform random control sample."),
        measure: str = typer.Option(DEFAULT_CONFIDENCE_MEASURE, "--measure", help="Confidence measure: "
                                    f"{', '.join(CONFIDENCE_MEASURES)}."),
        strategy: str = typer.Option("uncertainty", "--strategy", help="uncertainty (default) or random."),
        slice_gap: int = typer.Option(2, "--slice-gap", help="Slices within this distance count as neighbours."),
        seed: int = typer.Option(0, "--seed", help="Seed of the audit, random arm and cold-start sampling."),
        exclude: str | None = typer.Option(None, "--exclude", help="Items already reviewed: a CSV with an "
                                              "item_id column (e.g. 'segqa store export') or one id per line."),
        round_id: str | None = typer.Option(None, "--round-id", help="Round id (default: the --out folder name)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a round made with other inputs."),
    ) -> None:
        """Route every scored item to auto_accept / verify / adjust / audit / random_arm / skip for one round."""
        from rich.table import Table

        from qa_workflow.contract import ASSIGNMENTS, CostModel
        from qa_workflow.rounds.predict import REJECTS_FILE
        from qa_workflow.rounds.round_dir import read_item_ids, select_round
        from qa_workflow.rounds.selection import SelectionPolicy

        console = _console()
        policy = SelectionPolicy(budget_seconds=budget_seconds, budget=budget, per_subject_cap=per_subject_cap,
                                 audit_rate=audit_rate, random_arm=random_arm, verify_min=verify_min,
                                 costs=CostModel.parse(costs).for_crew(reviewers, correctors), measure=measure,
                                 strategy=strategy,
                                 slice_gap=slice_gap, seed=seed)
        excluded = read_item_ids(exclude) if exclude else []
        result = select_round(predictions, out, policy, thresholds=thresholds, round_id=round_id, overwrite=overwrite,
                              exclude=excluded, calibration=calibration)
        for w in result.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        classes = [c for c in next(iter(result.counts.values())) if c != "total"]
        cold = not thresholds and not result.calibration
        table = Table(title=f"round {result.round_id}"
                      f"{' (cold start)' if cold else ''}{' — unchanged' if result.unchanged else ''}")
        table.add_column("route")
        for c in classes + ["total"]:
            table.add_column(c, justify="right")
        table.add_column("human s", justify="right")
        for a in ASSIGNMENTS:
            table.add_row(a, *(str(result.counts[a][c]) for c in classes + ["total"]),
                          f"{result.seconds.get(a, 0.0):,.0f}" if a not in ("skip", "auto_accept") else "")
        console.print(table)
        budget_note = f" of {budget_seconds:,.0f} s" if budget_seconds is not None else ""
        console.print(f"planned human time {result.seconds.get('total', 0.0):,.0f} s{budget_note}"
                      f"{'; calibration ' + result.calibration if result.calibration else ''}")
        console.print(f"{'unchanged: ' if result.unchanged else ''}{out}/round.json, assignments.csv")
        print_rejects(console, result.rejects, f"{out}/{REJECTS_FILE}", "row")

    @app.command("batch")
    def batch(
        round_dir: str = typer.Option(..., "--round", help="Round folder from 'segqa select'."),
        dest: str | None = typer.Option(None, "--dest", help="Where overlays, batches and the manifest go: a "
                                           "folder or s3://bucket/prefix (default: the round folder)."),
        batch_size: int = typer.Option(25, "--batch-size", min=1, max=200,
                                       help="Items per batch (one class per batch)."),
        workers: int = typer.Option(8, "--workers", min=1, help="Parallel render/upload threads."),
        scale: int = typer.Option(2, "--scale", min=1, help="Overlay upscaling factor."),
        adjust_from_job: str | None = typer.Option(None, "--adjust-from-job", help="Also write adjust tasks (one "
                                                   "per slice) for the items this verify job rejected."),
        escalate_from_job: str | None = typer.Option(None, "--escalate-from-job", help="Also write verify batches "
                                                     "of the masks this verify job's reviewers split on, for a "
                                                     "second opinion (escalate/<job>/)."),
        escalation_job: str | None = typer.Option(None, "--escalation-job", help="With --adjust-from-job: the job "
                                                  "that gave its split masks a second opinion; their votes count "
                                                  "too, so a mask it accepted is not corrected."),
        store: str | None = typer.Option(None, "--store", help="With --adjust-from-job or --escalate-from-job: "
                                         "the store holding the votes (default $SEGQA_STORE)."),
    ) -> None:
        """Render overlays, write batch JSONs and manifest.jsonl, and the adjust tasks of the items routed to
        adjust (adjust/routed/); resumes an interrupted upload. With --adjust-from-job, also the adjust tasks of
        the slices that verify job rejected (adjust/<job>/); with --escalate-from-job, the verify batches of the
        masks a verify job split on (escalate/<job>/)."""
        from qa_workflow.contract import SegqaError
        from qa_workflow.rounds.batching import BATCH_REJECTS_FILE, write_batches

        if escalation_job and not adjust_from_job:
            raise SegqaError("--escalation-job goes with --adjust-from-job")
        # the store is opened first: a missing one fails before any batch is written
        votes = _vote_store(store) if adjust_from_job or escalate_from_job else None
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
        if result.adjust:
            console.print(f"{len(result.adjust['tasks'])} adjust tasks ({result.adjust['items']} items routed to "
                          f"adjust, one task per slice) -> {result.adjust['manifest']}")
        for route, count in result.not_batched.items():
            console.print(f"{count} {route} item(s) have no kind of review work and were left out")
        print_rejects(console, result.rejects, f"{round_dir}/{BATCH_REJECTS_FILE}")
        if escalate_from_job and votes is not None:
            from qa_workflow.rounds.escalating import split_in_store, write_escalation_batches

            second = write_escalation_batches(round_dir, split_in_store(votes, escalate_from_job), escalate_from_job,
                                              dest=result.dest)
            console.print(f"{len(second.batch_uris)} escalation batches ({second.items} split items) -> "
                          f"{second.manifest}")
        if adjust_from_job and votes is not None:
            from qa_workflow.rounds.adjusting import rejected_in_store, write_adjust_tasks

            rejected = rejected_in_store(votes, adjust_from_job, *([escalation_job] if escalation_job else []))
            tasks = write_adjust_tasks(round_dir, rejected, adjust_from_job, dest=result.dest)
            console.print(f"{len(tasks.task_uris)} adjust tasks ({tasks.items} rejected items) -> {tasks.manifest}")

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
        kind: str = typer.Option("verify", "--kind", help="verify (the round's batches, or with --from-job the "
                                 "masks a verify job split on: the escalation job) or adjust (the slices routed to "
                                 "adjust, or with --from-job the slices a verify job rejected)."),
        from_job: str | None = typer.Option(None, "--from-job", help="With --kind adjust: the verify job whose "
                                            "rejected items become adjust tasks (default: the routed ones); with "
                                            "--kind verify: the verify job whose split items get a second opinion."),
        escalation_job: str | None = typer.Option(None, "--escalation-job", help="With --kind adjust --from-job: "
                                                  "the job that gave its split masks a second opinion (its votes "
                                                  "count too; read from --store)."),
        store: str | None = typer.Option(None, "--store", help="With --from-job: the store holding its votes "
                                         "(default $SEGQA_STORE), unless --from-manifest is given."),
        from_manifest: str | None = typer.Option(None, "--from-manifest", help="With --from-job: the verify job's "
                                                 "Ground Truth output manifest instead of the store."),
        from_label_attribute_name: str = typer.Option("segqa-review", "--from-label-attribute-name",
                                                      help="The verify job's label attribute in --from-manifest."),
    ) -> None:
        """Create the round's Ground Truth custom labeling job (or print its request with --dry-run).

        With --kind adjust: the items 'segqa select' routed to adjust (one task per slice) become a job with its
        own label attribute (default segqa-adjust) and the adjust template; with --from-job JOB, the items JOB
        rejected instead (the chained job). With --kind verify --from-job JOB: the masks JOB's reviewers split on,
        for a second opinion (the escalation job; give it another --workteam-arn)."""
        from qa_workflow.cli.options import key_values
        from qa_workflow.contract import ADJUST, TASK_KINDS, SegqaError
        from qa_workflow.review.ground_truth import DEFAULT_TEMPLATE, JobSettings, create_adjust_job, create_job

        if kind not in TASK_KINDS:
            raise SegqaError(f"--kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
        if escalation_job and not (kind == ADJUST and from_job):
            raise SegqaError("--escalation-job goes with --kind adjust --from-job")
        if escalation_job and from_manifest:
            raise SegqaError("--escalation-job reads both jobs' votes from --store; leave out --from-manifest")

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
        if kind == ADJUST and not from_job:
            from qa_workflow.rounds.adjusting import routed_adjust_items
            from qa_workflow.rounds.round_dir import read_assignments

            routed = routed_adjust_items(read_assignments(round_dir))
            if not routed:
                raise SegqaError(f"{round_dir}: no items routed to adjust; for the slices a verify job rejected, "
                                 "give --from-job")
            console.print(f"{len(routed)} items routed to adjust")
            request, warnings, record = create_adjust_job(client, round_dir, settings, None, routed, dry_run=dry_run)
        elif kind != ADJUST and from_job:
            from qa_workflow.review.ground_truth import create_escalation_job
            from qa_workflow.rounds.escalating import split_in_output_manifest, split_in_store

            if from_manifest:
                split = split_in_output_manifest(from_manifest, from_label_attribute_name)
            else:
                split = split_in_store(_vote_store(store), from_job)
            console.print(f"job {from_job}: {len(split)} split items")
            request, warnings, record = create_escalation_job(client, round_dir, settings, from_job, split,
                                                              dry_run=dry_run)
        elif kind == ADJUST:
            assert from_job is not None
            if from_manifest:
                from qa_workflow.rounds.adjusting import rejected_in_output_manifest

                rejected = rejected_in_output_manifest(from_manifest, from_label_attribute_name)
            else:
                from qa_workflow.rounds.adjusting import rejected_in_store

                rejected = rejected_in_store(_vote_store(store), from_job,
                                             *([escalation_job] if escalation_job else []))
            console.print(f"job {from_job}: {len(rejected)} rejected items")
            request, warnings, record = create_adjust_job(client, round_dir, settings, from_job, rejected,
                                                          dry_run=dry_run)
        else:
            request, warnings, record = create_job(client, round_dir, settings, dry_run=dry_run)
        for w in warnings:
            console.print(f"[yellow]warning:[/] {w}")
        if dry_run:
            typer.echo(json.dumps(request, indent=2))
            console.print("dry run: nothing uploaded or created (the request passed botocore's service model)")
        elif record is not None:
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
