"""HTTP edge helpers: JSON responses, the error mapper, and who the caller is."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.errors import EgressError, Forbidden, InvalidRequest, Unauthorized
from shared.settings import get_settings

logger = logging.getLogger(__name__)

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
LOCAL_ACTOR = "system-manager (function key)"


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, mimetype="application/json")


def error_response(code: str, message: str, status: int) -> func.HttpResponse:
    return json_response({"error": code, "message": message}, status)


def handles_errors(
    handler: Callable[[func.HttpRequest], func.HttpResponse],
) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Map typed errors to their status; anything unexpected becomes a 500 without a stack trace."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except EgressError as exc:
            return error_response(exc.code, exc.message, exc.http_status)
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            return error_response("internal_error", "Something went wrong on our side; it has been logged.", 500)

    return wrapper


_EMAIL_CLAIMS = (
    "preferred_username",
    "email",
    "emails",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
)
_ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


def _principal(req: func.HttpRequest) -> dict[str, Any] | None:
    """The App Service authentication principal, or None when the header is absent.

    App Service authentication sets ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON) and strips any copy a
    client sends, so it can be trusted when authentication is in front of the app. Anything that
    is not that shape is a 401, never a 500.
    """
    header = req.headers.get(PRINCIPAL_HEADER)
    if not header:
        return None
    try:
        principal = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise Unauthorized("the client principal header is not valid") from exc
    claims = principal.get("claims") if isinstance(principal, dict) else None
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise Unauthorized("the client principal header is not valid")
    return principal


def _claims(principal: dict[str, Any], types: tuple[str, ...]) -> list[str]:
    return [str(c.get("val")) for c in principal["claims"] if c.get("typ") in types and c.get("val")]


def caller(req: func.HttpRequest) -> str:
    """Who is calling the manager API, for the audit trail; in Azure, checks the EgressManager role too."""
    settings = get_settings()
    principal = _principal(req)
    if principal is None:
        if settings.require_manager_principal:
            raise Unauthorized("sign in through the app's Entra ID authentication to use this API")
        return LOCAL_ACTOR
    roles = set(_claims(principal, _ROLE_CLAIMS))
    name = next(iter(_claims(principal, ("preferred_username", "name", "upn"))), None)
    if settings.require_manager_principal and settings.manager_role not in roles:
        raise Forbidden(f"the {settings.manager_role} role is needed to manage egress")
    return str(name or principal.get("userId") or "unknown principal")


def signed_in_email(req: func.HttpRequest) -> str | None:
    """The signed-in person's email address (sign-off pages), or None when nobody is signed in."""
    principal = _principal(req)
    if principal is None:
        return None
    found = _claims(principal, _EMAIL_CLAIMS)
    if not found and "@" in str(principal.get("userDetails") or ""):
        found = [str(principal["userDetails"])]
    if not found:
        raise Unauthorized("the signed-in account has no email address")
    return found[0]


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; anything that is not (bad UTF-8, nesting too deep) is a 400, never a 500."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("the request body is not valid JSON") from exc


def json_body(req: func.HttpRequest) -> dict[str, Any]:
    raw = req.get_body()
    if not raw:
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body
