"""What the portal's reviewer and operator routers share: the page renderer, the session lookup, the CSRF and
origin checks, bounded form reading, and the security headers every response carries.

`PortalWeb` is built once per app by `create_app` and handed to each router's factory; it holds no request
state, so one instance serves every request.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from qa_workflow.contract import REJECT_REASONS
from qa_workflow.review.portal import auth
from qa_workflow.review.portal.db import Session
from qa_workflow.review.portal.service import ReviewService

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16_384
MAX_JSON_BYTES = 1_100_000

_BASE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def csp(nonce: str | None = None) -> str:
    """The Content-Security-Policy; with a nonce, the template's own script blocks carrying it may run too."""
    if nonce is None:
        return _BASE_CSP
    return _BASE_CSP.replace("script-src 'self'", f"script-src 'self' 'nonce-{nonce}'")


class SecurityHeaders:
    """Pure ASGI middleware: default security headers on every response (a route's own values win).

    ``Referrer-Policy: same-origin`` rather than ``no-referrer``: with no-referrer, browsers send
    ``Origin: null`` on form posts, and the CSRF check needs the real origin."""

    DEFAULTS = ((b"content-security-policy", None), (b"x-content-type-options", b"nosniff"),
                (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                (b"cross-origin-opener-policy", b"same-origin"), (b"cache-control", b"no-store"))

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in self.DEFAULTS:
                    if name not in present:
                        headers.append((name, value if value is not None else csp().encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            # Starlette's own 500 page is sent outside every middleware, without these headers: send ours first
            # (no details), then let the error propagate to be logged.
            if not started:
                await tracking_send({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await tracking_send({"type": "http.response.body", "body": b"Internal server error"})
            raise


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def _public_origin(request: Request) -> str | None:
    """``scheme://host[:port]`` of ``--public-url`` (the address browsers use behind a reverse proxy), if set."""
    public_url = request.app.state.service.settings.public_url
    return None if public_url is None else public_url.rstrip("/")


def secure(request: Request) -> bool:
    public = _public_origin(request)
    return (public or str(request.url)).startswith("https:")


def same_origin(request: Request) -> bool:
    """The browser's Origin is this portal's: the configured public origin when there is one (a proxy rewrites
    Host), else the Host header."""
    origin = request.headers.get("origin")
    if origin is None:  # same-origin GET-initiated form posts from older browsers carry none
        return True
    public = _public_origin(request)
    if public is not None:
        return origin.rstrip("/") == public
    return urlparse(origin).netloc == request.headers.get("host", "")


def csrf_ok(request: Request, session: Session, form: dict[str, str] | None = None) -> bool:
    given = request.headers.get(auth.CSRF_HEADER) or (form or {}).get(auth.CSRF_FIELD)
    return same_origin(request) and auth.tokens_match(session.csrf_token, given)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes. Read as a stream, so a
    chunked body (no Content-Length) is dropped at the first chunk past the limit, never held whole."""
    try:
        if int(request.headers.get("content-length") or 0) > limit:
            return None
    except ValueError:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of a small POST, or None when it is too large or not a form."""
    body = await read_body(request, MAX_FORM_BYTES)
    if body is None:
        return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items()}


class PortalWeb:
    """Pages and sessions of one portal app (one labeling job)."""

    def __init__(self, service: ReviewService) -> None:
        self.service = service
        self.pages = Environment(loader=FileSystemLoader(HERE / "templates"),
                                 autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
        self.pages.globals["reasons"] = REJECT_REASONS
        self.pages.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))

    def page(self, name: str, status: int = 200, nonce: str | None = None, **context: Any) -> HTMLResponse:
        html = self.pages.get_template(name).render(job=self.service.job_cfg, **context)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": csp(nonce)})

    def message(self, title: str, text: str, status: int, session: Session | None = None) -> HTMLResponse:
        return self.page("message.html", status=status, title=title, text=text, session=session)

    def session_of(self, request: Request) -> Session | None:
        return self.service.db.session(request.cookies.get(auth.SESSION_COOKIE), self.service.clock())

    async def signed_in_form(self, request: Request) -> tuple[Session, dict[str, str] | None] | Response:
        """(session, form) of a signed-in reviewer's form post that passes the CSRF check; otherwise the
        response to send instead (the login page, or a 403 page)."""
        session = await run_in_threadpool(self.session_of, request)
        if session is None:
            return to_login()
        form = await read_form(request)
        if not csrf_ok(request, session, form):
            return self.message("Request refused", "The form was stale or forged (CSRF check failed). Reload the "
                                "page.", 403, session)
        return session, form

    def operator_session(self, request: Request) -> Session | Response:
        """The signed-in operator's session, or the response to send instead (login page or a 403 page)."""
        session = self.session_of(request)
        if session is None:
            return to_login()
        if not session.reviewer.is_operator:
            return self.message("Operators only", "This page is for the job's operator "
                                "(segqa review add-reviewer NAME --operator).", 403, session)
        return session
