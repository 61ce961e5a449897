"""Review work: predict + score, select, batch, Ground Truth jobs (issue #4)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("predict", context_settings=_EXTRA)
    def predict(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa predict", 4)

    @app.command("select", context_settings=_EXTRA)
    def select(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa select", 4)

    @app.command("batch", context_settings=_EXTRA)
    def batch(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa batch", 4)

    job_app = typer.Typer(help="Ground Truth labeling jobs.", no_args_is_help=True)
    app.add_typer(job_app, name="job")

    @job_app.command("create", context_settings=_EXTRA)
    def create_(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa job create", 4)

    @job_app.command("status", context_settings=_EXTRA)
    def status_(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa job status", 4)

    @job_app.command("sync", context_settings=_EXTRA)
    def sync_(ctx: typer.Context) -> None:
        """Not built yet (issue #4)."""
        not_built("segqa job sync", 4)
