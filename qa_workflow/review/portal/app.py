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

Layout: `reviewer_routes` (sign-in, home, tasks, assets) and `operator_routes` (/operator/…) are two routers
over what `web` shares (pages, sessions, CSRF and origin checks, security headers); `create_app` assembles them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa_workflow.review.portal.operator_routes import operator_router
from qa_workflow.review.portal.reviewer_routes import reviewer_router
from qa_workflow.review.portal.service import PortalSettings, ReviewService
from qa_workflow.review.portal.web import HERE, PortalWeb, SecurityHeaders

__all__ = ["create_app"]


def create_app(settings: PortalSettings) -> FastAPI:
    """The portal for one labeling job. The job starts (pre-labeling, recovery) when the app starts."""
    service = ReviewService(settings)
    web = PortalWeb(service)

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
    app.include_router(reviewer_router(web))
    app.include_router(operator_router(web))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/static/", "/assets/", "/operator/api/")) or "json" in (
                request.headers.get("accept") or ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return web.message("Not found" if exc.status_code == 404 else "Error", str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # e.g. /tasks/../x or a non-numeric id: nothing to find, whatever was tried.
        return web.message("Not found", "There is no such page.", 404)

    return app
