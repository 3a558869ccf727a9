"""Key Vault and ACS adapters with the real SDK clients against fake HTTPS endpoints."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from azure.communication.email import EmailClient
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.keyvault.secrets import SecretClient

from shared.adapters.email import AcsEmailSender
from shared.adapters.secrets import KeyVaultSigningKeys
from shared.errors import EmailUnavailable, SecretsUnavailable
from shared.ports import OutgoingEmail
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
