"""The mask review template rendered as Ground Truth renders it (python-liquid, autoescape, GT filters)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from qa_workflow.contract import REJECT_REASONS, SegqaError
from qa_workflow.review.templates import (
    MASK_ADJUST_TEMPLATE,
    MASK_REVIEW_TEMPLATE,
    default_grant_read_access,
    render_task,
)


class _Elements(HTMLParser):
    """Collects (tag, attrs) of every start tag."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def _parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Elements()
    p.feed(html)
    return p.elements


def _render(batch, signer=None) -> str:
    return render_task(MASK_REVIEW_TEMPLATE.read_text(), batch, grant_read_access=signer or (lambda u: f"https://signed/{u}"))


def test_one_card_per_item_with_signed_overlay_and_image(make_batch):
    batch = make_batch("r1-gm-0007", "gray_matter", n=13)
    signed = []

    def signer(uri: str) -> str:
        signed.append(uri)
        return f"https://signed.example/{len(signed)}"  # a new URL per call, as presigning gives

    elements = _parse(_render(batch, signer))
    cards = [a for t, a in elements if a.get("data-item-id")]
    assert [c["data-item-id"] for c in cards] == [it["item_id"] for it in batch["items"]]
    assert {it["overlay_uri"] for it in batch["items"]} | {it["image_uri"] for it in batch["items"]} <= set(signed)
    images = [a for t, a in elements if t == "img"]
    assert len(images) == 13 and all(a["src"].startswith("https://signed.example/") for a in images)
    assert len({a["src"] for a in images} | {a["data-image-src"] for a in images}) == 26


def test_header_names_the_class_and_its_colour_and_loads_crowd_elements(make_batch):
    html = _render(make_batch("r1-wm-0001", "white_matter", n=11))
    assert ("Review\n        white matter\n        masks" in html
            or "Review white matter masks" in " ".join(html.split()))
    assert "#ffbf00" in html
    elements = _parse(html)
    assert ("script", {"src": "https://assets.crowd.aws/crowd-html-elements.js"}) in elements
    tags = [t for t, _ in elements]
    for tag in ("crowd-form", "crowd-instructions", "crowd-card", "crowd-alert"):
        assert tag in tags


def test_nothing_is_preselected_and_only_the_contract_fields_are_submitted(make_batch):
    batch = make_batch("r1-csf-0002", "csf", n=12)
    elements = _parse(_render(batch))
    named = {a["name"]: a for t, a in elements if a.get("name")}
    assert set(named) == {"decisions", "batch_id", "submitted_at", "seconds"}
    assert named["decisions"]["value"] == "[]" and named["decisions"]["type"] == "hidden"
    assert named["batch_id"]["value"] == "r1-csf-0002"
    assert all("checked" not in a and "selected" not in a for _, a in elements)
    pressed = [a["aria-pressed"] for t, a in elements if t == "button" and a.get("class") in ("accept", "reject")]
    assert len(pressed) == 24 and set(pressed) == {"false"}


def test_reject_reasons_are_the_contract_reasons(make_batch):
    elements = _parse(_render(make_batch("b", "csf", n=11)))
    options = [a["value"] for t, a in elements if t == "option"]
    per_card = len(options) // 11
    assert options[:per_card] == [""] + list(REJECT_REASONS)


def test_html_in_task_input_is_escaped(make_batch):
    batch = make_batch("b<1>", "gray_matter", n=11)
    evil = '"><img src=x onerror=alert(1)>'
    batch["class_name"] = "<script>alert('class')</script>"
    batch["color"] = "red;}</style><script>alert(2)</script>"
    batch["items"][0]["item_id"] = "sub-1/001/" + evil
    batch["items"][0]["slice_id"] = "<b>slice</b>"
    html = _render(batch, signer=lambda u: u)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>slice</b>" not in html
    assert "&lt;script&gt;alert(&#39;class&#39;)&lt;/script&gt;" in html
    assert "&lt;/style&gt;&lt;script&gt;alert(2)" in html
    assert "b&lt;1&gt;" in html
    cards = [a for t, a in _parse(html) if a.get("data-item-id")]
    assert cards[0]["data-item-id"] == "sub-1/001/" + evil  # an attribute value, never markup
    assert [t for t, _ in _parse(html)].count("img") == 11


def test_ground_truth_filters_escape_once_and_skip_autoescape():
    task = {"a": "<b>x & y</b>", "obj": {"k": "<\"v\">", "n": [1, 2]}, "u": "s3://b/k.png"}
    tpl = ("{{ task.input.a }}|{{ task.input.a | escape }}|{{ task.input.a | escape | escape }}|"
           "{{ task.input.a | escape_once }}|{{ '&amp; <' | escape_once }}|{{ task.input.a | skip_autoescape }}|"
           "{{ task.input.obj | to_json }}|{{ task.input.obj | to_json | escape }}|"
           "{{ task.input.u | grant_read_access }}")
    out = render_task(tpl, task, grant_read_access=lambda u: "https://s/" + u[5:]).split("|")
    esc = "&lt;b&gt;x &amp; y&lt;/b&gt;"
    # autoescape never adds a second escape to `escape`; escaping twice on purpose does (as in Liquid), and
    # escape_once leaves entities alone
    assert out[:5] == [esc, esc, esc.replace("&", "&amp;"), esc, "&amp; &lt;"]
    assert out[5] == "<b>x & y</b>"
    assert json.loads(out[6].replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">")) == task["obj"]
    assert out[6] == out[7] and "<" not in out[6]
    assert out[8] == "https://s/b/k.png"


def test_default_grant_read_access(s3_bucket, tmp_path):
    url = default_grant_read_access(f"s3://{s3_bucket}/overlays/a b.png")
    assert url.startswith("https://") and "Signature" in url or "X-Amz-Signature" in url
    assert default_grant_read_access(str(tmp_path / "o.png")) == (tmp_path / "o.png").as_uri()
    for same in ("https://x/y.png", "file:///a/b.png", "data:image/png;base64,AAAA", ""):
        assert default_grant_read_access(same) == same


def test_liquid_errors_name_the_template():
    with pytest.raises(SegqaError, match="mine.html: Liquid error"):
        render_task("{% for x in %}", {}, template_name="mine.html")


def test_shared_browser_code_is_inlined_once_and_unknown_includes_fail_by_name():
    from qa_workflow.review.templates import STATIC_DIR, expand_includes

    text = MASK_REVIEW_TEMPLATE.read_text()
    assert '<script data-segqa-include="window-level.js"></script>' in text
    expanded = expand_includes(text)
    assert "data-segqa-include" not in expanded and expand_includes(expanded) == expanded
    assert expanded.count((STATIC_DIR / "window-level.js").read_text()) == 1  # the one definition, verbatim
    # time on task: one definition for the verify screen and the adjust editor
    timer = (STATIC_DIR / "time-on-task.js").read_text()
    for template in (MASK_REVIEW_TEMPLATE, MASK_ADJUST_TEMPLATE):
        assert expand_includes(template.read_text()).count(timer) == 1, template.name
    with pytest.raises(SegqaError, match="nothing.js"):
        expand_includes('<script data-segqa-include="nothing.js"></script>')


def test_each_render_uses_its_own_grant_read_access_though_the_parsed_template_is_shared():
    from concurrent.futures import ThreadPoolExecutor

    text = '<img src="{{ task.input.uri | grant_read_access }}">'

    def render(prefix: str) -> str:
        return render_task(text, {"uri": "s3://b/k.png"}, grant_read_access=lambda u: f"{prefix}/{u}")

    assert render("one") == '<img src="one/s3://b/k.png">'
    assert render("two") == '<img src="two/s3://b/k.png">'
    with ThreadPoolExecutor(4) as pool:  # concurrent renders (the portal's worker threads) never mix them up
        prefixes = [f"p{i}" for i in range(40)]
        assert list(pool.map(render, prefixes)) == [f'<img src="{p}/s3://b/k.png">' for p in prefixes]
