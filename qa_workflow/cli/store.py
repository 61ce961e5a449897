"""The confirmation store (issue #5)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="The confirmation store (SQLite or DynamoDB).", no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("export", context_settings=_EXTRA)
    def export_(ctx: typer.Context) -> None:
        """Not built yet (issue #5)."""
        not_built("segqa store export", 5)

    @store_app.command("summary", context_settings=_EXTRA)
    def summary_(ctx: typer.Context) -> None:
        """Not built yet (issue #5)."""
        not_built("segqa store summary", 5)
