"""The review portal in a real browser: Playwright for Python driving Debian's Chromium (/usr/bin/chromium).

One reviewer's whole path: added with the CLI, signs in with the one-time link, opens a batch, finds every item
of the template rendered with its image, is refused when one item is undecided, rejects two items with a reason,
accepts the rest, submits; the votes land in the store. Plus the Crowd HTML Elements' form output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qa_workflow.confirmations.store import open_store

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium; .ci/run "
                "installs it)", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")
STATIC = Path(__file__).resolve().parents[2] / "qa_workflow" / "review" / "portal" / "static"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def live_portal(request, tmp_path, make_round, serve_portal):
    """A round, a reviewer added with `segqa review add-reviewer`, and the portal on a loopback port; its minimum
    viewing time per card is 0 unless the test passes another (``indirect=True``)."""
    rnd = make_round(tmp_path, n_batches=2, n_items=6, with_truth=False)
    with serve_portal("rita", rnd.root, min_view_ms=getattr(request, "param", 0)) as live:
        yield {**live, "round": rnd}


def test_reviewer_reviews_a_batch_in_the_browser(browser, live_portal, browser_sign_in, tmp_path):
    base, rnd = live_portal["base"], live_portal["round"]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # Sign in with the one-time link: the Sign in button has the focus, Enter signs in.
    browser_sign_in(page, live_portal["link"], base)
    assert "You have reviewed 0 of 2 batches" in page.inner_text("main")

    # Enter starts the next batch.
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/tasks/\d+$"))
    batch = rnd.batches[0]
    cards = page.locator(".segqa-item[data-item-id]")
    assert cards.count() == len(batch["items"])
    assert [cards.nth(i).get_attribute("data-item-id") for i in range(cards.count())] == \
        [it["item_id"] for it in batch["items"]]
    page.wait_for_function("() => [...document.querySelectorAll('img.segqa-img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert "Review gray matter masks" in page.inner_text("main")
    # The minimum viewing time per card has its own test (test_template_browser); here the script moves fast.
    page.eval_on_selector("#segqa-root", "e => e.setAttribute('data-min-view-ms', '0')")

    # Reject two items with a reason: item 0 with the mouse, item 1 with the keyboard (R, then 2 = over-segmented).
    cards.nth(0).locator("button.reject").click()
    cards.nth(0).locator("select.segqa-reason").select_option("under_segmented")
    cards.nth(1).focus()
    page.keyboard.press("r")
    page.keyboard.press("2")
    page.keyboard.press("c")
    page.keyboard.type("spills into <b>CSF</b>")
    page.keyboard.press("Escape")
    # Accept the rest with the keyboard except the last one.
    for i in range(2, len(batch["items"]) - 1):
        cards.nth(i).focus()
        page.keyboard.press("a")

    # Submitting with one item undecided is refused, and says why.
    page.locator('crowd-button[form-action="submit"]').click()
    alert = page.locator("#segqa-alert")
    alert.wait_for(state="visible")
    assert "1 mask still needs a decision" in alert.inner_text()
    assert re.search(r"/tasks/\d+$", page.url)
    assert live_portal["service"].db.responses(live_portal["service"].job_id) == []
    page.screenshot(path=str(tmp_path / "task-refused.png"), full_page=True)

    # Decide the last one; Ctrl+Enter submits.
    cards.nth(len(batch["items"]) - 1).locator("button.accept").click()
    page.screenshot(path=str(tmp_path / "task-decided.png"), full_page=True)
    page.keyboard.press("Control+Enter")
    page.wait_for_url(base + "/?notice=recorded")
    assert "Submitted and saved" in page.inner_text("main")
    assert "You have reviewed 1 of 2 batches" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "home-after-submit.png"), full_page=True)

    # The votes are in the store, through the post-labeling handler.
    assert live_portal["service"].wait_idle(20)
    st = open_store(live_portal["store_uri"], create=False)
    try:
        counts = {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in st.iter_items()}
        votes = {v.item_id: v for v in st.iter_votes()}
    finally:
        st.close()
    ids = [it["item_id"] for it in batch["items"]]
    assert counts == {iid: ((0, 1) if k < 2 else (1, 0)) for k, iid in enumerate(ids)}
    assert votes[ids[0]].reason == "under_segmented" and votes[ids[1]].reason == "over_segmented"
    assert votes[ids[1]].comment == "spills into <b>CSF</b>"
    assert {v.worker_id for v in votes.values()} == {"private.local.rita"}
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("live_portal", [2000], indirect=True)
def test_the_server_refuses_an_answer_sooner_than_the_minimum_viewing_time(browser, live_portal, browser_sign_in,
                                                                          tmp_path):
    """The page's script asks for the minimum per card; with the script's check turned off (any client that skips
    it), the server still refuses an answer that came sooner than cards x minimum after the page was served, and
    the page says why."""
    base, service = live_portal["base"], live_portal["service"]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    browser_sign_in(page, live_portal["link"], base)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/tasks/\d+$"))
    assert page.get_attribute("#segqa-root", "data-min-view-ms") == "2000"  # the server's setting, on the page
    page.eval_on_selector("#segqa-root", "e => e.setAttribute('data-min-view-ms', '0')")
    cards = page.locator(".segqa-item[data-item-id]")
    for i in range(cards.count()):
        cards.nth(i).locator("button.accept").click()
    page.locator('crowd-button[form-action="submit"]').click()
    status = page.locator("crowd-form").locator("div.status.error")
    status.wait_for(state="visible")
    text = status.inner_text()
    assert text.startswith("Not submitted: submitted ") and "its 6 masks need at least 12 s (2 s each)" in text
    assert "Nothing was recorded" in text and re.search(r"/tasks/\d+$", page.url)
    assert service.db.responses(service.job_id) == []
    page.screenshot(path=str(tmp_path / "task-too-soon.png"), full_page=True)
    page.close()


CROWD_PAGE = """<!doctype html><html><head><script>{js}</script></head><body>
<crowd-form>
  <crowd-radio-group>
    <crowd-radio-button name="answer" value="yes">Yes</crowd-radio-button>
    <crowd-radio-button name="answer" value="no">No</crowd-radio-button>
  </crowd-radio-group>
  <crowd-checkbox name="flags" value="blurry">Blurry</crowd-checkbox>
  <crowd-checkbox name="flags" value="cut">Cut off</crowd-checkbox>
  <crowd-checkbox name="agree" required>I agree</crowd-checkbox>
  <crowd-input name="note" label="Note" required></crowd-input>
  <crowd-text-area name="long" label="Details"></crowd-text-area>
  <crowd-input name="off" value="x" disabled></crowd-input>
  <input type="hidden" name="decisions" value="[]">
  <crowd-card heading="A card"><p>content</p></crowd-card>
  <crowd-alert type="warning" dismissible id="warn">Careful</crowd-alert>
  <crowd-instructions link-text="Read me"><short-summary>Short</short-summary>
    <detailed-instructions>Long</detailed-instructions></crowd-instructions>
</crowd-form>
<script>
  window.outputs = [];
  window.refuse = false;
  document.querySelector("crowd-form").addEventListener("crowd-form-output", e => window.outputs.push(e.detail));
  document.querySelector("crowd-form").onsubmit = e => {{ if (window.refuse) e.preventDefault(); }};
</script></body></html>"""


def test_crowd_elements_form_output_matches_ground_truth(browser):
    js = (STATIC / "crowd-elements.js").read_text()
    page = browser.new_page()
    page.set_content(CROWD_PAGE.format(js=js))
    submit = page.locator('crowd-button[form-action="submit"]')  # appended by crowd-form: the template has none
    assert submit.count() == 1

    page.locator('crowd-radio-button[value="yes"]').click()
    page.locator('crowd-radio-button[value="no"]').click()  # one radio per group: "yes" is cleared
    page.locator('crowd-checkbox[value="blurry"]').click()
    page.locator("crowd-text-area").locator("textarea").fill("two\nlines")

    submit.click()  # required fields empty: refused, nothing emitted
    assert page.evaluate("window.outputs") == []
    page.locator('crowd-checkbox[name="agree"]').press("Space")
    page.locator('crowd-input[name="note"]').locator("input").fill("hello")
    page.evaluate("window.refuse = true")
    submit.click()  # the template's submit handler refuses
    assert page.evaluate("window.outputs") == []
    page.evaluate("window.refuse = false")
    submit.click()
    outputs = page.evaluate("window.outputs")
    assert outputs == [{"answer": {"yes": False, "no": True}, "flags": {"blurry": True, "cut": False},
                        "agree": {"on": True}, "note": "hello", "long": "two\nlines", "decisions": "[]"}]

    page.locator("#warn").locator("button").click()  # dismissible alert
    assert not page.locator("#warn").is_visible()
    page.locator("crowd-instructions").locator("button.open").click()
    assert page.locator("crowd-instructions").locator("dialog").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("crowd-instructions").locator("dialog").is_visible()
    assert json.loads(json.dumps(outputs[0]))  # plain JSON, as Ground Truth stores answerContent
    page.close()
