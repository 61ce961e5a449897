"""Render Ground Truth custom labeling templates (Liquid) the way Ground Truth does.

One function, `render_task`, used by the tests, the `segqa job` preview and the self-hosted review portal, so a
template behaves the same everywhere (ARCHITECTURE §7):

- standard Liquid (python-liquid, which implements Shopify Liquid; Jinja is not Liquid);
- output is HTML-escaped by default (autoescape on);
- the Ground Truth filters: ``grant_read_access`` (turns an object URI into a URL the worker's browser may GET;
  pluggable: Ground Truth presigns S3 URIs, the local portal passes its own signer), ``to_json``, ``escape``,
  ``escape_once`` and ``skip_autoescape``;
- the template sees the pre-labeling Lambda's ``taskInput`` as ``task.input``;
- ``<script data-segqa-include="NAME.js"></script>`` is replaced by the portal's ``static/NAME.js`` inline
  (`expand_includes`): Ground Truth serves only the template, so shared browser code (window/level, one
  definition with the portal's editor) travels inside it; job creation, deployment and the portal all expand.

Escaping rules, as in Ground Truth: ``{{ x }}`` is escaped; ``{{ x | escape }}`` is escaped exactly once (autoescape
adds no second escape; ``| escape | escape`` does escape twice, as in Liquid, and ``escape_once`` never re-escapes
an entity); ``{{ x | to_json }}`` is JSON text, escaped like any other output (so it is safe inside an attribute,
and ``| to_json | escape`` gives the same result); ``{{ x | skip_autoescape }}`` is written verbatim — use it
only for values you trust.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from liquid import BoundTemplate, Environment, Markup
from liquid.exceptions import LiquidError

from qa_workflow.contract import SegqaError

__all__ = ["render_task", "render_task_file", "expand_includes", "read_template", "STATIC_DIR",
           "default_grant_read_access", "TEMPLATES_DIR", "MASK_REVIEW_TEMPLATE", "MASK_ADJUST_TEMPLATE",
           "GrantReadAccess", "template_for", "MIN_VIEW_ATTRIBUTE", "min_view_ms", "with_min_view_ms"]

#: ``grant_read_access``: object URI (s3://, file://, path, https://) -> URL a browser may GET.
GrantReadAccess = Callable[[str], str]

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
#: Browser code shared by the templates and the portal (``static/window-level.js``).
STATIC_DIR = Path(__file__).resolve().parent / "portal" / "static"
_INCLUDE_RE = re.compile(r'<script data-segqa-include="([A-Za-z0-9_-]+\.js)"></script>')


def expand_includes(text: str) -> str:
    """The template with every ``<script data-segqa-include="NAME.js"></script>`` replaced by that file of
    `STATIC_DIR` inline; text without includes is returned unchanged (expanding twice changes nothing)."""

    def inline(match: re.Match[str]) -> str:
        path = STATIC_DIR / match.group(1)
        try:
            code = path.read_text(encoding="utf-8")
        except OSError:
            raise SegqaError(f"template include {match.group(1)!r}: no such file {path}") from None
        return f"<script>/* {match.group(1)} (segqa include) */\n{code}</script>"

    return _INCLUDE_RE.sub(inline, text)


def read_template(path: str | os.PathLike[str]) -> str:
    """A template file's text with its includes expanded (what Ground Truth and the portal get)."""
    from qa_workflow import storage

    return expand_includes(storage.read_text(path))
MASK_REVIEW_TEMPLATE = TEMPLATES_DIR / "mask_review.liquid.html"
MASK_ADJUST_TEMPLATE = TEMPLATES_DIR / "mask_adjust.liquid.html"


#: The review template's minimum viewing time per card, in milliseconds (0 turns it off): the one setting the
#: page's script and the portal's server-side check both read (`min_view_ms`, `with_min_view_ms`).
MIN_VIEW_ATTRIBUTE = "data-min-view-ms"
_MIN_VIEW_RE = re.compile(r'(\bdata-min-view-ms\s*=\s*")([^"]*)(")')


def min_view_ms(template_text: str, name: str = "template") -> int:
    """The template's ``data-min-view-ms`` (milliseconds a card must be shown before it can be decided);
    0 when the template has none (e.g. the adjust editor). SegqaError naming the template when it is not a whole
    number >= 0 or is given more than once."""
    found = _MIN_VIEW_RE.findall(template_text)
    if not found:
        return 0
    values = {v.strip() for _, v, _ in found}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise SegqaError(f"{name}: {MIN_VIEW_ATTRIBUTE} must be one whole number of milliseconds >= 0, got "
                         f"{', '.join(sorted(repr(v) for v in values))}")
    return int(next(iter(values)))


def with_min_view_ms(template_text: str, ms: int, name: str = "template") -> str:
    """The template with its ``data-min-view-ms`` set to ``ms`` (a template without one cannot take it)."""
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise SegqaError(f"minimum viewing time must be a whole number of milliseconds >= 0, got {ms!r}")
    if not _MIN_VIEW_RE.search(template_text):
        raise SegqaError(f"{name}: has no {MIN_VIEW_ATTRIBUTE} attribute, so a minimum viewing time cannot be set "
                         "for it")
    return _MIN_VIEW_RE.sub(lambda m: f"{m.group(1)}{ms}{m.group(3)}", template_text)


def template_for(task_input: Mapping[str, Any]) -> Path:
    """The template of a data object's kind: the adjust editor for ``"kind": "adjust"``, else the review screen."""
    from qa_workflow.contract import ADJUST, task_kind

    return MASK_ADJUST_TEMPLATE if task_kind(task_input) == ADJUST else MASK_REVIEW_TEMPLATE
PRESIGN_SECONDS = 3600


def default_grant_read_access(uri: str) -> str:
    """What Ground Truth's ``grant_read_access`` does, for local rendering.

    ``s3://bucket/key`` becomes a presigned HTTPS GET URL (valid one hour, boto3 imported only then);
    a local path becomes a ``file://`` URI; ``http(s)://``, ``file://`` and ``data:`` URIs pass unchanged.
    """
    s = str(uri)
    if s.startswith("s3://"):
        from qa_workflow import storage

        bucket, key = storage.split_s3(s)
        return storage._s3().generate_presigned_url(  # the one shared client
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS)
    if s.startswith(("http://", "https://", "file://", "data:")) or not s:
        return s
    return Path(os.path.abspath(s)).as_uri()


def _to_json(value: Any) -> str:
    """JSON text of a value; Liquid's own drops and undefineds become null."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False, default=lambda _o: None)


def _skip_autoescape(value: Any) -> Markup:
    return Markup("" if value is None else str(value))


#: The ``grant_read_access`` of the render in progress (per thread / task): the parsed templates are shared.
_GRANT: contextvars.ContextVar[GrantReadAccess] = contextvars.ContextVar("segqa_grant_read_access")


@functools.cache
def _environment() -> Environment:
    """One Liquid environment for every render; its ``grant_read_access`` filter calls the render's own."""
    env = Environment(autoescape=True)

    def grant(value: Any) -> str:
        if value is None or value == "":
            return ""
        return _GRANT.get(default_grant_read_access)(str(value))

    env.filters["grant_read_access"] = grant
    env.filters["to_json"] = _to_json
    env.filters["skip_autoescape"] = _skip_autoescape
    # escape / escape_once are python-liquid built-ins and are autoescape-aware (they return Markup, so the
    # value is escaped once, never twice).
    return env


@functools.lru_cache(maxsize=32)
def _parsed(template_text: str, template_name: str) -> BoundTemplate:
    """A template parsed once (with its includes expanded): the portal renders the same one for every task page."""
    return _environment().from_string(expand_includes(template_text), name=template_name)


def render_task(template_text: str, task_input: Mapping[str, Any], *,
                grant_read_access: GrantReadAccess | None = None, template_name: str = "<template>") -> str:
    """Render a Ground Truth custom template with ``task.input = task_input``; returns the HTML.

    ``grant_read_access`` maps each object URI the template passes through that filter to a URL the worker's
    browser can fetch (default: `default_grant_read_access`). Liquid syntax errors raise SegqaError naming
    the template and the line.
    """
    token = _GRANT.set(grant_read_access or default_grant_read_access)
    try:
        return _parsed(template_text, template_name).render(task={"input": dict(task_input)})
    except LiquidError as exc:
        raise SegqaError(f"{template_name}: Liquid error: {exc}") from None
    finally:
        _GRANT.reset(token)


def render_task_file(path: str | os.PathLike[str], task_input: Mapping[str, Any], *,
                     grant_read_access: GrantReadAccess | None = None) -> str:
    """`render_task` on a template file (local path, ``file://`` or ``s3://``)."""
    text = read_template(path)
    return render_task(text, task_input, grant_read_access=grant_read_access, template_name=os.fspath(path))
