"""`segqa demo --interactive`: the loop hands a round to the portal and carries on once it is reviewed."""

from __future__ import annotations

import re
import socket
import threading

import httpx

from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.review.portal.interactive import review_round_in_browser


def test_review_round_in_browser_returns_when_the_round_is_reviewed(tmp_path, csrf_of, decisions_form,
                                                                    make_round):
    rnd = make_round(tmp_path, n_batches=2, n_items=3, with_truth=False)
    store_uri = f"sqlite:///{tmp_path}/store.sqlite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    said: list[str] = []
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(review_round_in_browser(
        rnd.root, store_uri, port=port, open_browser=False, poll_s=0.1, echo=said.append,
        min_view_ms=0)))  # answers at once (the minimum viewing time: tests/review/test_portal_http.py)
    worker.start()
    try:
        for _ in range(600):
            if said:
                break
            worker.join(0.05)
        link = re.search(r"(http://\S+/login\?token=\S+)", said[0]).group(1)
        assert "2 tasks" in said[0]
        base = link.split("/login")[0]
        http = httpx.Client(base_url=base, headers={"origin": base}, timeout=30)
        page = http.get(link)
        http.post("/login", data={"token": link.split("token=")[1], "csrf_token": csrf_of(page.text)})
        for _ in rnd.batches:
            resp = http.post("/tasks/next", data={"csrf_token": csrf_of(http.get("/").text)})
            aid = int(resp.headers["location"].rsplit("/", 1)[1])
            html = http.get(f"/tasks/{aid}").text
            batch = next(b for b in rnd.batches if f'data-batch-id="{b["batch_id"]}"' in html)
            resp = http.post(f"/tasks/{aid}/submit", json=decisions_form(batch),
                             headers={"x-csrf-token": csrf_of(html)})
            assert resp.json()["status"] == "recorded"
        worker.join(30)
        assert not worker.is_alive()
        assert result["objects_by_status"] == {"complete": 2}
        st = open_store(store_uri, create=False)
        assert sum(s.confirm_count for s in st.iter_items()) == 6
        st.close()
    finally:
        worker.join(1)
        clear_store_cache()
