"""The operator's pages: progress per reviewer and per object, and the exports (operators only)."""

from __future__ import annotations

import json
import os

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from qa_workflow.confirmations.export import review_records_csv, review_records_csv_from
from qa_workflow.contract import SegqaError
from qa_workflow.review.portal.web import PortalWeb


def operator_router(web: PortalWeb) -> APIRouter:
    service = web.service
    router = APIRouter(prefix="/operator")

    @router.get("", response_class=HTMLResponse)
    def operator(request: Request) -> Response:
        session = web.operator_session(request)
        if isinstance(session, Response):
            return session
        return web.page("operator.html", session=session, progress=service.progress())

    @router.get("/objects/{object_id}", response_class=HTMLResponse)
    def operator_object(request: Request, object_id: int) -> Response:
        session = web.operator_session(request)
        if isinstance(session, Response):
            return session
        detail = service.object_detail(object_id)
        if detail is None:
            return web.message("Not found", "There is no such object in this job.", 404, session)
        return web.page("object.html", session=session, obj=detail)

    @router.get("/api/progress")
    def operator_progress(request: Request) -> Response:
        session = web.operator_session(request)
        if isinstance(session, Response):
            return JSONResponse({"detail": "operators only"}, status_code=403)
        return JSONResponse(service.progress())

    @router.get("/export/responses.jsonl")
    def export_responses(request: Request) -> Response:
        session = web.operator_session(request)
        if isinstance(session, Response):
            return session
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in service.worker_responses())
        return Response(lines, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="{service.job_cfg.name}-responses.jsonl"'})

    @router.get("/export/reviews.csv")
    def export_reviews(request: Request) -> Response:
        session = web.operator_session(request)
        if isinstance(session, Response):
            return session
        try:
            if _store_not_created_yet(service.store_uri):  # the consolidator creates it with the first answer
                text = review_records_csv([])
            else:
                text, _superseded = review_records_csv_from(service.store_uri)
        except SegqaError as exc:
            return web.message("Export failed", str(exc), 500, session)
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{service.job_cfg.name}-reviews.csv"'})

    return router


def _store_not_created_yet(store_uri: str) -> bool:
    """A local SQLite store whose file does not exist yet (nothing consolidated): its export is a header only."""
    from qa_workflow.confirmations.store import open_store

    store = open_store(store_uri, create=False)
    try:
        path = getattr(store, "path", None)
        return isinstance(path, str) and not os.path.isfile(path)
    finally:
        store.close()
