"""The sign-off routes and the release queue trigger, called with real azure.functions objects."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import azure.functions as func
import pytest
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage

from functions.http_api import package_status, resend_signoff
from functions.release_queue import release_package
from functions.signoff_pages import signoff_decide, signoff_page
from functions.staging_trigger import process_manifest
from shared.bootstrap import Services
from tests.support.flow import queue_client, signoff_tokens
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, SAMPLE_FILES, manifest_for, new_package_id, stage
from tests.support.servers import SmtpSink

pytestmark = pytest.mark.integration

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


def page(token: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(
        "GET", f"/api/signoff/{token}", route_params={"token": token}, body=b"", headers=headers or {}
    )
    return signoff_page(request)


def post(token: str, body: bytes, headers: dict[str, str]) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"/api/signoff/{token}", route_params={"token": token}, body=body, headers=headers
    )
    return signoff_decide(request)


def staged_package(services: Services, blob_service, smtp: SmtpSink) -> tuple[str, dict[str, str]]:
    package_id = new_package_id()
    container = services.settings.staging_container
    raw = stage(blob_service, container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))
    process_manifest(InputStream(data=raw, name=f"{container}/{package_id}/manifest.json", length=len(raw)))
    return package_id, signoff_tokens(smtp, package_id)


def queue_messages(services: Services) -> list[QueueMessage]:
    client = queue_client(services)
    out = []
    for message in client.receive_messages(max_messages=32):
        out.append(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count))
        client.delete_message(message)
    return out


def test_get_shows_the_page_and_changes_nothing(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id, tokens = staged_package(app_services, blob_service, smtp)
    before = [s.model_dump() for s in app_services.registry.list_signoffs(package_id)]

    response = page(tokens[INVESTIGATOR["email"]])

    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_body().decode()
    assert package_id in html and "investigator" in html and INVESTIGATOR["name"] in html
    for path, _data in SAMPLE_FILES.items():
        assert path in html
    assert "203.0.113.7" in html and "48 hours" in html
    assert response.headers["Referrer-Policy"] == "no-referrer" and response.headers["Cache-Control"] == "no-store"
    assert [s.model_dump() for s in app_services.registry.list_signoffs(package_id)] == before


def test_form_posts_record_decisions_and_the_queue_trigger_releases(
    app_services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, tokens = staged_package(app_services, blob_service, smtp)
    for person in (PROVIDER, INVESTIGATOR, REFEREE):
        done = post(tokens[person["email"]], urlencode({"decision": "approve", "tier": "2"}).encode(), FORM)
        assert done.status_code == 200 and "tier 2" in done.get_body().decode()

    messages = queue_messages(app_services)
    assert len(messages) == 1
    release_package(messages[0])
    release_package(messages[0])  # delivered twice: changes nothing

    status = json.loads(
        package_status(func.HttpRequest("GET", "/x", route_params={"package_id": package_id}, body=b"")).get_body()
    )
    assert status["status"] == "granted" and len(status["grants"]) == 1
    assert {(s["role"], s["status"], s["tier"]) for s in status["signoffs"]} == {
        ("data_provider_representative", "approved", 2),
        ("investigator", "approved", 2),
        ("referee", "approved", 2),
    }
    links = [m for m in smtp.messages if "ready to download" in str(m["Subject"])]
    assert len(links) == 1


def test_json_answers_and_status_codes(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    _package_id, tokens = staged_package(app_services, blob_service, smtp)
    mine = tokens[PROVIDER["email"]]

    assert page("A" * 43).status_code == 404
    assert post("A" * 43, b'{"decision": "approve", "tier": 1}', JSON).status_code == 404
    missing_tier = post(mine, b'{"decision": "approve"}', JSON)
    assert missing_tier.status_code == 422 and json.loads(missing_tier.get_body())["error"] == "unprocessable"
    assert post(mine, b'{"decision": "refuse"}', JSON).status_code == 422
    assert post(mine, b'{"decision": "approve", "tier": true}', JSON).status_code == 422
    assert post(mine, b'{"decision": "shrug", "tier": 1}', JSON).status_code == 422
    assert post(mine, b"[1, 2]", JSON).status_code == 400
    ok = post(mine, b'{"decision": "approve", "tier": 2}', JSON)
    assert ok.status_code == 200 and json.loads(ok.get_body())["decision"] == "approved"
    again = post(mine, b'{"decision": "approve", "tier": 2}', JSON)
    assert again.status_code == 410 and json.loads(again.get_body())["error"] == "gone"
    assert page(mine).status_code == 410
    # a refused form without a comment is shown again with the reason
    other = tokens[INVESTIGATOR["email"]]
    shown = post(other, urlencode({"decision": "refuse", "comment": ""}).encode(), FORM)
    assert shown.status_code == 422 and "say why" in shown.get_body().decode()


def test_resend_through_the_api(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id, tokens = staged_package(app_services, blob_service, smtp)
    request = func.HttpRequest(
        "POST", f"/api/packages/{package_id}/signoff/resend", route_params={"package_id": package_id}, body=b""
    )
    response = resend_signoff(request)
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert len(body["resent_to"]) == 3 and all(t not in response.get_body().decode() for t in tokens.values())
    assert page(tokens[PROVIDER["email"]]).status_code == 410


@pytest.mark.parametrize(
    "header",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[1,2]").decode(),
        base64.b64encode(json.dumps({"claims": "nope"}).encode()).decode(),
        base64.b64encode(json.dumps({"claims": [{"typ": "name", "val": "no email"}]}).encode()).decode(),
    ],
)
def test_a_malformed_principal_is_401_never_500(app_services: Services, blob_service, smtp, header: str) -> None:
    _, tokens = staged_package(app_services, blob_service, smtp)
    response = page(tokens[PROVIDER["email"]], {"X-MS-CLIENT-PRINCIPAL": header})
    assert response.status_code == 401


def test_the_principal_must_be_the_named_person(
    app_services: Services, blob_service, smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.bootstrap import reset_services
    from shared.settings import get_settings

    monkeypatch.setenv("SIGNOFF_REQUIRE_PRINCIPAL", "true")
    get_settings.cache_clear()
    reset_services()
    from shared.bootstrap import get_services

    services = get_services()
    _, tokens = staged_package(services, blob_service, smtp)

    def principal(email: str) -> dict[str, str]:
        claims = {"auth_typ": "aad", "claims": [{"typ": "preferred_username", "val": email}]}
        return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(claims).encode()).decode()}

    token = tokens[PROVIDER["email"]]
    assert page(token).status_code == 401
    assert page(token, principal("someone@else.example")).status_code == 403
    assert page(token, principal(PROVIDER["email"].upper())).status_code == 200
