"""The loop: retrain, demo (issue #8)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("retrain", context_settings=_EXTRA)
    def retrain(ctx: typer.Context) -> None:
        """Not built yet (issue #8)."""
        not_built("segqa retrain", 8)

    @app.command("demo", context_settings=_EXTRA)
    def demo(ctx: typer.Context) -> None:
        """Not built yet (issue #8)."""
        not_built("segqa demo", 8)
