"""Threshold analysis (issue #6)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("analyze", context_settings=_EXTRA)
    def analyze(ctx: typer.Context) -> None:
        """Not built yet (issue #6)."""
        not_built("segqa analyze", 6)
