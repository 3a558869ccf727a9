"""Key Vault and ACS adapters with the real SDK clients against fake HTTPS endpoints."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from azure.communication.email import EmailClient
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.keyvault.secrets import SecretClient

from shared.adapters.email import AcsEmailSender
from shared.adapters.package_keys import KeyVaultPackageKeys
from shared.adapters.secrets import KeyVaultSigningKeys
from shared.errors import EmailUnavailable, SecretsUnavailable
from shared.ports import KeyDeletion, OutgoingEmail
from tests.support.fake_https import FakeHttps, Recorded, Reply

CHALLENGE = 'Bearer authorization="https://login.microsoftonline.com/tenant-id", resource="https://vault.azure.net"'


class FakeCredential:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake-aad-token", int(time.time()) + 3600)


def key_vault(reply_for_secret: Reply) -> FakeHttps:
    def handle(request: Recorded) -> Reply:
        if "Authorization" not in request.headers:
            return Reply(401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": CHALLENGE})
        return reply_for_secret

    return FakeHttps(handle)


@pytest.fixture
def servers() -> Iterator[list[FakeHttps]]:
    started: list[FakeHttps] = []
    yield started
    for server in started:
        server.close()


def test_key_vault_adapter_reads_the_signing_key(servers: list[FakeHttps]) -> None:
    server = key_vault(
        Reply(200, {"value": "the-account-key", "id": "https://127.0.0.1/secrets/delivery-storage-key/v1"})
    )
    servers.append(server)
    credential = FakeCredential()
    client = SecretClient(
        server.url, credential, verify_challenge_resource=False, connection_verify=str(server.ca_file)
    )

    assert KeyVaultSigningKeys(client, "delivery-storage-key").account_key() == "the-account-key"
    assert server.requests[-1].path.startswith("/secrets/delivery-storage-key")
    assert server.requests[-1].headers["Authorization"] == "Bearer fake-aad-token"
    assert credential.scopes == ["https://vault.azure.net/.default"]


def test_key_vault_missing_secret_and_outage_are_clear(servers: list[FakeHttps]) -> None:
    missing = key_vault(Reply(404, {"error": {"code": "SecretNotFound", "message": "not found"}}))
    servers.append(missing)
    client = SecretClient(
        missing.url, FakeCredential(), verify_challenge_resource=False, connection_verify=str(missing.ca_file)
    )
    with pytest.raises(SecretsUnavailable, match="no secret named 'delivery-storage-key'"):
        KeyVaultSigningKeys(client, "delivery-storage-key").account_key()

    down = key_vault(Reply(503, {"error": {"code": "ServiceUnavailable"}}))
    servers.append(down)
    client = SecretClient(
        down.url, FakeCredential(), verify_challenge_resource=False, connection_verify=str(down.ca_file), retry_total=0
    )
    with pytest.raises(SecretsUnavailable, match="did not answer"):
        KeyVaultSigningKeys(client, "delivery-storage-key").account_key()


def acs(final_status: str) -> FakeHttps:
    holder: dict[str, FakeHttps] = {}

    def handle(request: Recorded) -> Reply:
        if request.method == "POST":
            location = f"{holder['server'].url}/emails/operations/op-1?api-version=2023-03-31"
            return Reply(202, {"id": "op-1", "status": "Running"}, {"Operation-Location": location, "Retry-After": "0"})
        return Reply(200, {"id": "op-1", "status": final_status})

    holder["server"] = FakeHttps(handle)
    return holder["server"]


MESSAGE = OutgoingEmail(
    to="ada@provider.example",
    subject="s",
    text="plain",
    html="<p>html</p>",
    idempotency_key="5f0c3b9e-3f7d-4c53-8b4e-2b7f9b8f6a11",
)


def test_acs_adapter_sends_and_waits_for_success(servers: list[FakeHttps]) -> None:
    server = acs("Succeeded")
    servers.append(server)
    key = base64.b64encode(b"fake-acs-access-key").decode()
    client = EmailClient(server.url, AzureKeyCredential(key), connection_verify=str(server.ca_file))

    AcsEmailSender(client, "egress@dsh.example", polling_interval=0).send(MESSAGE)

    post = server.requests[0]
    assert post.method == "POST" and post.path.startswith("/emails:send")
    sent = json.loads(post.body)
    assert sent["senderAddress"] == "egress@dsh.example"
    assert sent["recipients"]["to"] == [{"address": "ada@provider.example"}]
    assert sent["content"] == {"subject": "s", "plainText": "plain", "html": "<p>html</p>"}
    assert {k.lower(): v for k, v in post.headers.items()}["operation-id"] == MESSAGE.idempotency_key
    assert post.headers["Authorization"].startswith("HMAC-SHA256")


def test_acs_failure_is_an_email_error(servers: list[FakeHttps]) -> None:
    server = acs("Failed")
    servers.append(server)
    key = base64.b64encode(b"fake-acs-access-key").decode()
    client = EmailClient(server.url, AzureKeyCredential(key), connection_verify=str(server.ca_file))
    with pytest.raises(EmailUnavailable):
        AcsEmailSender(client, "egress@dsh.example", polling_interval=0).send(MESSAGE)


# Deleting a package key: Key Vault soft-deletes (the secret moves to /deletedsecrets), the SDK's
# poller waits until the deleted secret is there, then the adapter tries to purge it.

PACKAGE_ID = "p-20261125-0001"
KEY_NAME = f"package-key-{PACKAGE_ID}"
PURGE_DATE = 1803556800  # 2027-02-25T12:00:00Z: 90 days after the deletion, in Unix seconds as Key Vault sends it
DELETED = {
    "id": f"https://127.0.0.1/secrets/{KEY_NAME}/0123456789abcdef",
    "attributes": {"enabled": True, "created": 1795608000, "updated": 1795608000, "recoveryLevel": "Recoverable"},
    "contentType": "age-identity",
    "recoveryId": f"https://127.0.0.1/deletedsecrets/{KEY_NAME}",
    "deletedDate": 1795780800,
    "scheduledPurgeDate": PURGE_DATE,
}
NOT_FOUND = Reply(
    404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {KEY_NAME} was not found"}}
)
PURGE_PROTECTED = Reply(
    403,
    {
        "error": {
            "code": "Forbidden",
            "message": "Operation 'purge' is not allowed because purge protection is enabled for this vault. "
            "Key Vault service will automatically purge it after the retention period has passed.",
        }
    },
)


def key_vault_routes(routes: dict[tuple[str, str], Reply]) -> FakeHttps:
    """Answers by method and path (without the query); anything else is a 404."""

    def handle(request: Recorded) -> Reply:
        if "Authorization" not in request.headers:
            return Reply(401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": CHALLENGE})
        return routes.get((request.method, request.path.split("?")[0]), NOT_FOUND)

    return FakeHttps(handle)


def package_keys(server: FakeHttps) -> KeyVaultPackageKeys:
    client = SecretClient(
        server.url,
        FakeCredential(),
        verify_challenge_resource=False,
        connection_verify=str(server.ca_file),
        retry_total=0,
    )
    return KeyVaultPackageKeys(client)


def sent(server: FakeHttps) -> list[tuple[str, str]]:
    """The authenticated requests (the first of each is sent bare to get the challenge)."""
    return [(r.method, r.path.split("?")[0]) for r in server.requests if "Authorization" in r.headers]


PURGED_BY_VAULT = datetime(2027, 2, 25, 12, 0, tzinfo=UTC)
DELETE_THEN_WAIT = [("DELETE", f"/secrets/{KEY_NAME}"), ("GET", f"/deletedsecrets/{KEY_NAME}")]
PURGE = ("DELETE", f"/deletedsecrets/{KEY_NAME}")


def test_deleting_a_package_key_purges_it_when_the_vault_allows(servers: list[FakeHttps]) -> None:
    server = key_vault_routes(
        {
            ("DELETE", f"/secrets/{KEY_NAME}"): Reply(200, DELETED),
            ("GET", f"/deletedsecrets/{KEY_NAME}"): Reply(200, DELETED),
            PURGE: Reply(204),
        }
    )
    servers.append(server)

    assert package_keys(server).delete(PACKAGE_ID) == KeyDeletion("purged")
    assert sent(server) == [*DELETE_THEN_WAIT, PURGE]


def test_purge_protection_leaves_the_key_soft_deleted_until_its_purge_date(
    servers: list[FakeHttps], caplog: pytest.LogCaptureFixture
) -> None:
    server = key_vault_routes(
        {
            ("DELETE", f"/secrets/{KEY_NAME}"): Reply(200, DELETED),
            ("GET", f"/deletedsecrets/{KEY_NAME}"): Reply(200, DELETED),
            PURGE: PURGE_PROTECTED,
        }
    )
    servers.append(server)

    deletion = package_keys(server).delete(PACKAGE_ID)

    assert deletion == KeyDeletion("soft_deleted", PURGED_BY_VAULT)
    assert deletion.recoverable_until is not None and deletion.recoverable_until.timestamp() == PURGE_DATE
    assert sent(server) == [*DELETE_THEN_WAIT, PURGE]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the vault's own rule: expected


@pytest.mark.parametrize(
    ("refusal", "logged"),
    [
        (
            Reply(403, {"error": {"code": "ForbiddenByRbac", "message": "Caller is not authorized"}}),
            "403 ForbiddenByRbac",
        ),
        (Reply(400, {"error": {"code": "BadParameter", "message": "Purge is not allowed"}}), "400 BadParameter"),
    ],
)
def test_a_purge_refused_otherwise_is_soft_deleted_and_logged(
    servers: list[FakeHttps], caplog: pytest.LogCaptureFixture, refusal: Reply, logged: str
) -> None:
    server = key_vault_routes(
        {
            ("DELETE", f"/secrets/{KEY_NAME}"): Reply(200, DELETED),
            ("GET", f"/deletedsecrets/{KEY_NAME}"): Reply(200, DELETED),
            PURGE: refusal,
        }
    )
    servers.append(server)

    with caplog.at_level(logging.WARNING, logger="shared.adapters.package_keys"):
        deletion = package_keys(server).delete(PACKAGE_ID)

    assert deletion == KeyDeletion("soft_deleted", PURGED_BY_VAULT)
    assert f"refused to purge the key of {PACKAGE_ID} ({logged})" in caplog.text


def test_a_key_that_is_not_in_the_vault_is_absent(servers: list[FakeHttps]) -> None:
    server = key_vault_routes({})
    servers.append(server)

    assert package_keys(server).delete(PACKAGE_ID) == KeyDeletion("absent")
    assert sent(server) == DELETE_THEN_WAIT  # looked for in the deleted collection too; nothing to purge


def test_a_key_deleted_by_an_earlier_pass_is_found_among_the_deleted(servers: list[FakeHttps]) -> None:
    server = key_vault_routes({("GET", f"/deletedsecrets/{KEY_NAME}"): Reply(200, DELETED), PURGE: PURGE_PROTECTED})
    servers.append(server)

    deletion = package_keys(server).delete(PACKAGE_ID)

    assert deletion == KeyDeletion("soft_deleted", PURGED_BY_VAULT)
    assert sent(server) == [*DELETE_THEN_WAIT, PURGE]


@pytest.mark.parametrize("failing", [("DELETE", f"/secrets/{KEY_NAME}"), PURGE])
def test_a_key_vault_outage_while_deleting_is_a_secrets_error(
    servers: list[FakeHttps], failing: tuple[str, str]
) -> None:
    routes = {
        ("DELETE", f"/secrets/{KEY_NAME}"): Reply(200, DELETED),
        ("GET", f"/deletedsecrets/{KEY_NAME}"): Reply(200, DELETED),
        PURGE: Reply(204),
    }
    routes[failing] = Reply(503, {"error": {"code": "ServiceUnavailable"}})
    server = key_vault_routes(routes)
    servers.append(server)

    with pytest.raises(SecretsUnavailable, match=f"did not delete the key of {PACKAGE_ID}"):
        package_keys(server).delete(PACKAGE_ID)
