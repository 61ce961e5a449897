"""The reviewer's pages: sign-in, the home page, taking, submitting and giving back tasks, task images."""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from qa_workflow.contract import ContractError, parse_decisions
from qa_workflow.review.portal import auth, signing
from qa_workflow.review.portal.service import AnswerRejected, TooSoon
from qa_workflow.review.portal.web import (
    MAX_JSON_BYTES,
    PortalWeb,
    csrf_ok,
    read_body,
    read_form,
    same_origin,
    secure,
    to_login,
)

log = logging.getLogger("segqa.portal")

_NOTICES = {
    "recorded": ("success", "Submitted and saved. Thank you."),
    "duplicate": ("info", "That task was already submitted; nothing changed."),
    "released": ("info", "Task given back. You will not be given that batch again."),
    "none": ("info", "There is nothing left for you to review in this job right now."),
    "gone": ("warning", "That task is no longer yours (it was submitted, given back or ran out of time)."),
}

_NOT_RECORDED = {"expired": "the time limit passed and the task went to another reviewer",
                 "released": "you gave this task back",
                 "closed": "this batch takes no more answers (its lifetime ended)"}


def reviewer_router(web: PortalWeb) -> APIRouter:
    service = web.service
    settings = service.settings
    router = APIRouter()

    # -- sign-in -------------------------------------------------------------------------------------------

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @router.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "job": service.job_cfg.name}

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, token: str = "") -> HTMLResponse:
        prelogin = auth.new_token(16)
        response = web.page("login.html", token=token[:200], prelogin=prelogin, session=None)
        response.set_cookie(auth.PRELOGIN_COOKIE, prelogin, max_age=3600, httponly=True, samesite="strict",
                            secure=secure(request), path="/login")
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if form is None or not same_origin(request) or not auth.tokens_match(
                request.cookies.get(auth.PRELOGIN_COOKIE), form.get(auth.CSRF_FIELD)):
            return web.message("Sign-in refused", "The sign-in form expired or did not come from this portal. "
                               "Open your login link again.", 403)
        result = await run_in_threadpool(service.db.login, form.get("token", "").strip(),
                                         session_ttl_s=settings.session_ttl_s, now=service.clock())
        if result is None:
            return web.message("Login link not valid", "This login link was already used, has expired, or was "
                               "mistyped. Ask the operator for a new one (segqa review add-reviewer NAME "
                               "--new-link).", 400)
        session_token, session = result
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, session_token, max_age=int(settings.session_ttl_s), httponly=True,
                            samesite="strict", secure=secure(request), path="/")
        response.delete_cookie(auth.PRELOGIN_COOKIE, path="/login")
        log.info("reviewer %s signed in", session.reviewer.name)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        # A forged post (another site's form) must not sign anyone out: only a CSRF-checked one ends the
        # server session, and only then is the cookie dropped.
        checked = await web.signed_in_form(request)
        if isinstance(checked, Response):
            return checked
        await run_in_threadpool(service.db.logout, request.cookies.get(auth.SESSION_COOKIE, ""))
        response = to_login()
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    # -- the reviewer's pages --------------------------------------------------------------------------------

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request, notice: str = "") -> Response:
        session = web.session_of(request)
        if session is None:
            return to_login()
        now = service.clock()
        current = service.db.current_assignment(service.job_id, session.reviewer.id, now)
        recent = [_recent_entry(r) for r in service.db.recent_responses(service.job_id, session.reviewer.id)]
        return web.page("home.html", session=session,
                        progress=service.db.reviewer_progress(service.job_id, session.reviewer.id),
                        current=current, recent=recent, notice=_NOTICES.get(notice), now=now)

    @router.post("/tasks/next")
    async def next_task(request: Request) -> Response:
        checked = await web.signed_in_form(request)
        if isinstance(checked, Response):
            return checked
        session, _form = checked
        assignment = await run_in_threadpool(service.next_task, session.reviewer)
        if assignment is None:
            return RedirectResponse("/?notice=none", status_code=303)
        return RedirectResponse(f"/tasks/{assignment.id}", status_code=303)

    @router.get("/tasks/{assignment_id}", response_class=HTMLResponse)
    def task_page(request: Request, assignment_id: int) -> Response:
        session = web.session_of(request)
        if session is None:
            return to_login()
        assignment = service.task_for(session.reviewer, assignment_id)
        if assignment is None:
            return web.message("Not found", "There is no such task for you.", 404, session)
        now = service.clock()
        if assignment.status == "submitted":
            return RedirectResponse("/?notice=duplicate", status_code=303)
        if assignment.status != "active" or assignment.expires_at <= now:
            return RedirectResponse("/?notice=gone", status_code=303)
        nonce = secrets.token_urlsafe(18)
        task_html = service.render(session.reviewer, assignment, nonce)
        progress = service.db.reviewer_progress(service.job_id, session.reviewer.id)
        return web.page("task.html", nonce=nonce, session=session, assignment=assignment, task_html=task_html,
                        progress=progress, seconds_left=int(assignment.expires_at - now))

    @router.post("/tasks/{assignment_id}/submit")
    async def submit(request: Request, assignment_id: int) -> Response:
        session = await run_in_threadpool(web.session_of, request)
        if session is None:
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        if not csrf_ok(request, session):
            return JSONResponse({"detail": "CSRF check failed; reload the page"}, status_code=403)
        body = await read_body(request, MAX_JSON_BYTES)
        if body is None:
            return JSONResponse({"detail": "answer too large"}, status_code=413)
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return JSONResponse({"detail": "the answer is not valid JSON"}, status_code=400)
        assignment = await run_in_threadpool(service.task_for, session.reviewer, assignment_id)
        if assignment is None:
            return JSONResponse({"detail": "no such task"}, status_code=404)
        try:
            outcome = await run_in_threadpool(service.submit, session.reviewer, assignment, answer)
        except TooSoon as exc:  # the page shows the detail ("Not submitted: ..."); the reviewer may try again
            return JSONResponse({"detail": str(exc), "reason": "too_soon", "wait_s": round(exc.wait_s, 1)},
                                status_code=422, headers={"Retry-After": str(max(1, math.ceil(exc.wait_s)))})
        except AnswerRejected as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        if outcome.status == "recorded":
            return JSONResponse({"status": "recorded", "message": "Submitted and saved.",
                                 "next": "/?notice=recorded"})
        if outcome.status == "duplicate":
            return JSONResponse({"status": "duplicate", "message": "Already submitted; nothing changed.",
                                 "next": "/?notice=duplicate"})
        return JSONResponse({"status": outcome.status, "detail": f"not recorded: {_NOT_RECORDED[outcome.status]}"},
                            status_code=409)

    @router.post("/tasks/{assignment_id}/release")
    async def release(request: Request, assignment_id: int) -> Response:
        checked = await web.signed_in_form(request)
        if isinstance(checked, Response):
            return checked
        session, _form = checked
        assignment = await run_in_threadpool(service.task_for, session.reviewer, assignment_id)
        if assignment is None:
            return web.message("Not found", "There is no such task for you.", 404, session)
        await run_in_threadpool(service.release, assignment)
        return RedirectResponse("/?notice=released", status_code=303)

    @router.get("/assets/{token}")
    def asset(request: Request, token: str) -> Response:
        session = web.session_of(request)
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

    return router


def _recent_entry(response: sqlite3.Row) -> dict[str, Any]:
    """One of the reviewer's recent answers, summarised for the home page (an unreadable answer counts empty).
    The field is read by the contract's one parser, whichever form (array or string holding it) was sent."""
    try:
        decisions = [d.to_json() for d in parse_decisions(json.loads(response["content"]).get("decisions", "[]"))]
    except (ValueError, AttributeError, ContractError):
        decisions = []
    return {"batch_id": response["batch_id"], "class_name": response["class_name"],
            "accepted": sum(1 for d in decisions if d.get("decision") == "accept"),
            "rejected": [d for d in decisions if d.get("decision") == "reject"],
            "comments": [d for d in decisions if d.get("comment")]}
