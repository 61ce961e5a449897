"""AWS: `segqa deploy` (the CloudFormation stack) and `segqa train-remote` (SageMaker training with the SDK v3
ModelTrainer). Thin commands over `qa_workflow.cloud.deploy` and `qa_workflow.cloud.sagemaker`; see docs/aws.md."""

from __future__ import annotations

import json
from typing import Any

import typer

_REGION_HELP = "AWS region (default: the profile's or AWS_DEFAULT_REGION)."
_PROFILE_HELP = "AWS profile from ~/.aws/config."


def _session(region: str | None, profile: str | None) -> Any:
    import boto3
    from botocore.exceptions import ProfileNotFound

    from qa_workflow.contract import SegqaError

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise SegqaError(f"AWS profile {profile!r} not found in ~/.aws/config") from None
    if not session.region_name:
        raise SegqaError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    return session


def _print_template_parameters() -> None:
    from rich.table import Table

    from qa_workflow.cli.console import console
    from qa_workflow.cloud import deploy

    table = Table(title=f"Parameters of {deploy.TEMPLATE_PATH.relative_to(deploy.ROOT)}")
    for col in ("parameter", "default", "set by", "description"):
        table.add_column(col, overflow="fold")
    for name, spec in deploy.template_parameters().items():
        if name in ("NamePrefix", "Environment"):
            set_by = f"--{'prefix' if name == 'NamePrefix' else 'environment'}"
        elif name in deploy.AUTO_PARAMETERS:
            set_by = "segqa deploy" + (" (or --image)" if name == "TrainingImageUri" else "")
        else:
            set_by = f"--parameter {name}=..."
        default = spec.get("Default")
        allowed = spec.get("AllowedValues")
        table.add_row(name, "" if default is None else str(default), set_by,
                      str(spec.get("Description", "")).strip() + (f" Allowed: {', '.join(map(str, allowed))}."
                                                                  if allowed else ""))
    console(stderr=False).print(table)


def _print_outputs(outputs: dict[str, str]) -> None:
    from qa_workflow.cloud.deploy import env_exports

    for key, value in sorted(outputs.items()):
        typer.echo(f"# {key} = {value}")
    exports = env_exports(outputs)
    if exports:
        typer.echo("# for segqa job create / store / review serve:")
        for env, value in exports.items():
            typer.echo(f"export {env}={value}")
    if "DataUri" in outputs:
        typer.echo(f"# batches: segqa batch --round ROUND_DIR --dest {outputs['DataUri']}/rounds/<round>")


def _publish_component(session: Any, component_dir: str, artifacts: str | None, dry_run: bool) -> None:
    from qa_workflow.cloud import greengrass
    from qa_workflow.contract import SegqaError

    if not artifacts:
        raise SegqaError("--greengrass needs --artifacts s3://bucket/prefix (readable by the core devices' "
                         "token exchange role)")
    if dry_run:
        request, uploads = greengrass.component_request(component_dir, artifacts)
        for uri in uploads:
            typer.echo(f"# would upload {uploads[uri]} -> {uri}")
        typer.echo(request["inlineRecipe"].decode("utf-8"))
        typer.echo("dry run: nothing uploaded or created")
        return
    result = greengrass.publish_component(component_dir, artifacts, session.client("greengrassv2"))
    typer.echo(f"component {result['componentName']} {result['componentVersion']}: {result['status']} "
               f"({result['arn']})")


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy_(
        prefix: str = typer.Option("segqa", "--prefix", help="NamePrefix of every resource (2-12 of a-z, 0-9, -)."),
        environment: str = typer.Option("dev", "--environment", "-e", help="dev, staging or prod."),
        stack: str | None = typer.Option(None, "--stack", help="Stack name (default <prefix>-<environment>)."),
        region: str | None = typer.Option(None, "--region", help=_REGION_HELP),
        profile: str | None = typer.Option(None, "--profile", help=_PROFILE_HELP),
        parameter: list[str] = typer.Option([], "--parameter", "-p", help="Stack parameter Key=Value (repeatable), "
                                            "e.g. MinNewConfirmations=100."),
        image: str | None = typer.Option(None, "--image", help="Training image URI (default: the AWS MXNet 1.9 "
                                            "image for the region and TrainingInstanceType)."),
        lambdas: str = typer.Option("build/lambdas", "--lambdas", help="Folder of the Lambda zips (make lambdas)."),
        code_bucket: str | None = typer.Option(None, "--code-bucket", help="Bucket for the code (default "
                                               "<prefix>-<env>-sagemaker-code-<account>-<region>, "
                                               "created if missing)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Lint and print the plan; change nothing in AWS."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Execute the change set without asking."),
        print_parameters: bool = typer.Option(False, "--print-template-parameters",
                                              help="List the stack parameters, their defaults and who sets them."),
        show_outputs: bool = typer.Option(False, "--show-outputs",
                                          help="Print the deployed stack's outputs as shell exports; deploy nothing."),
        greengrass: str | None = typer.Option(None, "--greengrass", help="Publish the Greengrass component of this "
                                                 "export folder (segqa export --greengrass) instead of the stack."),
        artifacts: str | None = typer.Option(None, "--artifacts", help="With --greengrass: s3://bucket/prefix for "
                                                "the component's artifacts."),
    ) -> None:
        """Create or update the AWS stack: lint the template, upload the Lambda zips and the training code,
        run a CloudFormation change set, follow its events, upload the review template."""
        from pathlib import Path

        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.options import key_values
        from qa_workflow.cloud import deploy

        if print_parameters:
            _print_template_parameters()
            return
        console = make_console(stderr=False)
        session = _session(region, profile)
        if greengrass:
            _publish_component(session, greengrass, artifacts, dry_run)
            return
        if show_outputs:
            _print_outputs(deploy.read_outputs(session, stack or f"{prefix}-{environment}"))
            return
        overrides = key_values(parameter, "--parameter")
        if image:
            overrides["TrainingImageUri"] = image
        with console.status("Linting the template and packaging the code…"):
            plan = deploy.plan_deploy(session, prefix=prefix, environment=environment, stack_name=stack,
                                      lambdas_dir=Path(lambdas), code_bucket=code_bucket, overrides=overrides)
        for warning in plan.lint_warnings:
            console.print(f"[yellow]cfn-lint:[/] {warning}")
        if dry_run:
            typer.echo(json.dumps(plan.describe(), indent=2))
            typer.echo("dry run: nothing was changed")
            return
        console.print(f"{plan.action.capitalize()} stack [bold]{plan.stack_name}[/] in {plan.region} "
                      f"(account {plan.account})")

        def on_event(kind: str, payload: Any) -> None:
            if kind == "upload":
                console.print(f"  uploaded {payload}")
            elif kind == "status":
                console.print(f"  {payload}")
            elif kind == "changes":
                for c in payload:
                    extra = f" (replacement: {c['replacement']})" if c["replacement"] in ("True", "Conditional") else ""
                    console.print(f"  {c['action']:>7}  {c['logical_id']}  [dim]{c['type']}[/]{extra}")
            elif kind == "event":
                colour = ("red" if "FAILED" in payload.status
                          else "green" if payload.status.endswith("COMPLETE") else "cyan")
                reason = f"  [dim]{payload.reason}[/]" if payload.reason else ""
                console.print(f"  {payload.timestamp:%H:%M:%S}  [{colour}]{payload.status:<28}[/] "
                              f"{payload.logical_id}{reason}")

        def confirm(changes: list[dict[str, str]]) -> bool:
            return yes or typer.confirm(f"Execute these {len(changes)} change(s)?", default=False)

        result = deploy.execute_deploy(plan, session, on_event=on_event, confirm=confirm)
        if result.outcome == "cancelled":
            typer.echo("cancelled: the stack was not changed")
            raise typer.Exit(1)
        console.print(f"stack {result.stack_name}: [bold]{result.outcome}[/]")
        _print_outputs(result.outputs)

    @app.command("train-remote")
    def train_remote(
        network: str = typer.Option("both", "--network", "-n", help="unet, enet or both."),
        train: str | None = typer.Option(None, "--train", help="s3:// dataset folder for the train channel "
                                            "(default with --stack: <DataUri>/retrain/dataset/train/)."),
        validation: str | None = typer.Option(None, "--validation", help="s3:// dataset folder for validation "
                                                 "(default with --stack: <DataUri>/retrain/dataset/validation/)."),
        output: str | None = typer.Option(None, "--output", help="s3:// prefix for model.tar.gz (default with "
                                             "--stack: <DataUri>/models/<network>/)."),
        role: str | None = typer.Option(None, "--role",
                                        help="Training role ARN (default: the stack's TrainingRoleArn)."),
        stack: str | None = typer.Option(None, "--stack", help="Take role and S3 locations from this stack's outputs."),
        image: str | None = typer.Option(None, "--image", help="Training image (default: AWS MXNet 1.9 DLC)."),
        instance_type: str = typer.Option("ml.g4dn.xlarge", "--instance-type"),
        instance_count: int = typer.Option(1, "--instance-count", help="Hosts; more than one trains with dist_sync."),
        volume_gb: int = typer.Option(30, "--volume-gb"),
        max_runtime: int = typer.Option(4 * 3600, "--max-runtime", help="Seconds before SageMaker stops the job."),
        hp: list[str] = typer.Option([], "--hp", help="Hyperparameter key=value for training/train.py (repeatable), "
                                     "e.g. --hp epochs=40 --hp batch-size=16."),
        spot: bool = typer.Option(False, "--spot", help="Managed spot training (needs --checkpoint to resume)."),
        checkpoint: str | None = typer.Option(None, "--checkpoint", help="s3:// prefix for checkpoints."),
        region: str | None = typer.Option(None, "--region", help=_REGION_HELP),
        profile: str | None = typer.Option(None, "--profile", help=_PROFILE_HELP),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Build the ModelTrainer(s) and print them; start nothing."),
        wait: bool = typer.Option(False, "--wait", help="Wait for the job(s) and stream their logs."),
    ) -> None:
        """Train U-Net and/or ENet on SageMaker (SDK v3 ModelTrainer, MXNet 1.9 image, training/train.py)."""
        from qa_workflow.cloud import sagemaker as sl
        from qa_workflow.contract import SegqaError

        networks = tuple(sl.NETWORKS) if network == "both" else (network,)
        if any(n not in sl.NETWORKS for n in networks):
            raise SegqaError(f"--network must be unet, enet or both, got {network!r}")
        session = _session(region, profile)
        outputs = None
        if stack:
            from qa_workflow.cloud.deploy import read_outputs

            outputs = read_outputs(session, stack)
        request = sl.RemoteTraining(
            networks=networks, train_uri=train, validation_uri=validation, output_uri=output, role_arn=role,
            image_uri=image, instance_type=instance_type, instance_count=instance_count, volume_gb=volume_gb,
            max_runtime_s=max_runtime, hyperparameters=sl.parse_hyperparameters(hp), spot=spot,
            checkpoint_uri=checkpoint)
        result = sl.train_remote(request, session, outputs, dry_run=dry_run, wait=wait, warn=lambda problem: typer.echo(
            f"warning: not Python 3.8 syntax (the MXNet 1.9 image runs 3.8): {problem}", err=True))
        if dry_run:
            typer.echo(json.dumps(result.summaries, indent=2))
            typer.echo("dry run: no job was started")
            return
        for net, name in result.jobs:
            typer.echo(f"{net}: training job {name} "
                       f"(https://{session.region_name}.console.aws.amazon.com/sagemaker/home?region="
                       f"{session.region_name}#/jobs/{name})")
