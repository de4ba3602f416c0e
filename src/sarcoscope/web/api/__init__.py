"""The JSON/binary HTTP API of `sarcoscope serve` (OpenAPI at /docs and /openapi.json).

Handlers that decode, segment or measure are plain functions (FastAPI runs them in a worker thread) so the
server stays responsive. Every change is written to the audit log by the store in the same transaction.

The routes live in one module per concern (server, studies, deleted studies, views, labels, results,
downloads; the PACS routes in web.dicomweb); `router` gathers them under /api.
"""

from fastapi import APIRouter

from sarcoscope.web.api import deleted, downloads, labels, results, server, studies, views

router = APIRouter(prefix="/api")
for part in (server, studies, deleted, views, labels, results, downloads):
    router.include_router(part.router)
