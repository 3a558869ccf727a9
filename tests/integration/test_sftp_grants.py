"""SFTP grants on Azurite with the local users' table (the stand-in for Azure's management plane):
one local user per recipient, scoped to the package's own container, its password emailed once and
never kept; revoke, expiry and races delete the user; the firewall follows the active grants.
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devhost.sftp_client import sftp_batch
from shared.adapters.age_crypto import AgeCrypto
from shared.adapters.package_keys import LocalPackageKeys
from shared.bootstrap import Services, build_services
from shared.domain import names
from shared.domain.records import GrantRecord, GrantStatus, PackageStatus
from shared.errors import EmailUnavailable, InProgress, StorageUnavailable
from shared.ports import OutgoingEmail, SftpUser
from shared.services.end_grant import EndGrantService
from shared.services.records_io import load_manifest
from tests.conftest import MANAGER
from tests.support import flow
from tests.support.flow import egress
from tests.support.packages import SAMPLE_FILES, stage_new
from tests.support.rounds import together
from tests.support.servers import DEV_KEY, SmtpSink, body_text, wait_for_port
from tests.support.sftp_endpoint import start_server, stop

pytestmark = pytest.mark.integration

ADA = {"name": "Ada Byron", "email": "ada@provider.example", "ip_ranges": ["203.0.113.7"]}
BOB = {"name": "Bob Keys", "email": "bob@provider.example", "ip_ranges": ["198.51.100.0/28", "203.0.113.7"]}


def ssh_public_key(tmp_path: Path) -> str:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), "-C", "bob@laptop"], check=True)
    return (tmp_path / "id_ed25519.pub").read_text().strip()


def password_in(smtp: SmtpSink, to: str) -> str:
    (mail,) = [m for m in smtp.to(to) if "SFTP password (2 of 3)" in str(m["Subject"])]
    match = re.search(r"Password\r?\n-+\r?\n(\S+)\s", body_text(mail))
    assert match, "the password email has no password"
    return match.group(1)


def sftp_package(services: Services, blob_service: Any, **overrides: Any) -> tuple[str, bytes]:
    return stage_new(services, blob_service, method="sftp", **overrides)


def grants_of(services: Services, package_id: str) -> list[GrantRecord]:
    return services.registry.list_grants(package_id=package_id)


def test_each_recipient_gets_their_own_read_only_user_on_the_package_container(
    services: Services, blob_service: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    key = ssh_public_key(tmp_path)
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, {**BOB, "ssh_public_key": key + "\n"}])
    assert egress(services, smtp, package_id, raw) == "granted"

    ada, bob = grants_of(services, package_id)
    container = names.egress_container(package_id)
    for grant in (ada, bob):
        assert grant.sftp_user and re.fullmatch(r"[a-z0-9]{3,64}", grant.sftp_user)
        assert grant.sftp_login == f"{services.sftp.account_name}.{grant.sftp_user}"
        user = services.sftp.lookup(grant.sftp_user)
        assert user is not None and user.container == container and user.permissions == "rl"
    assert ada.sftp_user != bob.sftp_user, "no shared username"
    assert not ada.sftp_key_login and bob.sftp_key_login
    assert services.sftp.lookup(bob.sftp_user).ssh_public_key == key  # type: ignore[union-attr]
    assert sorted(services.sftp.allowed_ranges()) == ["198.51.100.0/28", "203.0.113.7"]

    # Ada: address, then the password alone; Bob: address, then a note that his key is set.
    assert [str(m["Subject"]).split(" (")[-1] for m in smtp.to(ADA["email"])] == ["1 of 3: address)", "2 of 3)"]
    password = password_in(smtp, ADA["email"])
    assert services.sftp.verify_password(ada.sftp_user, password)  # type: ignore[arg-type]
    bob_mails = smtp.to(BOB["email"])
    assert len(bob_mails) == 2 and "SSH key (2 of 3)" in str(bob_mails[1]["Subject"])
    assert "Password" not in body_text(bob_mails[1]) and key.split()[1][-12:] in body_text(bob_mails[1])

    view = ada.public_view()["sftp"]
    assert view == {"username": ada.sftp_login, "login": "password", "state": "active", "deleted_at": None}
    events = services.audit.read(package_id)
    created = [e.details for e in events if e.action == "grant_created"]
    assert {d["sftp_username"] for d in created} == {ada.sftp_login, bob.sftp_login}
    for where, text in {
        "audit": "".join(e.model_dump_json() for e in events),
        "grants": repr(grants_of(services, package_id)),
        "status": repr(services.overview.package_status(package_id)),
        "manager": "".join(m.as_string() for m in smtp.to(MANAGER)),
        "users table": repr(list(services.sftp._table.list_entities())),  # type: ignore[attr-defined]
    }.items():
        assert password not in text, f"the SFTP password is in {where}"


def test_a_second_release_changes_nothing_and_sends_nothing(
    services: Services, blob_service: Any, smtp: SmtpSink
) -> None:
    package_id, raw = sftp_package(services, blob_service)
    assert egress(services, smtp, package_id, raw) == "granted"
    (grant,) = grants_of(services, package_id)
    password = password_in(smtp, ADA["email"])
    sent = len(smtp.messages)

    assert flow.release(services, package_id) == "granted"
    assert egress(services, smtp, package_id, raw) == "unchanged"
    assert len(smtp.messages) == sent
    assert services.sftp.verify_password(grant.sftp_user, password), "the emailed password still works"  # type: ignore[arg-type]


def test_eight_workers_releasing_at_once_make_one_user_and_email_the_password_that_works(
    settings: Any, clock: Any, blob_service: Any, smtp: SmtpSink
) -> None:
    services = build_services(settings, clock=clock)
    package_id, raw = sftp_package(services, blob_service)
    from shared.services.intake import Outcome

    assert services.intake.process(package_id, raw) == Outcome.AWAITING_SIGNOFF
    flow.approve_all(services, smtp, package_id)
    smtp.clear()
    record = services.registry.get_package(package_id)
    assert record is not None
    instances = [build_services(settings, clock=clock) for _ in range(8)]

    def release(i: int) -> str:
        try:
            if instances[i].seal.seal(package_id, record.manifest_sha256) is not None:
                instances[i].deliver.deliver(package_id)
        except InProgress:
            return "handed back"  # the host retries this message shortly
        return "done"

    outcomes = together(8, release)
    assert "done" in outcomes
    flow.release(services, package_id)  # the host's retry of a handed-back message

    assert services.registry.get_package(package_id).status == PackageStatus.GRANTED  # type: ignore[union-attr]
    (grant,) = grants_of(services, package_id)
    assert services.sftp.user_names().count(grant.sftp_user) == 1  # type: ignore[arg-type]
    mails = smtp.to(ADA["email"])
    assert len(mails) == 2, [m["Subject"] for m in mails]
    assert services.sftp.verify_password(grant.sftp_user, password_in(smtp, ADA["email"]))  # type: ignore[arg-type]
    # One key for the whole package: every file that landed decrypts with the key that is kept.
    identity = LocalPackageKeys(Path(settings.local_secrets_dir)).get(package_id)
    container = names.egress_container(package_id)
    for name, data in SAMPLE_FILES.items():
        sealed = io.BytesIO(b"".join(services.sftp_store.chunks(container, name + ".age")))
        plain = io.BytesIO()
        AgeCrypto().decrypt(sealed, plain, identity)
        assert plain.getvalue() == data, name


class FailsPasswordEmailOnce:
    """The SMTP relay drops the first password email (a transient fault), then works."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failed = False

    def send(self, message: OutgoingEmail) -> None:
        if "SFTP password" in message.subject and not self.failed:
            self.failed = True
            raise EmailUnavailable("the relay did not answer")
        self._inner.send(message)


def test_a_failed_password_email_is_retried_with_a_new_password_which_is_the_one_that_works(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service)
    failing = flow.with_deliver(services, clock, DEV_KEY, email=FailsPasswordEmailOnce(flow._email(services)))
    with pytest.raises(EmailUnavailable):
        egress(failing, smtp, package_id, raw)
    assert services.registry.get_package(package_id).status == PackageStatus.SEALED  # type: ignore[union-attr]
    (grant,) = grants_of(services, package_id)
    assert grant.password_claimed_at is None, "the failed try let go of its claim"

    assert flow.release(services, package_id) == "granted"
    (grant,) = grants_of(services, package_id)
    assert grant.password_generation == 2 and grant.notified_at is not None
    assert services.sftp.verify_password(grant.sftp_user, password_in(smtp, ADA["email"]))  # type: ignore[arg-type]


def test_a_password_claimed_by_a_worker_that_died_is_taken_over_after_the_lease(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service)

    class Dies(Exception):
        pass

    class DiesBeforeSending:
        def send(self, message: OutgoingEmail) -> None:
            if "SFTP password" in message.subject:
                raise Dies()  # the worker is gone: nothing releases the claim
            flow._email(services).send(message)

    dying = flow.with_deliver(services, clock, DEV_KEY, email=DiesBeforeSending())
    with pytest.raises(Dies):
        egress(dying, smtp, package_id, raw)
    with pytest.raises(InProgress):  # another worker leaves a fresh claim alone, and hands the message back
        flow.release(services, package_id)
    assert not [m for m in smtp.to(ADA["email"]) if "password" in str(m["Subject"])]

    clock.offset = timedelta(minutes=6)
    assert flow.release(services, package_id) == "granted"
    (grant,) = grants_of(services, package_id)
    assert services.sftp.verify_password(grant.sftp_user, password_in(smtp, ADA["email"]))  # type: ignore[arg-type]


def test_revoke_deletes_the_user_at_once_closes_the_firewall_and_keeps_the_key_from_them(
    services: Services, blob_service: Any, smtp: SmtpSink
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    assert egress(services, smtp, package_id, raw) == "granted"
    ada, bob = grants_of(services, package_id)
    smtp.clear()

    revoked = services.end_grant.revoke_grant(bob.grant_id, "system-manager", "left the project")
    assert revoked["sftp"]["state"] == "deleted" and revoked["sftp"]["username"] == bob.sftp_login
    assert services.sftp.lookup(bob.sftp_user) is None  # type: ignore[arg-type]
    assert services.sftp.lookup(ada.sftp_user) is not None  # type: ignore[arg-type]
    assert services.sftp.allowed_ranges() == ["203.0.113.7"], "Bob's block closes; Ada's address stays"
    ended = [e for e in services.audit.read(package_id) if e.action == "grant_revoked"]
    assert ended[0].details["sftp_username"] == bob.sftp_login and ended[0].details["sftp_user_deleted"] is True

    released = services.key_release.release(package_id, "system-manager")
    assert released["recipients"] == [ADA["email"]]
    assert not [m for m in smtp.to(BOB["email"]) if "decryption key" in str(m["Subject"])]


def test_expiry_deletes_every_user_and_empties_the_firewall(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    assert egress(services, smtp, package_id, raw) == "granted"
    users = [g.sftp_user for g in grants_of(services, package_id)]

    clock.offset = timedelta(hours=49)
    report = services.sweep.sweep()
    assert sorted(report.expired) == sorted(g.grant_id for g in grants_of(services, package_id))
    assert all(services.sftp.lookup(u) is None for u in users)  # type: ignore[arg-type]
    assert services.sftp.allowed_ranges() == []
    assert all(g.public_view()["sftp"]["state"] == "deleted" for g in grants_of(services, package_id))  # type: ignore[index]

    clock.offset = timedelta(hours=49 + 25)  # past retention: the container goes, the grants are archived
    assert services.sweep.sweep().closed == [package_id]
    assert not services.sftp_store.container_exists(names.egress_container(package_id))
    assert grants_of(services, package_id) == []
    shown = services.overview.package_status(package_id)["grants"]
    assert sorted(g["sftp"]["username"] for g in shown) == sorted(f"{services.sftp.account_name}.{u}" for u in users)


class RevokedWhileMaking:
    """An SFTP store where the manager's revocation lands just before delivery makes the user."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._real = services.sftp
        self.account_name, self.host, self.port = self._real.account_name, self._real.host, self._real.port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def ensure_user(self, user: SftpUser) -> None:
        for grant in self._services.registry.list_grants(status=GrantStatus.ACTIVE):
            if grant.sftp_user == user.name:
                self._services.end_grant.revoke_grant(grant.grant_id, "system-manager", "wrong person")
        self._real.ensure_user(user)  # delivery read the grant while it was active


def test_a_revocation_racing_delivery_leaves_no_user_and_sends_no_password(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service)
    racing = flow.with_deliver(services, clock, DEV_KEY, sftp=RevokedWhileMaking(services))
    egress(racing, smtp, package_id, raw)
    (grant,) = grants_of(services, package_id)
    assert grant.status == GrantStatus.REVOKED
    assert services.sftp.lookup(grant.sftp_user) is None  # type: ignore[arg-type]
    assert not [m for m in smtp.to(ADA["email"]) if "password" in str(m["Subject"])]


def test_the_sweep_puts_the_firewall_right_after_a_redeployment_emptied_it(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    assert egress(services, smtp, package_id, raw) == "granted"
    services.sweep.sweep()  # this worker's hourly check
    services.sftp.allow_ranges([])  # `azd provision` wrote the Bicep's empty IP rules

    clock.offset = timedelta(minutes=59)
    assert services.sweep.sweep().firewall_fixed == []  # checked within the hour: not yet
    clock.offset = timedelta(minutes=61)
    assert services.sweep.sweep().firewall_fixed == ["198.51.100.0/28", "203.0.113.7"]
    assert sorted(services.sftp.allowed_ranges()) == ["198.51.100.0/28", "203.0.113.7"]


# -- as the recipients do it: OpenSSH's sftp against the local endpoint ---------------------------


@pytest.fixture
def endpoint(settings: Any, azurite: Any, tmp_path: Path) -> Iterator[int]:
    process, port, log = start_server(azurite, tmp_path, settings.registry_table_prefix)
    wait_for_port(port, timeout=15)
    yield port
    assert stop(process) == 0, log.read_text(errors="replace")


def test_recipients_log_in_with_the_emailed_password_or_their_key_and_not_after_revoke_or_expiry(
    settings: Any, blob_service: Any, smtp: SmtpSink, clock: Any, tmp_path: Path, endpoint: int
) -> None:
    services = build_services(settings.model_copy(update={"sftp_port": endpoint}), clock=clock)
    key = ssh_public_key(tmp_path)
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, {**BOB, "ssh_public_key": key}])
    assert egress(services, smtp, package_id, raw) == "granted"
    ada, bob = grants_of(services, package_id)
    address = body_text(smtp.to(ADA["email"])[0])
    assert re.search(rf"Port: +{endpoint}\s", address) and f"sftp -P {endpoint} " in address
    password = password_in(smtp, ADA["email"])

    def login(grant: GrantRecord, into: str, **how: Any) -> Any:
        folder = tmp_path / into
        folder.mkdir()
        return sftp_batch("127.0.0.1", endpoint, grant.sftp_login or "", ["get -r ."], cwd=folder, **how)

    got = login(ada, "ada", password=password)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "ada" / "encrypted-manifest.json").exists()
    assert login(bob, "bob", identity=tmp_path / "id_ed25519").returncode == 0
    assert login(ada, "wrong", password=password[:-1] + "x").returncode != 0, "a wrong password is refused"

    services.end_grant.revoke_grant(ada.grant_id, "system-manager", "left the project")
    refused = login(ada, "ada-after-revoke", password=password)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr

    clock.offset = timedelta(hours=49)
    assert bob.grant_id in services.sweep.sweep().expired
    assert login(bob, "bob-after-expiry", identity=tmp_path / "id_ed25519").returncode != 0


# -- what the review found: failures after the record changed, users made again, two workers -----


class FailsAfterRecorded:
    """The SFTP management plane throttles (429) once the grant is recorded as ended."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.account_name, self.host, self.port = real.account_name, real.host, real.port
        self.deletes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def delete_user(self, name: str) -> None:
        self.deletes += 1
        if self.deletes % 2 == 0:  # each grant's second delete, after its end is recorded
            raise StorageUnavailable("the management plane throttled the request (429)")
        self._real.delete_user(name)


def test_a_failure_after_the_end_is_recorded_loses_no_audit_event_and_revokes_the_other_grants(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    assert egress(services, smtp, package_id, raw) == "granted"
    flaky = dataclasses.replace(
        services, end_grant=EndGrantService(
            registry=services.registry, delivery=services.delivery, audit=services.audit,
            email=flow._email(services), clock=clock, config=services.config,
            sftp=FailsAfterRecorded(services.sftp),
        )
    )  # fmt: skip

    result = flaky.end_grant.revoke_package(package_id, "system-manager", "project ended")

    assert [g["status"] for g in result["grants"]] == ["revoked", "revoked"]
    assert [e.action for e in services.audit.read(package_id)].count("grant_revoked") == 2
    assert all(services.sftp.lookup(g.sftp_user) is None for g in grants_of(services, package_id))  # type: ignore[arg-type]


def test_the_sweep_deletes_a_user_made_again_after_its_revocation(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    assert egress(services, smtp, package_id, raw) == "granted"
    ada, bob = grants_of(services, package_id)
    services.end_grant.revoke_grant(bob.grant_id, "system-manager", "wrong person")
    # A delivery that read Bob's grant while it was open makes his user again, then dies.
    services.sftp.ensure_user(SftpUser(bob.sftp_user or "", names.egress_container(package_id)))

    report = services.sweep.sweep()

    assert report.sftp_users_removed == [bob.sftp_user]
    assert services.sftp.lookup(bob.sftp_user) is None  # type: ignore[arg-type]
    assert services.sftp.lookup(ada.sftp_user) is not None, "an open grant's user stays"  # type: ignore[arg-type]


def test_a_worker_that_finds_another_emailing_a_password_hands_the_message_back(
    services: Services, blob_service: Any, smtp: SmtpSink, clock: Any
) -> None:
    package_id, raw = sftp_package(services, blob_service, recipients=[ADA, BOB])
    outcome = services.intake.process(package_id, raw)
    assert outcome.value == "awaiting_signoff"
    flow.approve_all(services, smtp, package_id)
    record = services.registry.get_package(package_id)
    assert record is not None and services.seal.seal(package_id, record.manifest_sha256) is not None
    services.deliver._grants(services.registry.get_package(package_id), load_manifest(  # type: ignore[arg-type]
        services.staging, services.settings.records_container, package_id
    ))  # fmt: skip
    bob = grants_of(services, package_id)[1]
    services.registry.update_grant(bob.model_copy(update={"password_claimed_at": clock.now()}))  # another worker

    with pytest.raises(InProgress):
        services.deliver.deliver(package_id)
    assert services.registry.get_package(package_id).status == PackageStatus.SEALED  # type: ignore[union-attr]

    clock.offset = timedelta(minutes=6)  # that worker died: its claim lapses, and the retry finishes
    assert flow.release(services, package_id) == "granted"
    assert len([m for m in smtp.to(BOB["email"]) if "password" in str(m["Subject"])]) == 1
