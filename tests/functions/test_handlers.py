"""The trigger handlers, called with real azure.functions request objects."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from functions.expiry_timer import expire_grants
from functions.http_api import health, list_grants, package_status, revoke_grant, revoke_package
from functions.release_queue import release_package
from functions.signoff_pages import signoff_decide
from functions.staging_trigger import process_manifest
from shared.bootstrap import Services
from shared.domain.audit import verify_chain
from tests.support.flow import queue_client, signoff_tokens
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage
from tests.support.servers import DEV_KEY, SmtpSink

pytestmark = pytest.mark.integration


def http(
    method: str, url: str, route_params: dict[str, str] | None = None, body: bytes = b"", **kw
) -> func.HttpRequest:
    return func.HttpRequest(method, url, route_params=route_params or {}, body=body, **kw)


def run_release_queue(services: Services) -> None:
    """The queue trigger, handed each message on the release queue as the host would."""
    client = queue_client(services)
    while batch := list(client.receive_messages(max_messages=32)):
        for message in batch:
            release_package(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=1))
            client.delete_message(message)


def deliver(services: Services, blob_service, smtp: SmtpSink) -> str:
    """Blob trigger, each named person's sign-off through the sign-off route, then the release queue trigger."""
    package_id = new_package_id()
    container = services.settings.staging_container
    raw = stage(blob_service, container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))
    process_manifest(InputStream(data=raw, name=f"{container}/{package_id}/manifest.json", length=len(raw)))
    tokens = signoff_tokens(smtp, package_id)
    assert len(tokens) == 3
    for token in tokens.values():
        decided = signoff_decide(
            http(
                "POST",
                f"/api/signoff/{token}",
                {"token": token},
                body=b'{"decision": "approve", "tier": 2}',
                headers={"Content-Type": "application/json"},
            )
        )
        assert decided.status_code == 200, decided.get_body()
    run_release_queue(services)
    return package_id


def test_blob_trigger_then_status_then_revoke(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id = deliver(app_services, blob_service, smtp)

    status = package_status(http("GET", f"/api/packages/{package_id}", {"package_id": package_id}))
    assert status.status_code == 200 and status.mimetype == "application/json"
    body = json.loads(status.get_body())
    assert body["status"] == "granted" and body["tier"] == 2 and body["method"] == "storage_explorer"
    assert body["bytes"] == sum(len(d) for d in SAMPLE_FILES.values())
    assert sorted(f["path"] for f in body["files"]) == sorted(SAMPLE_FILES)
    (grant,) = body["grants"]
    assert grant["status"] == "active" and grant["ip_ranges"] == ["203.0.113.7", "198.51.100.0/28"]
    assert [e["action"] for e in body["audit"]][-1] == "granted"

    listed = json.loads(
        list_grants(http("GET", "/api/grants", params={"status": "active", "package_id": package_id})).get_body()
    )
    assert [g["grant_id"] for g in listed["grants"]] == [grant["grant_id"]]

    revoked = revoke_grant(http("POST", "/x", {"grant_id": grant["grant_id"]}, body=b'{"reason": "leaked"}'))
    assert revoked.status_code == 200 and json.loads(revoked.get_body())["status"] == "revoked"
    again = revoke_grant(http("POST", "/x", {"grant_id": grant["grant_id"]}))
    assert again.status_code == 200
    everything = revoke_package(http("POST", "/x", {"package_id": package_id}))
    assert json.loads(everything.get_body())["grants"][0]["revoke_reason"] == "leaked"
    assert verify_chain(app_services.audit.read(package_id)) == []
    for response in (status, revoked, everything):
        assert b"sig=" not in response.get_body() and DEV_KEY.encode() not in response.get_body()


def test_errors_are_json_with_a_reason_and_no_trace(app_services: Services) -> None:
    missing = package_status(http("GET", "/x", {"package_id": "wp-nope"}))
    assert missing.status_code == 404
    assert json.loads(missing.get_body()) == {"error": "not_found", "message": "there is no package wp-nope"}
    assert revoke_grant(http("POST", "/x", {"grant_id": "nope"})).status_code == 404
    assert revoke_package(http("POST", "/x", {"package_id": "wp-nope"})).status_code == 404
    bad_body = revoke_grant(http("POST", "/x", {"grant_id": "nope"}, body=b"{not json"))
    assert bad_body.status_code == 400 and "Traceback" not in bad_body.get_body().decode()
    bad_status = list_grants(http("GET", "/api/grants", params={"status": "dancing"}))
    assert bad_status.status_code == 400


def test_manager_principal_is_required_and_recorded_when_configured(
    app_services: Services, blob_service, smtp, monkeypatch
) -> None:
    from shared.settings import get_settings

    package_id = deliver(app_services, blob_service, smtp)
    grant_id = app_services.registry.list_grants(package_id=package_id)[0].grant_id
    monkeypatch.setenv("REQUIRE_MANAGER_PRINCIPAL", "true")
    get_settings.cache_clear()

    def principal(roles: list[str]) -> str:
        claims = [{"typ": "preferred_username", "val": "sm@dsh.example"}] + [{"typ": "roles", "val": r} for r in roles]
        return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()

    anonymous = revoke_grant(http("POST", "/x", {"grant_id": grant_id}))
    assert anonymous.status_code == 401
    no_role = revoke_grant(http("POST", "/x", {"grant_id": grant_id}, headers={"X-MS-CLIENT-PRINCIPAL": principal([])}))
    assert no_role.status_code == 403
    ok = revoke_grant(
        http("POST", "/x", {"grant_id": grant_id}, headers={"X-MS-CLIENT-PRINCIPAL": principal(["EgressManager"])})
    )
    assert ok.status_code == 200 and json.loads(ok.get_body())["revoked_by"] == "sm@dsh.example"
    assert app_services.audit.read(package_id)[-1].actor == "sm@dsh.example"


def test_timer_handler_expires_and_health_answers(app_services: Services) -> None:
    expire_grants(TimerRequest(past_due=False))
    answer = health(http("GET", "/api/health"))
    assert answer.status_code == 200 and json.loads(answer.get_body()) == {"status": "ok"}
