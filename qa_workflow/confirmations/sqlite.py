"""`Store` on an SQLite file: the embedded engine (``sqlite:///<path>``), same semantics as DynamoDB's.

SQLite schema
-------------
``items(round, item_id, class_name, confidence, model_version, subject, slice_id, batch_id, mask_uri,
confirm_count, disconfirm_count, reviewer_count, created_at, updated_at, PRIMARY KEY(round, item_id))``,
index ``(class_name, round)``; ``votes(job, item_id, worker_id, round, decision, reason, comment, submitted_at,
recorded_at, seconds, PRIMARY KEY(job, item_id, worker_id))``; ``corrections(job, slice_id, worker_id, round,
task_id, model_version, mask_uri, modified, seconds, submitted_at, recorded_at, PRIMARY KEY(job, slice_id,
worker_id))``; ``consolidated_masks(job, slice_id, round, mask_uri, updated_at, PRIMARY KEY(job, slice_id))``.
Writes run in ``BEGIN IMMEDIATE`` transactions; a vote bumps the counts only when its ``INSERT OR IGNORE``
inserted a row. A store made before corrections existed gains ``votes.seconds`` when it is opened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from qa_workflow.confirmations.records import (
    ConsolidatedMask,
    Correction,
    CorrectionResult,
    ItemRecord,
    ItemState,
    Vote,
    VoteResult,
    check_vote_pairs,
)
from qa_workflow.contract import ACCEPT, REJECT, SegqaError, round_sort_key, utc_now_iso

__all__ = ["SqliteStore"]

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
    seconds REAL,
    PRIMARY KEY (job, item_id, worker_id)
);
CREATE INDEX IF NOT EXISTS votes_by_item ON votes (round, item_id);
CREATE TABLE IF NOT EXISTS corrections (
    job TEXT NOT NULL,
    slice_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    round TEXT NOT NULL,
    task_id TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    mask_uri TEXT NOT NULL,
    modified INTEGER NOT NULL CHECK (modified IN (0, 1)),
    seconds REAL,
    submitted_at TEXT NOT NULL DEFAULT '',
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (job, slice_id, worker_id)
);
CREATE TABLE IF NOT EXISTS consolidated_masks (
    job TEXT NOT NULL,
    slice_id TEXT NOT NULL,
    round TEXT NOT NULL,
    mask_uri TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job, slice_id)
);
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
            vote_cols = {r[1] for r in conn.execute("PRAGMA table_info(votes)")}
            if "seconds" not in vote_cols:  # a store written before seconds on task were kept
                self._while_locked(lambda: conn.execute("ALTER TABLE votes ADD COLUMN seconds REAL"))
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process migrated it first
                raise SegqaError(f"{self.uri}: not a segqa SQLite store ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise SegqaError(f"{self.uri}: not a segqa SQLite store ({exc})") from None
        self._initialised = True

    def init(self) -> None:
        self._conn()

    def record_votes(self, votes: Sequence[tuple[ItemRecord, Vote]]) -> VoteResult:
        check_vote_pairs(votes)
        if not votes:
            return VoteResult()
        conn = self._conn()
        now = utc_now_iso("milliseconds")
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
                    "submitted_at, recorded_at, seconds) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (vote.job, vote.item_id, vote.worker_id, item.round, vote.decision, vote.reason, vote.comment,
                     vote.submitted_at or now, now, vote.seconds))
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
            row = max(rows, key=lambda r: round_sort_key(r["round"]))
        else:
            row = conn.execute("SELECT * FROM items WHERE round = ? AND item_id = ?", (str(round), item_id)).fetchone()
            if row is None:
                return None
        return self._state(row, self._reviewers(row["round"], row["item_id"]))

    def iter_items(self, class_name: str | None = None, round: str | int | None = None, *,
                   updated_since: str | None = None) -> Iterator[ItemState]:
        where, args = [], []
        if updated_since is not None:
            where.append("updated_at >= ?")
            args.append(updated_since)
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
        vsql = ("SELECT DISTINCT round, item_id, worker_id FROM votes"
                + (" WHERE round = ?" if round is not None else ""))
        for r in conn.execute(vsql, [str(round)] if round is not None else []):
            reviewers.setdefault((r[0], r[1]), []).append(r[2])
        rows.sort(key=lambda r: (round_sort_key(r["round"]), r["item_id"]))
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
                       recorded_at=r["recorded_at"], seconds=r["seconds"])

    def record_corrections(self, corrections: Sequence[Correction]) -> CorrectionResult:
        if not corrections:
            return CorrectionResult()
        conn = self._conn()
        now = utc_now_iso("milliseconds")
        written = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for c in corrections:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO corrections (job, slice_id, worker_id, round, task_id, model_version, "
                    "mask_uri, modified, seconds, submitted_at, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (c.job, c.slice_id, c.worker_id, c.round, c.task_id, c.model_version, c.mask_uri,
                     int(bool(c.modified)), c.seconds, c.submitted_at or now, now))
                written += cur.rowcount == 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return CorrectionResult(written=written, duplicates=len(corrections) - written)

    def put_consolidated_mask(self, mask: ConsolidatedMask) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO consolidated_masks (job, slice_id, round, mask_uri, updated_at) "
                         "VALUES (?,?,?,?,?) ON CONFLICT (job, slice_id) DO UPDATE SET round = excluded.round, "
                         "mask_uri = excluded.mask_uri, updated_at = excluded.updated_at",
                         (mask.job, mask.slice_id, mask.round, mask.mask_uri, utc_now_iso("milliseconds")))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _where(filters: Sequence[tuple[str, str | None]]) -> tuple[str, list[str]]:
        used = [(col, val) for col, val in filters if val is not None]
        return (" WHERE " + " AND ".join(f"{col} = ?" for col, _ in used) if used else ""), [v for _, v in used]

    def iter_corrections(self, job: str | None = None, round: str | int | None = None) -> Iterator[Correction]:
        where, args = self._where([("job", job), ("round", None if round is None else str(round))])
        sql = "SELECT * FROM corrections" + where + " ORDER BY slice_id, job, worker_id"
        for r in self._conn().execute(sql, args).fetchall():
            yield Correction(job=r["job"], slice_id=r["slice_id"], worker_id=r["worker_id"], round=r["round"],
                             mask_uri=r["mask_uri"], modified=bool(r["modified"]), seconds=r["seconds"],
                             task_id=r["task_id"], model_version=r["model_version"],
                             submitted_at=r["submitted_at"], recorded_at=r["recorded_at"])

    def iter_consolidated_masks(self, job: str | None = None, round: str | int | None = None
                                ) -> Iterator[ConsolidatedMask]:
        where, args = self._where([("job", job), ("round", None if round is None else str(round))])
        rows = self._conn().execute("SELECT * FROM consolidated_masks" + where, args).fetchall()
        rows.sort(key=lambda r: (round_sort_key(r["round"]), r["slice_id"], r["job"]))
        for r in rows:
            yield ConsolidatedMask(job=r["job"], slice_id=r["slice_id"], round=r["round"], mask_uri=r["mask_uri"],
                                   updated_at=r["updated_at"])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

