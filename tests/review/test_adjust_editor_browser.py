"""The adjust editor in a real browser (Playwright + Debian's Chromium): the adjust template served by the portal
with the local crowd-semantic-segmentation element. A corrector paints a brush stroke, erases part of the
model's mask, undoes a fill, submits; the consolidated label map in the store changed exactly where painted."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import label_mappings, validate_adjust_task
from qa_workflow.rounds.adjusting import initial_overlay_png

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
#: The editor's screenshot in the docs; refreshed only when SEGQA_UPDATE_SCREENSHOTS=1 (a test run leaves the
#: tree as it found it).
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "adjust-editor.png"
H, W = 176, 208


def _model_and_image() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    r = np.sqrt(((yy - H / 2) / 70) ** 2 + ((xx - W / 2) / 85) ** 2)
    truth = np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 12, (H, W)).astype(np.uint8)
    image = np.array([10, 60, 120, 190], np.uint8)[truth] + noise
    model = truth.copy()
    model[60:80, 150:190] = 3  # the model lets white matter spill into gray matter on the right
    return model, image


@pytest.fixture
def adjust_portal(tmp_path, serve_portal):
    model, image = _model_and_image()
    root = tmp_path / "adjust"
    (root / "images").mkdir(parents=True)
    Image.fromarray(image).save(root / "images" / "s.png")
    Image.fromarray(model).save(root / "labels.png")
    (root / "initial.png").write_bytes(initial_overlay_png(model))
    task = validate_adjust_task({
        "task_id": "r1-adjust-sub-001-010", "kind": "adjust", "round": "r1", "model_version": "unet-test",
        "slice_id": "sub-001/010", "image_uri": str(root / "images" / "s.png"), "mask_uri": str(root / "labels.png"),
        "initial_overlay_uri": str(root / "initial.png"), "label_mappings": label_mappings(),
        "classes_to_check": ["white_matter"], "item_ids": ["sub-001/010/white_matter"]})
    (root / "task.json").write_text(json.dumps(task))
    (root / "manifest.jsonl").write_text(json.dumps({"source-ref": str(root / "task.json")}) + "\n")
    with serve_portal("cora", root, job_name="segqa-adjust-test") as live:
        yield {**live, "model": model}


def test_a_corrector_paints_erases_undoes_and_submits(adjust_portal, browser_sign_in, tmp_path):
    base, model = adjust_portal["base"], adjust_portal["model"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        browser_sign_in(page, adjust_portal["link"], base)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/tasks/\d+$"))
        page.wait_for_function("document.querySelector('crowd-semantic-segmentation').ready === true")
        editor = "document.querySelector('crowd-semantic-segmentation')"
        start = bytes(page.evaluate(f"Array.from({editor}.labelMap)"))
        assert start == model.tobytes()  # the editor starts from the model's mask (decoded from the initial overlay)

        def at(x: int, y: int) -> tuple[float, float]:
            pt = page.evaluate(f"{editor}.clientPoint({x}, {y})")
            return pt["x"], pt["y"]

        # 1. Erase the spill (eraser, size 4): a horizontal stroke along row 70 from x 160 to 180.
        page.keyboard.press("e")
        page.evaluate(f"{editor}.size = 4")
        page.mouse.move(*at(160, 70))
        page.mouse.down()
        for x in range(160, 181, 2):
            page.mouse.move(*at(x, 70))
        page.mouse.up()
        # 2. Paint gray matter (key 2, brush size 2) one dab at (30, 88).
        page.keyboard.press("2")
        page.keyboard.press("b")
        page.evaluate(f"{editor}.size = 2")
        page.mouse.click(*at(30, 88))
        # 3. A fill that goes wrong, undone with Ctrl+Z.
        page.keyboard.press("f")
        page.mouse.click(*at(5, 5))  # background -> gray matter everywhere outside the head
        assert page.evaluate(f"{editor}.labelMap[5 * {W} + 5]") == 2
        page.keyboard.press("Control+z")
        assert page.evaluate(f"{editor}.labelMap[5 * {W} + 5]") == 0
        expected = np.frombuffer(bytes(page.evaluate(f"Array.from({editor}.labelMap)")), np.uint8).reshape(H, W)
        page.screenshot(path=str(tmp_path / "adjust-editor.png"), full_page=False)
        if os.environ.get("SEGQA_UPDATE_SCREENSHOTS") == "1":
            page.screenshot(path=str(DOCS_SCREENSHOT), full_page=False)

        page.locator('crowd-button[form-action="submit"]').click()
        page.wait_for_url(base + "/?notice=recorded")
        assert not errors, errors
        browser.close()

    changed = expected != model
    erased = np.zeros_like(changed)
    erased[68:73, 158:183] = True  # the eraser stroke: row 70, x 160..180, radius 2
    painted = np.zeros_like(changed)
    painted[87:90, 29:32] = True  # the brush dab at (30, 88), radius 1
    assert (changed & erased).any() and (changed & painted).any()
    assert not (changed & ~(erased | painted)).any()  # nothing changed outside the strokes (the fill was undone)
    assert (expected[70, 160:181] == 0).all() and (expected[changed & erased] == 0).all()
    assert expected[88, 30] == 2 and (expected[changed & painted] == 2).all()
    assert adjust_portal["service"].wait_idle(20)
    st = open_store(adjust_portal["store_uri"], create=False)
    try:
        (correction,) = list(st.iter_corrections())
        (mask,) = list(st.iter_consolidated_masks())
    finally:
        st.close()
    assert correction.worker_id == "private.local.cora" and correction.modified is True
    assert correction.seconds is not None and correction.seconds > 0  # measured on the page
    stored = np.asarray(Image.open(io.BytesIO(Path(mask.mask_uri).read_bytes())))
    assert np.array_equal(stored, expected)  # the stored label map is exactly what was painted
    assert np.array_equal(stored != model, changed)


def test_window_level_in_the_editor_follows_the_formula_and_never_touches_the_label_map(adjust_portal,
                                                                                      browser_sign_in):
    base, model = adjust_portal["base"], adjust_portal["model"]
    _, image = _model_and_image()
    editor = "document.querySelector('crowd-semantic-segmentation')"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        browser_sign_in(page, adjust_portal["link"], base)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/tasks/\d+$"))
        page.wait_for_function(f"{editor}.ready === true")
        page.keyboard.press("m")  # mask off: the frame is the windowed grey image alone

        def frame() -> np.ndarray:
            px = page.evaluate(f"""(() => {{ const f = {editor}._frame;
                return Array.from(f.getContext('2d').getImageData(0, 0, f.width, f.height).data); }})()""")
            return np.array(px, np.uint8).reshape(H, W, 4)[..., 0].astype(int)

        def expected(state: dict) -> np.ndarray:
            w, lvl = float(state["window"]), float(state["level"])
            return np.clip((image.astype(np.float64) - (lvl - w / 2)) / w * 255, 0, 255)

        auto = page.evaluate(f"{editor}.windowLevel")
        assert np.abs(frame() - expected(auto)).max() <= 1
        # Right-button drag over the image: +60 px right (wider window), 30 px down (lower level); paints nothing.
        pt = page.evaluate(f"{editor}.clientPoint(100, 88)")
        page.mouse.move(pt["x"], pt["y"])
        page.mouse.down(button="right")
        page.mouse.move(pt["x"] + 60, pt["y"] + 30, steps=5)
        page.mouse.up(button="right")
        state = page.evaluate(f"{editor}.windowLevel")
        assert state == pytest.approx({"window": auto["window"] + 60, "level": auto["level"] - 30})
        assert np.abs(frame() - expected(state)).max() <= 1
        shown = page.evaluate(f"{editor}.shadowRoot.querySelector('output.wl').textContent")
        assert shown == f"W {int(np.floor(state['window'] + 0.5))} / L {int(np.floor(state['level'] + 0.5))}"
        page.evaluate(f"{editor}.shadowRoot.querySelector('[data-preset=full]').click()")
        assert page.evaluate(f"{editor}.windowLevel") == {"window": 256, "level": 128}
        assert np.abs(frame() - image.astype(float) * 255 / 256).max() <= 1
        assert bytes(page.evaluate(f"Array.from({editor}.labelMap)")) == model.tobytes()  # W/L painted nothing
        # One dab of gray matter, then submit under this window: the label map holds the dab and nothing else.
        page.keyboard.press("2")
        page.keyboard.press("b")
        page.evaluate(f"{editor}.size = 1")
        dab = page.evaluate(f"{editor}.clientPoint(30, 88)")
        page.mouse.click(dab["x"], dab["y"])
        page.locator('crowd-button[form-action="submit"]').click()
        page.wait_for_url(base + "/?notice=recorded")
        assert not errors, errors
        browser.close()

    assert adjust_portal["service"].wait_idle(20)
    st = open_store(adjust_portal["store_uri"], create=False)
    try:
        (mask,) = list(st.iter_consolidated_masks())
    finally:
        st.close()
    stored = np.asarray(Image.open(io.BytesIO(Path(mask.mask_uri).read_bytes())))
    want = model.copy()
    want[88, 30] = 2
    assert np.array_equal(stored, want)  # the label map, whatever the window/level
