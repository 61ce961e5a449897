"""Helpers shared by the command modules."""

from __future__ import annotations


class NotBuilt(Exception):
    """A command whose implementation has not landed yet; the CLI says so and exits 3."""


def not_built(command: str, issue: int) -> None:
    raise NotBuilt(f"'{command}' is not built yet (tracked in issue #{issue}); nothing was done")
