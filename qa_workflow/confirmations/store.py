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
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from qa_workflow.confirmations.records import ItemRecord, ItemState, Store, Vote, VoteResult, check_vote_pairs
from qa_workflow.contract import SegqaError

__all__ = [
    "ItemRecord", "Vote", "ItemState", "VoteResult", "Store", "open_store", "store_uri_from_env",
    "clear_store_cache", "check_vote_pairs", "ENV_VAR",
]

ENV_VAR = "SEGQA_STORE"

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

