"""Review records (ARCHITECTURE §9): load, validate, detect the confidence scale, and derive each item's outcome.

A review record is one reviewed item: ``item_id,class_name,confidence,confirm_count,disconfirm_count`` (required,
`contract.REVIEW_RECORD_REQUIRED`) and optionally ``round,model_version,subject,slice_id``. It is what
`segqa store export` writes and what `segqa analyze` reads.

Outcomes of an item (``confirm_count = c``, ``disconfirm_count = d``):

==============  ============  =====================================================================
status          when          counts as correct
==============  ============  =====================================================================
confirmed       c > 0, d = 0  yes
                or c ≥ d + 2
disconfirmed    d > 0, c = 0  no
                or d ≥ c + 2
split           c > 0, d > 0  split policy ``incorrect`` (default, as in the bulk-QA study): no;
                |c − d| < 2   ``majority``: yes when c > d (a tie is not a majority: no)
unreviewed      c = d = 0     dropped before analysis (counted and reported)
==============  ============  =====================================================================

The rule is `contract.vote_outcome`, the store's and the consolidation's too. A disagreement whose majority leads
by two votes or more is decided, not split: with three reviewers that never happens (2-1 stays split); it is
how an escalated split (two more reviewers, `rounds.escalating`) gets its answer (docs/DECISIONS.md).

The functions that parse bytes are the I/O edge; `item_outcomes` and `detect_confidence_scale` are pure.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from qa_workflow import storage
from qa_workflow.contract import (
    ACCEPT,
    REJECT,
    REVIEW_RECORD_COLUMNS,
    REVIEW_RECORD_OPTIONAL,
    REVIEW_RECORD_REQUIRED,
    SPLIT,
    TISSUE_CLASSES,
    SegqaError,
    vote_outcome,
)

__all__ = [
    "SPLIT_POLICIES", "CONFIDENCE_SCALES", "STATUS_CONFIRMED", "STATUS_DISCONFIRMED", "STATUS_SPLIT",
    "ReviewRecords", "load_review_records", "parse_review_records", "review_records_from_frame",
    "detect_confidence_scale", "ambiguous_confidence_scale", "item_outcomes", "class_order", "scale_top",
]

log = logging.getLogger(__name__)

SPLIT_POLICIES = ("incorrect", "majority")
#: ``unit``: confidence in [0, 1]; ``percent``: confidence in [0, 100].
CONFIDENCE_SCALES = ("unit", "percent")
STATUS_CONFIRMED, STATUS_DISCONFIRMED, STATUS_SPLIT = "confirmed", "disconfirmed", "split"

_COUNT_COLUMNS = ("confirm_count", "disconfirm_count")
_MAX_NAMED_ROWS = 3


@dataclass(frozen=True)
class ReviewRecords:
    """Validated review records of reviewed items (unreviewed rows already dropped).

    ``frame`` columns: ``item_id`` (str), ``class_name`` (str), ``confidence`` (float, input scale),
    ``confidence_unit`` (float in [0, 1]), ``confirm_count``, ``disconfirm_count`` (int64), ``status``
    (confirmed | disconfirmed | split), ``correct`` (bool, by ``split_policy``), ``line`` (int, line in the
    source file, for messages), and whichever optional columns the input had.
    """

    frame: pd.DataFrame
    scale: str  # "unit" | "percent"
    scale_detected: bool  # True when the scale was inferred from the data rather than given
    split_policy: str
    source: str
    n_unreviewed: int = 0  # rows with no votes at all, dropped
    classes: tuple[str, ...] = field(default=())

    @property
    def scale_top(self) -> float:
        return scale_top(self.scale)

    def __len__(self) -> int:
        return len(self.frame)


def scale_top(scale: str) -> float:
    """The top of a confidence scale: 1.0 for ``unit``, 100.0 for ``percent``."""
    return 100.0 if scale == "percent" else 1.0


def ambiguous_confidence_scale(confidence: np.ndarray) -> bool:
    """True when the values fit neither scale cleanly: some are above 1 (not unit) yet most are at most 1 (as
    percentages, mostly under 1 % - what a stray 1.5 in a 0-1 file looks like)."""
    above = int(np.count_nonzero(confidence > 1.0))
    return 0 < above and above * 2 < confidence.size


def detect_confidence_scale(confidence: np.ndarray) -> str:
    """``unit`` when every value is ≤ 1, ``percent`` when some value is in (1, 100].

    confidence: (N,) finite, non-negative. Values above 100 are the caller's error (checked by the loader).
    Percent data whose every value is ≤ 1 % would be read as ``unit``; pass the scale explicitly then.
    """
    if confidence.size == 0 or float(np.max(confidence)) <= 1.0:
        return "unit"
    return "percent"


def item_outcomes(confirm: np.ndarray, disconfirm: np.ndarray, split_policy: str = "incorrect"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Status and correctness of each item from its vote counts.

    confirm, disconfirm: (N,) non-negative integer counts with confirm + disconfirm > 0.
    Returns (status (N,) object array of confirmed|disconfirmed|split, correct (N,) bool).
    """
    if split_policy not in SPLIT_POLICIES:
        raise SegqaError(f"split policy must be one of {', '.join(SPLIT_POLICIES)}, got {split_policy!r}")
    confirm = np.asarray(confirm)
    disconfirm = np.asarray(disconfirm)
    if confirm.shape != disconfirm.shape or np.any(confirm + disconfirm <= 0):
        raise SegqaError("item_outcomes: confirm and disconfirm counts must have one shape and a vote per item")
    names = {ACCEPT: STATUS_CONFIRMED, REJECT: STATUS_DISCONFIRMED, SPLIT: STATUS_SPLIT}
    status = np.array([names[str(vote_outcome(int(c), int(d)))]
                       for c, d in zip(confirm.ravel(), disconfirm.ravel(), strict=True)],
                      dtype=object).reshape(confirm.shape)
    if split_policy == "incorrect":
        correct = status == STATUS_CONFIRMED
    else:
        correct = confirm > disconfirm
    return status, np.asarray(correct, dtype=bool)


def class_order(names: Iterable[str]) -> tuple[str, ...]:
    """Tissue classes in their contract order (csf, gray_matter, white_matter), then other names sorted."""
    rank = {c.name: c.id for c in TISSUE_CLASSES}
    return tuple(sorted(set(names), key=lambda n: (0, rank[n], "") if n in rank else (1, 0, n)))


# --------------------------------------------------------------------------------------------------------
# I/O edge

def load_review_records(uri: str | os.PathLike[str], *, split_policy: str = "incorrect",
                        scale: str = "auto") -> ReviewRecords:
    """Read and validate a review-record CSV from a local path, ``file://`` or ``s3://`` URI.

    Raises SegqaError with one message naming the file, the line and the column of the first problem.
    """
    source = os.fspath(uri)
    return parse_review_records(storage.read_bytes(source), source=source, split_policy=split_policy,
                                scale=scale)


def parse_review_records(data: bytes, *, source: str = "reviews", split_policy: str = "incorrect",
                         scale: str = "auto") -> ReviewRecords:
    """Validate review-record CSV bytes; see `load_review_records`."""
    if not data.strip():
        raise SegqaError(f"{source}: empty file; expected a CSV header with columns "
                         f"{','.join(REVIEW_RECORD_REQUIRED)} and one row per reviewed item")
    try:
        header = pd.read_csv(io.BytesIO(data), nrows=0, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SegqaError(f"{source}: not a readable CSV file ({_first_line(exc)})") from None
    columns = [str(c).strip() for c in header.columns]
    missing = [c for c in REVIEW_RECORD_REQUIRED if c not in columns]
    if missing:
        raise SegqaError(f"{source}: missing column(s) {', '.join(missing)}; the header has "
                         f"{','.join(columns) or '(nothing)'}, expected {','.join(REVIEW_RECORD_REQUIRED)} "
                         f"(optional: {','.join(REVIEW_RECORD_OPTIONAL)})")
    dupes = sorted({c for c in columns if columns.count(c) > 1 and c in REVIEW_RECORD_COLUMNS})
    if dupes:
        raise SegqaError(f"{source}: column(s) {', '.join(dupes)} appear more than once in the header")
    _check_field_counts(data, len(columns), source)
    names = [c if columns.index(c) == i else f"{c}.{i}" for i, c in enumerate(columns)]  # unique, stripped
    try:
        # The required columns and model_version (whose masks were reviewed: thresholds.json names them, and
        # segqa select applies thresholds to that model only); the other optional ones (round, subject, ...)
        # play no part in the analysis, and parsing them would cost a third of the time on a million rows.
        wanted = list(REVIEW_RECORD_REQUIRED) + (["model_version"] if "model_version" in names else [])
        frame = pd.read_csv(
            io.BytesIO(data), encoding="utf-8-sig", skipinitialspace=True, header=0, names=names,
            usecols=wanted, dtype={"item_id": str, "class_name": str, "model_version": str},
            keep_default_na=False, na_values={c: [""] for c in ("confidence",) + _COUNT_COLUMNS},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise SegqaError(f"{source}: not a readable CSV file ({_first_line(exc)})") from None
    return review_records_from_frame(frame, source=source, split_policy=split_policy, scale=scale)


def review_records_from_frame(frame: pd.DataFrame, *, source: str = "reviews", split_policy: str = "incorrect",
                              scale: str = "auto", first_line: int = 2, row_word: str = "line") -> ReviewRecords:
    """Validate a frame with the review-record columns (e.g. a store export already in memory).

    Messages name rows as ``<row_word> <n>``, numbered from ``first_line`` (a CSV file: line 2 is the first row
    after the header; a store export: row 1).
    """
    _raise_rows = functools.partial(_raise_rows_as, row_word)
    if split_policy not in SPLIT_POLICIES:
        raise SegqaError(f"--split-policy must be one of {', '.join(SPLIT_POLICIES)}, got {split_policy!r}")
    if scale not in ("auto",) + CONFIDENCE_SCALES:
        raise SegqaError(f"--confidence-scale must be auto, unit or percent, got {scale!r}")
    missing = [c for c in REVIEW_RECORD_REQUIRED if c not in frame.columns]
    if missing:
        raise SegqaError(f"{source}: missing column(s) {', '.join(missing)}")
    if len(frame) == 0:
        raise SegqaError(f"{source}: no review records (the file has a header but no rows)")
    keep = [c for c in REVIEW_RECORD_COLUMNS if c in frame.columns]
    out = frame[keep].reset_index(drop=True).copy()
    out["line"] = np.arange(first_line, first_line + len(out), dtype=np.int64)

    for col in ("item_id", "class_name"):
        text = _clean_text(out[col], strip=col == "class_name")
        _raise_rows(out, pd.Series(text == ""), source, col, "is empty; every row needs one")
        out[col] = text
    dup = out["item_id"].duplicated(keep=False)
    if dup.any():
        first = out.loc[dup, "item_id"].iloc[0]
        lines = out.loc[out["item_id"] == first, "line"].tolist()
        raise SegqaError(f"{source}, {_lines_text(lines, row_word)}: column item_id: "
                         f"{first!r} appears {len(lines)} times; each reviewed item must appear once "
                         f"({int(dup.sum())} rows are duplicates)")

    conf = _numeric(out, "confidence", source, row_word)
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 100)
    _raise_rows(out, pd.Series(bad), source, "confidence",
                "is out of range; expected a number in [0, 1] or [0, 100]")
    detected = scale == "auto"
    if detected and ambiguous_confidence_scale(conf):
        above = out.loc[conf > 1.0, "line"].tolist()
        raise SegqaError(
            f"{source}, {_lines_text(above, row_word)}: column confidence: the values fit neither scale cleanly: "
            f"{len(above)} of {len(conf)} rows are above 1 (so not unit [0, 1]) while the rest are at most 1 "
            "(implausible as percent [0, 100]); correct those rows or pass --confidence-scale unit|percent")
    scale = detect_confidence_scale(conf) if detected else scale
    if scale == "unit":
        _raise_rows(out, pd.Series(conf > 1.0), source, "confidence",
                    "is above 1 but the confidence scale is unit [0, 1]")
    out["confidence"] = conf
    out["confidence_unit"] = conf / scale_top(scale)

    for col in _COUNT_COLUMNS:
        counts = _numeric(out, col, source, row_word)
        _raise_rows(out, pd.Series(counts != np.round(counts)), source, col, "is not a whole number")
        _raise_rows(out, pd.Series(counts < 0), source, col, "is negative; vote counts are ≥ 0")
        out[col] = counts.astype(np.int64)

    reviewed = (out["confirm_count"] + out["disconfirm_count"]) > 0
    n_unreviewed = int((~reviewed).sum())
    if n_unreviewed:
        empty_classes = sorted(set(out["class_name"]) - set(out.loc[reviewed, "class_name"]))
        if empty_classes:
            name = empty_classes[0]
            rows = out["class_name"] == name
            lines = out.loc[rows, "line"].tolist()
            raise SegqaError(
                f"{source}, {_lines_text(lines, row_word)}: column class_name: class {name!r} has zero reviewed "
                f"items (confirm_count + disconfirm_count = 0 on all {len(lines)} of its rows); review some "
                "of them or remove its rows")
        log.info("%s: %d rows with no votes (unreviewed) dropped", source, n_unreviewed)
        out = out.loc[reviewed].reset_index(drop=True)

    status, correct = item_outcomes(out["confirm_count"].to_numpy(), out["disconfirm_count"].to_numpy(),
                                    split_policy)
    out["status"] = status
    out["correct"] = correct
    return ReviewRecords(out, scale, detected, split_policy, source, n_unreviewed,
                         class_order(out["class_name"].unique()))


def _check_field_counts(data: bytes, n_fields: int, source: str) -> None:
    """Every non-blank line has as many fields as the header (pandas would otherwise drop extra fields
    silently). Vectorised over the bytes; skipped when the file quotes fields (commas may sit inside quotes,
    and pandas's own tokenizer then judges)."""
    if b'"' in data:
        return
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [buf.size]])
    commas = np.flatnonzero(buf == 44)
    per_line = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    length = ends - starts - (buf[np.maximum(ends - 1, 0)] == 13) * (ends > starts)
    bad = np.flatnonzero((length > 0) & (per_line != n_fields - 1))
    if bad.size:
        i = int(bad[0])
        more = f"; {bad.size - 1} more line(s) like it" if bad.size > 1 else ""
        raise SegqaError(f"{source}, line {i + 1}: {per_line[i] + 1} fields, but the header has {n_fields}{more}")


def _clean_text(values: pd.Series, strip: bool) -> np.ndarray:
    """(N,) object array of str; missing values become "". ``strip`` trims each distinct value (cheap for a
    column with few distinct values such as class_name; item ids are used as written, after the CSV reader
    has dropped leading spaces)."""
    if strip:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        table = np.array([str(u).strip() for u in uniques] + [""], dtype=object)
        return table[codes]
    arr = values.to_numpy(dtype=object)
    missing = pd.isna(arr)
    if missing.any():
        arr = arr.copy()
        arr[missing] = ""
    if values.dtype != object:  # e.g. integer ids from a frame built in memory
        arr = np.array([str(v) for v in arr], dtype=object)
    return arr


def _numeric(frame: pd.DataFrame, col: str, source: str, row_word: str) -> np.ndarray:
    _raise_rows = functools.partial(_raise_rows_as, row_word)
    raw = frame[col]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        _raise_rows(frame, pd.Series(np.isnan(values)), source, col, "is empty; expected a number")
        return values
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    empty = raw.isna() | (raw.astype("string").str.strip() == "")
    _raise_rows(frame, empty, source, col, "is empty; expected a number")
    _raise_rows(frame, pd.Series(np.isnan(values)), source, col, "is not a number")
    return values


def _raise_rows_as(row_word: str, frame: pd.DataFrame, bad: pd.Series, source: str, col: str, problem: str) -> None:
    """Raise one SegqaError naming the first offending line (and how many more), if any row is bad."""
    bad_idx = np.flatnonzero(np.asarray(bad, dtype=bool))
    if bad_idx.size == 0:
        return
    i = int(bad_idx[0])
    row = frame.iloc[i]
    value = row[col]
    empty = value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""
    shown = "(empty)" if empty else repr(value.item() if hasattr(value, "item") else value)
    item = row.get("item_id")
    where = f" (item {item})" if isinstance(item, str) and item.strip() and col != "item_id" else ""
    more = f"; {bad_idx.size - 1} more row(s) like it" if bad_idx.size > 1 else ""
    raise SegqaError(f"{source}, {row_word} {int(row['line'])}{where}: column {col}: {shown} {problem}{more}")


def _lines_text(lines: list[int], row_word: str = "line") -> str:
    head = ", ".join(map(str, lines[:_MAX_NAMED_ROWS]))
    return (row_word + (" " if len(lines) == 1 else "s ")) + head + (", ..." if len(lines) > _MAX_NAMED_ROWS else "")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
