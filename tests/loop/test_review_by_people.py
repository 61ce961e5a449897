"""`segqa demo --interactive`: a round's verify batches, routed adjust tasks and chained adjust job all go to people."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from qa_workflow.loop import demo
from qa_workflow.review.portal.labeling import job_name_for


def _setup(tmp_path: Path, monkeypatch, batches: list, rejected_slices: list[str]):
    round_path = tmp_path / "round"
    (round_path / "adjust" / "routed").mkdir(parents=True)
    (round_path / "manifest.jsonl").write_text("{}\n")
    routed = round_path / "adjust" / "routed" / "manifest.jsonl"
    routed.write_text("{}\n")
    chained_manifest = round_path / "adjust" / "job" / "manifest.jsonl"
    asked: list[tuple] = []

    def chained_tasks(ws, path, verify_job, corrected=()):
        asked.append((path, verify_job, set(corrected)))
        return SimpleNamespace(manifest=str(chained_manifest), slices=rejected_slices) if rejected_slices else None

    monkeypatch.setattr(demo, "_chained_tasks", chained_tasks)
    served: list[tuple] = []
    ws = SimpleNamespace(store_uri=f"sqlite:///{tmp_path}/store.sqlite")
    batched = SimpleNamespace(batches=batches, adjust={"manifest": str(routed), "slices": ["sub-001/002"]})
    n = demo._review_by_people(lambda path, store: served.append((Path(path), store)), ws, round_path, batched)
    return n, served, asked, round_path, routed, chained_manifest, ws


def test_verify_then_routed_then_the_chained_job_of_the_portal_verify_job(tmp_path, monkeypatch):
    n, served, asked, round_path, routed, chained, ws = _setup(tmp_path, monkeypatch, [{"batch_id": "b1"}],
                                                               ["sub-002/004", "sub-003/001"])
    assert served == [(round_path, ws.store_uri), (routed, ws.store_uri), (chained, ws.store_uri)]
    assert n == 2
    # the chained job is built from the votes of the job the portal ran (its name comes from the manifest's
    # location), and leaves out the slices already corrected as routed tasks
    assert asked == [(round_path, job_name_for(str(round_path / "manifest.jsonl")), {"sub-001/002"})]


def test_nothing_rejected_or_nothing_verified_serves_no_chained_job(tmp_path, monkeypatch):
    n, served, asked, *_ = _setup(tmp_path / "a", monkeypatch, [{"batch_id": "b1"}], [])
    assert n == 0 and len(served) == 2 and len(asked) == 1
    n, served, asked, _, routed, *_ = _setup(tmp_path / "b", monkeypatch, [], ["sub-002/004"])
    assert n == 0 and [p for p, _ in served] == [routed] and asked == []
