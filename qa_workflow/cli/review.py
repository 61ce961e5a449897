"""Reviewing: the local portal and simulated reviewers (issue #7)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    review_app = typer.Typer(help="Review masks: local portal, simulated reviewers.", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("serve", context_settings=_EXTRA)
    def serve_(ctx: typer.Context) -> None:
        """Not built yet (issue #7)."""
        not_built("segqa review serve", 7)

    @review_app.command("simulate", context_settings=_EXTRA)
    def simulate_(ctx: typer.Context) -> None:
        """Not built yet (issue #7)."""
        not_built("segqa review simulate", 7)

    @review_app.command("add-reviewer", context_settings=_EXTRA)
    def add_reviewer_(ctx: typer.Context) -> None:
        """Not built yet (issue #7)."""
        not_built("segqa review add-reviewer", 7)
