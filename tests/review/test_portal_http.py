"""The review portal over HTTP (FastAPI TestClient): accounts, isolation, CSRF, assignment, the store.

The review portal over HTTP (FastAPI TestClient): accounts, isolation, CSRF, signed image URLs, traversal,
escaping, task assignment and the store behind it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.contract import SegqaError
from qa_workflow.review.portal.app import create_app
from qa_workflow.review.portal.service import PortalSettings, open_portal_db


@pytest.fixture
def portal(tmp_path, fake_clock, login, make_round):
    """A running portal over a 3-batch round (4 items each), 2 reviewers per batch, a settable clock that does
    not move by itself (so no minimum viewing time: the timed_portal tests cover it)."""
    yield from _portal(tmp_path, fake_clock, login, make_round, min_view_ms=0)


@pytest.fixture
def timed_portal(tmp_path, fake_clock, login, make_round):
    """The same portal with the review template's own minimum viewing time per card."""
    yield from _portal(tmp_path, fake_clock, login, make_round)


def _portal(tmp_path, fake_clock, login, make_round, **more):
    rnd = make_round(tmp_path, n_batches=3, n_items=4, with_truth=False)
    clock = fake_clock
    pdir = tmp_path / "portal"
    db = open_portal_db(pdir)
    tokens = {name: db.add_reviewer(name, is_operator=(name == "olga"), link_ttl_s=3600, now=clock())
              for name in ("alice", "bob", "carol", "olga")}
    db.close()
    store_uri = f"sqlite:///{tmp_path}/store.sqlite"
    settings = PortalSettings(portal_dir=pdir, round_uri=str(rnd.root), store_uri=store_uri,
                              reviewers_per_object=2, task_time_limit_s=600, url_ttl_s=300, clock=clock,
                              sweep_interval_s=0.2, **more)
    app = create_app(settings)
    clients = []

    def client(name: str | None = None) -> TestClient:
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        if name:
            login(c, tokens[name])
        return c

    yield {"app": app, "service": app.state.service, "round": rnd, "clock": clock, "tokens": tokens,
           "client": client, "store_uri": store_uri}
    for c in reversed(clients):
        c.__exit__(None, None, None)
    clear_store_cache()


@pytest.fixture
def submit(csrf_of):
    """``submit(client, aid, form, csrf=None, **headers)``: post a decisions form for assignment ``aid`` as the
    task page's script does (with the page's CSRF token unless ``csrf`` is given)."""
    def submit(client, aid, form, csrf=None, content_override=None, **headers):
        if csrf is None:
            csrf = csrf_of(client.get(f"/tasks/{aid}").text)
        return client.post(f"/tasks/{aid}/submit", content=json.dumps(form) if content_override is None
                           else content_override,
                           headers={"content-type": "application/json", "x-csrf-token": csrf,
                                    "origin": str(client.base_url), **headers})
    return submit


def _votes(store_uri):
    st = open_store(store_uri, create=False)
    try:
        return {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in st.iter_items()}
    finally:
        st.close()


# -- login and sessions -------------------------------------------------------------------------------------

def test_login_token_works_once_and_unknown_tokens_are_refused(portal, csrf_of, login):
    c = portal["client"]()
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    login(c, portal["tokens"]["alice"])
    assert "Hello alice" in c.get("/").text

    again = portal["client"]()
    page = again.get(f"/login?token={portal['tokens']['alice']}")
    resp = again.post("/login", data={"token": portal["tokens"]["alice"], "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 400 and "already used" in resp.text
    resp = again.post("/login", data={"token": "not-a-token", "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 400
    # The sign-in form itself needs the double-submit token (login CSRF).
    fresh = portal["client"]()
    resp = fresh.post("/login", data={"token": portal["tokens"]["bob"], "csrf_token": "forged"})
    assert resp.status_code == 403
    login(fresh, portal["tokens"]["bob"])  # the token was not consumed by the refused attempt


def test_session_cookie_is_httponly_and_strict(portal, csrf_of):
    c = portal["client"]()
    page = c.get(f"/login?token={portal['tokens']['alice']}")
    resp = c.post("/login", data={"token": portal["tokens"]["alice"], "csrf_token": csrf_of(page.text)},
                  follow_redirects=False)
    cookie = resp.headers["set-cookie"].lower()
    assert "segqa_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie


# -- isolation and CSRF -------------------------------------------------------------------------------------

def test_another_reviewers_task_is_not_reachable(portal, csrf_of, decisions_form, take_task, submit):
    alice, bob = portal["client"]("alice"), portal["client"]("bob")
    aid, _ = take_task(alice)
    assert bob.get(f"/tasks/{aid}").status_code == 404
    batch = portal["round"].batches[0]
    assert submit(bob, aid, decisions_form(batch), csrf=csrf_of(bob.get("/").text)).status_code == 404
    resp = bob.post(f"/tasks/{aid}/release", data={"csrf_token": csrf_of(bob.get("/").text)})
    assert resp.status_code == 404
    # Alice's task is untouched by Bob's attempts.
    assert alice.get(f"/tasks/{aid}").status_code == 200
    assert submit(alice, aid, decisions_form(batch)).json()["status"] == "recorded"


def test_forged_or_missing_csrf_is_refused(portal, csrf_of, decisions_form, take_task, submit):
    alice = portal["client"]("alice")
    aid, html = take_task(alice)
    form = decisions_form(portal["round"].batches[0])
    no_token = alice.post(f"/tasks/{aid}/submit", json=form)
    assert no_token.status_code == 403
    assert submit(alice, aid, form, csrf="forged-token").status_code == 403
    bob = portal["client"]("bob")  # a valid token, but of another session
    assert submit(alice, aid, form, csrf=csrf_of(bob.get("/").text)).status_code == 403
    # A right token from a foreign origin (a page elsewhere posting into the portal) is refused too.
    assert submit(alice, aid, form, origin="https://evil.example").status_code == 403
    # Form posts: next task and release need the token as well.
    assert alice.post("/tasks/next", data={}).status_code == 403
    assert alice.post(f"/tasks/{aid}/release", data={"csrf_token": "x"}).status_code == 403
    assert portal["service"].db.assignment(aid).status == "active"
    assert submit(alice, aid, form, csrf=csrf_of(html)).status_code == 200


# -- signed image URLs ----------------------------------------------------------------------------------------

def test_signed_image_url_expires_and_is_bound_to_one_file_and_reviewer(portal, take_task):
    alice = portal["client"]("alice")
    _, html = take_task(alice)
    urls = re.findall(r'\ssrc="(/assets/[^"]+)"', html)  # the overlays (not data-*-src)
    assert len(urls) == 4 and all("/round/" not in u and ".png" not in u for u in urls)  # no paths exposed
    ok = alice.get(urls[0])
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.content[:4] == b"\x89PNG"

    # Another file: swap the asset digest of one URL into the signature of another.
    digest0, rest0 = urls[0].split("/")[-1].split(".", 1)
    digest1 = urls[1].split("/")[-1].split(".", 1)[0]
    assert digest0 != digest1
    assert alice.get(f"/assets/{digest1}.{rest0}").status_code == 403
    # A later expiry (the signature covers it).
    d, exp, rev, sig = urls[0].split("/")[-1].split(".")
    assert alice.get(f"/assets/{d}.{int(exp) + 3600}.{rev}.{sig}").status_code == 403
    # Another reviewer cannot use Alice's URL, and nobody without a session can.
    assert portal["client"]("bob").get(urls[0]).status_code == 403
    assert portal["client"]().get(urls[0]).status_code == 401

    # The links live as long as the task (600 s here), not just --url-ttl (300 s): a slow reviewer keeps them.
    portal["clock"].advance(300 + 61)
    assert alice.get(urls[0]).status_code == 200
    portal["clock"].advance(300)  # past the task's end (rounded up to the minute)
    expired = alice.get(urls[0])
    assert expired.status_code == 403 and "expired" in expired.text


def test_only_granted_image_files_are_served(portal, take_task):
    service = portal["service"]
    alice = portal["client"]("alice")
    take_task(alice)
    reviewer = service.db.session(alice.cookies.get("segqa_session"), portal["clock"]()).reviewer
    grant = service.grant_for(reviewer)
    # A grant for a file that is not an image (the batch JSON) does not serve it.
    json_url = grant(str(portal["round"].root / "batches" / f"{portal['round'].batches[0]['batch_id']}.json"))
    grant.flush()
    assert alice.get(json_url).status_code == 403
    # A task names its files, but a task is data: outside the round folder nothing is served, whatever the URI
    # says (a fragment or query dressing a file up as a PNG, a relative path climbing out, another PNG outside).
    outside = portal["round"].root.parent / "elsewhere.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    inside = next((portal["round"].root / "overlays").rglob("*.png"))
    urls = [grant(u) for u in ("file:///etc/passwd#.png", "file:///etc/passwd?x=.png", str(outside),
                               os.path.relpath("/etc/passwd", Path.cwd()) + "#.png",
                               str(portal["round"].root / ".." / outside.name), str(inside))]
    grant.flush()
    assert [alice.get(u).status_code for u in urls] == [403, 403, 403, 403, 403, 200]


@pytest.mark.parametrize("path", [
    "/assets/..%2F..%2F..%2Fetc%2Fpasswd",
    "/assets/../../etc/passwd",
    "/static/..%2Fservice.py",
    "/static/../db.py",
    "/static/%2e%2e/app.py",
    "/tasks/..%2F1",
    "/tasks/1%2F..%2F..%2Fetc%2Fpasswd",
    "/operator/objects/..%2F0",
    "/login?token=../../etc/passwd",
])
def test_path_traversal_is_refused(portal, path):
    olga = portal["client"]("olga")
    resp = olga.get(path)
    body = resp.text
    assert "root:" not in body and "import " not in body and "def " not in body
    if not path.startswith("/login"):
        assert resp.status_code in (400, 401, 403, 404)


def test_html_in_a_comment_is_escaped_when_shown_back(portal, decisions_form, take_task, submit):
    alice = portal["client"]("alice")
    aid, _ = take_task(alice)
    batch = portal["round"].batches[0]
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    form = decisions_form(batch, reject={batch["items"][0]["item_id"]: ("other", evil)})
    assert submit(alice, aid, form).status_code == 200
    home = alice.get("/").text
    assert evil not in home and "&lt;script&gt;alert(" in home
    detail = portal["client"]("olga").get("/operator/objects/0").text
    assert evil not in detail and "&lt;img src=x onerror=alert(1)&gt;" in detail


# -- assignment -------------------------------------------------------------------------------------------------

def test_n_reviewers_per_object_never_the_same_object_twice(portal, csrf_of, decisions_form, submit):
    service, rnd = portal["service"], portal["round"]
    seen: dict[str, list[int]] = {}
    for name in ("alice", "bob", "carol"):
        c = portal["client"](name)
        while True:
            home = c.get("/")
            resp = c.post("/tasks/next", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
            if "/tasks/" not in resp.headers["location"]:
                break
            aid = int(resp.headers["location"].rsplit("/", 1)[1])
            a = service.db.assignment(aid)
            seen.setdefault(name, []).append(a.object_id)
            assert submit(c, aid, decisions_form(rnd.batches[a.object_id])).status_code == 200
    # 3 batches x 2 reviewers = 6 answers; nobody answered a batch twice.
    assert sum(len(v) for v in seen.values()) == 6
    assert all(len(v) == len(set(v)) for v in seen.values())
    assert service.wait_idle(20)
    progress = service.progress()
    assert progress["objects_by_status"] == {"complete": 3}
    assert all(o["answers"] == 2 for o in progress["objects"])
    votes = _votes(portal["store_uri"])
    assert len(votes) == 12 and set(votes.values()) == {(2, 0)}


def test_a_task_not_submitted_in_time_is_released_to_someone_else(portal, csrf_of, decisions_form,
                                                                  take_task, submit):
    service, rnd, clock = portal["service"], portal["round"], portal["clock"]
    alice, bob, carol = (portal["client"](n) for n in ("alice", "bob", "carol"))
    a_id, _ = take_task(alice)
    b_id, _ = take_task(bob)
    assert service.db.assignment(a_id).object_id == service.db.assignment(b_id).object_id == 0
    c_id, _ = take_task(carol)
    assert service.db.assignment(c_id).object_id == 1  # batch 0 has its 2 reviewers
    submit(carol, c_id, decisions_form(rnd.batches[1]))
    alice_csrf = csrf_of(alice.get(f"/tasks/{a_id}").text)
    clock.advance(601)  # Alice's and Bob's time limit passes
    assert alice.get(f"/tasks/{a_id}", follow_redirects=False).headers["location"] == "/?notice=gone"
    c2_id, _ = take_task(carol)
    assert service.db.assignment(c2_id).object_id == 0  # the slot went to Carol
    # Bob comes back late: one slot of batch 0 is still free, so his answer counts.
    assert submit(bob, b_id, decisions_form(rnd.batches[0]), csrf=csrf_of(bob.get("/").text)).json()["status"] \
        == "recorded"
    # Alice comes back late too: both slots are taken now, so hers is refused, clearly.
    late = submit(alice, a_id, decisions_form(rnd.batches[0]), csrf=alice_csrf)
    assert late.status_code == 409 and "time limit" in late.json()["detail"]
    # Alice never gets batch 0 again.
    a2_id, _ = take_task(alice)
    assert service.db.assignment(a2_id).object_id != 0


def test_released_task_is_not_given_back_to_the_same_reviewer(portal, csrf_of, take_task):
    service = portal["service"]
    alice = portal["client"]("alice")
    aid, html = take_task(alice)
    resp = alice.post(f"/tasks/{aid}/release", data={"csrf_token": csrf_of(html)}, follow_redirects=False)
    assert resp.headers["location"] == "/?notice=released"
    next_id, _ = take_task(alice)
    assert service.db.assignment(next_id).object_id == 1


def test_incomplete_or_foreign_decisions_are_refused_by_the_server(portal, csrf_of, decisions_form,
                                                                   take_task, submit):
    alice = portal["client"]("alice")
    aid, _ = take_task(alice)
    batch = portal["round"].batches[0]
    form = decisions_form(batch)
    decisions = json.loads(form["decisions"])
    partial = {**form, "decisions": json.dumps(decisions[:-1])}
    resp = submit(alice, aid, partial)
    assert resp.status_code == 422 and "no decision" in resp.json()["detail"]
    stranger = {"item_id": "sub-999/001/gray_matter", "decision": "accept"}
    foreign = {**form, "decisions": json.dumps([*decisions, stranger])}
    assert submit(alice, aid, foreign).status_code == 422
    assert submit(alice, aid, {"something": "else"}).status_code == 422
    assert alice.post(f"/tasks/{aid}/submit", content=b"{not json",
                      headers={"x-csrf-token": csrf_of(alice.get("/").text)}).status_code == 400
    assert portal["service"].db.assignment(aid).status == "active"


def test_malformed_answers_are_client_errors_and_leave_the_task_open(portal, decisions_form, take_task, submit):
    alice = portal["client"]("alice")
    aid, _ = take_task(alice)
    form = decisions_form(portal["round"].batches[0])
    nested = submit(alice, aid, None, content_override="[" * 100_000 + "]" * 100_000)
    assert nested.status_code == 400
    assert submit(alice, aid, {**form, "note": "\ud800"}).status_code == 422  # a lone surrogate
    assert submit(alice, aid, form).json()["status"] == "recorded"


def test_the_public_url_is_compared_as_browsers_send_the_origin(tmp_path):
    for given in ("https://Review.Example.org:443", "https://review.example.org/", "https://review.example.org"):
        settings = PortalSettings(portal_dir=tmp_path / "p", round_uri=str(tmp_path), public_url=given)
        assert settings.public_url == "https://review.example.org", given
    assert PortalSettings(portal_dir=tmp_path / "p", round_uri=str(tmp_path),
                          public_url="http://10.0.0.5:8080").public_url == "http://10.0.0.5:8080"


def test_repeated_submit_changes_nothing(portal, csrf_of, decisions_form, take_task, submit):
    service, rnd = portal["service"], portal["round"]
    alice, bob = portal["client"]("alice"), portal["client"]("bob")
    ids = []
    for c in (alice, bob):
        aid, _ = take_task(c)
        ids.append((c, aid))
        assert submit(c, aid, decisions_form(rnd.batches[0])).json()["status"] == "recorded"
    assert service.wait_idle(20)
    before = _votes(portal["store_uri"])
    c, aid = ids[0]
    rejected = decisions_form(rnd.batches[0], reject={rnd.batches[0]["items"][0]["item_id"]: ("other", None)})
    again = submit(c, aid, rejected, csrf=csrf_of(c.get("/").text))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    service.consolidate_ready()
    assert _votes(portal["store_uri"]) == before and set(before.values()) == {(2, 0)}


# -- minimum viewing time ------------------------------------------------------------------------------------

def test_the_minimum_viewing_time_is_the_templates_setting(timed_portal, tmp_path):
    from qa_workflow.review import templates

    service = timed_portal["service"]
    text = templates.MASK_REVIEW_TEMPLATE.read_text()
    assert service.min_view_ms == templates.min_view_ms(text) == 600  # one definition: the template's attribute
    assert 'data-min-view-ms="0"' in templates.with_min_view_ms(text, 0)
    with pytest.raises(SegqaError, match="data-min-view-ms"):
        templates.with_min_view_ms(templates.MASK_ADJUST_TEMPLATE.read_text(), 500, "adjust")
    assert templates.min_view_ms("<div>no cards</div>") == 0
    with pytest.raises(SegqaError, match="whole number"):
        templates.min_view_ms('<div data-min-view-ms="0.5s">')


def test_an_answer_sooner_than_cards_times_the_minimum_is_refused(timed_portal, csrf_of, decisions_form, take_task,
                                                                   submit):
    service, rnd, clock = timed_portal["service"], timed_portal["round"], timed_portal["clock"]
    alice = timed_portal["client"]("alice")
    aid, html = take_task(alice)  # the task page was served now
    assert 'data-min-view-ms="600"' in html
    batch = next(b for b in rnd.batches if f'data-batch-id="{b["batch_id"]}"' in html)
    form = decisions_form(batch)
    csrf = csrf_of(html)
    clock.advance(2.3)  # 4 cards x 0.6 s = 2.4 s
    resp = submit(alice, aid, form, csrf=csrf)
    assert resp.status_code == 422 and resp.json()["reason"] == "too_soon"
    assert "its 4 masks need at least 2.4 s (0.6 s each)" in resp.json()["detail"]
    assert resp.headers["retry-after"] == "1" and resp.json()["wait_s"] == 0.1
    assert service.db.assignment(aid).status == "active" and service.db.responses(service.job_id) == []
    # A reload starts the count again, as the page's script does.
    assert alice.get(f"/tasks/{aid}").status_code == 200
    clock.advance(2.3)
    assert submit(alice, aid, form, csrf=csrf).status_code == 422
    # An answer that decides a card twice (e.g. a late re-accept) is refused, whatever the timing.
    clock.advance(0.2)
    twice = {**form, "decisions": json.dumps([*json.loads(form["decisions"]),
                                              {"item_id": batch["items"][0]["item_id"], "decision": "accept"}])}
    resp = submit(alice, aid, twice, csrf=csrf)
    assert resp.status_code == 422 and "decided twice" in resp.json()["detail"]
    assert submit(alice, aid, form, csrf=csrf).json()["status"] == "recorded"
    # Once recorded, a second answer (at once, with other decisions) changes nothing, and says so.
    other = decisions_form(batch, reject={batch["items"][0]["item_id"]: ("other", None)})
    again = submit(alice, aid, other, csrf=csrf)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert json.loads(json.loads(service.db.response_content(aid))["decisions"]) == json.loads(form["decisions"])


def test_an_answer_to_a_task_never_shown_is_refused(timed_portal, csrf_of, decisions_form, submit):
    service, clock = timed_portal["service"], timed_portal["clock"]
    alice = timed_portal["client"]("alice")
    home = alice.get("/")
    resp = alice.post("/tasks/next", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False,
                      headers={"origin": str(alice.base_url)})
    aid = int(resp.headers["location"].rsplit("/", 1)[1])  # taken, but its page never loaded
    clock.advance(60)
    batch = timed_portal["round"].batches[service.db.assignment(aid).object_id]
    resp = submit(alice, aid, decisions_form(batch), csrf=csrf_of(home.text))
    assert resp.status_code == 422 and "never shown to you" in resp.json()["detail"]
    assert service.db.responses(service.job_id) == []


def test_after_a_restart_a_task_counts_from_when_it_was_handed_out(tmp_path, fake_clock, make_round,
                                                                   decisions_form):
    from qa_workflow.review.portal.service import ReviewService, TooSoon

    rnd = make_round(tmp_path, n_batches=1, n_items=5, with_truth=False)
    db = open_portal_db(tmp_path / "portal")
    db.add_reviewer("ann", is_operator=False, link_ttl_s=60, now=fake_clock())
    db.close()
    settings = dict(portal_dir=tmp_path / "portal", round_uri=str(rnd.root), store_uri=f"sqlite:///{tmp_path}/s.db",
                    reviewers_per_object=1, clock=fake_clock, consolidate_in_background=False)
    first = ReviewService(PortalSettings(**settings))
    first.start()
    (ann,) = first.db.reviewers()
    task = first.next_task(ann)
    first.render(ann, task, "n")
    first.stop()
    fake_clock.advance(1)
    restarted = ReviewService(PortalSettings(**settings))
    restarted.start()
    try:
        with pytest.raises(TooSoon, match="submitted 1.0 s after the task was shown; its 5 masks need at least 3 s"):
            restarted.submit(ann, task, decisions_form(rnd.batches[0]))
        fake_clock.advance(2)
        assert restarted.submit(ann, task, decisions_form(rnd.batches[0])).status == "recorded"
    finally:
        restarted.stop()
        clear_store_cache()


# -- operator ------------------------------------------------------------------------------------------------

def test_operator_page_progress_and_exports(portal, decisions_form, take_task, submit):
    rnd = portal["round"]
    alice, bob = portal["client"]("alice"), portal["client"]("bob")
    assert alice.get("/operator").status_code == 403
    olga = portal["client"]("olga")
    before = olga.get("/operator/export/reviews.csv")  # nothing answered yet: a header only
    assert before.status_code == 200 and before.text.startswith("item_id,class_name,") and before.text.count("\n") == 1
    batch = rnd.batches[0]
    reject = {batch["items"][1]["item_id"]: ("under_segmented", "misses the left insula")}
    for c in (alice, bob):
        aid, _ = take_task(c)
        submit(c, aid, decisions_form(batch, reject=reject if c is bob else None))
    assert portal["service"].wait_idle(20)
    page = olga.get("/operator").text
    assert "1 of 3 batches complete" in page and "alice" in page and "bob" in page
    api = olga.get("/operator/api/progress").json()
    by_name = {r["name"]: r for r in api["reviewers"]}
    assert by_name["alice"]["submitted"] == 1 and by_name["carol"]["submitted"] == 0
    assert api["objects"][0]["answers"] == 2 and api["objects"][0]["status"] == "complete"
    csv_text = olga.get("/operator/export/reviews.csv").text.splitlines()
    assert csv_text[0] == ("item_id,class_name,confidence,confirm_count,disconfirm_count,round,model_version,"
                           "subject,slice_id")
    rows = {line.split(",")[0]: line.split(",") for line in csv_text[1:]}
    assert rows[batch["items"][1]["item_id"]][3:5] == ["1", "1"]
    assert rows[batch["items"][0]["item_id"]][3:5] == ["2", "0"]
    lines = [json.loads(x) for x in olga.get("/operator/export/responses.jsonl").text.splitlines()]
    assert len(lines) == 1
    assert {a["workerId"] for a in lines[0]["answers"]} == {"private.local.alice", "private.local.bob"}
    label = lines[0]["consolidatedAnnotation"]["content"]["segqa-review"]
    assert label["summary"] == {"accept": 3, "reject": 0, "split": 1, "undecided": 0}


def test_security_headers_on_pages(portal, take_task):
    alice = portal["client"]("alice")
    _, html = take_task(alice)
    resp = alice.get("/")
    assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"
    task = alice.get(re.search(r'href="(/tasks/\d+)"', resp.text).group(1))
    csp = task.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    # Every script of the rendered template carries this response's nonce; the external loader is gone.
    scripts = re.findall(r"<script\b[^>]*>", task.text)
    inline = [s for s in scripts if "src=" not in s]
    assert inline and all(f'nonce="{nonce}"' in s for s in inline)
    assert "assets.crowd.aws" not in task.text and "/static/crowd-elements.js" in task.text
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_non_loopback_host_warns(tmp_path):
    from typer.testing import CliRunner

    from qa_workflow.cli import app
    from qa_workflow.cli.review import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    result = CliRunner().invoke(app, ["review", "serve", "--round", str(tmp_path / "missing"), "--host", "0.0.0.0",
                                      "--portal-dir", str(tmp_path / "p")])
    assert "put TLS in front" in result.output
    assert result.exit_code != 0 and "manifest.jsonl" in str(result.exception)


def test_invalid_batch_fails_its_object_only_and_lifetime_end_consolidates_what_is_there(
        tmp_path, decisions_form, fake_clock, make_round):
    """Pre-labeling raising marks that object failed (never a half task); when the task lifetime ends, a batch
    with some answers goes to the post-labeling handler with those, and one with none expires."""
    from qa_workflow.review.portal.service import ReviewService

    rnd = make_round(tmp_path, n_batches=2, n_items=3, with_truth=False)
    broken = rnd.root / "batches" / "broken.json"
    broken.write_text('{"batch_id": "r1-broken"}')
    with rnd.manifest.open("a") as fh:
        fh.write(json.dumps({"source-ref": str(broken)}) + "\n")
    clock = fake_clock
    db = open_portal_db(tmp_path / "portal")
    db.add_reviewer("ann", is_operator=False, link_ttl_s=60, now=clock())
    db.close()
    store_uri = f"sqlite:///{tmp_path}/store.sqlite"
    service = ReviewService(PortalSettings(portal_dir=tmp_path / "portal", round_uri=str(rnd.root),
                                           store_uri=store_uri, reviewers_per_object=3, task_time_limit_s=60,
                                           task_lifetime_s=3600, clock=clock, consolidate_in_background=False,
                                           min_view_ms=0))
    service.start()
    try:
        progress = service.progress()
        assert progress["objects_by_status"] == {"open": 2, "failed": 1}
        assert "missing field(s)" in progress["objects"][2]["error"]
        (ann,) = service.db.reviewers()
        task = service.next_task(ann)
        assert task.object_id == 0
        service.submit(ann, task, decisions_form(rnd.batches[0]))
        assert service.next_task(ann).object_id == 1  # failed objects are never handed out
        clock.advance(3601)
        service.db.sweep(service.job_id, clock())
        assert service.consolidate_ready() == 1
        assert service.progress()["objects_by_status"] == {"complete": 1, "expired": 1, "failed": 1}
        assert set(_votes(store_uri).values()) == {(1, 0)}
    finally:
        service.stop()
        clear_store_cache()


def test_a_broken_template_stops_serve_at_start(tmp_path, make_round):
    from qa_workflow.contract import SegqaError
    from qa_workflow.review.portal.service import ReviewService

    rnd = make_round(tmp_path, n_batches=1, n_items=2, with_truth=False)
    template = tmp_path / "broken.liquid.html"
    template.write_text("<crowd-form>{% for item in task.input.items %}{{ item.item_id }}</crowd-form>")
    service = ReviewService(PortalSettings(portal_dir=tmp_path / "portal", round_uri=str(rnd.root),
                                           store_uri=f"sqlite:///{tmp_path}/s.sqlite", template_uri=str(template)))
    with pytest.raises(SegqaError, match="broken.liquid.html"):
        service.start()
    assert not service.started
    service.stop()


# -- bad input (issue 16) ----------------------------------------------------------------------------------------

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "cache-control")


def test_decisions_sent_as_a_json_array_keep_the_home_page_working(portal, decisions_form, take_task, submit):
    alice = portal["client"]("alice")
    aid, _ = take_task(alice)
    form = decisions_form(portal["round"].batches[0])
    form["decisions"] = json.loads(form["decisions"])  # the array itself, not the string holding it
    assert submit(alice, aid, form).json()["status"] == "recorded"
    home = alice.get("/")
    assert home.status_code == 200 and "You have reviewed" in home.text


@pytest.mark.parametrize("path", ["/tasks/99999999999999999999", "/tasks/-99999999999999999999",
                                  "/operator/objects/99999999999999999999"])
def test_ids_beyond_sqlites_range_are_not_found_with_security_headers(portal, path):
    olga = portal["client"]("olga")
    resp = olga.get(path)
    assert resp.status_code == 404
    assert all(h in resp.headers for h in SECURITY_HEADERS)
    post = olga.post("/tasks/99999999999999999999/release", data={})
    assert post.status_code in (403, 404) and all(h in post.headers for h in SECURITY_HEADERS)


def test_an_unexpected_error_still_carries_the_security_headers(portal, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(portal["service"].db, "session", boom)
    resp = TestClient(portal["app"], raise_server_exceptions=False).get("/")
    assert resp.status_code == 500 and all(h in resp.headers for h in SECURITY_HEADERS)
    assert "bug" not in resp.text


def test_logout_is_a_csrf_checked_post_that_ends_the_server_session(portal, csrf_of):
    alice = portal["client"]("alice")
    forged = alice.post("/logout", data={"csrf_token": "forged"}, headers={"origin": str(alice.base_url)})
    assert forged.status_code == 403
    assert "You have reviewed" in alice.get("/").text  # still signed in: a forged post ends nothing
    cookie = alice.cookies.get("segqa_session")
    ok = alice.post("/logout", data={"csrf_token": csrf_of(alice.get("/").text)},
                    headers={"origin": str(alice.base_url)}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/login"
    stale = portal["client"]()
    stale.cookies.set("segqa_session", cookie)
    assert stale.get("/", follow_redirects=False).headers["location"] == "/login"  # the server forgot it
    assert alice.get("/logout").status_code == 405


def test_bodies_are_read_as_a_stream_and_dropped_at_the_cap():
    """A chunked body (no Content-Length) is never read whole: reading stops at the first chunk past the cap."""
    import asyncio

    from starlette.requests import Request

    from qa_workflow.review.portal import web

    sent = []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": b"x" * 65_536, "more_body": len(sent) < 1000}  # 64 MB in all

    request = Request({"type": "http", "method": "POST", "path": "/login", "headers": [(b"host", b"t")]}, receive)
    assert asyncio.run(web.read_body(request, web.MAX_FORM_BYTES)) is None
    assert len(sent) == 1
    assert asyncio.run(web.read_form(Request({"type": "http", "method": "POST", "path": "/", "headers": []},
                                             receive))) is None
    assert len(sent) == 2


def test_a_large_chunked_post_is_refused_on_every_endpoint(portal, take_task):
    alice = portal["client"]("alice")
    aid, _ = take_task(alice)

    def chunks():
        for _ in range(40):
            yield b"a" * 65_536

    for path in ("/login", "/logout", "/tasks/next", f"/tasks/{aid}/release", f"/tasks/{aid}/submit"):
        resp = alice.post(path, content=chunks(), headers={"origin": str(alice.base_url),
                                                           "content-type": "application/x-www-form-urlencoded"})
        assert resp.status_code in (403, 413), (path, resp.status_code)


def test_behind_a_proxy_the_origin_is_checked_against_the_public_url(tmp_path, fake_clock, make_round, csrf_of):
    """A reverse proxy rewrites Host; with --public-url the browser's Origin is compared with that URL instead."""
    rnd = make_round(tmp_path, n_batches=1, n_items=2, with_truth=False)
    db = open_portal_db(tmp_path / "portal")
    token = db.add_reviewer("alice", is_operator=False, link_ttl_s=3600, now=fake_clock())
    db.close()
    settings = PortalSettings(portal_dir=tmp_path / "portal", round_uri=str(rnd.root),
                              store_uri=f"sqlite:///{tmp_path}/s.sqlite", clock=fake_clock,
                              public_url="https://review.example.org/")
    with TestClient(create_app(settings), base_url="https://127.0.0.1:8080") as client:
        page = client.get(f"/login?token={token}")
        form = {"token": token, "csrf_token": csrf_of(page.text)}
        # The proxy's upstream Host is what the app sees; the browser says it is on the public origin.
        refused = client.post("/login", data=form, headers={"origin": "https://127.0.0.1:8080"})
        assert refused.status_code == 403
        ok = client.post("/login", data=form, headers={"origin": "https://review.example.org"},
                         follow_redirects=False)
        assert ok.status_code == 303 and "secure" in ok.headers["set-cookie"].lower()
    clear_store_cache()
    for bad in ("review.example.org", "ftp://x", "https://x/path", "https://"):
        with pytest.raises(SegqaError, match="--public-url"):
            PortalSettings(portal_dir=tmp_path / "p2", round_uri=str(rnd.root), public_url=bad)


def test_an_adjust_answer_is_checked_at_submit_as_the_post_labeling_step_will(tmp_path):
    """A corrected mask that cannot be used (another size, not a PNG, an inflating bomb) is refused when the
    reviewer submits it, not found out later by the consolidator; a good one passes."""
    import base64
    import io
    import zlib

    import numpy as np
    from PIL import Image

    from qa_workflow.confirmations.png import encode_png
    from qa_workflow.review.portal.service import AnswerRejected, validate_answer

    mask = tmp_path / "mask.png"
    mask.write_bytes(encode_png(16, 12, bytes(16 * 12)))
    task = {"kind": "adjust", "mask_uri": str(mask)}

    def answer(png: bytes) -> dict:
        return {"correctedMask": {"labeledImage": {"pngImageData": base64.b64encode(png).decode()},
                                  "labelMappings": {"csf": {"color": "#1f77b4"}}, "initialValueModified": True}}

    def rgba_png(h: int, w: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((h, w, 4), np.uint8), "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    validate_answer(task, answer(rgba_png(12, 16)))
    bomb = bytearray(rgba_png(1, 1))
    idat = bytes(bomb).index(b"IDAT")
    body = zlib.compress(bytes(5_000_000), 9)
    import struct

    bomb_png = (bytes(bomb[:idat - 4]) + struct.pack(">I", len(body)) + b"IDAT" + body
                + struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF) + bytes(bomb[-12:]))
    for bad, says in ((rgba_png(12, 15), "mask is 15x12, the slice is 16x12"), (b"not a png", "PNG"),
                      (bomb_png, "longer than its 1x1 header declares")):
        with pytest.raises(AnswerRejected, match=says):
            validate_answer(task, answer(bad))
    with pytest.raises(AnswerRejected, match="no .correctedMask."):
        validate_answer(task, {"seconds": "3"})
