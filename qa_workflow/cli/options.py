"""Option parsing shared by several commands (one definition of each format)."""

from __future__ import annotations

from collections.abc import Iterable

from qa_workflow.contract import SegqaError


def key_values(pairs: Iterable[str], option: str) -> dict[str, str]:
    """``["Key=Value", ...]`` of a repeatable option as a dict; a pair without ``=`` or a key names the option."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SegqaError(f"{option} {pair!r}: expected Key=Value")
        out[key.strip()] = value
    return out
