"""HTTP API for the system manager (DESIGN.md section 5)."""

from __future__ import annotations

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions._http import caller, handles_errors, json_body, json_response
from shared.bootstrap import get_services
from shared.domain.records import GrantStatus
from shared.errors import InvalidRequest

bp = func.Blueprint()


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
    return json_response(get_services().overview.package_status(req.route_params["package_id"]))


@bp.function_name("revoke_grant")
@bp.route(route="grants/{grant_id}/revoke", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def revoke_grant(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(
        get_services().end_grant.revoke_grant(req.route_params["grant_id"], actor, _revoke_reason(req))
    )


@bp.function_name("revoke_package")
@bp.route(route="packages/{package_id}/revoke", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def revoke_package(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(
        get_services().end_grant.revoke_package(req.route_params["package_id"], actor, _revoke_reason(req))
    )


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
    grants = get_services().overview.list_grants(package_id=req.params.get("package_id") or None, status=status)
    return json_response({"grants": grants})


@bp.function_name("key_release")
@bp.route(route="packages/{package_id}/key-release", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def key_release(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(get_services().key_release.release(req.route_params["package_id"], actor))


@bp.function_name("resend_signoff")
@bp.route(route="packages/{package_id}/signoff/resend", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handles_errors
def resend_signoff(req: func.HttpRequest) -> func.HttpResponse:
    actor = caller(req)
    return json_response(get_services().signoff.resend(req.route_params["package_id"], actor))


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"status": "ok"})
