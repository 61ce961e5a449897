"""The adjust template rendered as Ground Truth renders it: crowd-semantic-segmentation with the model's mask as
initial value (label mappings + the initial overlay through grant_read_access), the classes to check named."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from qa_workflow.contract import label_mappings, validate_adjust_task
from qa_workflow.review.templates import MASK_ADJUST_TEMPLATE, render_task, template_for


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _task(**kw):
    task = {"task_id": "r2-adjust-sub-004-045", "kind": "adjust", "round": "r2", "model_version": "unet-r2",
            "slice_id": "sub-004/045", "image_uri": "s3://segqa-sagemaker/r2/images/sub-004/045.png",
            "mask_uri": "s3://segqa-sagemaker/r2/labels/sub-004/045.png",
            "initial_overlay_uri": "s3://segqa-sagemaker/r2/initial/sub-004/045.png",
            "label_mappings": label_mappings(), "classes_to_check": ["gray_matter", "white_matter"],
            "item_ids": ["sub-004/045/gray_matter", "sub-004/045/white_matter"]}
    return validate_adjust_task({**task, **kw})


def _render(task):
    signed = []

    def signer(uri):
        signed.append(uri)
        return f"https://signed.example/{len(signed)}?X-Amz-Signature=a&b=\"c\""

    html = render_task(MASK_ADJUST_TEMPLATE.read_text(), task, grant_read_access=signer)
    parser = _Elements()
    parser.feed(html)
    return parser, signed


def test_the_editor_starts_from_the_models_mask_with_the_contracts_labels():
    task = _task()
    parser, signed = _render(task)
    (editor,) = [a for t, a in parser.elements if t == "crowd-semantic-segmentation"]
    assert editor["name"] == "correctedMask"
    assert signed == [task["image_uri"], task["initial_overlay_uri"]]
    assert editor["src"] == "https://signed.example/1?X-Amz-Signature=a&b=\"c\""  # attribute-escaped, then decoded
    assert json.loads(editor["labels"]) == ["csf", "gray_matter", "white_matter"]
    initial = json.loads(editor["initial-value"])
    assert initial == {"labelMappings": label_mappings(), "src": "https://signed.example/2?X-Amz-Signature=a&b=\"c\""}
    assert "gray matter and white matter" in editor["header"]
    hidden = {a["name"]: a.get("value") for t, a in parser.elements if t == "input" and a.get("type") == "hidden"}
    assert hidden == {"task_id": task["task_id"], "submitted_at": "", "seconds": ""}


def test_the_classes_to_check_are_named_and_highlighted_in_their_colours():
    parser, _ = _render(_task(classes_to_check=["csf"], item_ids=["sub-004/045/csf"]))
    highlighted = [a for t, a in parser.elements if a.get("data-class")]
    assert [a["data-class"] for a in highlighted] == ["csf"]
    assert "#1f77b4" in highlighted[0]["style"]
    text = " ".join(" ".join(parser.text).split())
    assert "rejected the model's mask of CSF on this slice: correct it" in text
    tags = {t for t, _ in parser.elements}
    assert {"short-instructions", "full-instructions", "crowd-form"} <= tags


def test_hostile_values_stay_text(make_batch):
    task = _task(task_id='x"><script>alert(1)</script>')
    assert "<script>alert(1)" not in render_task(MASK_ADJUST_TEMPLATE.read_text(), task, grant_read_access=str)
    parser, _ = _render(task)
    hidden = {a["name"]: a.get("value") for t, a in parser.elements if t == "input"}
    assert hidden["task_id"] == 'x"><script>alert(1)</script>'  # escaped into the attribute, round-trips as text
    assert template_for(_task()) == MASK_ADJUST_TEMPLATE
    assert template_for(make_batch("b")).name == "mask_review.liquid.html"
