"""The portal serving an escalation job: the people who already voted on a batch's masks in the verify job are
not given that batch again, so the second opinion is other people's (and nobody's vote counts twice)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from qa_workflow.confirmations.records import ItemRecord, Vote
from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.contract import SegqaError
from qa_workflow.review.portal.app import create_app
from qa_workflow.review.portal.service import PortalSettings, ReviewService, open_portal_db
from qa_workflow.rounds.escalating import source_job_of

PEOPLE = ("alice", "bob", "carol", "dave")


@pytest.fixture
def escalation(tmp_path, make_round):
    """A 3-batch round; its batches re-served as the escalation of job ``verify-1``, in whose store alice and
    bob voted on batch 0 and carol on batch 1 (batch 2 split on simulated people)."""
    rnd = make_round(tmp_path, n_batches=3, n_items=4, with_truth=False)
    manifest = tmp_path / "dest" / "escalate" / "verify-1" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(rnd.manifest.read_text())
    store_uri = f"sqlite:///{tmp_path}/store.sqlite"
    store = open_store(store_uri)
    voters = {0: ("alice", "bob"), 1: ("carol",), 2: ("sim-reviewer-1",)}
    for b, names in voters.items():
        for it in rnd.batches[b]["items"]:
            item = ItemRecord(it["item_id"], it["class_name"], float(it["confidence"]), "r1", slice_id=it["slice_id"])
            store.record_votes([(item, Vote("verify-1", it["item_id"], f"private.local.{n}", "accept"))
                                for n in names])
    store.close()
    pdir = tmp_path / "portal"
    db = open_portal_db(pdir)
    tokens = {n: db.add_reviewer(n, is_operator=n == "dave", link_ttl_s=3600, now=time.time()) for n in PEOPLE}
    db.close()
    yield {"round": rnd, "manifest": manifest, "store_uri": store_uri, "portal_dir": pdir, "tokens": tokens}
    clear_store_cache()


def _service(esc, **settings) -> ReviewService:
    service = ReviewService(PortalSettings(
        portal_dir=esc["portal_dir"], round_uri=str(esc["manifest"]), store_uri=esc["store_uri"],
        reviewers_per_object=2, consolidate_in_background=False, min_view_ms=0, **settings))
    service.start()
    return service


def _review_all(service, decisions_form, batches) -> dict[str, list[int]]:
    """Everyone takes and answers batches until nothing is left for them; returns who got which objects."""
    got: dict[str, list[int]] = {}
    for reviewer in sorted(service.db.reviewers(), key=lambda r: r.name):
        while (a := service.next_task(reviewer)) is not None:
            service.submit(reviewer, a, decisions_form(batches[a.object_id]))
            got.setdefault(reviewer.name, []).append(a.object_id)
    return got


def test_the_source_job_is_read_from_where_escalation_batches_are_written():
    assert source_job_of("/d/escalate/verify-1/manifest.jsonl") == "verify-1"
    assert source_job_of("s3://b/r2/escalate/segqa-review-r2-round-3f9a2c/manifest.jsonl") == \
        "segqa-review-r2-round-3f9a2c"
    assert source_job_of("/d/round/manifest.jsonl") is None
    assert source_job_of("/d/adjust/verify-1/manifest.jsonl") is None
    assert source_job_of("/d/escalate/verify-1/other.jsonl") is None


def test_an_escalation_batch_goes_to_people_who_did_not_vote_on_its_masks(escalation, decisions_form):
    service = _service(escalation)
    assert service.exclude_voters_of == ("verify-1",)
    assert service.progress()["excluded"] == 4  # alice and bob on batch 0, carol on 1, sim-reviewer-1 on 2
    alice = next(r for r in service.db.reviewers() if r.name == "alice")
    assert service.db.reviewer_progress(service.job_id, alice.id) == \
        {"reviewed": 0, "total": 2, "excluded": 1, "complete": 0}

    got = _review_all(service, decisions_form, escalation["round"].batches)
    assert got == {"alice": [1, 2], "bob": [1, 2], "carol": [0], "dave": [0]}
    service.consolidate_ready()
    assert service.progress()["objects_by_status"] == {"complete": 3}
    store = open_store(escalation["store_uri"], create=False)
    try:
        batch0 = {it["item_id"] for it in escalation["round"].batches[0]["items"]}
        second = {v.worker_id for v in store.iter_votes(job=service.job_cfg.name) if v.item_id in batch0}
        assert second == {"private.local.carol", "private.local.dave"}
        assert all(store.get_item(i).confirm_count == 4 for i in batch0)  # 2 first + 2 second, nobody twice
    finally:
        store.close()
    service.stop()
    clear_store_cache()

    again = _service(escalation)  # a restart reads the votes again and adds no pair twice
    assert again.exclude_earlier_voters(again.job_id) == 0 and again.progress()["excluded"] == 4
    again.stop()


def test_exclusion_can_be_named_or_turned_off_and_needs_the_verify_jobs_votes(escalation, decisions_form, tmp_path):
    off = _service(escalation, exclude_voters_of=(), job_name="esc-off")
    assert off.progress()["excluded"] == 0
    alice = next(r for r in off.db.reviewers() if r.name == "alice")
    assert off.next_task(alice).object_id == 0
    off.stop()
    clear_store_cache()

    with pytest.raises(SegqaError, match="no votes of job 'verify-9'"):
        _service(escalation, exclude_voters_of=("verify-9",), job_name="esc-typo")
    clear_store_cache()
    other = f"sqlite:///{tmp_path}/other.sqlite"
    with pytest.raises(SegqaError, match="no such store"):
        _service({**escalation, "store_uri": other}, job_name="esc-other")
    empty = open_store(other)
    empty.init()
    empty.close()
    with pytest.raises(SegqaError, match="other.sqlite: no votes of job 'verify-1'"):
        _service({**escalation, "store_uri": other}, job_name="esc-other")


def test_home_and_operator_pages_say_who_is_excluded(escalation, login):
    app = create_app(PortalSettings(portal_dir=escalation["portal_dir"], round_uri=str(escalation["manifest"]),
                                    store_uri=escalation["store_uri"], reviewers_per_object=2, min_view_ms=0))
    with TestClient(app) as alice, TestClient(app) as dave:
        home = login(alice, escalation["tokens"]["alice"]).text
        assert "0 of 2 batches" in home and "1 batch is\n        for other reviewers" in home
        login(dave, escalation["tokens"]["dave"])
        page = dave.get("/operator").text
        assert "nobody who voted on a batch's masks in verify-1" in page and "<th>Excluded</th>" in page
        progress = json.loads(dave.get("/operator/api/progress").text)
        assert progress["excluded_voters_of"] == ["verify-1"]
        assert [o["excluded"] for o in progress["objects"]] == [2, 1, 1]


def test_serve_stops_with_one_line_when_the_verify_jobs_votes_are_not_in_its_store(escalation, tmp_path, capsys):
    from qa_workflow.cli import main

    code = main(["review", "serve", "--round", str(escalation["manifest"].parent), "--store",
                 escalation["store_uri"], "--portal-dir", str(escalation["portal_dir"]),
                 "--exclude-voters-of", "verify-9"])
    err = capsys.readouterr().err
    assert code != 0 and "no votes of job 'verify-9'" in err and "Traceback" not in err
