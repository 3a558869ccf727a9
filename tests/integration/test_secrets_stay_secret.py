"""No token or key in a log, the registry, the audit trail, a record or the manager's email."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.bootstrap import Services, build_services
from shared.settings import Settings
from tests.conftest import MANAGER
from tests.integration.test_pipeline import links_in
from tests.support.flow import approve_all, drain, egress, signoff_tokens
from tests.support.packages import stage_new
from tests.support.servers import DELIVERY_ACCOUNT, DELIVERY_KEY, DEV_KEY, Azurite, SmtpSink

pytestmark = pytest.mark.integration


def test_tokens_and_keys_appear_nowhere_but_the_recipients_email(
    services: Services,
    blob_service: BlobServiceClient,
    azurite: Azurite,
    smtp: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    package_id, raw = stage_new(services, blob_service)
    assert services.intake.process(package_id, raw) == "awaiting_signoff"
    tokens = list(signoff_tokens(smtp, package_id).values())  # the sign-off links: secrets too (DESIGN.md 3a)
    assert len(tokens) == 3
    approve_all(services, smtp, package_id)
    signoff_manager_mail = "".join(m.as_string() for m in smtp.to(MANAGER))
    smtp.clear()
    drain(services)
    signatures = [parse_qs(urlsplit(url).query)["sig"][0] for url in links_in(smtp, "ada@provider.example").values()]
    (grant,) = services.registry.list_grants(package_id=package_id)
    services.end_grant.revoke_grant(grant.grant_id, "sm@dsh.example", "test")
    services.sweep.sweep()

    secrets = [*signatures, *tokens, DEV_KEY]
    ours = [r for r in caplog.records if not r.name.startswith("mail")]  # not the SMTP sink's own debug log
    places: dict[str, str] = {"logs": "\n".join(r.getMessage() for r in ours)}
    tables = TableServiceClient.from_connection_string(azurite.connection_string())
    prefix = services.settings.registry_table_prefix
    for table in (
        f"{prefix}packages",
        f"{prefix}grants",
        f"{prefix}signoffs",
        f"{prefix}signofftokens",
        f"{prefix}grantids",
    ):
        places[table] = repr(list(tables.get_table_client(table).list_entities()))
    for container in (services.settings.audit_container, services.settings.records_container):
        client = blob_service.get_container_client(container)
        places[container] = "".join(client.download_blob(b.name).readall().decode() for b in client.list_blobs())
    places["manager emails"] = signoff_manager_mail + "".join(m.as_string() for m in smtp.to(MANAGER))
    places["package status"] = repr(services.overview.package_status(package_id))
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
        assert "sig=" not in text, f"a SAS signature leaked into {where}"


def test_sealing_across_accounts_signs_with_the_delivery_account(
    settings: Settings, clock, azurite: Azurite, blob_service: BlobServiceClient, smtp: SmtpSink
) -> None:
    """DELIVERY_STORAGE set: the sealed copy lives in the delivery account and its key signs."""
    delivery_cs = azurite.connection_string(DELIVERY_ACCOUNT, DELIVERY_KEY)
    services = build_services(settings.model_copy(update={"delivery_storage": delivery_cs}), clock=clock)
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)

    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    delivery = BlobServiceClient.from_connection_string(delivery_cs)
    assert delivery.get_container_client(f"egress-{package_id}").exists()
    url = next(iter(links_in(smtp, "ada@provider.example").values()))
    assert f"/{DELIVERY_ACCOUNT}/egress-{package_id}?" in url
    names = [b.name for b in ContainerClient.from_container_url(url).list_blobs()]
    assert len(names) == 3
    assert requests.get(url + "&restype=container&comp=list", timeout=10).status_code == 200
