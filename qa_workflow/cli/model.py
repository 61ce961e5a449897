"""The segmenter: train, evaluate, export (issue #3)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings=_EXTRA)
    def train(ctx: typer.Context) -> None:
        """Not built yet (issue #3)."""
        not_built("segqa train", 3)

    @app.command("evaluate", context_settings=_EXTRA)
    def evaluate(ctx: typer.Context) -> None:
        """Not built yet (issue #3)."""
        not_built("segqa evaluate", 3)

    @app.command("export", context_settings=_EXTRA)
    def export(ctx: typer.Context) -> None:
        """Not built yet (issue #3)."""
        not_built("segqa export", 3)
