"""Destroying a package key says what happened: purged, soft-deleted until a date, or absent.

The local adapter on a folder, and the sweep with a scripted key store (the Key Vault adapter's
answers are checked through its transport in tests/integration/test_azure_adapters.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.adapters.package_keys import LocalPackageKeys
from shared.domain.manifest import Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.errors import SecretsUnavailable
from shared.ports import KeyDeletion, Poisoned
from shared.services.config import PipelineConfig
from shared.services.overview import OverviewService
from shared.services.sweep import SweepService
from tests.support.fakes import FakeAudit, FakeBlobStore, FakeClock, FakeEmail, FakeQueue, FakeRegistry

PACKAGE_ID = "p-20261125-0001"
PURGE_DATE = datetime(2027, 2, 25, 12, 0, tzinfo=UTC)


def test_the_local_key_is_purged_once_then_absent(tmp_path: Path) -> None:
    keys = LocalPackageKeys(tmp_path / "keys")
    keys.put(PACKAGE_ID, "AGE-SECRET-KEY-1TEST")

    assert keys.delete(PACKAGE_ID) == KeyDeletion("purged")
    assert list((tmp_path / "keys").iterdir()) == []
    assert keys.delete(PACKAGE_ID) == KeyDeletion("absent")


class ScriptedKeys:
    """A key store whose ``delete`` answers from a script: a ``KeyDeletion`` or an error to raise."""

    def __init__(self, *answers: KeyDeletion | Exception) -> None:
        self.answers = list(answers)
        self.deleted: list[str] = []

    def put(self, package_id: str, secret: str) -> None:
        raise AssertionError("the sweep never stores a key")

    def get(self, package_id: str) -> str:
        raise AssertionError("the sweep never reads a key")

    def delete(self, package_id: str) -> KeyDeletion:
        self.deleted.append(package_id)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class NoGrants:
    def end(self, grant: GrantRecord, to: GrantStatus, actor: str, reason: str | None = None) -> GrantRecord:
        raise AssertionError("no grant to end")


class NoPoison:
    def poisoned(self) -> list[Poisoned]:
        return []


class World:
    def __init__(self, keys: ScriptedKeys) -> None:
        self.clock = FakeClock()
        self.registry = FakeRegistry()
        self.audit = FakeAudit(self.clock)
        self.records = FakeBlobStore()
        self.config = PipelineConfig()
        self.keys = keys
        self.sweep = SweepService(
            registry=self.registry,
            delivery=FakeBlobStore(),
            sftp_store=FakeBlobStore(),
            records=self.records,
            keys=keys,
            audit=self.audit,
            email=FakeEmail(),
            queue=FakeQueue(),
            grants=NoGrants(),
            poison=NoPoison(),
            clock=self.clock,
            config=self.config,
        )
        now = self.clock.now()
        self.registry.create_package(
            PackageRecord(
                package_id=PACKAGE_ID,
                status=PackageStatus.GRANTED,
                manifest_sha256="0" * 64,
                method=Method.SFTP.value,
                created_at=now,
                updated_at=now,
                granted_at=now,
                expires_at=now + timedelta(hours=48),
            )
        )

    def record(self) -> PackageRecord:
        record = self.registry.get_package(PACKAGE_ID)
        assert record is not None
        return record

    def status(self) -> dict[str, object]:
        overview = OverviewService(records=self.records, registry=self.registry, audit=self.audit, config=self.config)
        return overview.package_status(PACKAGE_ID)


def test_a_purged_key_is_recorded_destroyed() -> None:
    world = World(ScriptedKeys(KeyDeletion("purged")))
    world.clock.advance(hours=49)

    assert world.sweep.sweep().keys_destroyed == [PACKAGE_ID]

    record = world.record()
    assert record.key_destroyed_at == world.clock.now() and record.key_recoverable_until is None
    (entry,) = world.audit.read(PACKAGE_ID)
    assert (entry.action, entry.details) == ("key_destroyed", {"state": "purged"})
    assert world.status()["key_recoverable_until"] is None


def test_a_soft_deleted_key_is_recorded_with_the_date_it_becomes_unrecoverable() -> None:
    world = World(ScriptedKeys(KeyDeletion("soft_deleted", PURGE_DATE)))
    world.clock.advance(hours=49)

    world.sweep.sweep()

    record = world.record()
    assert record.key_destroyed_at == world.clock.now()  # no longer releasable
    assert record.key_recoverable_until == PURGE_DATE
    (entry,) = world.audit.read(PACKAGE_ID)
    assert entry.action == "key_soft_deleted"  # never "key_destroyed" while the vault can give it back
    assert entry.details == {"recoverable_until": "2027-02-25T12:00:00+00:00"}
    status = world.status()
    assert status["key_recoverable_until"] == "2027-02-25T12:00:00+00:00"
    assert status["key_destroyed_at"] == world.clock.now().isoformat()

    world.clock.advance(hours=1)
    world.sweep.sweep()
    assert world.keys.deleted == [PACKAGE_ID]  # done once


def test_an_absent_key_is_recorded_as_such() -> None:
    world = World(ScriptedKeys(KeyDeletion("absent")))
    world.clock.advance(hours=49)

    world.sweep.sweep()

    (entry,) = world.audit.read(PACKAGE_ID)
    assert (entry.action, entry.details) == ("key_destroyed", {"state": "absent"})
    assert world.record().key_recoverable_until is None


def test_a_vault_that_does_not_answer_leaves_the_key_for_the_next_pass() -> None:
    world = World(ScriptedKeys(SecretsUnavailable("Key Vault did not answer"), KeyDeletion("soft_deleted", PURGE_DATE)))
    world.clock.advance(hours=49)

    report = world.sweep.sweep()

    assert report.failed == [PACKAGE_ID] and report.keys_destroyed == []
    assert world.record().key_destroyed_at is None and world.audit.read(PACKAGE_ID) == []

    world.clock.advance(minutes=5)
    assert world.sweep.sweep().keys_destroyed == [PACKAGE_ID]
    assert world.record().key_recoverable_until == PURGE_DATE
    assert [e.action for e in world.audit.read(PACKAGE_ID)] == ["key_soft_deleted"]


@pytest.mark.parametrize("hours", [47, 48 - 1 / 60])
def test_no_key_is_deleted_before_expiry(hours: float) -> None:
    world = World(ScriptedKeys())
    world.clock.advance(hours=hours)

    world.sweep.sweep()

    assert world.keys.deleted == [] and world.record().key_destroyed_at is None
