"""Review one round yourself in the local portal, then carry on: `segqa demo --interactive`.

`review_round_in_browser(round_path, store_uri)` serves the round (one reviewer per batch), creates the account
``you`` (or issues it a new one-time link), prints the link (and opens it in a browser when one is available),
and returns once every batch of the round has been reviewed and consolidated into ``store_uri``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa_workflow.contract import SegqaError

__all__ = ["review_round_in_browser"]


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise SegqaError(f"port {port} on {host} is in use; set SEGQA_PORTAL_PORT to another port") from None


def review_round_in_browser(round_path: str | os.PathLike[str], store_uri: str, *, reviewer: str = "you",
                            reviewers_per_object: int = 1, host: str = "127.0.0.1", port: int | None = None,
                            portal_dir: str | os.PathLike[str] | None = None, open_browser: bool = True,
                            poll_s: float = 1.0, echo: Callable[[str], Any] = print,
                            min_view_ms: int | None = None) -> dict[str, Any]:
    """Serve ``round_path`` until all its tasks are done; returns the job's final progress.

    ``round_path``: a round folder (its verify batches) or a manifest file, e.g. a round's routed adjust tasks
    (``adjust/routed/manifest.jsonl``) or a chained adjust job's.

    ``port`` defaults to ``$SEGQA_PORTAL_PORT`` or 8080; the portal's state goes to ``portal_dir`` (default: a
    ``portal`` folder next to the round folder); ``min_view_ms`` overrides the template's minimum viewing time per
    card. Ctrl+C stops the server and propagates.
    """
    import uvicorn

    from qa_workflow.review.portal.app import create_app
    from qa_workflow.review.portal.service import PortalSettings

    port = int(port if port is not None else os.environ.get("SEGQA_PORTAL_PORT", 8080))
    _check_port_free(host, port)
    round_path = Path(round_path)
    pdir = Path(portal_dir) if portal_dir is not None else round_path.parent / "portal"
    app = create_app(PortalSettings(portal_dir=pdir, round_uri=str(round_path), store_uri=store_uri,
                                    reviewers_per_object=reviewers_per_object, sweep_interval_s=0.5,
                                    min_view_ms=min_view_ms))
    service = app.state.service
    service.start()
    now = time.time()
    if any(r.name == reviewer for r in service.db.reviewers()):
        token = service.db.new_login_link(reviewer, link_ttl_s=24 * 3600, now=now)
    else:
        token = service.db.add_reviewer(reviewer, is_operator=True, link_ttl_s=24 * 3600, now=now)
    link = f"http://{'localhost' if host == '127.0.0.1' else host}:{port}/login?token={token}"
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="segqa-portal", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SegqaError(f"the review portal did not start on {host}:{port}")
            time.sleep(0.05)
        total = service.progress()["objects_total"]
        echo(f"Review {total} tasks of {round_path} in your browser: {link}")
        if open_browser:
            import webbrowser

            try:
                webbrowser.open(link)
            except webbrowser.Error:
                pass
        while True:
            progress = service.progress()
            by = progress["objects_by_status"]
            if by.get("open", 0) + by.get("ready", 0) == 0:
                return progress
            time.sleep(poll_s)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
