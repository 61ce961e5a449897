"""`Store` on a DynamoDB table (``dynamodb://<table>``), same semantics as SQLite's; boto3 imported lazily.

DynamoDB key schema (single table, on-demand)
---------------------------------------------
======================  =====================================  ==================================
record                  ``pk`` (HASH, S)                       ``sk`` (RANGE, S)
======================  =====================================  ==================================
item                    ``ITEM#<round>#<item_id>``              ``ITEM``
vote                    ``ITEM#<round>#<item_id>``              ``VOTE#<job>#<worker_id>``
correction              ``SLICE#<job>#<slice_id>``              ``CORRECTION#<worker_id>``
consolidated mask       ``SLICE#<job>#<slice_id>``              ``MASK``
======================  =====================================  ==================================

Votes live in their item's partition, so one Query returns an item with its votes. Three sparse global
secondary indexes, projected ALL and keyed on attributes only item records carry, serve the per-class, per-round
and changed-since views:

- ``by_class``: ``gsi1pk = CLASS#<class_name>``, ``gsi1sk = ROUND#<round>#<item_id>``
  (all items of a class; ``begins_with(gsi1sk, "ROUND#3#")`` narrows to one round);
- ``by_round``: ``gsi2pk = ROUND#<round>``, ``gsi2sk = CLASS#<class_name>#<item_id>``;
- ``by_class_updated``: ``gsi1pk``, ``updated_at`` (the items of a class changed at or after a time: what the
  retrain trigger reads since its last round; consolidated masks carry ``updated_at`` but no ``gsi1pk``).

Item records hold ``meta`` (a map: item_id, class_name, confidence, round, model_version, subject, slice_id,
batch_id, mask_uri, created_at; written once), ``confirm_count`` and ``disconfirm_count`` (numbers, absent = 0),
``reviewers`` (a string set of worker ids), ``updated_at`` and the index keys; vote records hold job, item_id,
worker_id, round, decision, reason, comment, submitted_at, recorded_at and ``seconds`` (when known).
Corrections are one ``Put`` each with ``attribute_not_exists(pk)`` (written once; no counters to move);
a consolidated mask is a plain ``Put`` (a replay writes the same record again).

A vote is a ``Put`` with ``attribute_not_exists(pk)`` plus an ``Update`` of its item (``ADD confirm_count :1``,
``ADD reviewers :{worker}``, ``meta`` via ``if_not_exists``) in one ``TransactWriteItems``. Up to
`DYNAMO_VOTES_PER_TRANSACTION` votes on distinct items share one transaction. Votes already stored are skipped
after one consistent ``BatchGetItem`` (so a replay costs reads, not failed transactions); when a transaction is
still cancelled because a concurrent writer got there first, those votes are settled and the rest retried;
conflicts with concurrent transactions (``TransactionConflict``) and throttling are retried with jittered backoff.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
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
from qa_workflow.contract import ACCEPT, SegqaError, parse_item_id, round_sort_key, utc_now_iso

__all__ = ["DynamoStore", "create_table", "GSI_BY_CLASS", "GSI_BY_ROUND", "GSI_BY_CLASS_UPDATED",
           "DYNAMO_VOTES_PER_TRANSACTION"]

#: Votes (each a Put + an Update) per TransactWriteItems call; DynamoDB allows 100 actions.
DYNAMO_VOTES_PER_TRANSACTION = 50
GSI_BY_CLASS = "by_class"
GSI_BY_ROUND = "by_round"
GSI_BY_CLASS_UPDATED = "by_class_updated"


def _item_pk(rnd: str, item_id: str) -> str:
    return f"ITEM#{rnd}#{item_id}"


def _slice_pk(job: str, slice_id: str) -> str:
    return f"SLICE#{job}#{slice_id}"


def _num(x: float | int) -> dict[str, str]:
    return {"N": str(Decimal(str(x)))}


def create_table(table: str, client: Any = None, wait: bool = True) -> None:
    """Create the store's DynamoDB table (on-demand, key schema and GSIs as documented above); idempotent."""
    import boto3

    client = client or boto3.client("dynamodb")
    strings = ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "updated_at")
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
                {"IndexName": GSI_BY_CLASS_UPDATED, "Projection": {"ProjectionType": "ALL"},
                 "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                               {"AttributeName": "updated_at", "KeyType": "RANGE"}]},
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
        self._client_lock = threading.Lock()
        self._client_ready = False

    @property
    def client(self) -> Any:
        # botocore builds a client's exception classes on the first use of `.exceptions`, without a lock: threads
        # doing it at once can get different classes, and an `except client.exceptions.X` then misses the X another
        # thread's call raised. Build the client and its exception classes once, under a lock.
        if not self._client_ready:
            with self._client_lock:
                if self._client is None:
                    import boto3

                    self._client = boto3.client("dynamodb", **self._client_kwargs)
                _ = self._client.exceptions
                self._client_ready = True
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
        if vote.seconds is not None:
            vote_attrs["seconds"] = _num(vote.seconds)
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
        check_vote_pairs(votes)
        if not votes:
            return VoteResult()
        existing = self._existing_votes(votes)
        fresh = [p for p in votes if self._vote_key(*p) not in existing]
        # One transaction may touch each item once: group votes into chunks of distinct items.
        chunks: list[list[tuple[ItemRecord, Vote]]] = []
        seen_in: list[set[tuple[str, str]]] = []
        for pair in fresh:
            key = (pair[0].round, pair[0].item_id)
            for chunk, seen in zip(chunks, seen_in, strict=True):
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
            now = utc_now_iso("milliseconds")
            actions = [a for item, vote in pending for a in self._actions(item, vote, now)]
            try:
                client.transact_write_items(TransactItems=actions)
                return [(v.job, v.item_id, v.worker_id) for _, v in pending]
            except client.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code", "None") for r in reasons]
                # Put of vote i is action 2*i: ConditionalCheckFailed there means "already voted".
                dup = {i for i in range(len(pending))
                       if 2 * i < len(codes) and codes[2 * i] == "ConditionalCheckFailed"}
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
                    recorded_at=self._s(a, "recorded_at"), seconds=self._f(a, "seconds"))

    @staticmethod
    def _f(attrs: dict[str, Any], key: str) -> float | None:
        v = attrs.get(key)
        return float(Decimal(v["N"])) if v and "N" in v else None

    def get_item(self, item_id: str, round: str | int | None = None) -> ItemState | None:
        if round is not None:
            resp = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                        Key={"pk": {"S": _item_pk(str(round), item_id)}, "sk": {"S": "ITEM"}})
            return self._state(resp["Item"]) if "Item" in resp else None
        candidates = [s for s in self.iter_items(class_name=parse_item_id(item_id).class_name)
                      if s.item.item_id == item_id]
        return max(candidates, key=lambda s: round_sort_key(s.item.round)) if candidates else None

    def iter_items(self, class_name: str | None = None, round: str | int | None = None, *,
                   updated_since: str | None = None) -> Iterator[ItemState]:
        if class_name is not None and updated_since is not None and round is None:
            rows = self._paginate("query", IndexName=GSI_BY_CLASS_UPDATED,
                                  KeyConditionExpression="gsi1pk = :p AND updated_at >= :t",
                                  ExpressionAttributeValues={":p": {"S": f"CLASS#{class_name}"},
                                                             ":t": {"S": updated_since}})
        elif class_name is not None:
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
        if updated_since is not None:
            states = [s for s in states if s.updated_at >= updated_since]
        states.sort(key=lambda s: (round_sort_key(s.item.round), s.item.item_id))
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

    # -- corrections -------------------------------------------------------------------------------------

    def record_corrections(self, corrections: Sequence[Correction]) -> CorrectionResult:
        client = self.client
        now = utc_now_iso("milliseconds")
        written = 0
        for c in corrections:
            attrs: dict[str, Any] = {
                "pk": {"S": _slice_pk(c.job, c.slice_id)}, "sk": {"S": f"CORRECTION#{c.worker_id}"},
                "record": {"S": "correction"}, "job": {"S": c.job}, "slice_id": {"S": c.slice_id},
                "worker_id": {"S": c.worker_id}, "round": {"S": c.round}, "task_id": {"S": c.task_id},
                "model_version": {"S": c.model_version}, "mask_uri": {"S": c.mask_uri},
                "modified": {"BOOL": bool(c.modified)}, "submitted_at": {"S": c.submitted_at or now},
                "recorded_at": {"S": now}}
            if c.seconds is not None:
                attrs["seconds"] = _num(c.seconds)
            try:
                client.put_item(TableName=self.table, Item=attrs, ConditionExpression="attribute_not_exists(pk)")
                written += 1
            except client.exceptions.ConditionalCheckFailedException:
                continue  # this (job, slice, worker) already corrected: nothing changes
            except client.exceptions.ResourceNotFoundException:
                raise SegqaError(f"{self.uri}: table {self.table} does not exist (create it with "
                                 f"'segqa store init --store {self.uri}')") from None
        return CorrectionResult(written=written, duplicates=len(corrections) - written)

    def put_consolidated_mask(self, mask: ConsolidatedMask) -> None:
        self.client.put_item(TableName=self.table, Item={
            "pk": {"S": _slice_pk(mask.job, mask.slice_id)}, "sk": {"S": "MASK"}, "record": {"S": "mask"},
            "job": {"S": mask.job}, "slice_id": {"S": mask.slice_id}, "round": {"S": mask.round},
            "mask_uri": {"S": mask.mask_uri}, "updated_at": {"S": utc_now_iso("milliseconds")}})

    def _slice_records(self, kind: str, job: str | None, round: str | int | None) -> list[dict[str, Any]]:
        expr = "begins_with(pk, :s) AND #rec = :k"
        values: dict[str, Any] = {":s": {"S": "SLICE#"}, ":k": {"S": kind}}
        names = {"#rec": "record"}
        if job is not None:
            expr += " AND job = :j"
            values[":j"] = {"S": job}
        if round is not None:
            expr += " AND #rnd = :r"
            values[":r"] = {"S": str(round)}
            names["#rnd"] = "round"
        return list(self._paginate("scan", FilterExpression=expr, ExpressionAttributeValues=values,
                                   ExpressionAttributeNames=names,
                                   ConsistentRead=True))

    def iter_corrections(self, job: str | None = None, round: str | int | None = None) -> Iterator[Correction]:
        out = [Correction(job=self._s(a, "job"), slice_id=self._s(a, "slice_id"), worker_id=self._s(a, "worker_id"),
                          round=self._s(a, "round"), mask_uri=self._s(a, "mask_uri"),
                          modified=bool(a.get("modified", {}).get("BOOL", False)), seconds=self._f(a, "seconds"),
                          task_id=self._s(a, "task_id"), model_version=self._s(a, "model_version"),
                          submitted_at=self._s(a, "submitted_at"), recorded_at=self._s(a, "recorded_at"))
               for a in self._slice_records("correction", job, round)]
        out.sort(key=lambda c: (c.slice_id, c.job, c.worker_id))
        yield from out

    def iter_consolidated_masks(self, job: str | None = None, round: str | int | None = None
                                ) -> Iterator[ConsolidatedMask]:
        out = [ConsolidatedMask(job=self._s(a, "job"), slice_id=self._s(a, "slice_id"), round=self._s(a, "round"),
                                mask_uri=self._s(a, "mask_uri"), updated_at=self._s(a, "updated_at"))
               for a in self._slice_records("mask", job, round)]
        out.sort(key=lambda m: (round_sort_key(m.round), m.slice_id, m.job))
        yield from out

    def close(self) -> None:
        pass

