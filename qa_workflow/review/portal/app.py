"""`segqa review serve`: the Ground Truth worker experience on the user's own machine (FastAPI).

Pages (jinja2, autoescaped) and endpoints:

    GET  /login[?token=…]            one-time login link → sign-in form      POST /login     → session cookie
    GET  /                           the reviewer's progress, next task      POST /logout
    POST /tasks/next                 take the next task (or resume the open one)
    GET  /tasks/{id}                 the task: the job's Liquid template rendered with the pre-labeling output
    POST /tasks/{id}/submit          the crowd-form output (JSON) → recorded durably before the reply
    POST /tasks/{id}/release         give the task back
    GET  /assets/{token}             a task image through a short-lived signed URL (never by path)
    GET  /operator                   progress per reviewer and per object; exports
    GET  /operator/objects/{id}      one object's answers and consolidation
    GET  /operator/api/progress      the same as JSON
    GET  /operator/export/responses.jsonl, /operator/export/reviews.csv
    GET  /static/…                   crowd-elements.js, portal.css, portal.js
    GET  /healthz

Security: sessions are HttpOnly SameSite=Strict cookies whose hashes live in the portal database; every POST
needs the session's CSRF token and, when the browser sends an Origin header, a same-host origin; a reviewer can
reach only their own tasks (anything else is a 404); pages carry a Content-Security-Policy that allows scripts
only from the portal itself and the template's own script blocks (per-response nonce), images only from the
portal, and no framing.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa_workflow.contract import REJECT_REASONS, SegqaError
from qa_workflow.review.portal import auth, signing
from qa_workflow.review.portal.db import Session
from qa_workflow.review.portal.service import AnswerRejected, PortalSettings, ReviewService

__all__ = ["create_app"]

log = logging.getLogger("segqa.portal")

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16_384
MAX_JSON_BYTES = 1_100_000

_NOTICES = {
    "recorded": ("success", "Submitted and saved. Thank you."),
    "duplicate": ("info", "That task was already submitted; nothing changed."),
    "released": ("info", "Task given back. You will not be given that batch again."),
    "none": ("info", "There is nothing left for you to review in this job right now."),
    "gone": ("warning", "That task is no longer yours (it was submitted, given back or ran out of time)."),
}

_BASE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


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
                        headers.append((name, value if value is not None else _csp().encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _csp(nonce: str | None = None) -> str:
    if nonce is None:
        return _BASE_CSP
    return _BASE_CSP.replace("script-src 'self'", f"script-src 'self' 'nonce-{nonce}'")


def create_app(settings: PortalSettings) -> FastAPI:
    """The portal for one labeling job. The job starts (pre-labeling, recovery) when the app starts."""
    service = ReviewService(settings)
    pages = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)
    pages.globals["reasons"] = REJECT_REASONS
    pages.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title="segqa review portal", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    app.add_middleware(SecurityHeaders)

    # -- helpers -------------------------------------------------------------------------------------------

    def page(name: str, status: int = 200, nonce: str | None = None, **context: Any) -> HTMLResponse:
        html = pages.get_template(name).render(job=service.job_cfg, **context)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": _csp(nonce)})

    def message(title: str, text: str, status: int, session: Session | None = None) -> HTMLResponse:
        return page("message.html", status=status, title=title, text=text, session=session)

    def session_of(request: Request) -> Session | None:
        return service.db.session(request.cookies.get(auth.SESSION_COOKIE), service.clock())

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:  # same-origin GET-initiated form posts from older browsers carry none
            return True
        return urlparse(origin).netloc == request.headers.get("host", "")

    def csrf_ok(request: Request, session: Session, form: dict[str, str] | None = None) -> bool:
        given = request.headers.get(auth.CSRF_HEADER) or (form or {}).get(auth.CSRF_FIELD)
        return same_origin(request) and auth.tokens_match(session.csrf_token, given)

    async def read_form(request: Request) -> dict[str, str] | None:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return None
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    async def signed_in_form(request: Request) -> tuple[Session, dict[str, str] | None] | Response:
        """(session, form) of a signed-in reviewer's form post that passes the CSRF check; otherwise the
        response to send instead (the login page, or a 403 page)."""
        session = await run_in_threadpool(session_of, request)
        if session is None:
            return to_login()
        form = await read_form(request)
        if not csrf_ok(request, session, form):
            return message("Request refused", "The form was stale or forged (CSRF check failed). Reload the page.",
                           403, session)
        return session, form

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    # -- login ---------------------------------------------------------------------------------------------

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "job": service.job_cfg.name}

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, token: str = "") -> HTMLResponse:
        prelogin = auth.new_token(16)
        response = page("login.html", token=token[:200], prelogin=prelogin, session=None)
        response.set_cookie(auth.PRELOGIN_COOKIE, prelogin, max_age=3600, httponly=True, samesite="strict",
                            secure=secure(request), path="/login")
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if form is None or not same_origin(request) or not auth.tokens_match(
                request.cookies.get(auth.PRELOGIN_COOKIE), form.get(auth.CSRF_FIELD)):
            return message("Sign-in refused", "The sign-in form expired or did not come from this portal. "
                           "Open your login link again.", 403)
        result = await run_in_threadpool(service.db.login, form.get("token", "").strip(),
                                         session_ttl_s=settings.session_ttl_s, now=service.clock())
        if result is None:
            return message("Login link not valid", "This login link was already used, has expired, or was "
                           "mistyped. Ask the operator for a new one (segqa review add-reviewer NAME --new-link).", 400)
        session_token, session = result
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, session_token, max_age=int(settings.session_ttl_s), httponly=True,
                            samesite="strict", secure=secure(request), path="/")
        response.delete_cookie(auth.PRELOGIN_COOKIE, path="/login")
        log.info("reviewer %s signed in", session.reviewer.name)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = await run_in_threadpool(session_of, request)
        form = await read_form(request)
        if session is not None and csrf_ok(request, session, form):
            await run_in_threadpool(service.db.logout, request.cookies.get(auth.SESSION_COOKIE, ""))
        response = to_login()
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    # -- the reviewer's pages --------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, notice: str = "") -> Response:
        session = session_of(request)
        if session is None:
            return to_login()
        now = service.clock()
        current = service.db.current_assignment(service.job_id, session.reviewer.id, now)
        recent = []
        for r in service.db.recent_responses(service.job_id, session.reviewer.id):
            try:
                decisions = json.loads(json.loads(r["content"]).get("decisions", "[]"))
            except (ValueError, AttributeError):
                decisions = []
            recent.append({"batch_id": r["batch_id"], "class_name": r["class_name"],
                           "accepted": sum(1 for d in decisions if d.get("decision") == "accept"),
                           "rejected": [d for d in decisions if d.get("decision") == "reject"],
                           "comments": [d for d in decisions if d.get("comment")]})
        return page("home.html", session=session, progress=service.db.reviewer_progress(service.job_id,
                                                                                          session.reviewer.id),
                    current=current, recent=recent, notice=_NOTICES.get(notice), now=now)

    @app.post("/tasks/next")
    async def next_task(request: Request) -> Response:
        checked = await signed_in_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        assignment = await run_in_threadpool(service.next_task, session.reviewer)
        if assignment is None:
            return RedirectResponse("/?notice=none", status_code=303)
        return RedirectResponse(f"/tasks/{assignment.id}", status_code=303)

    @app.get("/tasks/{assignment_id}", response_class=HTMLResponse)
    def task_page(request: Request, assignment_id: int) -> Response:
        session = session_of(request)
        if session is None:
            return to_login()
        assignment = service.task_for(session.reviewer, assignment_id)
        if assignment is None:
            return message("Not found", "There is no such task for you.", 404, session)
        now = service.clock()
        if assignment.status == "submitted":
            return RedirectResponse("/?notice=duplicate", status_code=303)
        if assignment.status != "active" or assignment.expires_at <= now:
            return RedirectResponse("/?notice=gone", status_code=303)
        nonce = secrets.token_urlsafe(18)
        task_html = service.render(session.reviewer, assignment, nonce)
        progress = service.db.reviewer_progress(service.job_id, session.reviewer.id)
        return page("task.html", nonce=nonce, session=session, assignment=assignment, task_html=task_html,
                    progress=progress, seconds_left=int(assignment.expires_at - now))

    @app.post("/tasks/{assignment_id}/submit")
    async def submit(request: Request, assignment_id: int) -> Response:
        session = await run_in_threadpool(session_of, request)
        if session is None:
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        if not csrf_ok(request, session):
            return JSONResponse({"detail": "CSRF check failed; reload the page"}, status_code=403)
        if int(request.headers.get("content-length") or 0) > MAX_JSON_BYTES:
            return JSONResponse({"detail": "answer too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_JSON_BYTES:
            return JSONResponse({"detail": "answer too large"}, status_code=413)
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"detail": "the answer is not valid JSON"}, status_code=400)
        assignment = await run_in_threadpool(service.task_for, session.reviewer, assignment_id)
        if assignment is None:
            return JSONResponse({"detail": "no such task"}, status_code=404)
        try:
            outcome = await run_in_threadpool(service.submit, session.reviewer, assignment, answer)
        except AnswerRejected as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        if outcome.status == "recorded":
            return JSONResponse({"status": "recorded", "message": "Submitted and saved.",
                                 "next": "/?notice=recorded"})
        if outcome.status == "duplicate":
            return JSONResponse({"status": "duplicate", "message": "Already submitted; nothing changed.",
                                 "next": "/?notice=duplicate"})
        reasons = {"expired": "the time limit passed and the task went to another reviewer",
                   "released": "you gave this task back",
                   "closed": "this batch takes no more answers (its lifetime ended)"}
        return JSONResponse({"status": outcome.status, "detail": f"not recorded: {reasons[outcome.status]}"},
                            status_code=409)

    @app.post("/tasks/{assignment_id}/release")
    async def release(request: Request, assignment_id: int) -> Response:
        checked = await signed_in_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        assignment = await run_in_threadpool(service.task_for, session.reviewer, assignment_id)
        if assignment is None:
            return message("Not found", "There is no such task for you.", 404, session)
        await run_in_threadpool(service.release, assignment)
        return RedirectResponse("/?notice=released", status_code=303)

    @app.get("/assets/{token}")
    def asset(request: Request, token: str) -> Response:
        session = session_of(request)
        if session is None:
            return PlainTextResponse("not signed in", status_code=401)
        try:
            data, content_type, max_age = service.asset(token, session.reviewer)
        except signing.ExpiredToken:
            return PlainTextResponse("image link expired; reload the task", status_code=403)
        except signing.InvalidToken:
            return PlainTextResponse("forbidden", status_code=403)
        except FileNotFoundError:
            return PlainTextResponse("image not found", status_code=404)
        return Response(data, media_type=content_type, headers={"Cache-Control": f"private, max-age={max_age}"})

    # -- the operator --------------------------------------------------------------------------------------

    def operator_session(request: Request) -> Session | Response:
        session = session_of(request)
        if session is None:
            return to_login()
        if not session.reviewer.is_operator:
            return message("Operators only", "This page is for the job's operator "
                           "(segqa review add-reviewer NAME --operator).", 403, session)
        return session

    @app.get("/operator", response_class=HTMLResponse)
    def operator(request: Request) -> Response:
        session = operator_session(request)
        if isinstance(session, Response):
            return session
        return page("operator.html", session=session, progress=service.progress())

    @app.get("/operator/objects/{object_id}", response_class=HTMLResponse)
    def operator_object(request: Request, object_id: int) -> Response:
        session = operator_session(request)
        if isinstance(session, Response):
            return session
        detail = service.object_detail(object_id)
        if detail is None:
            return message("Not found", "There is no such object in this job.", 404, session)
        return page("object.html", session=session, obj=detail)

    @app.get("/operator/api/progress")
    def operator_progress(request: Request) -> Response:
        session = operator_session(request)
        if isinstance(session, Response):
            return JSONResponse({"detail": "operators only"}, status_code=403)
        return JSONResponse(service.progress())

    @app.get("/operator/export/responses.jsonl")
    def export_responses(request: Request) -> Response:
        session = operator_session(request)
        if isinstance(session, Response):
            return session
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in service.worker_responses())
        return Response(lines, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="{service.job_cfg.name}-responses.jsonl"'})

    @app.get("/operator/export/reviews.csv")
    def export_reviews(request: Request) -> Response:
        session = operator_session(request)
        if isinstance(session, Response):
            return session
        try:
            text = review_records_csv(service.store_uri)
        except SegqaError as exc:
            return message("Export failed", str(exc), 500, session)
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{service.job_cfg.name}-reviews.csv"'})

    # -- errors --------------------------------------------------------------------------------------------

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/static/", "/assets/", "/operator/api/")) or "json" in (
                request.headers.get("accept") or ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return message("Not found" if exc.status_code == 404 else "Error", str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # e.g. /tasks/../x or a non-numeric id: nothing to find, whatever was tried.
        return message("Not found", "There is no such page.", 404)

    return app


def review_records_csv(store_uri: str) -> str:
    """The store's review-record CSV (ARCHITECTURE §9), as `segqa store export` writes it."""
    from qa_workflow.confirmations import export
    from qa_workflow.confirmations.store import open_store

    st = open_store(store_uri, create=False)
    try:
        rows, _superseded = export.export_review_records(st)
    finally:
        st.close()
    return export.review_records_csv(rows)
