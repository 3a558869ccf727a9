"""A fault in Key Vault, email or storage mid-way: the retry completes the work, once.

A fault in the queued release (sealing or delivery) leaves its message in the queue and the host
runs it again: here the retry is that release run directly (``release``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.adapters.email import SmtpEmailSender
from shared.adapters.secrets import LocalSigningKeys
from shared.bootstrap import Services, build_services
from shared.domain.audit import verify_chain
from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import EmailUnavailable, SecretsUnavailable, StorageUnavailable, TransientError
from shared.ports import OutgoingEmail
from tests.conftest import MANAGER
from tests.support.flow import egress, release, with_deliver, with_seal
from tests.support.packages import stage_new, staged
from tests.support.servers import DEV_KEY, SmtpSink

pytestmark = pytest.mark.integration


class FailOnce:
    """Wraps a real adapter; the named method raises once, on its ``at``-th call.

    With ``when``, only the calls it accepts are counted (say, only the recipient's email).
    """

    def __init__(
        self,
        inner: Any,
        method: str,
        error: TransientError,
        at: int = 1,
        when: Callable[..., bool] | None = None,
    ) -> None:
        self._inner = inner
        self._method = method
        self._error = error
        self._at = at
        self._when = when
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self._when is None or self._when(*args, **kwargs):
                self.calls += 1
                if self.calls == self._at:
                    raise self._error
            return attr(*args, **kwargs)

        return wrapped


def _subject_has(text: str) -> Callable[[OutgoingEmail], bool]:
    return lambda message: text in message.subject


TO_RECIPIENT = _subject_has("is ready to download")  # the recipient's email with their links
GRANTED_TO_MANAGER = _subject_has("grants issued for")  # the manager's email once the grants are made


def _run_with_fault(services: Services, smtp: SmtpSink, blob_service) -> str:
    """Stage, sign off and release with one fault in the release; its retry completes it."""
    package_id, raw = stage_new(services, blob_service)
    with pytest.raises(TransientError):
        egress(services, smtp, package_id, raw)
    record = services.registry.get_package(package_id)
    assert record is not None and record.signoff_completed_at is not None, "the fault was in the queued release"
    assert record.status in (PackageStatus.PROCESSING, PackageStatus.SEALED)
    assert release(services, package_id) == "granted"
    assert egress(services, smtp, package_id, raw) == "unchanged"
    return package_id


def _assert_completed_once(services: Services, smtp: SmtpSink, blob_service, package_id: str) -> None:
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED
    grants = services.registry.list_grants(package_id=package_id)
    assert len(grants) == 1 and grants[0].status == GrantStatus.ACTIVE
    assert {p.policy_id for p in services.delivery.stored_policies(f"egress-{package_id}")} == {grants[0].policy_id}
    assert len(smtp.to("ada@provider.example")) == 1
    assert staged(blob_service, services.settings.staging_container, package_id) == {}, "staging emptied"
    assert verify_chain(services.audit.read(package_id)) == []


def test_key_vault_down_once(settings, clock, blob_service, smtp: SmtpSink) -> None:
    keys = FailOnce(LocalSigningKeys(DEV_KEY), "account_key", SecretsUnavailable("Key Vault did not answer"))
    services = build_services(settings, keys=keys, clock=clock)
    package_id = _run_with_fault(services, smtp, blob_service)
    _assert_completed_once(services, smtp, blob_service, package_id)


def test_email_down_for_the_recipient_once(settings, clock, blob_service, smtp: SmtpSink) -> None:
    sender = FailOnce(
        SmtpEmailSender("127.0.0.1", smtp.port, "egress@dsh.example"),
        "send",
        EmailUnavailable("SMTP down"),
        when=TO_RECIPIENT,
    )
    services = build_services(settings, email=sender, clock=clock)
    package_id = _run_with_fault(services, smtp, blob_service)
    _assert_completed_once(services, smtp, blob_service, package_id)


def test_email_down_for_the_manager_after_the_recipient_was_told(settings, clock, blob_service, smtp: SmtpSink) -> None:
    sender = FailOnce(
        SmtpEmailSender("127.0.0.1", smtp.port, "egress@dsh.example"),
        "send",
        EmailUnavailable("SMTP down"),
        when=GRANTED_TO_MANAGER,
    )
    services = build_services(settings, email=sender, clock=clock)
    package_id = _run_with_fault(services, smtp, blob_service)
    _assert_completed_once(services, smtp, blob_service, package_id)
    assert len(smtp.to(MANAGER)) == 1  # the sign-off emails were cleared; this is the grants email


# A fault removing the staged files, which comes after the recipients are told, is in
# tests/integration/test_copy_paths.py.
@pytest.mark.parametrize("method", ["update_policies", "write"])
def test_storage_fault_mid_way(method: str, settings, clock, blob_service, smtp: SmtpSink) -> None:
    services = build_services(settings, clock=clock)
    fault = StorageUnavailable("503")
    if method == "update_policies":  # the recipient's stored access policy, while delivering
        services = with_deliver(services, clock, DEV_KEY, delivery=FailOnce(services.delivery, method, fault))
    else:  # writing a (small) file into the sealed container
        services = with_seal(services, clock, delivery=FailOnce(services.delivery, method, fault))
    package_id = _run_with_fault(services, smtp, blob_service)
    _assert_completed_once(services, smtp, blob_service, package_id)


class Exploding:
    """An email backend that is down for the emails ``when`` accepts; it keeps what it was given."""

    def __init__(self, inner: SmtpEmailSender, when: Callable[[OutgoingEmail], bool]) -> None:
        self._inner = inner
        self._when = when
        self.refused: list[OutgoingEmail] = []

    def send(self, message: OutgoingEmail) -> None:
        if self._when(message):
            self.refused.append(message)
            raise EmailUnavailable("the SMTP server did not take the email (ConnectionRefusedError)")
        self._inner.send(message)


def test_fault_messages_carry_no_secret(settings, clock, blob_service, smtp: SmtpSink) -> None:
    real = SmtpEmailSender(settings.smtp_host, settings.smtp_port, settings.email_sender)

    # The sign-off request (its link is a personal token) cannot be sent.
    down = Exploding(real, _subject_has("Sign-off needed"))
    services = build_services(settings, email=down, clock=clock)
    package_id, raw = stage_new(services, blob_service)
    with pytest.raises(EmailUnavailable) as failure:
        egress(services, smtp, package_id, raw)
    (refused,) = down.refused
    token = refused.text.split("/api/signoff/")[1].split()[0]
    assert token not in str(failure.value) and DEV_KEY not in str(failure.value)

    # The recipient's email (its links carry SAS signatures) cannot be sent.
    down = Exploding(real, TO_RECIPIENT)
    services = build_services(settings, email=down, clock=clock)
    package_id, raw = stage_new(services, blob_service)
    with pytest.raises(EmailUnavailable) as failure:
        egress(services, smtp, package_id, raw)
    (refused,) = down.refused
    assert "sig=" in refused.text
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
        egress(services, smtp, package_id, raw)
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.PROCESSING, "not recorded before the manager knows"
    assert egress(services, smtp, package_id, raw) == "rejected"
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert len(smtp.to(MANAGER)) == 1
    assert [e.action for e in services.audit.read(package_id)].count("rejected") == 1


def test_email_down_while_expiring_then_the_next_sweep_tells_the_manager(
    settings, clock, blob_service, smtp: SmtpSink
) -> None:
    from datetime import timedelta

    services = build_services(settings, clock=clock)
    package_id, raw = stage_new(services, blob_service)
    egress(services, smtp, package_id, raw)
    smtp.clear()
    clock.offset = timedelta(hours=49)
    failing = build_services(
        settings,
        email=FailOnce(SmtpEmailSender("127.0.0.1", smtp.port, "x@dsh.example"), "send", EmailUnavailable("down")),
        clock=clock,
    )
    assert failing.sweep.sweep().expired == []
    assert services.registry.list_grants(package_id=package_id)[0].status == GrantStatus.ACTIVE
    assert services.delivery.stored_policies(f"egress-{package_id}") == [], "the link is dead already"
    assert failing.sweep.sweep().expired != []
    assert len(smtp.to(MANAGER)) == 1
    assert services.registry.list_grants(package_id=package_id)[0].status == GrantStatus.EXPIRED
