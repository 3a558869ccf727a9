"""The core pipeline on a real Azurite and a real SMTP sink: stage -> sealed, granted, emailed."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from shared.bootstrap import Services
from shared.domain.audit import verify_chain
from shared.domain.records import GrantStatus, PackageStatus
from tests.conftest import MANAGER
from tests.support.flow import egress
from tests.support.packages import SAMPLE_FILES, stage_new, staged
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

LINK_RE = re.compile(r"Link for (\S+): (http\S+)")


def links_in(smtp: SmtpSink, address: str) -> dict[str, str]:
    (message,) = smtp.to(address)
    return dict(LINK_RE.findall(body_text(message)))


def test_a_classified_package_is_sealed_granted_and_emailed(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id, raw = stage_new(services, blob_service)

    assert egress(services, smtp, package_id, raw) == "granted"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED
    assert staged(blob_service, services.settings.staging_container, package_id) == {}, "staging is emptied once sealed"
    sealed = blob_service.get_container_client(f"egress-{package_id}")
    assert {b.name for b in sealed.list_blobs()} == set(SAMPLE_FILES)

    (grant,) = services.registry.list_grants(package_id=package_id)
    assert grant.status == GrantStatus.ACTIVE and grant.notified_at is not None
    links = links_in(smtp, "ada@provider.example")
    assert set(links) == {"203.0.113.7", "198.51.100.0/28"}

    manager_mail = smtp.to(MANAGER)
    assert len(manager_mail) == 1 and grant.grant_id in body_text(manager_mail[0])
    assert "sig=" not in manager_mail[0].as_string()

    assert verify_chain(services.audit.read(package_id)) == []
    actions = [e.action for e in services.audit.read(package_id)]
    assert actions == [
        "manifest_received",
        *["signoff_requested"] * 3,
        *["signoff_approved"] * 3,
        "signoff_completed",
        "sealed",
        "grant_created",
        "recipient_notified",
        "granted",
    ]


def test_the_token_is_bound_to_its_policy_address_and_https(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    (grant,) = services.registry.list_grants(package_id=package_id)

    for ip_range, url in links_in(smtp, "ada@provider.example").items():
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["si"] == grant.policy_id
        assert query["sr"] == "c"
        assert query["spr"] == "https,http"  # SAS_ALLOW_HTTP for Azurite; https alone by default
        assert query["sip"] == {"203.0.113.7": "203.0.113.7", "198.51.100.0/28": "198.51.100.0-198.51.100.15"}[ip_range]
        assert "sp" not in query and "se" not in query, "permissions and expiry live in the stored policy only"

    policies = {p.policy_id: p for p in services.delivery.stored_policies(f"egress-{package_id}")}
    assert set(policies) == {grant.policy_id}
    assert policies[grant.policy_id].expiry == grant.expires_at.replace(microsecond=0)


def test_https_only_by_default(settings, clock, blob_service, smtp: SmtpSink) -> None:
    from shared.bootstrap import build_services

    services = build_services(settings.model_copy(update={"sas_allow_http": False}), clock=clock)
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    for url in links_in(smtp, "ada@provider.example").values():
        assert parse_qs(urlsplit(url).query)["spr"] == ["https"]


def test_the_link_reads_and_lists_but_cannot_write_delete_or_reach_elsewhere(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    url = next(iter(links_in(smtp, "ada@provider.example").values()))
    container = ContainerClient.from_container_url(url)

    names = sorted(b.name for b in container.list_blobs())
    assert names == sorted(SAMPLE_FILES)
    for name in names:
        data = container.download_blob(name).readall()
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(SAMPLE_FILES[name]).hexdigest()

    with pytest.raises(HttpResponseError) as upload:
        container.upload_blob("intruder.txt", b"x")
    assert upload.value.status_code == 403
    with pytest.raises(HttpResponseError) as delete:
        container.delete_blob(names[0])
    assert delete.value.status_code == 403
    other_url = url.replace(f"egress-{package_id}", services.settings.staging_container)
    assert requests.get(other_url + "&restype=container&comp=list", timeout=10).status_code == 403


def test_revoking_kills_the_link_at_once_and_again_is_harmless(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    url = next(iter(links_in(smtp, "ada@provider.example").values()))
    list_url = url + "&restype=container&comp=list"
    assert requests.get(list_url, timeout=10).status_code == 200
    (grant,) = services.registry.list_grants(package_id=package_id)
    smtp.clear()

    revoked = services.end_grant.revoke_grant(grant.grant_id, "sm@dsh.example", "link forwarded by mistake")

    assert revoked["status"] == "revoked" and revoked["revoked_by"] == "sm@dsh.example"
    assert requests.get(list_url, timeout=10).status_code == 403
    assert len(smtp.to(MANAGER)) == 1
    again = services.end_grant.revoke_grant(grant.grant_id, "sm@dsh.example", "again")
    assert again["revoke_reason"] == "link forwarded by mistake"
    assert len(smtp.to(MANAGER)) == 1, "a repeated revoke changes nothing"
    assert [e.action for e in services.audit.read(package_id)].count("grant_revoked") == 1


def test_the_same_manifest_twice_gives_one_grant_and_one_email(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    assert egress(services, smtp, package_id, raw) == "granted"
    audit_length = len(services.audit.read(package_id))

    assert egress(services, smtp, package_id, raw) == "unchanged"

    assert len(services.registry.list_grants(package_id=package_id)) == 1
    assert len(smtp.to("ada@provider.example")) == 1
    assert len(smtp.to(MANAGER)) == 1
    assert len(services.audit.read(package_id)) == audit_length


def test_a_link_dies_at_expiry_and_the_timer_records_it(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    import time
    from datetime import timedelta

    package_id, raw = stage_new(services, blob_service, expires_in_hours=1)
    clock.offset = -timedelta(hours=1) + timedelta(seconds=3)  # the grant is made "an hour ago" less 3 s
    egress(services, smtp, package_id, raw)
    clock.offset = timedelta()
    url = next(iter(links_in(smtp, "ada@provider.example").values()))
    list_url = url + "&restype=container&comp=list"
    assert requests.get(list_url, timeout=10).status_code == 200
    time.sleep(4.5)
    assert requests.get(list_url, timeout=10).status_code == 403, "Azurite enforces the policy's expiry"
    smtp.clear()

    report = services.sweep.sweep()

    (grant,) = services.registry.list_grants(package_id=package_id)
    assert grant.grant_id in report.expired and grant.status == GrantStatus.EXPIRED
    assert services.delivery.stored_policies(f"egress-{package_id}") == []
    assert "expired" in smtp.to(MANAGER)[0]["Subject"]
    assert services.sweep.sweep().expired == [], "a second sweep finds nothing more to do"


def test_retention_closes_the_package_and_deletes_the_egressed_copy(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    from datetime import timedelta

    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    services.end_grant.revoke_package(package_id, "sm@dsh.example", "done")
    assert services.sweep.sweep().closed == [], "retention has not passed yet"

    clock.offset = timedelta(hours=25)
    report = services.sweep.sweep()

    assert report.closed == [package_id]
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.CLOSED
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert verify_chain(services.audit.read(package_id)) == []


def test_closing_removes_what_a_cleanup_that_never_finished_left_staged(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    from datetime import timedelta

    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    staging = services.settings.staging_container
    left = {f"{package_id}/files/README.md": b"left behind", f"{package_id}/manifest.json": raw}
    for name, data in left.items():  # as if delivery's cleanup died and its message went to poison
        blob_service.get_blob_client(staging, name).upload_blob(data, overwrite=True)
    services.end_grant.revoke_package(package_id, "sm@dsh.example", "done")

    clock.offset = timedelta(hours=25)
    assert services.sweep.sweep().closed == [package_id]

    assert staged(blob_service, staging, package_id) == {}
    (closed,) = [e for e in services.audit.read(package_id) if e.action == "closed"]
    assert closed.details["staged_blobs_removed"] == 2
    assert verify_chain(services.audit.read(package_id)) == []
