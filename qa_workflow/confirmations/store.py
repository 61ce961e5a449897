"""The confirmation store: one vote per (labeling job, item, reviewer), exact per-item counts (ARCHITECTURE §8).

Standard library + boto3 only (boto3 imported only for DynamoDB); `make lambdas` copies this module into the
Lambda zips. One interface, two engines with the same semantics, chosen by URI:

- ``sqlite:///<path>`` — embedded default (WAL journal, one transaction per write batch). As in SQLAlchemy,
  ``sqlite:///store.db`` is relative to the working folder and ``sqlite:////abs/path/store.db`` is absolute.
- ``dynamodb://<table>`` — boto3 ``TransactWriteItems``; optional query ``?region=eu-west-1&endpoint_url=...``.

The Lambdas read the URI from ``SEGQA_STORE``; the CLI from ``--store``.

Semantics (both engines)
------------------------
A *review item* is one mask: ``(round, item_id)``; the same slice and class predicted again in a later round
is a different mask and a different item. A *vote* is keyed by ``(job, item_id, worker_id)`` and written at
most once. Writing a vote and bumping the item's ``confirm_count`` / ``disconfirm_count`` / reviewers happen in
the same transaction, so replaying an invocation, or running many at once over the same objects, leaves
exactly the counts one clean run would. An item's metadata (class, confidence, model version, ...) is taken
from the first vote that creates it and never overwritten.

DynamoDB key schema (single table, on-demand)
---------------------------------------------
======================  =====================================  ==================================
record                  ``pk`` (HASH, S)                       ``sk`` (RANGE, S)
======================  =====================================  ==================================
item                    ``ITEM#<round>#<item_id>``              ``ITEM``
vote                    ``ITEM#<round>#<item_id>``              ``VOTE#<job>#<worker_id>``
======================  =====================================  ==================================

Votes live in their item's partition, so one Query returns an item with its votes. Two sparse global
secondary indexes, projected ALL and written only on item records, serve the per-class and per-round views:

- ``by_class``: ``gsi1pk = CLASS#<class_name>``, ``gsi1sk = ROUND#<round>#<item_id>``
  (all items of a class; ``begins_with(gsi1sk, "ROUND#3#")`` narrows to one round);
- ``by_round``: ``gsi2pk = ROUND#<round>``, ``gsi2sk = CLASS#<class_name>#<item_id>``.

Item records hold ``meta`` (a map: item_id, class_name, confidence, round, model_version, subject, slice_id,
batch_id, mask_uri, created_at; written once), ``confirm_count`` and ``disconfirm_count`` (numbers, absent = 0),
``reviewers`` (a string set of worker ids), ``updated_at`` and the index keys; vote records hold job, item_id,
worker_id, round, decision, reason, comment, submitted_at, recorded_at.

A vote is a ``Put`` with ``attribute_not_exists(pk)`` plus an ``Update`` of its item (``ADD confirm_count :1``,
``ADD reviewers :{worker}``, ``meta`` via ``if_not_exists``) in one ``TransactWriteItems``. Up to
`DYNAMO_VOTES_PER_TRANSACTION` votes on distinct items share one transaction. Votes already stored are skipped
after one consistent ``BatchGetItem`` (so a replay costs reads, not failed transactions); when a transaction is
still cancelled because a concurrent writer got there first, those votes are settled and the rest retried;
conflicts with concurrent transactions (``TransactionConflict``) and throttling are retried with jittered backoff.

SQLite schema
-------------
``items(round, item_id, class_name, confidence, model_version, subject, slice_id, batch_id, mask_uri,
confirm_count, disconfirm_count, reviewer_count, created_at, updated_at, PRIMARY KEY(round, item_id))``,
index ``(class_name, round)``; ``votes(job, item_id, worker_id, round, decision, reason, comment, submitted_at,
recorded_at, PRIMARY KEY(job, item_id, worker_id))``. Writes run in ``BEGIN IMMEDIATE`` transactions; a vote
bumps the counts only when its ``INSERT OR IGNORE`` inserted a row.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator, Protocol, Sequence
from urllib.parse import parse_qs, unquote, urlparse

from qa_workflow.contract import ACCEPT, DECISIONS, REJECT, REVIEW_RECORD_COLUMNS, SPLIT, SegqaError, parse_item_id

__all__ = [
    "ItemRecord", "Vote", "ItemState", "VoteResult", "Store", "SqliteStore", "DynamoStore", "open_store",
    "store_uri_from_env", "clear_store_cache", "export_review_records", "review_records_csv",
    "summarize", "create_table", "review_record", "ENV_VAR", "DYNAMO_VOTES_PER_TRANSACTION",
    "utc_now",
]

ENV_VAR = "SEGQA_STORE"
#: Votes (each a Put + an Update) per TransactWriteItems call; DynamoDB allows 100 actions.
DYNAMO_VOTES_PER_TRANSACTION = 50


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds and a Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def review_record(state: ItemState) -> dict[str, Any]:
    """One row of the review-record CSV (ARCHITECTURE §9), keys = contract.REVIEW_RECORD_COLUMNS."""
    it = state.item
    row = {"item_id": it.item_id, "class_name": it.class_name, "confidence": it.confidence,
           "confirm_count": state.confirm_count, "disconfirm_count": state.disconfirm_count,
           "round": it.round, "model_version": it.model_version, "subject": it.subject, "slice_id": it.slice_id}
    return {k: row[k] for k in REVIEW_RECORD_COLUMNS}


def export_review_records(store: "Store", *, round: str | int | None = None, class_name: str | None = None
                          ) -> tuple[list[dict[str, Any]], int]:
    """Review-record rows (ARCHITECTURE §9), one per ``item_id``, sorted by (round, item_id).

    The analysis needs each item id once; when an item was reviewed in several rounds (a new mask each time)
    the latest round's row is kept. Returns ``(rows, superseded)`` where ``superseded`` counts the older-round
    rows left out. ``round`` / ``class_name`` restrict the export.
    """
    latest: dict[str, ItemState] = {}
    superseded = 0
    for state in store.iter_items(class_name=class_name, round=round):
        if state.confirm_count + state.disconfirm_count == 0:
            continue
        prev = latest.get(state.item.item_id)
        if prev is not None:
            superseded += 1
            if _sort_key_round(prev.item.round) > _sort_key_round(state.item.round):
                continue
        latest[state.item.item_id] = state
    ordered = sorted(latest.values(), key=lambda s: (_sort_key_round(s.item.round), s.item.item_id))
    return [review_record(s) for s in ordered], superseded


def review_records_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The CSV text (header `contract.REVIEW_RECORD_COLUMNS`, ``\n`` line ends) of review-record rows."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(REVIEW_RECORD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if k == "confidence" else v for k, v in row.items()})
    return buf.getvalue()


def summarize(store: "Store") -> list[dict[str, Any]]:
    """Counts per (class_name, round): items, votes, confirmations, rejections, and accept/reject/split items."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for state in store.iter_items():
        key = (state.item.class_name, state.item.round)
        g = groups.setdefault(key, {"class_name": key[0], "round": key[1], "items": 0, "votes": 0,
                                    "confirm_votes": 0, "disconfirm_votes": 0, "reviewers": set(),
                                    ACCEPT: 0, REJECT: 0, SPLIT: 0})
        g["items"] += 1
        g["confirm_votes"] += state.confirm_count
        g["disconfirm_votes"] += state.disconfirm_count
        g["votes"] += state.confirm_count + state.disconfirm_count
        g["reviewers"].update(state.reviewers)
        if state.outcome:
            g[state.outcome] += 1
    out = []
    for key in sorted(groups, key=lambda k: (k[0], _sort_key_round(k[1]))):
        g = groups[key]
        g["reviewers"] = len(g["reviewers"])
        out.append(g)
    return out


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


def _check_pairs(votes: Sequence[tuple[ItemRecord, Vote]]) -> None:
    for item, vote in votes:
        if item.item_id != vote.item_id:
            raise SegqaError(f"vote for {vote.item_id} paired with item {item.item_id}")


def _sort_key_round(r: str) -> tuple[int, Any]:
    return (0, int(r)) if r.lstrip("-").isdigit() else (1, r)


# --------------------------------------------------------------------------------------------------------
# SQLite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    round TEXT NOT NULL,
    item_id TEXT NOT NULL,
    class_name TEXT NOT NULL,
    confidence REAL NOT NULL,
    model_version TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    slice_id TEXT NOT NULL DEFAULT '',
    batch_id TEXT NOT NULL DEFAULT '',
    mask_uri TEXT NOT NULL DEFAULT '',
    confirm_count INTEGER NOT NULL DEFAULT 0,
    disconfirm_count INTEGER NOT NULL DEFAULT 0,
    reviewer_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (round, item_id)
);
CREATE INDEX IF NOT EXISTS items_by_class_round ON items (class_name, round);
CREATE TABLE IF NOT EXISTS votes (
    job TEXT NOT NULL,
    item_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    round TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject')),
    reason TEXT,
    comment TEXT,
    submitted_at TEXT NOT NULL DEFAULT '',
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (job, item_id, worker_id)
);
CREATE INDEX IF NOT EXISTS votes_by_item ON votes (round, item_id);
"""

_ITEM_COLS = ("round", "item_id", "class_name", "confidence", "model_version", "subject", "slice_id", "batch_id",
              "mask_uri")


class SqliteStore:
    """`Store` on an SQLite file (WAL). Safe for many threads (one connection each) and processes."""

    def __init__(self, path: str, uri: str | None = None, timeout_s: float = 60.0, create: bool = True) -> None:
        self.path = path
        self.create = create
        self.uri = uri or f"sqlite:///{path}"
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._initialised = False

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise SegqaError(f"{self.uri}: folder {parent} does not exist")
            if not self.create and not os.path.isfile(self.path):
                raise SegqaError(f"{self.uri}: no such store ({self.path} does not exist)")
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None,
                                       check_same_thread=False)
                self._while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            except sqlite3.DatabaseError as exc:
                raise SegqaError(f"{self.uri}: cannot open SQLite store ({exc})") from None
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        if not self._initialised:
            self._init(conn)
        return conn

    def _while_locked(self, step: Callable[[], Any]) -> Any:
        """Run ``step``, retrying while SQLite answers "database is locked" (up to ``timeout_s``).

        Switching a new file to WAL and creating the schema need an exclusive lock, and SQLite does not wait
        in its busy handler for every such case: many processes opening a new store at once would otherwise
        fail at random.
        """
        deadline = time.monotonic() + self.timeout_s
        delay = 0.005
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _init(self, conn: sqlite3.Connection) -> None:
        try:
            self._while_locked(lambda: conn.executescript(_SQLITE_SCHEMA))
        except sqlite3.DatabaseError as exc:
            raise SegqaError(f"{self.uri}: not a segqa SQLite store ({exc})") from None
        self._initialised = True

    def init(self) -> None:
        self._conn()

    def record_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> VoteResult:
        _check_pairs(votes)
        if not votes:
            return VoteResult()
        conn = self._conn()
        now = utc_now()
        written: list[tuple[str, str, str]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item, vote in votes:
                conn.execute(
                    "INSERT OR IGNORE INTO items (round, item_id, class_name, confidence, model_version, subject, "
                    "slice_id, batch_id, mask_uri, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (item.round, item.item_id, item.class_name, float(item.confidence), item.model_version,
                     item.subject, item.slice_id, item.batch_id, item.mask_uri, now, now))
                cur = conn.execute(
                    "INSERT OR IGNORE INTO votes (job, item_id, worker_id, round, decision, reason, comment, "
                    "submitted_at, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (vote.job, vote.item_id, vote.worker_id, item.round, vote.decision, vote.reason, vote.comment,
                     vote.submitted_at or now, now))
                if cur.rowcount != 1:
                    continue  # this (job, item, worker) already voted: nothing changes
                written.append((vote.job, vote.item_id, vote.worker_id))
                conn.execute(
                    "UPDATE items SET confirm_count = confirm_count + ?, disconfirm_count = disconfirm_count + ?, "
                    "reviewer_count = (SELECT COUNT(DISTINCT worker_id) FROM votes WHERE round = ? AND item_id = ?), "
                    "updated_at = ? WHERE round = ? AND item_id = ?",
                    (int(vote.decision == ACCEPT), int(vote.decision == REJECT), item.round, item.item_id, now,
                     item.round, item.item_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return VoteResult(written=len(written), duplicates=len(votes) - len(written), written_keys=tuple(written))

    def _state(self, row: sqlite3.Row, reviewers: tuple[str, ...]) -> ItemState:
        item = ItemRecord(**{k: row[k] for k in _ITEM_COLS})
        return ItemState(item=item, confirm_count=row["confirm_count"], disconfirm_count=row["disconfirm_count"],
                         reviewers=reviewers, created_at=row["created_at"], updated_at=row["updated_at"])

    def _reviewers(self, rnd: str, item_id: str) -> tuple[str, ...]:
        rows = self._conn().execute("SELECT DISTINCT worker_id FROM votes WHERE round = ? AND item_id = ? "
                                    "ORDER BY worker_id", (rnd, item_id)).fetchall()
        return tuple(r[0] for r in rows)

    def get_item(self, item_id: str, round: str | int | None = None) -> ItemState | None:
        conn = self._conn()
        if round is None:
            rows = conn.execute("SELECT * FROM items WHERE item_id = ?", (item_id,)).fetchall()
            if not rows:
                return None
            row = max(rows, key=lambda r: _sort_key_round(r["round"]))
        else:
            row = conn.execute("SELECT * FROM items WHERE round = ? AND item_id = ?", (str(round), item_id)).fetchone()
            if row is None:
                return None
        return self._state(row, self._reviewers(row["round"], row["item_id"]))

    def iter_items(self, class_name: str | None = None, round: str | int | None = None) -> Iterator[ItemState]:
        where, args = [], []
        if class_name is not None:
            where.append("class_name = ?")
            args.append(class_name)
        if round is not None:
            where.append("round = ?")
            args.append(str(round))
        sql = "SELECT * FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        conn = self._conn()
        rows = conn.execute(sql, args).fetchall()
        reviewers: dict[tuple[str, str], list[str]] = {}
        vsql = "SELECT DISTINCT round, item_id, worker_id FROM votes" + (" WHERE round = ?" if round is not None else "")
        for r in conn.execute(vsql, [str(round)] if round is not None else []):
            reviewers.setdefault((r[0], r[1]), []).append(r[2])
        rows.sort(key=lambda r: (_sort_key_round(r["round"]), r["item_id"]))
        for row in rows:
            yield self._state(row, tuple(sorted(reviewers.get((row["round"], row["item_id"]), ()))))

    def iter_votes(self, item_id: str | None = None, round: str | int | None = None,
                   job: str | None = None) -> Iterator[Vote]:
        where, args = [], []
        for col, val in (("item_id", item_id), ("round", None if round is None else str(round)), ("job", job)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = ("SELECT * FROM votes" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY item_id, job, worker_id")
        for r in self._conn().execute(sql, args).fetchall():
            yield Vote(job=r["job"], item_id=r["item_id"], worker_id=r["worker_id"], decision=r["decision"],
                       reason=r["reason"], comment=r["comment"], submitted_at=r["submitted_at"],
                       recorded_at=r["recorded_at"])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# --------------------------------------------------------------------------------------------------------
# DynamoDB

GSI_BY_CLASS = "by_class"
GSI_BY_ROUND = "by_round"


def _item_pk(rnd: str, item_id: str) -> str:
    return f"ITEM#{rnd}#{item_id}"


def _num(x: float | int) -> dict[str, str]:
    return {"N": str(Decimal(str(x)))}


def create_table(table: str, client: Any = None, wait: bool = True) -> None:
    """Create the store's DynamoDB table (on-demand, key schema and GSIs as documented above); idempotent."""
    import boto3

    client = client or boto3.client("dynamodb")
    strings = ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")
    try:
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in strings],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {"IndexName": GSI_BY_CLASS, "Projection": {"ProjectionType": "ALL"},
                 "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                               {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]},
                {"IndexName": GSI_BY_ROUND, "Projection": {"ProjectionType": "ALL"},
                 "KeySchema": [{"AttributeName": "gsi2pk", "KeyType": "HASH"},
                               {"AttributeName": "gsi2sk", "KeyType": "RANGE"}]},
            ],
        )
    except client.exceptions.ResourceInUseException:
        return
    if wait:
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


class DynamoStore:
    """`Store` on one DynamoDB table (see the module docstring for the key schema)."""

    def __init__(self, table: str, client: Any = None, uri: str | None = None, max_attempts: int = 12,
                 region: str | None = None, endpoint_url: str | None = None) -> None:
        self.table = table
        self.uri = uri or f"dynamodb://{table}"
        self._client = client
        self._client_kwargs = {k: v for k, v in (("region_name", region), ("endpoint_url", endpoint_url)) if v}
        self.max_attempts = max_attempts

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("dynamodb", **self._client_kwargs)
        return self._client

    def init(self) -> None:
        create_table(self.table, self.client)

    # -- writes ------------------------------------------------------------------------------------------

    def _actions(self, item: ItemRecord, vote: Vote, now: str) -> list[dict[str, Any]]:
        pk = _item_pk(item.round, item.item_id)
        vote_attrs: dict[str, Any] = {
            "pk": {"S": pk}, "sk": {"S": f"VOTE#{vote.job}#{vote.worker_id}"}, "record": {"S": "vote"},
            "job": {"S": vote.job}, "item_id": {"S": vote.item_id}, "worker_id": {"S": vote.worker_id},
            "round": {"S": item.round}, "decision": {"S": vote.decision},
            "submitted_at": {"S": vote.submitted_at or now}, "recorded_at": {"S": now}}
        if vote.reason:
            vote_attrs["reason"] = {"S": vote.reason}
        if vote.comment:
            vote_attrs["comment"] = {"S": vote.comment}
        counter = "confirm_count" if vote.decision == ACCEPT else "disconfirm_count"
        # The item's metadata is one map written once (if_not_exists): the first vote creates it and later
        # ones never overwrite it. The index keys derive from the primary key, so setting them again is a no-op.
        meta = {"item_id": {"S": item.item_id}, "class_name": {"S": item.class_name},
                "confidence": _num(item.confidence), "round": {"S": item.round},
                "model_version": {"S": item.model_version}, "subject": {"S": item.subject},
                "slice_id": {"S": item.slice_id}, "batch_id": {"S": item.batch_id},
                "mask_uri": {"S": item.mask_uri}, "created_at": {"S": now}}
        update = ("SET #meta = if_not_exists(#meta, :meta), gsi1pk = :g1p, gsi1sk = :g1s, gsi2pk = :g2p, "
                  "gsi2sk = :g2s, #rec = :rec, updated_at = :now ADD #c :one, reviewers :w")
        values = {":meta": {"M": meta}, ":g1p": {"S": f"CLASS#{item.class_name}"},
                  ":g1s": {"S": f"ROUND#{item.round}#{item.item_id}"}, ":g2p": {"S": f"ROUND#{item.round}"},
                  ":g2s": {"S": f"CLASS#{item.class_name}#{item.item_id}"}, ":rec": {"S": "item"},
                  ":now": {"S": now}, ":one": {"N": "1"}, ":w": {"SS": [vote.worker_id]}}
        return [
            {"Put": {"TableName": self.table, "Item": vote_attrs, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": self.table, "Key": {"pk": {"S": pk}, "sk": {"S": "ITEM"}},
                        "UpdateExpression": update, "ExpressionAttributeValues": values,
                        "ExpressionAttributeNames": {"#meta": "meta", "#rec": "record", "#c": counter}}},
        ]

    @staticmethod
    def _vote_key(item: ItemRecord, vote: Vote) -> tuple[str, str]:
        return _item_pk(item.round, item.item_id), f"VOTE#{vote.job}#{vote.worker_id}"

    def _existing_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> set[tuple[str, str]]:
        """Keys of the votes already stored (consistent BatchGetItem). Only an optimisation for replays: a failed
        transaction costs write capacity (and time); the condition on each Put stays the guarantee."""
        keys = sorted({self._vote_key(i, v) for i, v in votes})
        found: set[tuple[str, str]] = set()
        client = self.client
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self.table: {
                "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys[start:start + 100]],
                "ProjectionExpression": "pk, sk", "ConsistentRead": True}}
            attempt = 0
            while request:
                resp = client.batch_get_item(RequestItems=request)
                for a in resp.get("Responses", {}).get(self.table, []):
                    found.add((a["pk"]["S"], a["sk"]["S"]))
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    attempt += 1
                    time.sleep(min(1.0, 0.02 * 2 ** attempt) * random.random())
        return found

    def record_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> VoteResult:
        _check_pairs(votes)
        if not votes:
            return VoteResult()
        existing = self._existing_votes(votes)
        fresh = [p for p in votes if self._vote_key(*p) not in existing]
        # One transaction may touch each item once: group votes into chunks of distinct items.
        chunks: list[list[tuple[ItemRecord, Vote]]] = []
        seen_in: list[set[tuple[str, str]]] = []
        for pair in fresh:
            key = (pair[0].round, pair[0].item_id)
            for chunk, seen in zip(chunks, seen_in):
                if key not in seen and len(chunk) < DYNAMO_VOTES_PER_TRANSACTION:
                    chunk.append(pair)
                    seen.add(key)
                    break
            else:
                chunks.append([pair])
                seen_in.append({key})
        written: list[tuple[str, str, str]] = []
        for chunk in chunks:
            written.extend(self._write_chunk(chunk))
        return VoteResult(written=len(written), duplicates=len(votes) - len(written), written_keys=tuple(written))

    def _write_chunk(self, chunk: list[tuple[ItemRecord, Vote]]) -> list[tuple[str, str, str]]:
        client = self.client
        pending = list(chunk)
        attempt = 0
        while pending:
            now = utc_now()
            actions = [a for item, vote in pending for a in self._actions(item, vote, now)]
            try:
                client.transact_write_items(TransactItems=actions)
                return [(v.job, v.item_id, v.worker_id) for _, v in pending]
            except client.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code", "None") for r in reasons]
                # Put of vote i is action 2*i: ConditionalCheckFailed there means "already voted".
                dup = {i for i in range(len(pending)) if 2 * i < len(codes) and codes[2 * i] == "ConditionalCheckFailed"}
                if dup:
                    pending = [p for i, p in enumerate(pending) if i not in dup]
                    continue  # retry the rest at once; the duplicates are settled
                if not any(c in ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded")
                           for c in codes):
                    raise SegqaError(f"{self.uri}: vote transaction cancelled: {codes}") from None
            except (client.exceptions.TransactionInProgressException,
                    client.exceptions.ProvisionedThroughputExceededException):
                pass
            attempt += 1
            if attempt >= self.max_attempts:
                raise SegqaError(f"{self.uri}: vote transaction kept conflicting after {attempt} attempts")
            time.sleep(min(2.0, 0.02 * 2 ** attempt) * random.random())
        return []

    # -- reads -------------------------------------------------------------------------------------------

    def _paginate(self, op: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        client = self.client
        paginator = client.get_paginator(op)
        try:
            for page in paginator.paginate(TableName=self.table, **kwargs):
                yield from page.get("Items", [])
        except client.exceptions.ResourceNotFoundException:
            raise SegqaError(f"{self.uri}: table {self.table} does not exist (create it with "
                             f"'segqa store init --store {self.uri}')") from None

    @staticmethod
    def _s(attrs: dict[str, Any], key: str, default: str = "") -> str:
        v = attrs.get(key)
        return v["S"] if v and "S" in v else default

    @staticmethod
    def _n(attrs: dict[str, Any], key: str) -> int:
        v = attrs.get(key)
        return int(Decimal(v["N"])) if v and "N" in v else 0

    def _state(self, a: dict[str, Any]) -> ItemState:
        m = a.get("meta", {}).get("M", {})
        item = ItemRecord(item_id=self._s(m, "item_id"), class_name=self._s(m, "class_name"),
                          confidence=float(Decimal(m["confidence"]["N"])) if "confidence" in m else 0.0,
                          round=self._s(m, "round"), model_version=self._s(m, "model_version"),
                          subject=self._s(m, "subject"), slice_id=self._s(m, "slice_id"),
                          batch_id=self._s(m, "batch_id"), mask_uri=self._s(m, "mask_uri"))
        return ItemState(item=item, confirm_count=self._n(a, "confirm_count"),
                         disconfirm_count=self._n(a, "disconfirm_count"),
                         reviewers=tuple(sorted(a.get("reviewers", {}).get("SS", []))),
                         created_at=self._s(m, "created_at"), updated_at=self._s(a, "updated_at"))

    def _vote(self, a: dict[str, Any]) -> Vote:
        return Vote(job=self._s(a, "job"), item_id=self._s(a, "item_id"), worker_id=self._s(a, "worker_id"),
                    decision=self._s(a, "decision"), reason=self._s(a, "reason") or None,
                    comment=self._s(a, "comment") or None, submitted_at=self._s(a, "submitted_at"),
                    recorded_at=self._s(a, "recorded_at"))

    def get_item(self, item_id: str, round: str | int | None = None) -> ItemState | None:
        if round is not None:
            resp = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key={"pk": {"S": _item_pk(str(round), item_id)}, "sk": {"S": "ITEM"}})
            return self._state(resp["Item"]) if "Item" in resp else None
        candidates = [s for s in self.iter_items(class_name=parse_item_id(item_id).class_name)
                      if s.item.item_id == item_id]
        return max(candidates, key=lambda s: _sort_key_round(s.item.round)) if candidates else None

    def iter_items(self, class_name: str | None = None, round: str | int | None = None) -> Iterator[ItemState]:
        if class_name is not None:
            kwargs: dict[str, Any] = {"IndexName": GSI_BY_CLASS, "KeyConditionExpression": "gsi1pk = :p",
                                      "ExpressionAttributeValues": {":p": {"S": f"CLASS#{class_name}"}}}
            if round is not None:
                kwargs["KeyConditionExpression"] += " AND begins_with(gsi1sk, :r)"
                kwargs["ExpressionAttributeValues"][":r"] = {"S": f"ROUND#{round}#"}
            rows = self._paginate("query", **kwargs)
        elif round is not None:
            rows = self._paginate("query", IndexName=GSI_BY_ROUND, KeyConditionExpression="gsi2pk = :p",
                                  ExpressionAttributeValues={":p": {"S": f"ROUND#{round}"}})
        else:
            rows = self._paginate("scan", FilterExpression="sk = :i",
                                  ExpressionAttributeValues={":i": {"S": "ITEM"}}, ConsistentRead=True)
        states = [self._state(a) for a in rows]
        states.sort(key=lambda s: (_sort_key_round(s.item.round), s.item.item_id))
        yield from states

    def iter_votes(self, item_id: str | None = None, round: str | int | None = None,
                   job: str | None = None) -> Iterator[Vote]:
        if item_id is not None and round is not None:
            rows = self._paginate("query", KeyConditionExpression="pk = :p AND begins_with(sk, :v)",
                                  ExpressionAttributeValues={":p": {"S": _item_pk(str(round), item_id)},
                                                             ":v": {"S": "VOTE#"}}, ConsistentRead=True)
        else:
            rows = self._paginate("scan", FilterExpression="begins_with(sk, :v)",
                                  ExpressionAttributeValues={":v": {"S": "VOTE#"}}, ConsistentRead=True)
        out = []
        for a in rows:
            if item_id is not None and self._s(a, "item_id") != item_id:
                continue
            if round is not None and self._s(a, "round") != str(round):
                continue
            if job is not None and self._s(a, "job") != job:
                continue
            out.append(self._vote(a))
        out.sort(key=lambda v: (v.item_id, v.job, v.worker_id))
        yield from out

    def close(self) -> None:
        pass


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
