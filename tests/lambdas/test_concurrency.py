"""20 concurrent post-labeling invocations over overlapping objects leave exactly the counts of one clean run.

SQLite: real files, real threads and real processes. DynamoDB: moto, whose in-memory backend is not
thread-safe (it deep-copies tables in the middle of a transaction) while real DynamoDB applies every request
atomically; `AtomicRequests` restores that property and, like DynamoDB under contention, cancels some
transactions with ``TransactionConflict`` so the retry path runs too. Everything between requests — which
thread reads, skips and writes what, in which order — interleaves freely.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qa_workflow.confirmations import store as store_mod
from qa_workflow.confirmations.dynamodb import create_table

N_INVOCATIONS = 20
N_OBJECTS = 8
WINDOW = 3  # objects per invocation; invocation k covers objects k, k+1, k+2 (mod N_OBJECTS)


def _payloads(gt, root: Path, n_items: int = 12, n_objects: int = N_OBJECTS, window: int = WINDOW
              ) -> tuple[list[str], dict]:
    """Annotation payload files for overlapping windows of objects, and the oracle counts."""
    rng = random.Random(11)
    objects, by_uri = [], {}
    for o, b in enumerate(gt.batches(n_objects, n_items)):
        uri = str(root / "batches" / f"{b['batch_id']}.json")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(json.dumps(b))
        by_uri[uri] = b
        anns = [{"workerId": w, "annotationData": {"content": gt.form_content(b, gt.random_decisions(b, rng))}}
                for w in gt.workers]
        objects.append({"datasetObjectId": str(o), "dataObject": {"s3Uri": uri}, "annotations": anns})
    uris = []
    for k in range(N_INVOCATIONS):
        chosen = [objects[(k + j) % n_objects] for j in range(window)]
        p = root / "payloads" / f"{k:02d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(chosen))
        uris.append(str(p))
    return uris, gt.expected_counts(objects, by_uri)


def _invoke(gt, payload_uri: str, barrier=None) -> int:
    from lambdas.post_labeling.handler import lambda_handler

    if barrier is not None:
        barrier.wait(timeout=60)
    return len(lambda_handler(gt.post_event(payload_uri), None))


def _run_threads(gt, uris: list[str], window: int = WINDOW) -> None:
    barrier = threading.Barrier(len(uris))
    with ThreadPoolExecutor(max_workers=len(uris)) as pool:
        results = list(pool.map(lambda u: _invoke(gt, u, barrier), uris))
    assert results == [window] * len(uris)


def test_sqlite_20_concurrent_threads_give_exact_counts(tmp_path, monkeypatch, gt):
    uris, expected = _payloads(gt, tmp_path)
    uri = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("SEGQA_STORE", uri)
    store_mod.clear_store_cache()
    try:
        _run_threads(gt, uris)
        _run_threads(gt, uris[:5])  # and a replayed wave on top
    finally:
        store_mod.clear_store_cache()
    st = store_mod.open_store(uri)
    assert gt.store_counts(st) == expected
    assert len(list(st.iter_votes())) == sum(c + d for c, d in expected.values())


def test_sqlite_20_concurrent_processes_give_exact_counts(tmp_path, monkeypatch, gt):
    uris, expected = _payloads(gt, tmp_path)
    uri = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("SEGQA_STORE", uri)
    store_mod.clear_store_cache()  # nothing open in the parent: each process opens its own connection
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(uris))
    procs = [ctx.Process(target=_invoke, args=(gt, u, barrier)) for u in uris]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    st = store_mod.open_store(uri)
    assert gt.store_counts(st) == expected
    assert len(list(st.iter_votes())) == sum(c + d for c, d in expected.values())


class AtomicRequests:
    """A DynamoDB client proxy: one request at a time (as DynamoDB applies each atomically), with a share of
    transactions cancelled for ``TransactionConflict`` the way DynamoDB cancels contended ones."""

    def __init__(self, client, conflict_rate: float = 0.25, seed: int = 0) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.conflict_rate = conflict_rate
        self.injected_conflicts = 0
        self.condition_failures = 0

    def transact_write_items(self, **kwargs):
        exc_type = self._client.exceptions.TransactionCanceledException
        with self._lock:
            if self._rng.random() < self.conflict_rate:
                self.injected_conflicts += 1
                n = len(kwargs["TransactItems"])
                raise exc_type({"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                                "CancellationReasons": [{"Code": "None"}] * (n - 1)
                                + [{"Code": "TransactionConflict"}]},
                               "TransactWriteItems")
            try:
                return self._client.transact_write_items(**kwargs)
            except exc_type as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                self.condition_failures += codes.count("ConditionalCheckFailed")
                raise

    def batch_get_item(self, **kwargs):
        with self._lock:
            return self._client.batch_get_item(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_dynamodb_20_concurrent_invocations_give_exact_counts(aws, tmp_path, monkeypatch, gt):
    _, ddb, _ = aws
    # Smaller objects than the SQLite cases: moto spends ~1 s on every cancelled transaction.
    uris, expected = _payloads(gt, tmp_path, n_items=6, n_objects=6, window=2)
    create_table("segqa-votes", ddb)
    client = AtomicRequests(ddb)
    uri = "dynamodb://segqa-votes"
    monkeypatch.setenv("SEGQA_STORE", uri)
    store_mod.clear_store_cache()
    store_mod.open_store(uri, client=client, cached=True)  # what the handler's open_store(cached=True) returns
    try:
        _run_threads(gt, uris, window=2)
    finally:
        store_mod.clear_store_cache()
    assert client.injected_conflicts > 0
    st = store_mod.open_store(uri, client=ddb)
    assert gt.store_counts(st) == expected
    assert len(list(st.iter_votes())) == sum(c + d for c, d in expected.values())
    assert all(len(s.reviewers) == len(gt.workers) for s in st.iter_items())


@pytest.mark.parametrize("engine", ["sqlite", "dynamodb"])
def test_store_level_races_on_one_item_count_each_vote_once(engine, aws, tmp_path):
    """Many threads write the same few votes on one item at once: each lands exactly once."""
    _, ddb, _ = aws
    if engine == "sqlite":
        st = store_mod.open_store(f"sqlite:///{tmp_path}/s.db")
    else:
        create_table("race", ddb)
        st = store_mod.open_store("dynamodb://race", client=AtomicRequests(ddb, conflict_rate=0.3, seed=5))
    item = store_mod.ItemRecord("sub-001/010/csf", "csf", 0.42, "2")
    votes = [(item, store_mod.Vote("job", item.item_id, f"w{k % 4}", "accept" if k % 4 else "reject"))
             for k in range(24)]
    barrier = threading.Barrier(12)

    def write(k: int):
        barrier.wait(timeout=30)
        return st.record_votes(votes[k::12]).written

    with ThreadPoolExecutor(max_workers=12) as pool:
        written = sum(pool.map(write, range(12)))
    assert written == 4
    state = st.get_item(item.item_id, round=2)
    assert (state.confirm_count, state.disconfirm_count) == (3, 1)
    assert state.reviewers == ("w0", "w1", "w2", "w3")
