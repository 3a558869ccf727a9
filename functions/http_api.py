"""HTTP API for the system manager (DESIGN.md section 5)."""

from __future__ import annotations

import re

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions._http import caller, handles_errors, json_body, json_response
from shared.bootstrap import get_services
from shared.domain.manifest import PACKAGE_ID_PATTERN
from shared.domain.records import GrantStatus
from shared.errors import InvalidRequest, NotFound

bp = func.Blueprint()
_PACKAGE_ID = re.compile(PACKAGE_ID_PATTERN)  # used with fullmatch: "$" alone would let a final newline through
_GRANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _shown(value: str) -> str:
    """An identifier as an error message may repeat it: printable and short."""
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _package_id(req: func.HttpRequest) -> str:
    """The route's package id; one no manifest could carry names no package (and never reaches storage)."""
    package_id = req.route_params["package_id"]
    if not _PACKAGE_ID.fullmatch(package_id):
        raise NotFound(f"there is no package {_shown(package_id)}")
    return package_id


def _grant_id(req: func.HttpRequest) -> str:
    grant_id = req.route_params["grant_id"]
    if not _GRANT_ID.fullmatch(grant_id):
        raise NotFound(f"there is no grant {_shown(grant_id)}")
    return grant_id


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str | None = Field(default=None, max_length=1000)


def _revoke_reason(req: func.HttpRequest) -> str | None:
    try:
        return RevokeBody.model_validate(json_body(req)).reason
    except ValidationError as exc:
        raise InvalidRequest('the body may hold only {"reason": "<text up to 1000 characters>"}') from exc


@bp.function_name("package_status")
@bp.route(route="packages/{package_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def package_status(req: func.HttpRequest) -> func.HttpResponse:
    caller(req)
    return json_response(get_services().overview.package_status(_package_id(req)))


@bp.function_name("revoke_grant")
@bp.route(route="grants/{grant_id}/revoke", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def revoke_grant(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    reason = _revoke_reason(req)
    return json_response(get_services().end_grant.revoke_grant(_grant_id(req), actor, reason))


@bp.function_name("revoke_package")
@bp.route(route="packages/{package_id}/revoke", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def revoke_package(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    reason = _revoke_reason(req)
    return json_response(get_services().end_grant.revoke_package(_package_id(req), actor, reason))


@bp.function_name("list_grants")
@bp.route(route="grants", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def list_grants(req: func.HttpRequest) -> func.HttpResponse:
    caller(req)
    status_text = req.params.get("status")
    try:
        status = GrantStatus(status_text) if status_text else None
    except ValueError as exc:
        raise InvalidRequest("status must be active, revoked or expired") from exc
    package_id = req.params.get("package_id") or None
    if package_id is not None and not _PACKAGE_ID.fullmatch(package_id):
        raise InvalidRequest("package_id must be a package id: 3 to 40 lower-case letters, digits and single hyphens")
    grants = get_services().overview.list_grants(package_id=package_id, status=status)
    return json_response({"grants": grants})


@bp.function_name("key_release")
@bp.route(route="packages/{package_id}/key-release", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def key_release(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(get_services().key_release.release(_package_id(req), actor))


@bp.function_name("resend_signoff")
@bp.route(route="packages/{package_id}/signoff/resend", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def resend_signoff(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(get_services().signoff.resend(_package_id(req), actor))


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"status": "ok"})
