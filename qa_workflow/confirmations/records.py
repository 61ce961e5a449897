"""The confirmation store's records and interface (ARCHITECTURE §8): what one reviewed mask is, what one vote is,
what one correction of a slice is, and the `Store` protocol both engines implement. Standard library only.

The engines (`sqlite`, `dynamodb`) import these; `store.open_store` picks an engine by URI. Keeping the records
apart from `open_store` means no module of the package imports another in a circle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qa_workflow.contract import DECISIONS, SegqaError, parse_item_id, vote_outcome

__all__ = ["ItemRecord", "Vote", "ItemState", "VoteResult", "Correction", "CorrectionResult", "ConsolidatedMask",
           "Store", "check_vote_pairs", "check_seconds"]


def check_seconds(seconds: float | None, where: str) -> None:
    """Seconds on task are unknown (None) or a finite number >= 0."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise SegqaError(f"{where}: seconds on task must be a number >= 0, got {seconds!r}")


@dataclass(frozen=True)
class ItemRecord:
    """What the store knows of one reviewed mask before any vote (taken from the batch JSON)."""

    item_id: str
    class_name: str
    confidence: float
    round: str
    model_version: str = ""
    subject: str = ""
    slice_id: str = ""
    batch_id: str = ""
    mask_uri: str = ""

    @classmethod
    def from_batch_item(cls, batch: dict[str, Any], item: dict[str, Any]) -> ItemRecord:
        """Build from a validated batch and one of its items (contract.validate_batch shapes)."""
        iid = parse_item_id(item["item_id"])
        return cls(item_id=item["item_id"], class_name=item["class_name"], confidence=float(item["confidence"]),
                   round=str(batch["round"]), model_version=str(batch.get("model_version") or ""),
                   subject=iid.subject, slice_id=str(item.get("slice_id") or iid.slice_id),
                   batch_id=str(batch.get("batch_id") or ""), mask_uri=str(item.get("mask_uri") or ""))


@dataclass(frozen=True)
class Vote:
    """One reviewer's decision on one item in one labeling job."""

    job: str
    item_id: str
    worker_id: str
    decision: str  # accept | reject
    reason: str | None = None
    comment: str | None = None
    submitted_at: str = ""  # when the reviewer submitted (ISO 8601), as reported by the task
    recorded_at: str = ""  # when the store wrote it
    seconds: float | None = None  # the reviewer's seconds on this vote (a screen's time shared by its items)

    def __post_init__(self) -> None:
        check_seconds(self.seconds, f"vote on {self.item_id}")
        if self.decision not in DECISIONS:
            raise SegqaError(f"vote on {self.item_id}: decision must be one of {', '.join(DECISIONS)}, "
                             f"got {self.decision!r}")
        for name in ("job", "item_id", "worker_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SegqaError(f"vote: {name} must be a non-empty string")


@dataclass(frozen=True)
class ItemState:
    """An item with its counts, as the store holds it."""

    item: ItemRecord
    confirm_count: int = 0
    disconfirm_count: int = 0
    reviewers: tuple[str, ...] = ()  # distinct worker ids, sorted
    created_at: str = ""
    updated_at: str = ""

    @property
    def outcome(self) -> str | None:
        """accept | reject | split (reviewers disagree, no majority of two votes or more) | None (no votes);
        `contract.vote_outcome` over the votes of every job of the item's round."""
        return vote_outcome(self.confirm_count, self.disconfirm_count)


@dataclass(frozen=True)
class VoteResult:
    """Outcome of `Store.record_votes`: how many votes were new, how many were already there."""

    written: int = 0
    duplicates: int = 0
    written_keys: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)  # (job, item_id, worker)



@dataclass(frozen=True)
class Correction:
    """One worker's corrected label map of one slice in one adjust job; keyed by (job, slice_id, worker_id)."""

    job: str
    slice_id: str
    worker_id: str
    round: str
    mask_uri: str  # the worker's label map (PNG, values 0..3)
    modified: bool  # initialValueModified as the editor reported it
    seconds: float | None = None  # seconds on task, when known
    task_id: str = ""
    model_version: str = ""
    submitted_at: str = ""
    recorded_at: str = ""  # when the store wrote it

    def __post_init__(self) -> None:
        for name in ("job", "slice_id", "worker_id", "mask_uri"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SegqaError(f"correction: {name} must be a non-empty string")
        check_seconds(self.seconds, f"correction of {self.slice_id}")


@dataclass(frozen=True)
class ConsolidatedMask:
    """The consolidated label map of one slice in one adjust job (per-pixel majority of its workers)."""

    job: str
    slice_id: str
    round: str
    mask_uri: str
    updated_at: str = ""


@dataclass(frozen=True)
class CorrectionResult:
    """Outcome of `Store.record_corrections`: how many corrections were new, how many were already there."""

    written: int = 0
    duplicates: int = 0


class Store(Protocol):
    """The one interface both engines implement."""

    uri: str

    def init(self) -> None:
        """Create tables / schema if missing (idempotent)."""

    def record_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> VoteResult:
        """Write each vote at most once and bump its item's counts in the same transaction."""

    def get_item(self, item_id: str, round: str | int | None = None) -> ItemState | None:
        """The item (latest round when ``round`` is None), or None."""

    def iter_items(self, class_name: str | None = None, round: str | int | None = None, *,
                   updated_since: str | None = None) -> Iterator[ItemState]:
        """Items, optionally of one class and/or round, ordered by (round, item_id). ``updated_since`` (an ISO 8601
        UTC time as the store writes ``updated_at``) keeps the items whose counts changed at or after it."""

    def iter_votes(self, item_id: str | None = None, round: str | int | None = None,
                   job: str | None = None) -> Iterator[Vote]:
        """Votes, optionally filtered, ordered by (item_id, job, worker_id)."""

    def record_corrections(self, corrections: Sequence[Correction]) -> CorrectionResult:
        """Write each correction at most once (key: job, slice_id, worker_id)."""

    def put_consolidated_mask(self, mask: ConsolidatedMask) -> None:
        """Store the consolidated mask of (job, slice_id); the same inputs give the same record (replays)."""

    def iter_corrections(self, job: str | None = None, round: str | int | None = None) -> Iterator[Correction]:
        """Corrections, optionally of one job and/or round, ordered by (slice_id, job, worker_id)."""

    def iter_consolidated_masks(self, job: str | None = None, round: str | int | None = None
                                ) -> Iterator[ConsolidatedMask]:
        """Consolidated masks, optionally filtered, ordered by (round, slice_id, job)."""

    def close(self) -> None: ...


def check_vote_pairs(votes: Sequence[tuple[ItemRecord, Vote]]) -> None:
    for item, vote in votes:
        if item.item_id != vote.item_id:
            raise SegqaError(f"vote for {vote.item_id} paired with item {item.item_id}")


# --------------------------------------------------------------------------------------------------------
# Opening a store by URI
