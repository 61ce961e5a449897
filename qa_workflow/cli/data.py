"""Data: the atlas cohort, importers, previews (issue #2)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Build, import and preview datasets.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("synth", context_settings=_EXTRA)
    def synth_(ctx: typer.Context) -> None:
        """Not built yet (issue #2)."""
        not_built("segqa data synth", 2)

    @data_app.command("import", context_settings=_EXTRA)
    def import_(ctx: typer.Context) -> None:
        """Not built yet (issue #2)."""
        not_built("segqa data import", 2)

    @data_app.command("preview", context_settings=_EXTRA)
    def preview_(ctx: typer.Context) -> None:
        """Not built yet (issue #2)."""
        not_built("segqa data preview", 2)
