"""The portal's own state in SQLite: reviewers, sessions, jobs, objects, assignments, worker responses.

This is the local stand-in for what Ground Truth keeps for a labeling job (who is working on which data object,
which answers came in). Reviewer votes themselves go to the confirmation store through the post-labeling
handler; this database only holds what the portal needs to hand out tasks and to call that handler.

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when COMMIT returns. Every
state change is one transaction (``BEGIN IMMEDIATE``: writers queue instead of failing), and the web layer
answers a reviewer only after the commit, so an acknowledged submission survives ``kill -9``.

Exactly-once: one assignment row per (job, object, reviewer) ever (UNIQUE), one response per assignment and per
(job, object, reviewer) (UNIQUE). A repeated submit finds the response already there and changes nothing.

Object life cycle (``objects.status``)::

    open ──(N responses)──► ready ──(post-labeling handler returned)──► complete
    open ──(lifetime over, ≥1 response)──► ready        open ──(lifetime over, no response)──► expired
    pre-labeling raised ──► failed                      isHumanAnnotationRequired false ──► skipped

Assignment life cycle: ``active`` ──► ``submitted`` | ``expired`` (time limit passed) | ``released`` (given back).
A reviewer never gets an object twice: an expired or released assignment still counts as "seen". Nor an object
that excludes their worker id (``exclusions``: an escalation job's batch and the people who already voted on its
masks in the verify job).

All times are float seconds since the epoch, passed in by the caller (the web layer owns the clock).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_workflow.contract import SegqaError
from qa_workflow.review.portal import auth

__all__ = ["PortalDB", "JobConfig", "Reviewer", "Session", "Assignment", "SubmitOutcome", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviewers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    worker_id TEXT NOT NULL UNIQUE,
    is_operator INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    login_token_hash TEXT,
    login_token_expires REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL,
    manifest_uri TEXT NOT NULL,
    reviewers_per_object INTEGER NOT NULL,
    task_time_limit REAL NOT NULL,
    task_lifetime REAL NOT NULL,
    label_attribute_name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    object_id INTEGER NOT NULL,
    data_object TEXT NOT NULL,
    task_input TEXT,
    batch_id TEXT,
    class_name TEXT,
    n_items INTEGER,
    status TEXT NOT NULL CHECK (status IN ('open', 'ready', 'complete', 'expired', 'failed', 'skipped')),
    error TEXT,
    created_at REAL NOT NULL,
    ready_at REAL,
    consolidated_at REAL,
    consolidation TEXT,
    consolidation_error TEXT,
    PRIMARY KEY (job_id, object_id)
);
CREATE INDEX IF NOT EXISTS objects_status ON objects (job_id, status, object_id);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    object_id INTEGER NOT NULL,
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    status TEXT NOT NULL CHECK (status IN ('active', 'submitted', 'expired', 'released')),
    assigned_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (job_id, object_id, reviewer_id),
    FOREIGN KEY (job_id, object_id) REFERENCES objects (job_id, object_id)
);
CREATE INDEX IF NOT EXISTS assignments_object ON assignments (job_id, object_id, status);
CREATE INDEX IF NOT EXISTS assignments_reviewer ON assignments (job_id, reviewer_id, status);
CREATE TABLE IF NOT EXISTS responses (
    assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id),
    job_id INTEGER NOT NULL,
    object_id INTEGER NOT NULL,
    reviewer_id INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    content TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    UNIQUE (job_id, object_id, reviewer_id)
);
CREATE INDEX IF NOT EXISTS responses_object ON responses (job_id, object_id);
CREATE TABLE IF NOT EXISTS assets (digest TEXT PRIMARY KEY, uri TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exclusions (
    job_id INTEGER NOT NULL,
    object_id INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (job_id, object_id, worker_id)
);
"""



#: SQLite INTEGER bounds; a larger Python int makes sqlite3 raise OverflowError instead of finding nothing.
SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1


def in_sqlite_range(n: int) -> bool:
    return SQLITE_INT_MIN <= n <= SQLITE_INT_MAX


@dataclass(frozen=True)
class JobConfig:
    name: str
    arn: str
    manifest_uri: str
    reviewers_per_object: int
    task_time_limit: float
    task_lifetime: float
    label_attribute_name: str


@dataclass(frozen=True)
class Reviewer:
    id: int
    name: str
    worker_id: str
    is_operator: bool
    disabled: bool


@dataclass(frozen=True)
class Session:
    reviewer: Reviewer
    csrf_token: str
    expires_at: float


@dataclass(frozen=True)
class Assignment:
    id: int
    job_id: int
    object_id: int
    reviewer_id: int
    status: str
    assigned_at: float
    expires_at: float


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submit did: ``recorded`` (new response committed), ``duplicate`` (this assignment was already
    answered; nothing changed), or a refusal: ``expired`` (time limit passed and the slot went to someone else),
    ``released`` (the reviewer gave the task back), ``closed`` (the object no longer takes answers)."""

    status: str
    object_ready: bool = False

    @property
    def accepted(self) -> bool:
        return self.status in ("recorded", "duplicate")


def _reviewer(row: sqlite3.Row) -> Reviewer:
    return Reviewer(row["id"], row["name"], row["worker_id"], bool(row["is_operator"]), bool(row["disabled"]))


def _assignment(row: sqlite3.Row) -> Assignment:
    return Assignment(row["id"], row["job_id"], row["object_id"], row["reviewer_id"], row["status"],
                      row["assigned_at"], row["expires_at"])


class PortalDB:
    """One SQLite file; one connection per thread (FastAPI runs sync endpoints on a thread pool)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.RLock()
        conn = self.conn()
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) != SCHEMA_VERSION:
            raise SegqaError(f"{self.path}: portal database schema {row['value']}, this segqa expects "
                             f"{SCHEMA_VERSION}; use another --portal-dir")

    # -- connections and transactions ------------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_ms / 1000,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # a COMMIT is on disk before it returns
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) so concurrent writers queue, never deadlock.

        Writers of this process also queue on a lock first: a blocked thread is woken as soon as the previous
        transaction commits, instead of sleep-polling in SQLite's busy handler (which made the slowest submits
        under load seconds long). Other processes (``segqa review add-reviewer``) still meet the busy timeout.
        """
        conn = self.conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # closed from its own thread already
                    pass
            self._all.clear()
        self._local = threading.local()

    def get_meta(self, key: str) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless one is there; returns the stored value."""
        with self.write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()["value"]

    # -- reviewers and sessions ------------------------------------------------------------------------

    def add_reviewer(self, name: str, *, is_operator: bool, link_ttl_s: float, now: float) -> str:
        """Create a reviewer and return a one-time login token (only its hash is kept)."""
        auth.check_reviewer_name(name)
        token = auth.new_token()
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM reviewers WHERE name = ?", (name,)).fetchone():
                raise SegqaError(f"reviewer {name!r} exists already; use --new-link to issue a new one-time login "
                                 "link for them")
            conn.execute(
                "INSERT INTO reviewers (name, worker_id, is_operator, login_token_hash, login_token_expires, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, auth.worker_id_for(name), int(is_operator), auth.token_hash(token), now + link_ttl_s, now))
        return token

    def new_login_link(self, name: str, *, link_ttl_s: float, now: float, is_operator: bool | None = None) -> str:
        """A fresh one-time login token for an existing reviewer (the previous one stops working)."""
        token = auth.new_token()
        with self.write() as conn:
            row = conn.execute("SELECT id FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise SegqaError(f"no reviewer named {name!r}; add them with 'segqa review add-reviewer {name}'")
            conn.execute("UPDATE reviewers SET login_token_hash = ?, login_token_expires = ?, disabled = 0 "
                         "WHERE id = ?", (auth.token_hash(token), now + link_ttl_s, row["id"]))
            if is_operator is not None:
                conn.execute("UPDATE reviewers SET is_operator = ? WHERE id = ?", (int(is_operator), row["id"]))
        return token

    def disable_reviewer(self, name: str) -> None:
        """Lock a reviewer out: no login, all sessions ended. Their submitted answers stay."""
        with self.write() as conn:
            row = conn.execute("SELECT id FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise SegqaError(f"no reviewer named {name!r}")
            conn.execute("UPDATE reviewers SET disabled = 1, login_token_hash = NULL WHERE id = ?", (row["id"],))
            conn.execute("DELETE FROM sessions WHERE reviewer_id = ?", (row["id"],))

    def reviewers(self) -> list[Reviewer]:
        return [_reviewer(r) for r in self.conn().execute("SELECT * FROM reviewers ORDER BY name")]

    def login(self, login_token: str, *, session_ttl_s: float, now: float) -> tuple[str, Session] | None:
        """Consume a one-time login token; returns ``(session_token, session)`` or None if it is not valid."""
        if not login_token or len(login_token) > 200:
            return None
        with self.write() as conn:
            row = conn.execute(
                "SELECT * FROM reviewers WHERE login_token_hash = ? AND disabled = 0 AND login_token_expires > ?",
                (auth.token_hash(login_token), now)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE reviewers SET login_token_hash = NULL, login_token_expires = NULL WHERE id = ?",
                         (row["id"],))
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            session_token, csrf = auth.new_token(), auth.new_token()
            conn.execute("INSERT INTO sessions (token_hash, reviewer_id, csrf_token, created_at, expires_at) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (auth.token_hash(session_token), row["id"], csrf, now, now + session_ttl_s))
        return session_token, Session(_reviewer(row), csrf, now + session_ttl_s)

    def session(self, session_token: str | None, now: float) -> Session | None:
        if not session_token or len(session_token) > 200:
            return None
        row = self.conn().execute(
            "SELECT s.csrf_token, s.expires_at, r.* FROM sessions s JOIN reviewers r ON r.id = s.reviewer_id "
            "WHERE s.token_hash = ? AND s.expires_at > ? AND r.disabled = 0",
            (auth.token_hash(session_token), now)).fetchone()
        return None if row is None else Session(_reviewer(row), row["csrf_token"], row["expires_at"])

    def logout(self, session_token: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (auth.token_hash(session_token),))

    # -- jobs and objects ------------------------------------------------------------------------------

    def ensure_job(self, cfg: JobConfig, now: float) -> int:
        """The job's id; created on first use. A restart must describe the same job (same manifest, same
        reviewers per object): changing those under a running job would silently change its meaning."""
        with self.write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE name = ?", (cfg.name,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO jobs (name, arn, manifest_uri, reviewers_per_object, task_time_limit, task_lifetime, "
                    "label_attribute_name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (cfg.name, cfg.arn, cfg.manifest_uri, cfg.reviewers_per_object, cfg.task_time_limit,
                     cfg.task_lifetime, cfg.label_attribute_name, now))
                assert cur.lastrowid is not None, "sqlite sets lastrowid after an INSERT"
                return int(cur.lastrowid)
            if row["manifest_uri"] != cfg.manifest_uri:
                raise SegqaError(f"job {cfg.name!r} already serves {row['manifest_uri']}, not {cfg.manifest_uri}; "
                                 "pass another --job-name")
            if row["reviewers_per_object"] != cfg.reviewers_per_object:
                raise SegqaError(f"job {cfg.name!r} was started with {row['reviewers_per_object']} reviewers per "
                                 f"object, not {cfg.reviewers_per_object}; keep the number or pass another --job-name")
            if row["label_attribute_name"] != cfg.label_attribute_name:
                raise SegqaError(f"job {cfg.name!r} was started with label attribute "
                                 f"{row['label_attribute_name']!r}, not {cfg.label_attribute_name!r}")
            # Time limits may change between runs; they apply to tasks handed out from now on.
            conn.execute("UPDATE jobs SET task_time_limit = ?, task_lifetime = ? WHERE id = ?",
                         (cfg.task_time_limit, cfg.task_lifetime, row["id"]))
            return int(row["id"])

    def job(self, job_id: int) -> sqlite3.Row:
        return self.conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def known_objects(self, job_id: int) -> dict[int, str]:
        """object_id -> data_object JSON, for every object registered so far."""
        return {r["object_id"]: r["data_object"] for r in
                self.conn().execute("SELECT object_id, data_object FROM objects WHERE job_id = ?", (job_id,))}

    def add_object(self, job_id: int, object_id: int, data_object: dict[str, Any], *, now: float,
                   task_input: dict[str, Any] | None = None, error: str | None = None,
                   human_required: bool = True) -> None:
        """Register one data object with its pre-labeling result (``task_input``) or its error."""
        if error is not None:
            status = "failed"
        elif not human_required:
            status = "skipped"
        else:
            status = "open"
        batch = task_input if isinstance(task_input, dict) else {}
        items = batch.get("items")
        with self.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO objects (job_id, object_id, data_object, task_input, batch_id, class_name, "
                "n_items, status, error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, object_id, json.dumps(data_object, sort_keys=True),
                 None if task_input is None else json.dumps(task_input),
                 str(batch.get("batch_id")) if batch.get("batch_id") is not None else None,
                 batch.get("class_name") if isinstance(batch.get("class_name"), str) else None,
                 len(items) if isinstance(items, list) else None, status, error, now))

    def object_row(self, job_id: int, object_id: int) -> sqlite3.Row | None:
        if not in_sqlite_range(object_id):  # an id from a URL: nothing that large exists
            return None
        return self.conn().execute("SELECT * FROM objects WHERE job_id = ? AND object_id = ?",
                                   (job_id, object_id)).fetchone()

    # -- assignments -----------------------------------------------------------------------------------

    def current_assignment(self, job_id: int, reviewer_id: int, now: float) -> Assignment | None:
        row = self.conn().execute(
            "SELECT * FROM assignments WHERE job_id = ? AND reviewer_id = ? AND status = 'active' AND expires_at > ? "
            "ORDER BY id LIMIT 1", (job_id, reviewer_id, now)).fetchone()
        return None if row is None else _assignment(row)

    def next_assignment(self, job_id: int, reviewer_id: int, now: float) -> Assignment | None:
        """The reviewer's open task, or a new one: the first open object that still needs answers and that
        this reviewer has never been given. None when there is nothing left for them."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT * FROM assignments WHERE job_id = ? AND reviewer_id = ? AND status = 'active' "
                "AND expires_at > ? ORDER BY id LIMIT 1", (job_id, reviewer_id, now)).fetchone()
            if row is not None:
                return _assignment(row)
            job = conn.execute("SELECT reviewers_per_object, task_time_limit FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            obj = conn.execute(
                """SELECT o.object_id FROM objects o
                   WHERE o.job_id = :job AND o.status = 'open'
                     AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.job_id = o.job_id
                                     AND a.object_id = o.object_id AND a.reviewer_id = :reviewer)
                     AND NOT EXISTS (SELECT 1 FROM exclusions x JOIN reviewers rv ON rv.worker_id = x.worker_id
                                     WHERE x.job_id = o.job_id AND x.object_id = o.object_id
                                     AND rv.id = :reviewer)
                     AND (SELECT COUNT(*) FROM assignments a WHERE a.job_id = o.job_id AND a.object_id = o.object_id
                          AND (a.status = 'submitted' OR (a.status = 'active' AND a.expires_at > :now))) < :n
                   ORDER BY o.object_id LIMIT 1""",
                {"job": job_id, "reviewer": reviewer_id, "now": now, "n": job["reviewers_per_object"]}).fetchone()
            if obj is None:
                return None
            cur = conn.execute(
                "INSERT INTO assignments (job_id, object_id, reviewer_id, status, assigned_at, expires_at) "
                "VALUES (?, ?, ?, 'active', ?, ?)",
                (job_id, obj["object_id"], reviewer_id, now, now + job["task_time_limit"]))
            row = conn.execute("SELECT * FROM assignments WHERE id = ?", (cur.lastrowid,)).fetchone()
            return _assignment(row)

    def assignment(self, assignment_id: int) -> Assignment | None:
        if not in_sqlite_range(assignment_id):  # an id from a URL: nothing that large exists
            return None
        row = self.conn().execute("SELECT * FROM assignments WHERE id = ?", (assignment_id,)).fetchone()
        return None if row is None else _assignment(row)

    def submit(self, assignment: Assignment, worker_id: str, content: str, now: float) -> SubmitOutcome:
        """Record one worker response for an assignment, in one transaction with the assignment's and (when it
        has all its answers) the object's state. Committed when this returns."""
        with self.write() as conn:
            a = conn.execute("SELECT * FROM assignments WHERE id = ?", (assignment.id,)).fetchone()
            if a["status"] == "submitted":
                return SubmitOutcome("duplicate")
            if a["status"] == "released":
                return SubmitOutcome("released")
            obj = conn.execute("SELECT status FROM objects WHERE job_id = ? AND object_id = ?",
                               (a["job_id"], a["object_id"])).fetchone()
            if obj["status"] != "open":
                return SubmitOutcome("closed")
            n = conn.execute("SELECT reviewers_per_object FROM jobs WHERE id = ?", (a["job_id"],)).fetchone()[0]
            if a["status"] == "expired" or a["expires_at"] <= now:
                # Late, but accepted if nobody took the slot in the meantime.
                others = conn.execute(
                    "SELECT COUNT(*) FROM assignments WHERE job_id = ? AND object_id = ? AND id != ? AND "
                    "(status = 'submitted' OR (status = 'active' AND expires_at > ?))",
                    (a["job_id"], a["object_id"], a["id"], now)).fetchone()[0]
                if others >= n:
                    if a["status"] == "active":
                        conn.execute("UPDATE assignments SET status = 'expired', finished_at = expires_at "
                                     "WHERE id = ?", (a["id"],))
                    return SubmitOutcome("expired")
            conn.execute(
                "INSERT INTO responses (assignment_id, job_id, object_id, reviewer_id, worker_id, content, "
                "submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (a["id"], a["job_id"], a["object_id"], a["reviewer_id"], worker_id, content, now))
            conn.execute("UPDATE assignments SET status = 'submitted', finished_at = ? WHERE id = ?", (now, a["id"]))
            answers = conn.execute("SELECT COUNT(*) FROM responses WHERE job_id = ? AND object_id = ?",
                                   (a["job_id"], a["object_id"])).fetchone()[0]
            ready = answers >= n
            if ready:
                conn.execute("UPDATE objects SET status = 'ready', ready_at = ? WHERE job_id = ? AND object_id = ?",
                             (now, a["job_id"], a["object_id"]))
            return SubmitOutcome("recorded", object_ready=ready)

    def release(self, assignment: Assignment, now: float) -> bool:
        """Give an active task back (the reviewer will not get this object again). False if it was not active."""
        with self.write() as conn:
            cur = conn.execute("UPDATE assignments SET status = 'released', finished_at = ? "
                               "WHERE id = ? AND status = 'active'", (now, assignment.id))
            return cur.rowcount == 1

    def response_content(self, assignment_id: int) -> str | None:
        row = self.conn().execute("SELECT content FROM responses WHERE assignment_id = ?", (assignment_id,)).fetchone()
        return None if row is None else row["content"]

    # -- the sweeper and the consolidator --------------------------------------------------------------

    def sweep(self, job_id: int, now: float) -> int:
        """Expire overdue assignments; end objects whose lifetime is over. Returns how many objects became ready."""
        with self.write() as conn:
            conn.execute("UPDATE assignments SET status = 'expired', finished_at = expires_at "
                         "WHERE job_id = ? AND status = 'active' AND expires_at <= ?", (job_id, now))
            lifetime = conn.execute("SELECT task_lifetime FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            cutoff = now - lifetime
            cur = conn.execute(
                "UPDATE objects SET status = 'ready', ready_at = ? WHERE job_id = ? AND status = 'open' "
                "AND created_at <= ? AND EXISTS (SELECT 1 FROM responses r WHERE r.job_id = objects.job_id "
                "AND r.object_id = objects.object_id)", (now, job_id, cutoff))
            conn.execute("UPDATE objects SET status = 'expired' "
                         "WHERE job_id = ? AND status = 'open' AND created_at <= ?", (job_id, cutoff))
            return cur.rowcount

    def ready_objects(self, job_id: int, limit: int = 50) -> list[sqlite3.Row]:
        return list(self.conn().execute(
            "SELECT * FROM objects WHERE job_id = ? AND status = 'ready' ORDER BY ready_at, object_id LIMIT ?",
            (job_id, limit)))

    def responses(self, job_id: int, object_ids: Sequence[int] | None = None) -> list[sqlite3.Row]:
        sql = ("SELECT r.*, rv.name AS reviewer_name FROM responses r JOIN reviewers rv ON rv.id = r.reviewer_id "
               "WHERE r.job_id = ?")
        params: list[Any] = [job_id]
        if object_ids is not None:
            sql += f" AND r.object_id IN ({','.join('?' * len(object_ids))})"
            params.extend(object_ids)
        return list(self.conn().execute(sql + " ORDER BY r.object_id, r.submitted_at, r.assignment_id", params))

    def mark_consolidated(self, job_id: int, results: dict[int, Any], now: float) -> None:
        with self.write() as conn:
            for object_id, result in results.items():
                conn.execute("UPDATE objects SET status = 'complete', consolidated_at = ?, consolidation = ?, "
                             "consolidation_error = NULL WHERE job_id = ? AND object_id = ? AND status = 'ready'",
                             (now, json.dumps(result), job_id, object_id))

    def mark_consolidation_error(self, job_id: int, object_ids: Sequence[int], error: str) -> None:
        with self.write() as conn:
            conn.executemany("UPDATE objects SET consolidation_error = ? WHERE job_id = ? AND object_id = ?",
                             [(error[:2000], job_id, oid) for oid in object_ids])

    # -- assets (signed image URLs) --------------------------------------------------------------------

    def remember_assets(self, pairs: dict[str, str]) -> None:
        if pairs:
            with self.write() as conn:
                conn.executemany("INSERT OR IGNORE INTO assets (digest, uri) VALUES (?, ?)", list(pairs.items()))

    def asset_uri(self, digest: str) -> str | None:
        row = self.conn().execute("SELECT uri FROM assets WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else row["uri"]

    # -- progress for people ---------------------------------------------------------------------------

    # -- exclusions ------------------------------------------------------------------------------------

    def exclude(self, job_id: int, excluded: dict[int, set[str]], reason: str) -> int:
        """Keep each object's workers (object id -> worker ids) from being given it; returns how many (object,
        worker) pairs are new. Idempotent: a restart adds the same pairs again and changes nothing."""
        rows = [(job_id, oid, worker, reason)
                for oid, workers in sorted(excluded.items()) for worker in sorted(workers)]
        with self.write() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO exclusions (job_id, object_id, worker_id, reason) "
                             "VALUES (?, ?, ?, ?)", rows)
            return conn.total_changes - before

    def excluded_objects(self, job_id: int, reviewer_id: int) -> int:
        """How many of the job's objects this reviewer may not be given."""
        return int(self.conn().execute(
            "SELECT COUNT(*) FROM exclusions x JOIN reviewers rv ON rv.worker_id = x.worker_id "
            "JOIN objects o ON o.job_id = x.job_id AND o.object_id = x.object_id "
            "WHERE x.job_id = ? AND rv.id = ? AND o.status NOT IN ('failed', 'skipped')",
            (job_id, reviewer_id)).fetchone()[0])

    def reviewer_progress(self, job_id: int, reviewer_id: int) -> dict[str, int]:
        """The reviewer's home-page counts: batches reviewed, batches there are for them (the job's, less those
        they are excluded from), batches excluded, and the job's complete batches."""
        conn = self.conn()
        excluded = self.excluded_objects(job_id, reviewer_id)
        total = conn.execute("SELECT COUNT(*) FROM objects WHERE job_id = ? AND status NOT IN ('failed', 'skipped')",
                             (job_id,)).fetchone()[0] - excluded
        done = conn.execute("SELECT COUNT(*) FROM responses WHERE job_id = ? AND reviewer_id = ?",
                            (job_id, reviewer_id)).fetchone()[0]
        complete = conn.execute("SELECT COUNT(*) FROM objects WHERE job_id = ? AND status = 'complete'",
                                (job_id,)).fetchone()[0]
        return {"reviewed": done, "total": total, "excluded": excluded, "complete": complete}

    def recent_responses(self, job_id: int, reviewer_id: int, limit: int = 10) -> list[sqlite3.Row]:
        return list(self.conn().execute(
            "SELECT r.*, o.batch_id, o.class_name FROM responses r JOIN objects o "
            "ON o.job_id = r.job_id AND o.object_id = r.object_id WHERE r.job_id = ? AND r.reviewer_id = ? "
            "ORDER BY r.submitted_at DESC, r.assignment_id DESC LIMIT ?", (job_id, reviewer_id, limit)))

    def progress(self, job_id: int, now: float) -> dict[str, Any]:
        """Job progress per status, per reviewer and per object (the operator page and its JSON API)."""
        conn = self.conn()
        job = self.job(job_id)
        by_status = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status, COUNT(*) AS n FROM objects WHERE job_id = ? GROUP BY status", (job_id,))}
        reviewers = [dict(r) for r in conn.execute(
            """SELECT rv.name, rv.worker_id, rv.is_operator, rv.disabled,
                 SUM(a.status = 'submitted') AS submitted,
                 SUM(a.status = 'active' AND a.expires_at > :now) AS active,
                 SUM(a.status = 'expired' OR (a.status = 'active' AND a.expires_at <= :now)) AS expired,
                 SUM(a.status = 'released') AS released,
                 MAX(CASE WHEN a.status = 'submitted' THEN a.finished_at END) AS last_submitted_at
               FROM reviewers rv LEFT JOIN assignments a ON a.reviewer_id = rv.id AND a.job_id = :job
               GROUP BY rv.id ORDER BY rv.name""", {"job": job_id, "now": now})]
        for r in reviewers:
            for k in ("submitted", "active", "expired", "released"):
                r[k] = int(r[k] or 0)
        objects = [dict(r) for r in conn.execute(
            """SELECT o.object_id, o.batch_id, o.class_name, o.n_items, o.status, o.error, o.consolidation_error,
                 json_extract(o.data_object, '$."source-ref"') AS source_ref,
                 (SELECT COUNT(*) FROM responses r WHERE r.job_id = o.job_id AND r.object_id = o.object_id) AS answers,
                 (SELECT COUNT(*) FROM assignments a WHERE a.job_id = o.job_id AND a.object_id = o.object_id
                    AND a.status = 'active' AND a.expires_at > :now) AS in_progress,
                 (SELECT group_concat(rv.name, ', ') FROM responses r JOIN reviewers rv ON rv.id = r.reviewer_id
                    WHERE r.job_id = o.job_id AND r.object_id = o.object_id) AS reviewers,
                 (SELECT COUNT(*) FROM exclusions x WHERE x.job_id = o.job_id AND x.object_id = o.object_id)
                    AS excluded
               FROM objects o WHERE o.job_id = :job ORDER BY o.object_id""", {"job": job_id, "now": now})]
        answers = sum(o["answers"] for o in objects)
        return {
            "job": {"name": job["name"], "arn": job["arn"], "manifest": job["manifest_uri"],
                    "reviewers_per_object": job["reviewers_per_object"], "task_time_limit": job["task_time_limit"],
                    "task_lifetime": job["task_lifetime"], "label_attribute_name": job["label_attribute_name"]},
            "objects_total": len(objects),
            "objects_by_status": by_status,
            "answers": answers,
            "excluded": sum(o["excluded"] for o in objects),
            "answers_needed": job["reviewers_per_object"] * sum(
                1 for o in objects if o["status"] not in ("failed", "skipped")),
            "reviewers": reviewers,
            "objects": objects,
        }
