"""A fault in Key Vault, email or storage mid-way: the retry completes the work, once."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.email import SmtpEmailSender
from shared.adapters.secrets import LocalSigningKeys
from shared.bootstrap import Services, build_services
from shared.domain.audit import verify_chain
from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import EmailUnavailable, SecretsUnavailable, StorageUnavailable, TransientError
from shared.ports import OutgoingEmail
from shared.services.egress import Outcome
from tests.conftest import MANAGER
from tests.support.packages import stage_new
from tests.support.servers import DEV_KEY, SmtpSink

pytestmark = pytest.mark.integration


class FailOnce:
    """Wraps a real adapter; the named method raises once, on its ``at``-th call."""

    def __init__(self, inner: Any, method: str, error: TransientError, at: int = 1) -> None:
        self._inner = inner
        self._method = method
        self._error = error
        self._at = at
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._at:
                raise self._error
            return attr(*args, **kwargs)

        return wrapped


def _run_with_fault(services: Services, blob_service) -> str:
    package_id, raw = stage_new(services, blob_service)
    with pytest.raises(TransientError):
        services.egress.process(package_id, raw)
    assert services.egress.process(package_id, raw) == Outcome.GRANTED
    assert services.egress.process(package_id, raw) == Outcome.UNCHANGED
    return package_id


def _assert_completed_once(services: Services, smtp: SmtpSink, package_id: str) -> None:
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED
    grants = services.registry.list_grants(package_id=package_id)
    assert len(grants) == 1 and grants[0].status == GrantStatus.ACTIVE
    assert {p.policy_id for p in services.delivery.stored_policies(f"egress-{package_id}")} == {grants[0].policy_id}
    assert len(smtp.to("ada@provider.example")) == 1
    assert verify_chain(services.audit.read(package_id)) == []


def test_key_vault_down_once(settings, clock, blob_service, smtp: SmtpSink) -> None:
    keys = FailOnce(LocalSigningKeys(DEV_KEY), "account_key", SecretsUnavailable("Key Vault did not answer"))
    services = build_services(settings, keys=keys, clock=clock)
    package_id = _run_with_fault(services, blob_service)
    _assert_completed_once(services, smtp, package_id)


def test_email_down_for_the_recipient_once(settings, clock, blob_service, smtp: SmtpSink) -> None:
    sender = FailOnce(
        SmtpEmailSender("127.0.0.1", smtp.port, "egress@dsh.example"), "send", EmailUnavailable("SMTP down")
    )
    services = build_services(settings, email=sender, clock=clock)
    package_id = _run_with_fault(services, blob_service)
    _assert_completed_once(services, smtp, package_id)


def test_email_down_for_the_manager_after_the_recipient_was_told(settings, clock, blob_service, smtp: SmtpSink) -> None:
    sender = FailOnce(
        SmtpEmailSender("127.0.0.1", smtp.port, "egress@dsh.example"), "send", EmailUnavailable("SMTP down"), at=2
    )
    services = build_services(settings, email=sender, clock=clock)
    package_id = _run_with_fault(services, blob_service)
    _assert_completed_once(services, smtp, package_id)
    assert len(smtp.to(MANAGER)) == 1


@pytest.mark.parametrize("method", ["update_policies", "delete_blobs", "copy_into"])
def test_storage_fault_mid_way(method: str, settings, clock, blob_service, smtp: SmtpSink) -> None:
    services = build_services(settings, clock=clock)
    flaky = FailOnce(
        services.delivery if method != "delete_blobs" else services.staging, method, StorageUnavailable("503")
    )
    target = "_delivery" if method != "delete_blobs" else "_staging"
    setattr(services.egress, target, flaky)
    package_id = _run_with_fault(services, blob_service)
    _assert_completed_once(services, smtp, package_id)


def test_fault_messages_carry_no_secret(settings, clock, blob_service, smtp: SmtpSink) -> None:
    class Exploding:
        def send(self, message: OutgoingEmail) -> None:
            raise EmailUnavailable("the SMTP server did not take the email (ConnectionRefusedError)")

    services = build_services(settings, email=Exploding(), clock=clock)
    package_id, raw = stage_new(services, blob_service)
    with pytest.raises(EmailUnavailable) as failure:
        services.egress.process(package_id, raw)
    assert "sig=" not in str(failure.value) and DEV_KEY not in str(failure.value)


def test_email_down_while_rejecting_then_the_retry_tells_the_manager(
    settings, clock, blob_service, smtp: SmtpSink
) -> None:
    sender = FailOnce(
        SmtpEmailSender("127.0.0.1", smtp.port, "egress@dsh.example"), "send", EmailUnavailable("SMTP down")
    )
    services = build_services(settings, email=sender, clock=clock)
    package_id, raw = stage_new(services, blob_service, expires_in_hours=500)
    with pytest.raises(EmailUnavailable):
        services.egress.process(package_id, raw)
    assert services.egress.process(package_id, raw) == Outcome.REJECTED
    assert services.egress.process(package_id, raw) == Outcome.UNCHANGED
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert len(smtp.to(MANAGER)) == 1


def test_email_down_while_expiring_then_the_next_sweep_tells_the_manager(
    settings, clock, blob_service, smtp: SmtpSink
) -> None:
    from datetime import timedelta

    services = build_services(settings, clock=clock)
    package_id, raw = stage_new(services, blob_service)
    services.egress.process(package_id, raw)
    smtp.clear()
    clock.offset = timedelta(hours=49)
    failing = build_services(
        settings,
        email=FailOnce(SmtpEmailSender("127.0.0.1", smtp.port, "x@dsh.example"), "send", EmailUnavailable("down")),
        clock=clock,
    )
    assert failing.expiry.sweep().expired == []
    assert services.registry.list_grants(package_id=package_id)[0].status == GrantStatus.ACTIVE
    assert services.delivery.stored_policies(f"egress-{package_id}") == [], "the link is dead already"
    assert failing.expiry.sweep().expired != []
    assert len(smtp.to(MANAGER)) == 1
    assert services.registry.list_grants(package_id=package_id)[0].status == GrantStatus.EXPIRED
