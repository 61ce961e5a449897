"""The review template's own JavaScript in Debian's Chromium (Playwright), offline.

The review template's own JavaScript in Debian's Chromium (Playwright): keyboard, decisions field, refusal to
submit while any card is undecided, window/level on the canvas pixels. Offline, so crowd-html-elements.js does not
load; the template's script works on plain DOM events and needs none of it (the `submit` event is dispatched on
<crowd-form> as Ground Truth does)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_workflow.review.templates import MASK_REVIEW_TEMPLATE, render_task

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

# A 1x1 PNG as a data: URL; the fragment keeps the object URI so the test can tell overlay and image apart.
PIXEL = "data:image/png;base64," + base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763d0f8cf0000"
    "03010180b8cdd1b40000000049454e44ae426082")).decode()


def _signer(uri: str) -> str:
    return f"{PIXEL}#{uri}"


SUBMIT = """() => { const ev = new Event('submit', {cancelable: true});
                    document.querySelector('crowd-form').dispatchEvent(ev); return ev.defaultPrevented; }"""


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            pg = browser.new_page(viewport={"width": 1100, "height": 900})
            pg.route(re.compile(r"^https?://"), lambda route: route.abort())  # offline: no crowd elements script
            yield pg
        finally:
            browser.close()


def _no_minimum_view(page):
    page.eval_on_selector("#segqa-root", "e => e.setAttribute('data-min-view-ms', '0')")


def test_keyboard_review_refuses_incomplete_submission_then_submits_every_decision(page, make_batch):
    batch = make_batch("r1-gm-0042", "gray_matter", n=12)
    page.set_content(render_task(MASK_REVIEW_TEMPLATE.read_text(), batch, grant_read_access=_signer))
    _no_minimum_view(page)
    ids = [it["item_id"] for it in batch["items"]]
    field = lambda: json.loads(page.eval_on_selector("#segqa-decisions", "e => e.value"))  # noqa: E731

    assert field() == [] and page.inner_text("#segqa-progress") == "0 / 12 decided"
    focused = lambda: page.evaluate("() => document.activeElement.getAttribute('data-item-id')")  # noqa: E731
    assert focused() == ids[0]
    page.keyboard.press("a")  # accept card 0 and jump to the next undecided card
    assert focused() == ids[1]
    page.keyboard.press("r")
    page.keyboard.press("2")  # reason 2 of the rejected card
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelectorAll('[data-canvas=ready]').length === 12")  # drawn from pixels
    page.keyboard.press("m")  # show the slice without the mask
    assert page.get_attribute(f'[data-item-id="{ids[2]}"]', "data-view") == "image"
    page.keyboard.press("m")
    assert page.get_attribute(f'[data-item-id="{ids[2]}"]', "data-view") == "mask"
    assert field() == [{"item_id": ids[0], "decision": "accept"},
                       {"item_id": ids[1], "decision": "reject", "reason": "over_segmented"}]

    # Submitting now is refused, the alert names how many are missing, and the first undecided card has focus.
    assert page.evaluate(SUBMIT) is True
    assert page.is_visible("#segqa-alert") and "10 masks still need a decision" in page.inner_text("#segqa-alert")
    assert focused() == ids[2]
    assert page.eval_on_selector_all(".segqa-item.is-missing", "els => els.length") == 10

    # Decide the rest with the mouse, bottom-up; one comment with HTML in it, one changed mind.
    for iid in reversed(ids[2:]):
        page.click(f'[data-item-id="{iid}"] button.{"reject" if iid == ids[5] else "accept"}')
    page.fill(f'[data-item-id="{ids[5]}"] textarea', '<img src=x onerror="window.pwned=1"> leaks')
    page.click(f'[data-item-id="{ids[0]}"] button.reject')
    page.click(f'[data-item-id="{ids[0]}"] button.accept')

    assert page.evaluate(SUBMIT) is False  # allowed
    decisions = {d["item_id"]: d for d in field()}
    assert set(decisions) == set(ids)
    assert decisions[ids[5]] == {"item_id": ids[5], "decision": "reject",
                                 "comment": '<img src=x onerror="window.pwned=1"> leaks'}
    assert decisions[ids[0]] == {"item_id": ids[0], "decision": "accept"}
    assert sum(d["decision"] == "reject" for d in decisions.values()) == 2
    assert page.evaluate("() => window.pwned") is None
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", page.eval_on_selector("#segqa-submitted-at", "e => e.value"))
    # time on task, measured on the page (Ground Truth reports none): longer than the clicks above took
    assert 0.2 < float(page.eval_on_selector("#segqa-seconds", "e => e.value")) < 600
    assert not page.is_visible("#segqa-alert")
    assert page.inner_text("#segqa-progress") == "12 / 12 decided"


def test_arrow_keys_move_by_grid_rows(page, make_batch):
    batch = make_batch("r1-csf-0001", "csf", n=11)
    page.set_content(render_task(MASK_REVIEW_TEMPLATE.read_text(), batch, grant_read_access=_signer))
    columns = page.evaluate("""() => { const c = [...document.querySelectorAll('.segqa-item')];
        const top = c[0].getBoundingClientRect().top;
        return c.filter(e => Math.abs(e.getBoundingClientRect().top - top) < 2).length; }""")
    assert columns > 1
    page.keyboard.press("ArrowDown")
    index = page.evaluate("() => Number(document.activeElement.getAttribute('data-index'))")
    assert index == columns
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")  # already at the first card: stays
    assert page.evaluate("() => Number(document.activeElement.getAttribute('data-index'))") == 0


def test_holding_a_cannot_accept_unseen_masks_nor_reaccept_decided_ones(page, make_batch):
    """Each card must be shown for data-min-view-ms before it can be decided; once every card is decided, A
    changes nothing (a held key used to wrap around and turn rejects into accepts)."""
    batch = make_batch("r1-gm-0043", "gray_matter", n=6)
    page.set_content(render_task(MASK_REVIEW_TEMPLATE.read_text(), batch, grant_read_access=_signer))
    assert int(page.get_attribute("#segqa-root", "data-min-view-ms")) > 0  # on by default
    page.eval_on_selector("#segqa-root", "e => e.setAttribute('data-min-view-ms', '3000')")
    field = lambda: json.loads(page.eval_on_selector("#segqa-decisions", "e => e.value"))  # noqa: E731
    page.wait_for_timeout(3100)
    for _ in range(20):  # held A: key repeats every ~30 ms
        page.keyboard.press("a")
    assert len(field()) == 1  # the first card only; the next ones were not shown long enough
    assert "at least" in page.inner_text("#segqa-alert")

    _no_minimum_view(page)
    ids = [it["item_id"] for it in batch["items"]]
    page.click(f'[data-item-id="{ids[3]}"] button.reject')
    for iid in ids:
        if iid != ids[3]:
            page.click(f'[data-item-id="{iid}"] button.accept')
    page.focus(f'[data-item-id="{ids[3]}"]')
    page.keyboard.press("a")  # everything is decided: A must not silently turn the reject into an accept
    assert {d["item_id"]: d["decision"] for d in field()}[ids[3]] == "reject"
    assert "Every mask is decided" in page.inner_text("#segqa-alert")
    page.click(f'[data-item-id="{ids[3]}"] button.accept')  # a deliberate change is still possible
    assert {d["item_id"]: d["decision"] for d in field()}[ids[3]] == "accept"


def test_an_expired_image_link_shows_a_message_not_a_broken_image(page, make_batch):
    batch = make_batch("r1-gm-0044", "gray_matter", n=2)

    def expired_images(uri):  # the image-only links have expired (the portal answers 403)
        return "http://portal.invalid/assets/expired" if uri.endswith(batch["items"][0]["image_uri"]) else _signer(uri)

    page.set_content(render_task(MASK_REVIEW_TEMPLATE.read_text(), batch, grant_read_access=expired_images))
    card = f'[data-item-id="{batch["items"][0]["item_id"]}"]'
    page.keyboard.press("m")  # image only
    page.wait_for_selector(f"{card}.is-image-failed", timeout=5000)
    assert "expired" in page.inner_text(f"{card} .segqa-view") and "reload" in page.inner_text(f"{card} .segqa-view")


def _data_png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _expected(grey: np.ndarray, state: dict) -> np.ndarray:
    """out = clamp((v - (L - W/2)) / W * 255), the window/level formula."""
    w, lvl = float(state["window"]), float(state["level"])
    return np.clip((grey.astype(np.float64) - (lvl - w / 2)) / w * 255, 0, 255)


def _canvas_rgb(page, card: str) -> np.ndarray:
    data = page.eval_on_selector(f"{card} canvas", """c => ({w: c.width, h: c.height,
        px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)})""")
    return np.array(data["px"], np.uint8).reshape(data["h"], data["w"], 4)[..., :3].astype(int)


def test_window_level_maps_the_grey_values_by_the_formula_on_every_card(page, make_batch):
    batch = make_batch("r1-gm-0045", "gray_matter", n=2)
    h, w = 208, 176  # a slice in the display orientation
    grey = ((np.arange(h)[:, None] + 2 * np.arange(w)[None, :]) % 256).astype(np.uint8)  # every value 0..255
    mask = np.zeros((h, w), np.uint8)
    mask[60:120, 40:100] = 255
    uris = {it["image_uri"]: _data_png(grey) for it in batch["items"]}
    uris.update({it["mask_uri"]: _data_png(mask) for it in batch["items"]})
    page.set_content(render_task(MASK_REVIEW_TEMPLATE.read_text(), batch,
                                 grant_read_access=lambda u: uris.get(u, _signer(u))))
    page.wait_for_function("document.querySelectorAll('[data-canvas=ready]').length === 2")
    card = f'[data-item-id="{batch["items"][0]["item_id"]}"]'
    auto = json.loads(page.get_attribute(card, "data-wl"))
    rgb = _canvas_rgb(page, card)
    assert rgb.shape == (h, 2 * w + 6, 3)
    assert np.abs(rgb[:, :w, 0] - _expected(grey, auto)).max() <= 1  # the plain panel: auto window

    # Right-button drag on the slice: right widens the window, up raises the level, for every card.
    box = page.locator(f"{card} canvas").bounding_box()
    x0, y0 = box["x"] + box["width"] / 4, box["y"] + box["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down(button="right")
    page.mouse.move(x0 + 40, y0 - 25, steps=4)
    page.mouse.up(button="right")
    state = json.loads(page.get_attribute(card, "data-wl"))
    assert state == pytest.approx({"window": auto["window"] + 40, "level": auto["level"] + 25})
    js_round = lambda v: int(np.floor(v + 0.5))  # noqa: E731 - Math.round
    assert page.inner_text("#segqa-wl-value") == f"W {js_round(state['window'])} / L {js_round(state['level'])}"
    assert page.inner_text(f"{card} .segqa-wlv") == page.inner_text("#segqa-wl-value")
    for item in batch["items"]:
        other = f'[data-item-id="{item["item_id"]}"]'
        rgb = _canvas_rgb(page, other)
        plain, masked = rgb[:, :w], rgb[:, w + 6:]
        assert np.abs(plain[..., 0] - _expected(grey, state)).max() <= 1
        assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()  # grey stays grey
        outside = mask == 0
        assert np.array_equal(masked[outside], plain[outside])  # the mask panel differs only under the mask
        inner = np.zeros_like(outside)
        inner[61:119, 41:99] = True  # inside the mask, off its contour: grey blended 35 % toward the class colour
        colour = np.array([int(batch["color"][i:i + 2], 16) for i in (1, 3, 5)])
        blend = _expected(grey, state)[..., None] * 0.65 + colour * 0.35
        assert np.abs(masked[inner] - blend[inner]).max() <= 1.5
    page.click('[data-wl-preset="full"]')
    assert json.loads(page.get_attribute(card, "data-wl")) == {"window": 256, "level": 128}
    assert np.abs(_canvas_rgb(page, card)[:, :w, 0] - grey.astype(float) * 255 / 256).max() <= 1
    page.focus(card)
    page.keyboard.press("w")  # back to each slice's own window
    assert json.loads(page.get_attribute(card, "data-wl")) == auto
    assert page.inner_text("#segqa-wl-value") == "auto (per slice)"
