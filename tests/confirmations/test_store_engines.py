"""The confirmation store: the same semantics on SQLite (real files) and DynamoDB (moto)."""

from __future__ import annotations

import csv
import io

import pytest

from qa_workflow.confirmations.dynamodb import DynamoStore, create_table
from qa_workflow.confirmations.export import (
    corrections_csv,
    export_corrections,
    export_review_records,
    review_records_csv,
    summarize,
)
from qa_workflow.confirmations.records import ConsolidatedMask, Correction
from qa_workflow.confirmations.sqlite import SqliteStore
from qa_workflow.confirmations.store import ItemRecord, Vote, open_store
from qa_workflow.contract import CORRECTION_COLUMNS, REVIEW_RECORD_COLUMNS, SegqaError


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, aws, tmp_path):
    _, ddb, _ = aws
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path}/reviews.db")
    create_table("segqa-store-test", ddb)
    return open_store("dynamodb://segqa-store-test", client=ddb)


def _item(n: int = 1, cls: str = "csf", rnd: str = "1", conf: float = 0.5, subject: str = "sub-001") -> ItemRecord:
    return ItemRecord(item_id=f"{subject}/{n:03d}/{cls}", class_name=cls, confidence=conf, round=rnd,
                      model_version=f"unet-r{rnd}", subject=subject, slice_id=f"{subject}/{n:03d}",
                      batch_id=f"b-{rnd}", mask_uri=f"s3://x/{n}.png")


def _vote(item: ItemRecord, worker: str, decision: str = "accept", job: str = "job-1", **kw) -> Vote:
    return Vote(job=job, item_id=item.item_id, worker_id=worker, decision=decision, **kw)


def test_a_vote_is_written_once_and_counts_move_with_it(store):
    it = _item()
    r = store.record_votes([(it, _vote(it, "w1")), (it, _vote(it, "w2", "reject", reason="over_segmented",
                                                               comment="<i>spills</i>"))])
    assert (r.written, r.duplicates) == (2, 0)
    again = store.record_votes([(it, _vote(it, "w1", "reject")), (it, _vote(it, "w3"))])
    assert (again.written, again.duplicates) == (1, 1)  # w1 already voted in job-1: the changed mind is ignored
    other_job = store.record_votes([(it, _vote(it, "w1", "reject", job="job-2"))])
    assert other_job.written == 1  # the key is (job, item, worker)

    state = store.get_item(it.item_id, round=1)
    assert (state.confirm_count, state.disconfirm_count) == (2, 2)
    assert state.reviewers == ("w1", "w2", "w3")
    assert state.outcome == "split"
    votes = list(store.iter_votes(item_id=it.item_id))
    assert [(v.job, v.worker_id, v.decision) for v in votes] == [
        ("job-1", "w1", "accept"), ("job-1", "w2", "reject"), ("job-1", "w3", "accept"), ("job-2", "w1", "reject")]
    assert votes[1].reason == "over_segmented" and votes[1].comment == "<i>spills</i>"
    assert all(v.recorded_at and v.submitted_at for v in votes)


def test_item_metadata_comes_from_the_first_vote_and_is_never_overwritten(store):
    first = _item(conf=0.31)
    store.record_votes([(first, _vote(first, "w1", submitted_at="2025-01-02T03:04:05Z"))])
    changed = ItemRecord(**{**first.__dict__, "confidence": 0.99, "model_version": "other"})
    store.record_votes([(changed, _vote(changed, "w2"))])
    state = store.get_item(first.item_id, round=1)
    assert state.item == first
    assert state.confirm_count == 2
    assert next(store.iter_votes(item_id=first.item_id)).submitted_at == "2025-01-02T03:04:05Z"


def test_rounds_are_separate_items_and_queries_filter_by_class_and_round(store):
    pairs = []
    for rnd in ("1", "2", "10"):
        for cls in ("csf", "gray_matter"):
            for n in range(3):
                it = _item(n, cls, rnd, conf=0.1 * n)
                pairs.append((it, _vote(it, "w1", "accept" if n else "reject", job=f"job-{rnd}")))
    assert store.record_votes(pairs).written == 18
    all_items = list(store.iter_items())
    assert len(all_items) == 18
    assert [s.item.round for s in all_items] == ["1"] * 6 + ["2"] * 6 + ["10"] * 6  # numeric round order
    assert {s.item.class_name for s in store.iter_items(class_name="csf")} == {"csf"}
    assert len(list(store.iter_items(class_name="csf"))) == 9
    assert len(list(store.iter_items(round=2))) == 6
    assert [s.item.item_id for s in store.iter_items(class_name="gray_matter", round="10")] == [
        "sub-001/000/gray_matter", "sub-001/001/gray_matter", "sub-001/002/gray_matter"]
    assert store.get_item("sub-001/001/csf").item.round == "10"  # latest round when none is named
    assert store.get_item("sub-001/001/csf", round=2).item.model_version == "unet-r2"
    assert store.get_item("sub-001/999/csf") is None
    assert len(list(store.iter_votes(round=2))) == 6 and len(list(store.iter_votes(job="job-1"))) == 6


def test_export_has_the_analysis_columns_and_one_row_per_item(store):
    a, b = _item(1, conf=0.25), _item(2, "white_matter", conf=0.875)
    a2 = _item(1, rnd="2", conf=0.5)
    store.record_votes([(a, _vote(a, "w1")), (a, _vote(a, "w2", "reject")), (b, _vote(b, "w1")),
                        (a2, _vote(a2, "w1", job="job-2"))])
    rows, superseded = export_review_records(store)
    assert superseded == 1
    text = review_records_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == REVIEW_RECORD_COLUMNS
    assert [(r["item_id"], r["round"], r["confidence"], r["confirm_count"], r["disconfirm_count"]) for r in parsed] == [
        ("sub-001/002/white_matter", "1", "0.875", "1", "0"), ("sub-001/001/csf", "2", "0.5", "1", "0")]
    assert parsed[0]["subject"] == "sub-001" and parsed[0]["slice_id"] == "sub-001/002"
    assert parsed[0]["model_version"] == "unet-r1" and parsed[0]["class_name"] == "white_matter"
    only_round_1, gone = export_review_records(store, round=1)
    assert gone == 0 and {r["item_id"]: r["disconfirm_count"] for r in only_round_1} == {
        "sub-001/001/csf": 1, "sub-001/002/white_matter": 0}


def test_summary_counts_per_class_and_round(store):
    pairs = []
    for n, (c, d) in enumerate([(2, 0), (1, 1), (0, 2), (3, 0)]):
        it = _item(n, "gray_matter" if n < 3 else "csf")
        pairs += [(it, _vote(it, f"a{k}")) for k in range(c)] + [(it, _vote(it, f"r{k}", "reject")) for k in range(d)]
    store.record_votes(pairs)
    groups = {(g["class_name"], g["round"]): g for g in summarize(store)}
    gm = groups[("gray_matter", "1")]
    assert (gm["items"], gm["votes"], gm["accept"], gm["reject"], gm["split"]) == (3, 6, 1, 1, 1)
    assert gm["confirm_votes"] == 3 and gm["disconfirm_votes"] == 3 and gm["reviewers"] == 4
    assert (groups[("csf", "1")]["items"], groups[("csf", "1")]["accept"]) == (1, 1)


def test_votes_and_pairs_are_checked(store):
    it = _item()
    with pytest.raises(SegqaError, match="decision must be one of"):
        _vote(it, "w1", "maybe")
    with pytest.raises(SegqaError, match="worker_id must be a non-empty string"):
        _vote(it, "")
    with pytest.raises(SegqaError, match="paired with item"):
        store.record_votes([(_item(2), _vote(it, "w1"))])
    assert store.record_votes([]).written == 0


@pytest.mark.parametrize("uri,match", [
    ("reviews.db", "expected sqlite:///<path> or dynamodb://<table>"),
    ("postgres://x/y", "unsupported store URI"),
    ("sqlite://", "expected sqlite:///<path>"),
    ("dynamodb://", "expected dynamodb://<table>"),
    ("dynamodb://t/extra", "expected dynamodb://<table>"),
    ("dynamodb://t?regio=eu-west-1", "unknown option"),
])
def test_bad_store_uris_are_clear_errors(uri, match):
    with pytest.raises(SegqaError, match=match):
        open_store(uri)


def test_uri_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite:///rel/reviews.db")
    assert isinstance(rel, SqliteStore) and rel.path == "rel/reviews.db"  # SQLAlchemy convention: relative
    assert open_store(f"sqlite:///{tmp_path}/abs.db").path == f"{tmp_path}/abs.db"
    with pytest.raises(SegqaError, match="folder .* does not exist"):
        rel.init()
    with pytest.raises(SegqaError, match="no such store"):
        open_store(f"sqlite:///{tmp_path}/missing.db", create=False).init()
    (tmp_path / "junk.db").write_text("this is not sqlite" * 100)
    with pytest.raises(SegqaError, match="SQLite store"):
        open_store(f"sqlite:///{tmp_path}/junk.db").init()
    dyn = open_store("dynamodb://segqa-votes?region=eu-west-1&endpoint_url=http://localhost:8000")
    assert isinstance(dyn, DynamoStore) and dyn.table == "segqa-votes"
    assert dyn._client_kwargs == {"region_name": "eu-west-1", "endpoint_url": "http://localhost:8000"}


def test_sqlite_uses_wal(tmp_path):
    st = open_store(f"sqlite:///{tmp_path}/w.db")
    st.init()
    import sqlite3

    assert sqlite3.connect(tmp_path / "w.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_dynamodb_key_schema_and_indexes(aws):
    _, ddb, _ = aws
    create_table("segqa-schema", ddb)
    create_table("segqa-schema", ddb)  # idempotent
    desc = ddb.describe_table(TableName="segqa-schema")["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in desc["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    indexes = {i["IndexName"]: {k["AttributeName"] for k in i["KeySchema"]} for i in desc["GlobalSecondaryIndexes"]}
    assert indexes == {"by_class": {"gsi1pk", "gsi1sk"}, "by_round": {"gsi2pk", "gsi2sk"},
                       "by_class_updated": {"gsi1pk", "updated_at"}}
    st = open_store("dynamodb://segqa-schema", client=ddb)
    it = _item(7, "gray_matter", rnd="3")
    st.record_votes([(it, _vote(it, "w9"))])
    rows = ddb.scan(TableName="segqa-schema")["Items"]
    keys = sorted((r["pk"]["S"], r["sk"]["S"]) for r in rows)
    assert keys == [("ITEM#3#sub-001/007/gray_matter", "ITEM"), ("ITEM#3#sub-001/007/gray_matter", "VOTE#job-1#w9")]
    item_row = next(r for r in rows if r["sk"]["S"] == "ITEM")
    assert item_row["gsi1pk"]["S"] == "CLASS#gray_matter" and item_row["gsi2sk"]["S"].startswith("CLASS#gray_matter#")
    with pytest.raises(SegqaError, match="does not exist .*segqa store init"):
        list(open_store("dynamodb://no-such-table", client=ddb).iter_items())


# -- corrections (adjust tasks) --------------------------------------------------------------------------


def _correction(slice_id: str = "sub-001/004", worker: str = "w1", job: str = "adjust-1", **kw) -> Correction:
    fields = {"round": "2", "mask_uri": f"s3://b/corrections/{job}/{slice_id}/{worker}.png", "modified": True,
              "seconds": 42.5, "task_id": f"adjust-{slice_id}", "model_version": "unet-r2", **kw}
    return Correction(job=job, slice_id=slice_id, worker_id=worker, **fields)


def test_a_correction_is_written_once_per_job_slice_and_worker(store):
    first = store.record_corrections([_correction(), _correction(worker="w2", modified=False, seconds=None)])
    assert (first.written, first.duplicates) == (2, 0)
    replay = store.record_corrections([_correction(mask_uri="s3://b/other.png", seconds=1.0),
                                       _correction(job="adjust-2")])
    assert (replay.written, replay.duplicates) == (1, 1)  # the replayed w1 changes nothing; another job is new
    got = list(store.iter_corrections())
    assert [(c.slice_id, c.job, c.worker_id) for c in got] == [
        ("sub-001/004", "adjust-1", "w1"), ("sub-001/004", "adjust-1", "w2"), ("sub-001/004", "adjust-2", "w1")]
    assert got[0].mask_uri.endswith("adjust-1/sub-001/004/w1.png") and got[0].seconds == 42.5 and got[0].modified
    assert got[1].seconds is None and got[1].modified is False
    assert got[0].task_id == "adjust-sub-001/004" and got[0].model_version == "unet-r2" and got[0].recorded_at
    assert [c.worker_id for c in store.iter_corrections(job="adjust-2")] == ["w1"]
    assert list(store.iter_corrections(round=3)) == []


def test_consolidated_masks_and_the_corrections_export(store):
    store.record_corrections([_correction(seconds=30.0), _correction(worker="w2", modified=False, seconds=12.25),
                              _correction(slice_id="sub-002/010", round="3", modified=False, seconds=None)])
    mask = ConsolidatedMask(job="adjust-1", slice_id="sub-001/004", round="2", mask_uri="s3://b/c/sub-001_004.png")
    store.put_consolidated_mask(mask)
    store.put_consolidated_mask(mask)  # a replay writes the same record again
    assert [(m.slice_id, m.mask_uri) for m in store.iter_consolidated_masks()] == [
        ("sub-001/004", "s3://b/c/sub-001_004.png")]
    rows = list(csv.DictReader(io.StringIO(corrections_csv(export_corrections(store)))))
    assert tuple(rows[0]) == CORRECTION_COLUMNS
    assert rows == [
        {"slice_id": "sub-001/004", "round": "2", "job": "adjust-1", "workers": "w1;w2",
         "mask_uri": "s3://b/c/sub-001_004.png", "modified": "true", "seconds": "42.25"},
        {"slice_id": "sub-002/010", "round": "3", "job": "adjust-1", "workers": "w1", "mask_uri": "",
         "modified": "false", "seconds": ""}]
    assert [r["slice_id"] for r in export_corrections(store, round=3)] == ["sub-002/010"]
    # recorded_at (for retraining's choice between two corrections of a slice): the group's latest, not a column
    latest: dict[tuple[str, str], str] = {}
    for c in store.iter_corrections():
        latest[(c.job, c.slice_id)] = max(latest.get((c.job, c.slice_id), ""), c.recorded_at or "")
    timed = export_corrections(store, recorded_at=True)
    assert [r["recorded_at"] for r in timed] == [latest[(r["job"], r["slice_id"])] for r in timed]
    assert all(r["recorded_at"] for r in timed)
    assert all("recorded_at" not in r for r in export_corrections(store))


def test_votes_keep_seconds_on_task(store):
    it = _item()
    store.record_votes([(it, _vote(it, "w1", seconds=3.2)), (it, _vote(it, "w2"))])
    assert [v.seconds for v in store.iter_votes(item_id=it.item_id)] == [3.2, None]
    with pytest.raises(SegqaError, match="seconds on task"):
        _vote(it, "w3", seconds=-1)


def test_an_sqlite_store_from_before_corrections_gains_vote_seconds(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE votes (job TEXT NOT NULL, item_id TEXT NOT NULL, worker_id TEXT NOT NULL, "
                       "round TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT, comment TEXT, submitted_at TEXT "
                       "NOT NULL DEFAULT '', recorded_at TEXT NOT NULL, PRIMARY KEY (job, item_id, worker_id));")
    conn.close()
    st = open_store(f"sqlite:///{path}")
    it = _item()
    st.record_votes([(it, _vote(it, "w1", seconds=2.0))])
    assert [v.seconds for v in st.iter_votes()] == [2.0]


def test_items_changed_since_a_time(store, monkeypatch):
    """``updated_since`` keeps the items whose counts changed at or after a time (DynamoDB: the
    ``by_class_updated`` index), whatever round they belong to."""
    import qa_workflow.confirmations.dynamodb as dynamo_engine
    import qa_workflow.confirmations.sqlite as sqlite_engine

    def at(moment: str) -> None:
        for engine in (dynamo_engine, sqlite_engine):
            monkeypatch.setattr(engine, "utc_now_iso", lambda timespec="seconds": moment)

    old, touched, gm = _item(1), _item(2), _item(3, "gray_matter")
    at("2026-01-01T00:00:00.000Z")
    store.record_votes([(old, _vote(old, "w1")), (touched, _vote(touched, "w1")), (gm, _vote(gm, "w1"))])
    at("2026-01-01T01:00:00.000Z")
    new = _item(4, rnd="2")
    store.record_votes([(touched, _vote(touched, "w2", "reject")), (new, _vote(new, "w1"))])

    changed = list(store.iter_items(class_name="csf", updated_since="2026-01-01T00:30:00.000Z"))
    assert [(s.item.item_id, s.item.round, s.outcome) for s in changed] == [
        ("sub-001/002/csf", "1", "split"), ("sub-001/004/csf", "2", "accept")]
    assert changed[0].updated_at == "2026-01-01T01:00:00.000Z"
    assert len(list(store.iter_items(class_name="csf", updated_since="2026-01-01T00:00:00.000Z"))) == 3  # inclusive
    assert list(store.iter_items(class_name="gray_matter", updated_since="2026-01-01T00:30:00.000Z")) == []
    assert [s.item.item_id for s in store.iter_items(updated_since="2026-01-01T00:30:00.000Z", round=1)] == [
        "sub-001/002/csf"]
