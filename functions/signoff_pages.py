"""Sign-off pages (DESIGN.md section 3a): one named classifier's link, no function key.

The token in the path is the credential; it never reaches a log (the route parameter is not
logged here, and the local host logs no paths). GET shows the page and changes nothing; POST
records the decision from the form (HTML answer) or from JSON (JSON answer).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import azure.functions as func

from functions._http import handles_errors, json_response, parse_json, signed_in_email
from shared.bootstrap import get_services
from shared.errors import EgressError, InvalidRequest, Unprocessable
from shared.rendering import render
from shared.services.notifications import METHOD_TEXT

bp = func.Blueprint()
logger = logging.getLogger(__name__)

_HEADINGS = {
    401: "Please sign in",
    403: "This link is for someone else",
    404: "This sign-off link is not known",
    410: "This sign-off link no longer works",
    422: "Your decision could not be recorded",
}
MAX_BODY = 64 * 1024
_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token must not leak to other sites through a Referer
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _html(body: str, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers=_HTML_HEADERS)


def _error_page(exc: EgressError) -> func.HttpResponse:
    heading = _HEADINGS.get(exc.http_status, "Something went wrong")
    return _html(render("signoff_error.html", heading=heading, message=exc.message, page=True), exc.http_status)


def _html_errors(
    handler: Callable[[func.HttpRequest], func.HttpResponse],
) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Anything unexpected is a 500 page that says so, logged; never a stack trace, never the token."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            message = "Something went wrong on our side; it has been logged. Please try the link again later."
            return _html(render("signoff_error.html", heading="Something went wrong", message=message, page=True), 500)

    return wrapper


def _page(token: str, principal: str | None, error: str | None = None, status: int = 200) -> func.HttpResponse:
    page = get_services().signoff.page(token, principal)
    context = page.context()
    context["method_text"] = METHOD_TEXT[page.manifest.method]
    return _html(render("signoff.html", error=error, page=True, **context), status)


def _is_json(req: func.HttpRequest) -> bool:
    return (req.headers.get("Content-Type") or "").split(";")[0].strip().lower() == "application/json"


def _form(req: func.HttpRequest) -> dict[str, Any]:
    body = req.get_body()
    if len(body) > MAX_BODY:
        raise InvalidRequest("the request is too large")
    if _is_json(req):
        data = parse_json(body or b"{}")
        if not isinstance(data, dict):
            raise InvalidRequest('send {"decision": "approve", "tier": N} or {"decision": "refuse", "comment": "..."}')
        return data
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _tier(value: Any) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"):
        return int(value.strip())  # one ASCII digit: "²" is a digit to str.isdigit but not to int()
    raise Unprocessable("tier must be a whole number from 0 to 4")


@bp.function_name("signoff_page")
@bp.route(route="signoff/{token}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@_html_errors
def signoff_page(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return _page(req.route_params["token"], signed_in_email(req))
    except EgressError as exc:
        return _error_page(exc)


@bp.function_name("signoff_decide")
@bp.route(route="signoff/{token}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@_html_errors
def signoff_decide(req: func.HttpRequest) -> func.HttpResponse:
    if _is_json(req):
        return _decide_json(req)
    token = req.route_params["token"]
    try:
        principal = signed_in_email(req)
        form = _form(req)
        decided = get_services().signoff.decide(
            token, str(form.get("decision", "")), _tier(form.get("tier")), form.get("comment"), principal
        )
    except Unprocessable as exc:
        try:  # show the form again with the reason, as a person expects
            return _page(token, signed_in_email(req), error=exc.message, status=422)
        except EgressError:
            return _error_page(exc)
    except EgressError as exc:
        return _error_page(exc)
    return _html(render("signoff_done.html", page=True, **decided.as_json()))


@handles_errors
def _decide_json(req: func.HttpRequest) -> func.HttpResponse:
    body = _form(req)
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise Unprocessable("comment must be text")
    decided = get_services().signoff.decide(
        req.route_params["token"], str(body.get("decision", "")), _tier(body.get("tier")), comment, signed_in_email(req)
    )
    return json_response(decided.as_json())
