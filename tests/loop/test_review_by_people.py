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

    def chained_tasks(cfg, ws, path, rid, verify_job, corrected=()):
        asked.append((path, verify_job, set(corrected)))
        tasks = SimpleNamespace(manifest=str(chained_manifest), slices=rejected_slices) if rejected_slices else None
        return tasks, demo.Chained(sent=len(rejected_slices), deferred=0)

    monkeypatch.setattr(demo, "_chained_tasks", chained_tasks)
    served: list[tuple] = []
    ws = SimpleNamespace(store_uri=f"sqlite:///{tmp_path}/store.sqlite")
    batched = SimpleNamespace(batches=batches, adjust={"manifest": str(routed), "slices": ["sub-001/002"]})
    chained = demo._review_by_people(lambda path, store: served.append((Path(path), store)), demo.LoopConfig(), ws,
                                     round_path, "round-01", batched)
    return chained.sent, served, asked, round_path, routed, chained_manifest, ws


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


def test_the_chained_job_sends_what_the_budget_left_pays_for_most_rejected_slices_first():
    rejected = ["sub-001/004/csf", "sub-002/001/csf", "sub-002/001/white_matter", "sub-003/007/gray_matter",
                "sub-001/004/gray_matter", "sub-004/000/csf"]
    sent, chained = demo.chain_within_budget(rejected, None, 60.0)
    assert sent == rejected[:1] + rejected[4:5] + rejected[1:4] + rejected[5:] and chained == demo.Chained(4, 0)
    sent, chained = demo.chain_within_budget(rejected, 150.0, 60.0)  # pays for two slices
    assert chained == demo.Chained(sent=2, deferred=2)
    assert sent == ["sub-001/004/csf", "sub-001/004/gray_matter", "sub-002/001/csf", "sub-002/001/white_matter"]
    assert demo.chain_within_budget(rejected, -30.0, 60.0) == ([], demo.Chained(sent=0, deferred=4))
