"""Tests of `qa_workflow/review/`: the Ground Truth client, the portal, simulated reviewers, templates.

`make_round` writes small, real review rounds in the layout of docs/review-work.md: ``manifest.jsonl`` (one
``{"source-ref"}`` per batch), ``batches/<batch_id>.json`` (ARCHITECTURE §6, checked with contract.validate_batch),
``images/``, binary predicted masks ``masks/<subject>/<slice>/<class>.png`` (0/255) and ``overlays/``, all in the
display orientation (`contract.to_display`); and, for the simulator, a truth dataset (``index.csv`` + label maps
0..3, as stored) where the predicted mask equals the truth for "good" items and is badly wrong for "bad" ones, so
the simulated reviewers' expected answers are known.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_workflow.confirmations.store import clear_store_cache
from qa_workflow.contract import CLASS_BY_NAME, to_display, validate_batch

H, W = 176, 208


@dataclass
class Round:
    root: Path
    manifest: Path
    batches: list[dict] = field(default_factory=list)
    truth: Path | None = None
    good_items: set[str] = field(default_factory=set)  # predicted == truth (Dice 1)
    bad_items: set[str] = field(default_factory=set)  # predicted far from truth (Dice ~0)

    @property
    def item_ids(self) -> list[str]:
        return [it["item_id"] for b in self.batches for it in b["items"]]


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _make_round(root: Path, n_batches: int = 2, n_items: int = 5, class_name: str = "gray_matter",
               round_id: str = "r1", bad_every: int = 3, with_truth: bool = True,
               image_size: tuple[int, int] | None = None) -> Round:
    """A round folder under ``root/round`` (and a truth dataset under ``root/truth``).

    Item k of the round is "bad" (predicted mask nowhere near the truth) when ``k % bad_every == 0``,
    otherwise "good" (predicted == truth). ``image_size`` shrinks the overlay PNGs (the benchmark uses tiny ones).
    """
    cls = CLASS_BY_NAME[class_name]
    rdir = root / "round"
    tdir = root / "truth"
    rnd = Round(root=rdir, manifest=rdir / "manifest.jsonl", truth=tdir if with_truth else None)
    index_rows = []
    k = 0
    lines = []
    for b in range(n_batches):
        subject = f"sub-{b:03d}"
        items = []
        for s in range(n_items):
            iid = f"{subject}/{s:03d}/{class_name}"
            truth_region = _disc(88, 104, 30 + s)
            bad = k % bad_every == 0
            pred_region = _disc(20, 20, 12) if bad else truth_region
            (rnd.bad_items if bad else rnd.good_items).add(iid)
            image = np.where(truth_region, 200, 60).astype(np.uint8)
            # the round's objects are in the display orientation, as `segqa batch` writes them; truth is stored
            shown, shown_pred = to_display(image), to_display(pred_region)
            img_uri = _png(rdir / "images" / subject / f"{s:03d}.png", shown)
            mask_uri = _png(rdir / "masks" / subject / f"{s:03d}" / f"{class_name}.png", shown_pred * 255)
            overlay = np.stack([shown] * 3, axis=-1)
            overlay[shown_pred] = (0.5 * overlay[shown_pred] + 0.5 * np.array(cls.rgb)).astype(np.uint8)
            if image_size is not None:
                overlay = np.asarray(Image.fromarray(overlay).resize(image_size))
            ov_uri = _png(rdir / "overlays" / subject / f"{s:03d}" / f"{class_name}.png", overlay)
            items.append({"item_id": iid, "slice_id": f"{subject}/{s:03d}", "class_name": class_name,
                          "confidence": round(0.5 + 0.45 * ((k * 37) % 100) / 100, 4), "overlay_uri": ov_uri,
                          "image_uri": img_uri, "mask_uri": mask_uri})
            if with_truth:
                label = np.zeros((H, W), np.uint8)
                label[truth_region] = cls.id
                _png(tdir / "images" / subject / f"{s:03d}.png", image)
                _png(tdir / "masks" / subject / f"{s:03d}.png", label)
                index_rows.append({"subject": subject, "slice": s, "image": f"images/{subject}/{s:03d}.png",
                                   "mask": f"masks/{subject}/{s:03d}.png", "split": "pool"})
            k += 1
        batch = validate_batch({"batch_id": f"{round_id}-{class_name}-{b:03d}", "round": round_id,
                                "model_version": "unet-test", "class_id": cls.id, "class_name": class_name,
                                "color": cls.color, "items": items})
        path = rdir / "batches" / f"{batch['batch_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(batch))
        rnd.batches.append(batch)
        lines.append(json.dumps({"source-ref": str(path)}))
    rnd.manifest.write_text("\n".join(lines) + "\n")
    if with_truth:
        tdir.mkdir(parents=True, exist_ok=True)
        with (tdir / "index.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["subject", "slice", "image", "mask", "split"])
            writer.writeheader()
            writer.writerows(index_rows)
    return rnd


def _decisions_form(batch: dict, reject: dict[str, tuple[str | None, str | None]] | None = None) -> dict:
    """The crowd form output the mask review template submits: accept everything except ``reject``
    (item_id -> (reason, comment))."""
    reject = reject or {}
    decisions = []
    for it in batch["items"]:
        if it["item_id"] in reject:
            reason, comment = reject[it["item_id"]]
            d = {"item_id": it["item_id"], "decision": "reject"}
            if reason:
                d["reason"] = reason
            if comment:
                d["comment"] = comment
        else:
            d = {"item_id": it["item_id"], "decision": "accept"}
        decisions.append(d)
    return {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"],
            "submitted_at": "2025-01-01T00:00:00.000Z"}


class FakeClock:
    """A settable clock for the portal (``PortalSettings.clock``): tests move time instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _csrf_of(html: str) -> str:
    """The CSRF token a portal page carries (hidden form field or meta tag)."""
    m = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def _login(client, token: str):
    """Sign a TestClient in with a one-time login token, as a browser would; returns the home page response."""
    page = client.get(f"/login?token={token}")
    assert page.status_code == 200
    resp = client.post("/login", data={"token": token, "csrf_token": _csrf_of(page.text)},
                       headers={"origin": str(client.base_url)})
    assert resp.status_code == 200 and "You have reviewed" in resp.text, resp.text[:500]
    return resp


def _take_task(client) -> tuple[int, str]:
    """POST /tasks/next from the home page; returns (assignment id, task page HTML)."""
    home = client.get("/")
    resp = client.post("/tasks/next", data={"csrf_token": _csrf_of(home.text)}, follow_redirects=False,
                       headers={"origin": str(client.base_url)})
    assert resp.status_code == 303, resp.text[:300]
    location = resp.headers["location"]
    assert location.startswith("/tasks/"), location
    page = client.get(location)
    assert page.status_code == 200
    return int(location.rsplit("/", 1)[1]), page.text


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve_portal(tmp_path: Path, capsys: pytest.CaptureFixture[str], reviewer: str, round_uri: str | Path,
                  **settings) -> Iterator[dict]:
    """The portal on a loopback port in this process (uvicorn in a thread), for a real browser.

    One reviewer is added with `segqa review add-reviewer` (its one-time link read from the command's output); the
    store is ``tmp_path/store.sqlite``; one answer per object and a 0.2 s sweep unless ``settings`` (more
    `PortalSettings` fields) say otherwise. Yields ``{"base", "link", "store_uri", "service"}``; stops the server
    and clears the store cache on the way out.
    """
    import uvicorn

    from qa_workflow.cli import main
    from qa_workflow.review.portal.app import create_app
    from qa_workflow.review.portal.service import PortalSettings

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    pdir = tmp_path / "portal"
    assert main(["review", "add-reviewer", reviewer, "--portal-dir", str(pdir), "--url", base]) == 0
    found = re.search(r"(http://\S+/login\?token=\S+)", capsys.readouterr().out)
    assert found, "add-reviewer printed no login link"
    store_uri = f"sqlite:///{tmp_path}/store.sqlite"
    app = create_app(PortalSettings(portal_dir=pdir, round_uri=str(round_uri), store_uri=store_uri,
                                    **{"reviewers_per_object": 1, "sweep_interval_s": 0.2, **settings}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "portal did not start"
        time.sleep(0.05)
    try:
        yield {"base": base, "link": found.group(1), "store_uri": store_uri, "service": app.state.service}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        clear_store_cache()


def _browser_sign_in(page, link: str, base: str) -> None:
    """Open a one-time login link in a Playwright page and sign in with the keyboard (the Sign in button has
    the focus; Enter); returns on the home page."""
    page.goto(link)
    # autofocus is applied by the browser after load, asynchronously: wait for it before typing
    page.wait_for_function("document.activeElement && document.activeElement.matches('button[type=submit]')")
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/")


@pytest.fixture(scope="session")
def make_round() -> Callable[..., Round]:
    """Factory: ``make_round(root, n_batches=2, n_items=5, ...)`` -> `Round` (see `_make_round`)."""
    return _make_round


@pytest.fixture(scope="session")
def decisions_form() -> Callable[..., dict]:
    """Factory: ``decisions_form(batch, reject={item_id: (reason, comment)})`` -> the crowd form's output."""
    return _decisions_form


@pytest.fixture(scope="session")
def csrf_of() -> Callable[[str], str]:
    """``csrf_of(html)``: the CSRF token a portal page carries."""
    return _csrf_of


@pytest.fixture(scope="session")
def login() -> Callable:
    """``login(client, token)``: sign a TestClient in; returns the home page response."""
    return _login


@pytest.fixture(scope="session")
def take_task() -> Callable:
    """``take_task(client)``: take the next task from the home page -> (assignment id, task page HTML)."""
    return _take_task


@pytest.fixture
def fake_clock() -> FakeClock:
    """A settable clock for the portal, starting at a fixed instant."""
    return FakeClock()


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on 127.0.0.1 that nothing listens on now."""
    return _free_port


@pytest.fixture
def serve_portal(tmp_path, capsys) -> Callable[..., contextlib.AbstractContextManager[dict]]:
    """``with serve_portal(reviewer, round_uri, **settings) as live:`` the portal on a loopback port (see
    `_serve_portal`)."""
    return functools.partial(_serve_portal, tmp_path, capsys)


@pytest.fixture(scope="session")
def browser_sign_in() -> Callable[[object, str, str], None]:
    """``browser_sign_in(page, link, base)``: sign a Playwright page in with a one-time link."""
    return _browser_sign_in
