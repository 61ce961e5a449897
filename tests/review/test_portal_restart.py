"""Durability: an acknowledged submission survives `kill -9`, and a restart double-counts nothing.

The server is the real command (`python -m qa_workflow review serve ...`) in a subprocess; reviewers talk to it
over HTTP like browsers (cookies, CSRF token, Origin header).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.review.portal.service import PortalSettings, ReviewService, open_portal_db

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.args, self.port, self.log = args, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("SEGQA_STORE", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "qa_workflow", *self.args, "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


class Reviewer:
    """A browser-like HTTP client: keeps the session cookie, sends the CSRF token and the Origin header."""

    def __init__(self, base: str, token: str, csrf_of) -> None:
        self.csrf_of = csrf_of
        self.base = base
        self.http = httpx.Client(base_url=base, headers={"origin": base}, timeout=30)
        page = self.http.get(f"/login?token={token}")
        resp = self.http.post("/login", data={"token": token, "csrf_token": csrf_of(page.text)}, follow_redirects=True)
        assert "You have reviewed" in resp.text, resp.text[:300]

    def take(self) -> int:
        home = self.http.get("/")
        resp = self.http.post("/tasks/next", data={"csrf_token": self.csrf_of(home.text)})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/tasks/"), resp.headers
        return int(resp.headers["location"].rsplit("/", 1)[1])

    def submit(self, aid: int, form: dict) -> dict:
        csrf = self.csrf_of(self.http.get("/").text)
        resp = self.http.post(f"/tasks/{aid}/submit", content=json.dumps(form),
                              headers={"content-type": "application/json", "x-csrf-token": csrf})
        assert resp.status_code == 200, resp.text
        return resp.json()


def _counts(store_uri: str) -> dict[str, tuple[int, int]]:
    st = open_store(store_uri, create=False)
    try:
        return {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in st.iter_items()}
    finally:
        st.close()


def _wait_complete(operator: Reviewer, n: int, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = operator.http.get("/operator/api/progress").json()
        if progress["objects_by_status"].get("complete", 0) >= n:
            return progress
        time.sleep(0.1)
    raise AssertionError(f"not {n} batches complete: {progress['objects_by_status']}")


def test_kill9_and_restart_lose_nothing_and_double_count_nothing(tmp_path, csrf_of, decisions_form,
                                                                 make_round, free_port):
    rnd = make_round(tmp_path, n_batches=2, n_items=4, with_truth=False)
    pdir, store_uri = tmp_path / "portal", f"sqlite:///{tmp_path}/store.sqlite"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = {}
    for name in ("ann", "ben", "ops"):
        db = open_portal_db(pdir)
        tokens[name] = db.add_reviewer(name, is_operator=name == "ops", link_ttl_s=3600, now=time.time())
        db.close()
    server = Server(["review", "serve", "--round", str(rnd.root), "--portal-dir", str(pdir), "--store", store_uri,
                     "--reviewers-per-object", "2", "--min-view-ms", "0"], port, tmp_path / "server.log")
    try:
        server.start()
        ann, ben, ops = (Reviewer(base, tokens[n], csrf_of) for n in ("ann", "ben", "ops"))
        b0, b1 = rnd.batches
        reject = {b0["items"][0]["item_id"]: ("over_segmented", None)}
        assert ann.submit(ann.take(), decisions_form(b0, reject))["status"] == "recorded"
        assert ben.submit(ben.take(), decisions_form(b0))["status"] == "recorded"
        ann_b1 = ann.take()
        assert ann.submit(ann_b1, decisions_form(b1))["status"] == "recorded"
        server.kill9()  # right after the acknowledgment; batch 0's consolidation may or may not have run

        server.start()
        progress = _wait_complete(ops, 1)
        assert [o["answers"] for o in progress["objects"]] == [2, 1]  # all three acknowledged answers survived
        counts = _counts(store_uri)
        ids0 = [it["item_id"] for it in b0["items"]]
        assert counts == {iid: ((1, 1) if iid in reject else (2, 0)) for iid in ids0}

        # Sessions survived too; Ben finishes batch 1; Ann's repeated submit changes nothing.
        assert ben.submit(ben.take(), decisions_form(b1))["status"] == "recorded"
        assert ann.submit(ann_b1, decisions_form(b1, {b1["items"][0]["item_id"]: ("other", None)}))["status"] \
            == "duplicate"
        _wait_complete(ops, 2)
        expected = {**counts, **{it["item_id"]: (2, 0) for it in b1["items"]}}
        assert _counts(store_uri) == expected

        server.kill9()
        server.start()  # recovery runs again: nothing changes
        progress = _wait_complete(ops, 2)
        assert progress["answers"] == 4
        assert _counts(store_uri) == expected
    finally:
        server.stop()


def test_consolidation_interrupted_after_the_handler_is_redone_exactly_once(tmp_path, monkeypatch,
                                                                            decisions_form, make_round):
    """A crash between the post-labeling handler's store writes and the portal marking the object complete:
    the restarted portal calls the handler again with the same answers, and the store counts stay exact."""
    rnd = make_round(tmp_path, n_batches=1, n_items=5, with_truth=False)
    pdir, store_uri = tmp_path / "portal", f"sqlite:///{tmp_path}/store.sqlite"
    db = open_portal_db(pdir)
    for name in ("ann", "ben"):
        db.add_reviewer(name, is_operator=False, link_ttl_s=3600, now=time.time())
    db.close()
    settings = dict(portal_dir=pdir, round_uri=str(rnd.root), store_uri=store_uri, reviewers_per_object=2,
                    consolidate_in_background=False, min_view_ms=0)
    service = ReviewService(PortalSettings(**settings))
    service.start()
    for reviewer in service.db.reviewers():
        a = service.next_task(reviewer)
        assert service.submit(reviewer, a, decisions_form(rnd.batches[0])).object_ready is (reviewer.name == "ben")

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("simulated crash after the handler wrote the votes")

    monkeypatch.setattr(service.db, "mark_consolidated", crash)
    with pytest.raises(KeyboardInterrupt):
        service.consolidate_ready()
    once = _counts(store_uri)
    assert set(once.values()) == {(2, 0)} and len(once) == 5
    service.stop()
    clear_store_cache()

    restarted = ReviewService(PortalSettings(**settings))
    restarted.start()  # recovery: the object is still "ready", so it is consolidated again
    assert restarted.progress()["objects_by_status"] == {"complete": 1}
    assert _counts(store_uri) == once
    restarted.stop()
    clear_store_cache()
