"""The HTTP API's OpenAPI 3 document, served as it is kept: ``functions/openapi.json``.

Anonymous: the document holds no secret (every route in it is in the README too), so a client can
read it before it has a function key. In Azure it still sits behind App Service authentication,
which leaves out only ``/api/health``. tests/functions/test_openapi.py holds the document to the
routes ``function_app.app`` registers, so it cannot drift from them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import azure.functions as func

DOCUMENT = Path(__file__).with_name("openapi.json")

bp = func.Blueprint()


@functools.cache
def _document() -> bytes:
    return DOCUMENT.read_bytes()


@bp.function_name("openapi_document")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        _document(),
        status_code=200,
        mimetype="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
