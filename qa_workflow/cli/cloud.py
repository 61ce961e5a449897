"""AWS deployment: the CloudFormation stack and SageMaker launches (issue #8)."""

from __future__ import annotations

import typer

from qa_workflow.cli._common import not_built

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("deploy", context_settings=_EXTRA)
    def deploy(ctx: typer.Context) -> None:
        """Not built yet (issue #8)."""
        not_built("segqa deploy", 8)
