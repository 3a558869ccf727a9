"""The app as the Functions host indexes it: routes, methods, auth, trigger paths, connections, schedule."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bindings() -> dict[str, dict]:
    import function_app

    # get_functions() may be called once per app object: index once for the whole module
    return {f.get_function_name(): f.get_bindings_dict()["bindings"][0] for f in function_app.app.get_functions()}


def test_the_functions_registered(bindings: dict[str, dict]) -> None:
    assert set(bindings) == {
        "process_manifest",
        "package_status",
        "revoke_grant",
        "revoke_package",
        "list_grants",
        "key_release",
        "health",
        "expire_grants",
        "resend_signoff",
        "signoff_page",
        "signoff_decide",
        "release_package",
        "openapi_document",
    }


def test_blob_trigger(bindings: dict[str, dict]) -> None:
    trigger = bindings["process_manifest"]
    assert trigger["type"] == "blobTrigger"
    assert trigger["path"] == "%STAGING_CONTAINER%/{package_id}/manifest.json"
    assert trigger["connection"] == "EGRESS_STORAGE"
    assert str(trigger["source"]) == "LogsAndContainerScan"


@pytest.mark.parametrize(
    ("name", "route", "method", "auth"),
    [
        ("package_status", "packages/{package_id}", "GET", "function"),
        ("revoke_grant", "grants/{grant_id}/revoke", "POST", "function"),
        ("revoke_package", "packages/{package_id}/revoke", "POST", "function"),
        ("list_grants", "grants", "GET", "function"),
        ("key_release", "packages/{package_id}/key-release", "POST", "function"),
        ("health", "health", "GET", "anonymous"),
        ("openapi_document", "openapi.json", "GET", "anonymous"),
        ("resend_signoff", "packages/{package_id}/signoff/resend", "POST", "function"),
        ("signoff_page", "signoff/{token}", "GET", "anonymous"),  # the token is the credential
        ("signoff_decide", "signoff/{token}", "POST", "anonymous"),
    ],
)
def test_http_routes(bindings: dict[str, dict], name: str, route: str, method: str, auth: str) -> None:
    trigger = bindings[name]
    assert trigger["type"] == "httpTrigger" and trigger["route"] == route
    assert [str(m.value) for m in trigger["methods"]] == [method]
    assert str(trigger["authLevel"].value) == auth


def test_release_queue_trigger(bindings: dict[str, dict]) -> None:
    trigger = bindings["release_package"]
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == "%RELEASE_QUEUE%"
    assert trigger["connection"] == "EGRESS_STORAGE"


def test_timer(bindings: dict[str, dict]) -> None:
    trigger = bindings["expire_grants"]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "%EXPIRY_SCHEDULE%"
    assert trigger["runOnStartup"] is False


def test_event_grid_source_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import blob_trigger_source

    monkeypatch.setenv("BLOB_TRIGGER_SOURCE", "EventGrid")
    assert blob_trigger_source() == "EventGrid"
    monkeypatch.setenv("BLOB_TRIGGER_SOURCE", "Polling")
    with pytest.raises(ValueError):
        blob_trigger_source()
