"""The confirmation store's interface: one vote per (labeling job, item, reviewer), exact per-item counts
(ARCHITECTURE §8).

Standard library only here; `make lambdas` copies the whole ``confirmations`` package into the Lambda zips.
One interface (`Store`), two engines with the same semantics, chosen by URI (`open_store`):

- ``sqlite:///<path>`` — `qa_workflow.confirmations.sqlite.SqliteStore`, the embedded default. As in
  SQLAlchemy, ``sqlite:///store.db`` is relative to the working folder and ``sqlite:////abs/path/store.db`` is
  absolute.
- ``dynamodb://<table>`` — `qa_workflow.confirmations.dynamodb.DynamoStore` (boto3, imported lazily); optional
  query ``?region=eu-west-1&endpoint_url=...``.

The Lambdas read the URI from ``SEGQA_STORE``; the CLI from ``--store``. What is read out of a store (the
review-record CSV, the per-class summary) lives in `qa_workflow.confirmations.export`.

Semantics (both engines)
------------------------
A *review item* is one mask: ``(round, item_id)``; the same slice and class predicted again in a later round
is a different mask and a different item. A *vote* is keyed by ``(job, item_id, worker_id)`` and written at
most once. Writing a vote and bumping the item's ``confirm_count`` / ``disconfirm_count`` / reviewers happen in
the same transaction, so replaying an invocation, or running many at once over the same objects, leaves
exactly the counts one clean run would. An item's metadata (class, confidence, model version, ...) is taken
from the first vote that creates it and never overwritten.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence
from urllib.parse import parse_qs, unquote, urlparse

from qa_workflow.contract import ACCEPT, DECISIONS, REJECT, SPLIT, SegqaError, parse_item_id

__all__ = [
    "ItemRecord", "Vote", "ItemState", "VoteResult", "Store", "open_store", "store_uri_from_env",
    "clear_store_cache", "check_vote_pairs", "ENV_VAR",
]

ENV_VAR = "SEGQA_STORE"


# --------------------------------------------------------------------------------------------------------
# Records


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
    def from_batch_item(cls, batch: dict[str, Any], item: dict[str, Any]) -> "ItemRecord":
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

    def __post_init__(self) -> None:
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
        """accept | reject | split (reviewers disagree) | None (no votes)."""
        if self.confirm_count and self.disconfirm_count:
            return SPLIT
        if self.confirm_count:
            return ACCEPT
        if self.disconfirm_count:
            return REJECT
        return None


@dataclass(frozen=True)
class VoteResult:
    """Outcome of `Store.record_votes`: how many votes were new, how many were already there."""

    written: int = 0
    duplicates: int = 0
    written_keys: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)  # (job, item_id, worker)



class Store(Protocol):
    """The one interface both engines implement."""

    uri: str

    def init(self) -> None:
        """Create tables / schema if missing (idempotent)."""

    def record_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> VoteResult:
        """Write each vote at most once and bump its item's counts in the same transaction."""

    def get_item(self, item_id: str, round: str | int | None = None) -> ItemState | None:
        """The item (latest round when ``round`` is None), or None."""

    def iter_items(self, class_name: str | None = None, round: str | int | None = None) -> Iterator[ItemState]:
        """Items, optionally of one class and/or round, ordered by (round, item_id)."""

    def iter_votes(self, item_id: str | None = None, round: str | int | None = None,
                   job: str | None = None) -> Iterator[Vote]:
        """Votes, optionally filtered, ordered by (item_id, job, worker_id)."""

    def close(self) -> None: ...


def check_vote_pairs(votes: Sequence[tuple[ItemRecord, Vote]]) -> None:
    for item, vote in votes:
        if item.item_id != vote.item_id:
            raise SegqaError(f"vote for {vote.item_id} paired with item {item.item_id}")


# --------------------------------------------------------------------------------------------------------
# Opening a store by URI

_cache: dict[str, Store] = {}
_cache_lock = threading.Lock()


def open_store(uri: str, *, client: Any = None, cached: bool = False, create: bool = True) -> Store:
    """Open the store named by ``uri`` (``sqlite:///<path>`` or ``dynamodb://<table>``).

    ``client`` injects a boto3 DynamoDB client (tests, custom endpoints). ``cached=True`` returns the same
    object for the same URI within this process (the Lambdas use it across warm invocations).
    ``create=False`` refuses to create a new SQLite file (read-only commands on a mistyped path).
    """
    if cached:
        with _cache_lock:
            if uri not in _cache:
                _cache[uri] = open_store(uri, client=client)
            return _cache[uri]
    if not isinstance(uri, str) or "://" not in uri:
        raise SegqaError(f"invalid store URI {uri!r}: expected sqlite:///<path> or dynamodb://<table>")
    if uri.startswith("sqlite://"):
        rest = uri[len("sqlite://"):]
        if not rest.startswith("/") or len(rest) < 2:
            raise SegqaError(f"invalid store URI {uri!r}: expected sqlite:///<path> (sqlite:////abs/path.db for "
                             "an absolute path)")
        path = unquote(rest[1:].split("?", 1)[0])
        from qa_workflow.confirmations.sqlite import SqliteStore

        return SqliteStore(path, uri=uri, create=create)
    if uri.startswith("dynamodb://"):
        parsed = urlparse(uri)
        table = parsed.netloc
        if not table or parsed.path not in ("", "/"):
            raise SegqaError(f"invalid store URI {uri!r}: expected dynamodb://<table>[?region=...&endpoint_url=...]")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(query) - {"region", "endpoint_url"}
        if unknown:
            raise SegqaError(f"invalid store URI {uri!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                             "expected region, endpoint_url")
        from qa_workflow.confirmations.dynamodb import DynamoStore

        return DynamoStore(table, client=client, uri=uri, region=query.get("region"),
                           endpoint_url=query.get("endpoint_url"))
    raise SegqaError(f"unsupported store URI {uri!r}: expected sqlite:///<path> or dynamodb://<table>")


def clear_store_cache() -> None:
    """Forget the stores `open_store(..., cached=True)` handed out (tests switch stores between cases)."""
    with _cache_lock:
        for st in _cache.values():
            st.close()
        _cache.clear()


def store_uri_from_env(environ: dict[str, str] | None = None) -> str:
    """The store URI in ``SEGQA_STORE``; raises SegqaError when it is missing."""
    env = os.environ if environ is None else environ
    uri = env.get(ENV_VAR, "").strip()
    if not uri:
        raise SegqaError(f"{ENV_VAR} is not set: expected sqlite:///<path> or dynamodb://<table>")
    return uri

