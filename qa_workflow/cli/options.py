"""Option parsing shared by several commands (one definition of each format)."""

from __future__ import annotations

from collections.abc import Iterable

from qa_workflow.contract import SegqaError


def key_values(pairs: Iterable[str], option: str, form: str = "Key=Value", unique: bool = False) -> dict[str, str]:
    """``["Key=Value", ...]`` of a repeatable option as a dict; a pair without ``=`` or a key names the option and
    the expected ``form``. ``unique``: a key given twice is an error too (else the last one wins)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SegqaError(f"{option} {pair!r}: expected {form}")
        if unique and key.strip() in out:
            raise SegqaError(f"{option}: {key.strip()} given twice")
        out[key.strip()] = value
    return out
