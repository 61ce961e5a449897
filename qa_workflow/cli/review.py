"""Reviewing: the local review portal and simulated reviewers (issue #7).

    segqa review serve --round R [--store URI] [--reviewers-per-object 3] [--host 127.0.0.1] [--port 8080]
                       [--task-time-limit S] [--task-lifetime S] [--portal-dir DIR] [--job-name NAME]
                       [--exclude-voters-of JOB]
    segqa review add-reviewer NAME [--operator] [--new-link] [--url http://127.0.0.1:8080]
    segqa review reviewers | segqa review disable NAME
    segqa review simulate --round R --truth DATA_DIR [--reviewers 3] [--error-rate 0.03] [--seed S] [--store URI]
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import typer

from qa_workflow.contract import SegqaError

_PORTAL_DIR_HELP = ("Portal state (accounts, sessions, job progress, signing key). "
                    "Default $SEGQA_PORTAL_DIR or ~/.segqa/portal.")
_ROUND_HELP = "Round folder holding manifest.jsonl (or the manifest itself)."


def _portal_dir(value: Path | None) -> Path:
    from qa_workflow.review.portal.service import default_portal_dir

    return value if value is not None else default_portal_dir()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; the portal warns before listening anywhere else."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quiet_lambda_logs() -> None:
    """The handlers log one structured INFO line per object (CloudWatch-style); on a terminal that is noise
    unless --verbose was given."""
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("segqa.lambdas").setLevel(logging.WARNING)


def register(app: typer.Typer) -> None:
    review_app = typer.Typer(help="Review masks: local portal, simulated reviewers.", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("serve")
    def serve_(
        round_: str = typer.Option(..., "--round", help=_ROUND_HELP),
        store: str | None = typer.Option(None, "--store", help="Where votes go: sqlite:///<path> or "
                                         "dynamodb://<table>. Default $SEGQA_STORE, else <portal-dir>/store.sqlite."),
        reviewers_per_object: int = typer.Option(3, "--reviewers-per-object", min=1, max=50,
                                                 help="Reviewers who answer each batch."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
        port: int = typer.Option(8080, "--port", min=1, max=65535),
        task_time_limit: float = typer.Option(3600, "--task-time-limit", help="Seconds a reviewer has for one "
                                              "batch before it is released to someone else."),
        task_lifetime: float = typer.Option(10 * 24 * 3600, "--task-lifetime", help="Seconds a batch stays "
                                            "available; then it is consolidated with the answers it has."),
        portal_dir: Path | None = typer.Option(None, "--portal-dir", help=_PORTAL_DIR_HELP),
        job_name: str | None = typer.Option(None, "--job-name", help="Labeling job name (votes are keyed by "
                                               "it). Default segqa-review-<round folder>."),
        template: str | None = typer.Option(None, "--template", help="Liquid template (default "
                                               "templates/mask_review.liquid.html)."),
        url_ttl: float = typer.Option(600, "--url-ttl", help="Seconds a signed image URL stays valid at least "
                                      "(links on a task page last until the task's time limit)."),
        public_url: str | None = typer.Option(None, "--public-url", help="The origin browsers use, e.g. "
                                              "https://review.example.org, when a reverse proxy forwards to this "
                                              "port (docs/review-portal.md has an nginx example)."),
        min_view_ms: int | None = typer.Option(None, "--min-view-ms", min=0, max=60_000,
                                               help="Milliseconds each mask must be shown before it can be "
                                               "decided (0: off). Sets the template's data-min-view-ms, which the "
                                               "page enforces per card and the server per task (cards x this, "
                                               "from the page's load). Default: the template's (600)."),
        exclude_voters_of: list[str] | None = typer.Option(
            None, "--exclude-voters-of", help="A job whose reviewers are not given a batch with a mask they voted "
            "on there (repeatable). Default: for an escalation manifest (escalate/<job>/manifest.jsonl) its verify "
            "job, so the second opinion comes from other people; else none."),
    ) -> None:
        """Serve a round's review job in the browser: same template, same Lambda handlers as Ground Truth."""
        import uvicorn

        from qa_workflow.cli.console import console as make_console
        from qa_workflow.cli.console import progress as make_progress
        from qa_workflow.review.portal.app import create_app
        from qa_workflow.review.portal.service import PortalSettings

        _quiet_lambda_logs()
        console = make_console()
        if not is_loopback(host):
            console.print(f"[bold yellow]warning:[/] --host {host} exposes the portal beyond this machine. "
                          "Logins, session cookies and images travel in clear text: put TLS in front of it "
                          "(a reverse proxy such as Caddy or nginx terminating HTTPS, forwarding to this port).")
        settings = PortalSettings(
            portal_dir=_portal_dir(portal_dir), round_uri=round_, store_uri=store, job_name=job_name,
            reviewers_per_object=reviewers_per_object, task_time_limit_s=task_time_limit,
            task_lifetime_s=task_lifetime, url_ttl_s=url_ttl, template_uri=template, public_url=public_url,
            min_view_ms=min_view_ms, exclude_voters_of=tuple(exclude_voters_of) if exclude_voters_of else None)
        app = create_app(settings)
        service = app.state.service
        with make_progress(console, transient=True) as bar:
            task = bar.add_task("pre-labeling batches", total=None)
            service.start(on_object=lambda done, total: bar.update(task, completed=done, total=total))
        progress = service.progress()
        by = progress["objects_by_status"]
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        typer.echo(f"job {service.job_cfg.name}: {progress['objects_total']} batches "
                   f"({by.get('complete', 0)} complete, {by.get('failed', 0)} failed pre-labeling), "
                   f"{reviewers_per_object} reviewers per batch")
        typer.echo(f"store: {service.store_uri}")
        if service.exclude_voters_of:
            jobs = ", ".join(service.exclude_voters_of)
            typer.echo(f"second opinion: reviewers who voted on a batch's masks in {jobs} are not given it "
                       f"({progress['excluded']} batch/reviewer pairs)")
        typer.echo(f"portal: http://{shown}:{port}/  (operator page: /operator)")
        if not any(r.is_operator for r in service.db.reviewers()):
            typer.echo("no operator yet: segqa review add-reviewer NAME --operator")
        uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=True)

    @review_app.command("add-reviewer")
    def add_reviewer_(
        name: str = typer.Argument(..., help="Reviewer name (letters, digits, '.', '_', '-'); their worker id "
                                   "becomes private.local.<name>."),
        operator: bool = typer.Option(False, "--operator", help="Also allow the operator page and exports."),
        new_link: bool = typer.Option(False, "--new-link", help="Issue a new one-time link for an existing reviewer."),
        url: str = typer.Option("http://127.0.0.1:8080", "--url", help="The portal's address as reviewers reach it."),
        link_ttl: float = typer.Option(7 * 24 * 3600, "--link-ttl", min=1, help="Seconds the login link stays valid."),
        portal_dir: Path | None = typer.Option(None, "--portal-dir", help=_PORTAL_DIR_HELP),
    ) -> None:
        """Create a reviewer account and print their one-time login link."""
        from urllib.parse import urlsplit

        from qa_workflow.review.portal.auth import worker_id_for
        from qa_workflow.review.portal.service import open_portal_db

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SegqaError(f"--url: expected the portal's address, e.g. https://review.example.org, got {url!r}")

        db = open_portal_db(_portal_dir(portal_dir))
        try:
            if new_link:
                token = db.new_login_link(name, link_ttl_s=link_ttl, now=time.time(),
                                          is_operator=True if operator else None)
                typer.echo(f"new login link for {name} (the previous one no longer works)")
            else:
                token = db.add_reviewer(name, is_operator=operator, link_ttl_s=link_ttl, now=time.time())
                typer.echo(f"reviewer {name} added{' (operator)' if operator else ''}; worker id {worker_id_for(name)}")
        finally:
            db.close()
        hours = link_ttl / 3600
        typer.echo(f"one-time login link (valid {hours:g} h, works once):")
        typer.echo(f"  {url.rstrip('/')}/login?token={token}")
        typer.echo(f"token: {token}")

    @review_app.command("reviewers")
    def reviewers_(portal_dir: Path | None = typer.Option(None, "--portal-dir", help=_PORTAL_DIR_HELP)) -> None:
        """List reviewer accounts."""
        from qa_workflow.review.portal.service import open_portal_db

        db = open_portal_db(_portal_dir(portal_dir))
        try:
            for r in db.reviewers():
                flags = [f for f, on in (("operator", r.is_operator), ("disabled", r.disabled)) if on]
                typer.echo(f"{r.name}\t{r.worker_id}\t{','.join(flags)}")
        finally:
            db.close()

    @review_app.command("disable")
    def disable_(name: str = typer.Argument(...),
                 portal_dir: Path | None = typer.Option(None, "--portal-dir", help=_PORTAL_DIR_HELP)) -> None:
        """Lock a reviewer out (sessions ended, login link revoked); their submitted answers stay."""
        from qa_workflow.review.portal.service import open_portal_db

        db = open_portal_db(_portal_dir(portal_dir))
        try:
            db.disable_reviewer(name)
        finally:
            db.close()
        typer.echo(f"reviewer {name} disabled")

    @review_app.command("simulate")
    def simulate_(
        round_: str = typer.Option(..., "--round", help=_ROUND_HELP),
        truth: Path = typer.Option(..., "--truth", help="Dataset folder with the true masks (index.csv)."),
        reviewers: int = typer.Option(3, "--reviewers", min=1, max=50),
        first_reviewer: int = typer.Option(1, "--first-reviewer", min=1,
                                           help="Number of the first simulated reviewer: for an escalation job "
                                                "(escalate/<job>/manifest.jsonl), one after the verify job's last."),
        error_rate: float = typer.Option(0.03, "--error-rate", min=0.0, max=1.0,
                                         help="Chance each reviewer flips an answer."),
        seed: int = typer.Option(0, "--seed"),
        store: str | None = typer.Option(None, "--store", help="sqlite:///<path> or dynamodb://<table>; "
                                            "default $SEGQA_STORE."),
        job_name: str | None = typer.Option(None, "--job-name", help="Default segqa-sim-<round folder>."),
        out: Path | None = typer.Option(None, "--out", help="Also write per-item quality and votes (CSV)."),
        work_dir: Path | None = typer.Option(None, "--work-dir", help="Keep the annotation files here."),
        quality: str = typer.Option("surface_dice", "--quality",
                                    help="What reviewers judge a mask by: surface_dice (1 px tolerance) or dice."),
    ) -> None:
        """Play reviewers (ARCHITECTURE §10) through the real pre- and post-labeling handlers."""
        import os

        from qa_workflow.cli.console import console, progress
        from qa_workflow.review.simulated_reviewers import simulate_round, write_items_csv

        _quiet_lambda_logs()
        store_uri = store or os.environ.get("SEGQA_STORE")
        if not store_uri:
            raise SegqaError("no store: pass --store sqlite:///<path> (or dynamodb://<table>) or set SEGQA_STORE")
        with progress(console(), transient=True) as bar:
            task = bar.add_task("simulated reviews", total=None)
            result = simulate_round(round_, truth, store_uri=store_uri, reviewers=reviewers, error_rate=error_rate,
                                    seed=seed, job_name=job_name, work_dir=work_dir, quality=quality,
                                    first_reviewer=first_reviewer,
                                    on_object=lambda done, total: bar.update(task, completed=done, total=total))
        if out is not None:
            write_items_csv(result, out)
        typer.echo(f"job {result.job_name}: {result.objects} batches, {len(result.items)} items, {result.votes} votes "
                   f"from {reviewers} simulated reviewers judging {result.quality} -> {result.store_uri}")
        for cls, c in sorted(result.acceptance_by_class().items()):
            typer.echo(f"  {cls}: {c['items']} items, accepted {c['accepts']}/{c['votes']} votes "
                       f"({100 * c['accept_rate']:.1f}%)")
        for source, error in result.failed_objects:
            typer.echo(f"  failed pre-labeling: {source}: {error}", err=True)
        if out is not None:
            typer.echo(f"per-item results: {out}")
        if result.failed_objects:  # the others' votes are stored (a rerun skips them); the run did not finish
            typer.echo(f"error: {len(result.failed_objects)} of {result.objects + len(result.failed_objects)} "
                       "batches failed pre-labeling (above); fix them and run again", err=True)
            raise typer.Exit(1)
