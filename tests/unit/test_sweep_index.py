"""The sweep on its due indexes, with in-memory fakes: what is written when, what a pass reads, and
that every pass behaves as the full scan it replaces."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from shared.adapters.indexed_registry import IndexedRegistry
from shared.domain.manifest import Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.ports import KeyDeletion, Poisoned
from shared.services.config import PipelineConfig
from shared.services.sweep import SweepSchedule, SweepService
from tests.support.fakes import (
    FakeAudit,
    FakeBlobStore,
    FakeClock,
    FakeDueIndex,
    FakeEmail,
    FakeQueue,
    FakeRegistry,
)
from tests.support.packages import SAMPLE_FILES, manifest_for
from tests.support.stages import fake_stages

CONFIG = PipelineConfig()
TOKEN_RE = re.compile(r"/api/signoff/([A-Za-z0-9_-]{43})")
SCHEDULE = SweepSchedule.of(CONFIG)


class ScanningRegistry(FakeRegistry):
    """Records every whole-table read (packages by status, grants across packages)."""

    def __init__(self) -> None:
        super().__init__()
        self.scans: list[str] = []

    def list_packages(self, status: PackageStatus | None = None) -> list[PackageRecord]:
        self.scans.append(f"packages {status}")
        return super().list_packages(status)

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]:
        if package_id is None:
            self.scans.append(f"grants {status}")
        return super().list_grants(package_id, status)


class PurgingKeys:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def put(self, package_id: str, secret: str) -> None:
        raise AssertionError("not used")

    def get(self, package_id: str) -> str:
        raise AssertionError("not used")

    def delete(self, package_id: str) -> KeyDeletion:
        self.deleted.append(package_id)
        return KeyDeletion("purged")


class NoPoison:
    def poisoned(self) -> list[Poisoned]:
        return []


class World:
    """Every service on fakes; ``indexed=False``: no indexes, so every pass of the sweep is a full one."""

    def __init__(self, indexed: bool = True, config: PipelineConfig = CONFIG) -> None:
        self.config = config
        self.clock = FakeClock()
        self.staging = FakeBlobStore()
        self.delivery = FakeBlobStore()
        self.table = ScanningRegistry()
        self.grants_due = FakeDueIndex()
        self.packages_due = FakeDueIndex()
        self.registry = (
            IndexedRegistry(
                self.table,
                grants_due=self.grants_due,
                packages_due=self.packages_due,
                schedule=SweepSchedule.of(config),
            )
            if indexed
            else self.table
        )
        self.audit = FakeAudit(self.clock)
        self.email = FakeEmail()
        self.queue = FakeQueue()
        self.keys = PurgingKeys()
        common = {"registry": self.registry, "audit": self.audit, "email": self.email, "clock": self.clock}
        stages = fake_stages(staging=self.staging, delivery=self.delivery, queue=self.queue, config=config, **common)
        self.intake, self.signoff, self.seal = stages.intake, stages.signoff, stages.seal
        self.deliver, self.end_grant, self.sftp = stages.deliver, stages.end_grant, stages.sftp
        indexes = {"grants_due": self.grants_due, "packages_due": self.packages_due} if indexed else {}
        self.sweep = SweepService(
            delivery=self.delivery,
            sftp_store=self.delivery,
            records=self.staging,
            keys=self.keys,
            queue=self.queue,
            grants=self.end_grant,
            poison=NoPoison(),
            config=config,
            **common,  # type: ignore[arg-type]
            **indexes,  # type: ignore[arg-type]
        )

    def signed_off(self, package_id: str = "wp-unit", **overrides: object) -> str:
        """Staged, verified and approved by everyone: the release is queued."""
        for path, data in SAMPLE_FILES.items():
            self.staging.write(CONFIG.staging_container, f"{package_id}/files/{path}", data)
        raw = json.dumps(manifest_for(package_id, SAMPLE_FILES, **overrides)).encode()
        self.staging.write(CONFIG.staging_container, f"{package_id}/manifest.json", raw)
        self.intake.process(package_id, raw)
        for message in list(self.email.sent):
            match = TOKEN_RE.search(message.text)
            if message.subject == f"Sign-off needed: {package_id}" and match:
                self.signoff.decide(match.group(1), "approve", 2, None, None)
        return package_id

    def release(self) -> None:
        while self.queue.messages:
            package_id, digest = self.queue.messages.pop(0)
            if self.seal.seal(package_id, digest) is not None:
                self.deliver.deliver(package_id)

    def granted(self, package_id: str = "wp-unit", **overrides: object) -> GrantRecord:
        self.signed_off(package_id, **overrides)
        self.release()
        (grant,) = self.table.list_grants(package_id)
        return grant

    def package(self, package_id: str = "wp-unit") -> PackageRecord:
        record = self.table.get_package(package_id)
        assert record is not None
        return record

    def empty(self) -> bool:
        return not self.grants_due.rows and not self.packages_due.rows


def test_a_grant_is_indexed_at_its_expiry_and_its_end_indexes_when_the_package_may_close() -> None:
    world = World()
    grant = world.granted()
    assert world.grants_due.times() == {"wp-unit:0": [grant.expires_at]}

    world.clock.advance(hours=1)
    world.end_grant.revoke_grant(grant.grant_id, "sm@dsh.example", "done")

    assert world.grants_due.times() == {}, "an ended grant's row is deleted"
    assert world.clock.now() + CONFIG.retention in world.packages_due.times()["wp-unit"]


def test_with_nothing_due_a_pass_reads_the_two_indexes_and_nothing_else() -> None:
    world = World()
    for n in range(20):
        world.granted(f"wp-unit-{n:02d}")
    world.table.scans.clear()
    world.clock.advance(minutes=5)

    report = world.sweep.sweep()

    assert report.looked_at == 0 and report == type(report)()
    assert world.table.scans == []
    assert (world.grants_due.reads, world.packages_due.reads) == (1, 1)


def test_a_pass_looks_only_at_what_is_due() -> None:
    world = World()
    for n in range(10):
        world.granted(f"wp-late-{n}", expires_in_hours=70)
    world.clock.advance(minutes=20)  # past the stuck checks written while the packages moved on
    world.sweep.sweep()
    due = [world.granted(f"wp-soon-{n}", expires_in_hours=1).grant_id for n in range(3)]
    world.clock.advance(hours=1)
    world.table.scans.clear()

    report = world.sweep.sweep()

    assert sorted(report.expired) == sorted(due)
    # three grants, and their packages' stuck checks written on the way (met once, then deleted)
    assert report.looked_at == 3 + 3
    assert world.table.scans == []
    assert world.sweep.sweep().looked_at == 0


def test_expiry_then_retention_close_the_package_and_leave_no_row() -> None:
    world = World()
    grant = world.granted()
    world.clock.moment = grant.expires_at

    assert world.sweep.sweep().expired == [grant.grant_id]
    assert world.sweep.sweep().closed == []

    world.clock.advance(seconds=CONFIG.retention.total_seconds() - 1)
    assert world.sweep.sweep().closed == []
    world.clock.advance(seconds=1)
    assert world.sweep.sweep().closed == ["wp-unit"]
    assert world.package().status == PackageStatus.CLOSED
    assert not world.delivery.container_exists("egress-wp-unit")
    # The grant left the registry's table for the records container; the status still shows it.
    assert world.registry.list_grants(package_id="wp-unit") == []
    archived = json.loads(world.staging.read(CONFIG.records_container, "grants/wp-unit.json"))
    assert [g["grant_id"] for g in archived] == [grant.grant_id] and archived[0]["status"] == "expired"
    closed = next(e for e in world.audit.read("wp-unit") if e.action == "closed")
    assert closed.details["grants_archived"] == 1
    world.clock.advance(hours=24 * 30)
    world.sweep.sweep()
    assert world.empty() and world.table.scans == []


def test_a_package_closes_only_after_its_last_grant_ended() -> None:
    world = World(config=PipelineConfig(retention=timedelta(hours=1)))
    world.signed_off(
        recipients=[
            {"name": "Ada Byron", "email": "ada@provider.example", "ip_ranges": ["203.0.113.7"]},
            {"name": "Bea Byron", "email": "bea@provider.example", "ip_ranges": ["203.0.113.8"]},
        ]
    )
    world.release()
    first, second = world.table.list_grants("wp-unit")
    world.end_grant.revoke_grant(first.grant_id, "sm@dsh.example", "done")
    world.clock.advance(hours=1, seconds=1)

    report = world.sweep.sweep()

    assert report.closed == [] and report.looked_at == 1  # its rows (closing, stuck checks) met as one
    assert min(world.packages_due.times()["wp-unit"]) > second.expires_at, "none again before the last grant ends"
    world.clock.moment = second.expires_at
    assert world.sweep.sweep().expired == [second.grant_id]
    world.clock.advance(minutes=59)
    assert world.sweep.sweep().closed == []
    world.clock.advance(minutes=1)
    assert world.sweep.sweep().closed == ["wp-unit"]


def test_sign_off_not_complete_in_time_is_rejected_from_the_deadline_row() -> None:
    world = World()
    for path, data in SAMPLE_FILES.items():
        world.staging.write(CONFIG.staging_container, f"wp-unit/files/{path}", data)
    raw = json.dumps(manifest_for("wp-unit", SAMPLE_FILES)).encode()
    world.intake.process("wp-unit", raw)
    deadline = world.package().signoff_deadline
    assert deadline is not None and deadline in world.packages_due.times()["wp-unit"]

    world.clock.moment = deadline - timedelta(seconds=1)
    assert world.sweep.sweep().signoff_timed_out == []
    world.clock.moment = deadline

    assert world.sweep.sweep().signoff_timed_out == ["wp-unit"]
    assert world.package().status == PackageStatus.REJECTED
    assert world.empty() and world.table.scans == []


def _stuck_history(world: World, ticks: int) -> tuple[list[int], list[int]]:
    """Sweep every 5 minutes; the ticks at which the lost release was queued again, and reported stuck."""
    world.signed_off()
    world.queue.messages.clear()  # the release message is lost
    requeued, reported = [], []
    for tick in range(ticks):
        world.clock.advance(minutes=5)
        report = world.sweep.sweep()
        if report.requeued:
            requeued.append(tick)
        if report.stuck:
            reported.append(tick)
    return requeued, reported


def test_a_lost_release_is_queued_again_at_the_same_moments_as_with_a_full_scan() -> None:
    ticks = 40 * 12  # 40 hours of 5-minute passes: limit 10 minutes, so re-queues at 10, 20, 40, 80 ... minutes
    indexed = _stuck_history(World(), ticks)
    scanned = _stuck_history(World(indexed=False), ticks)

    assert indexed[0] == scanned[0] and len(indexed[0]) == 8
    assert indexed[1][0] == scanned[1][0], "reported stuck first at the same pass"
    assert set(indexed[1]) <= set(scanned[1])


def test_the_stuck_schedule_doubles_and_reports_at_six_times_the_limit() -> None:
    limit = CONFIG.stuck_after
    record = PackageRecord(
        package_id="wp-unit",
        status=PackageStatus.PROCESSING,
        manifest_sha256="0" * 64,
        created_at=FakeClock().now(),
        updated_at=FakeClock().now(),
        signoff_completed_at=FakeClock().now(),
    )
    since = FakeClock().now()
    assert SCHEDULE.package_due(record) == since + limit
    assert SCHEDULE.package_due(record, since + limit) == since + 2 * limit
    assert SCHEDULE.package_due(record, since + 4 * limit) == since + 6 * limit
    assert SCHEDULE.package_due(record, since + 6 * limit) == since + 8 * limit
    assert SCHEDULE.package_due(record, since + 9 * limit) == since + 16 * limit
    intake_broke_off = record.model_copy(update={"signoff_completed_at": None})
    assert SCHEDULE.package_due(intake_broke_off, since + limit) is None, "reported once, then left"


def test_an_encrypted_package_key_is_destroyed_at_expiry_and_closed_after_retention() -> None:
    world = World()
    now = world.clock.now()
    world.registry.create_package(
        PackageRecord(
            package_id="wp-sftp",
            status=PackageStatus.GRANTED,
            manifest_sha256="0" * 64,
            method=Method.SFTP.value,
            created_at=now,
            updated_at=now,
            granted_at=now,
            expires_at=now + timedelta(hours=48),
        )
    )
    world.clock.advance(hours=47)
    assert world.sweep.sweep().keys_destroyed == []
    world.clock.advance(hours=1)
    assert world.sweep.sweep().keys_destroyed == ["wp-sftp"]
    assert world.packages_due.times()["wp-sftp"] == [now + timedelta(hours=48) + CONFIG.retention]
    world.clock.advance(seconds=CONFIG.retention.total_seconds())
    assert world.sweep.sweep().closed == ["wp-sftp"]
    assert world.keys.deleted == ["wp-sftp"] and world.empty() and world.table.scans == []


def test_rows_that_name_no_work_are_deleted_when_met_and_early_rows_moved() -> None:
    world = World()
    grant = world.granted()
    now = world.clock.now()
    world.grants_due.put("wp-gone:0", now)  # no such grant
    world.grants_due.put("not a grant key", now)
    world.grants_due.put("wp-unit:0", now)  # early: the grant expires in 48 hours
    world.packages_due.put("wp-gone", now)  # no such package
    rejected = world.package().model_copy(update={"package_id": "wp-rejected", "status": PackageStatus.REJECTED})
    world.table.create_package(rejected)
    world.packages_due.put("wp-rejected", now)

    report = world.sweep.sweep()

    assert report.expired == [] and report.failed == []
    assert world.grants_due.times() == {"wp-unit:0": [grant.expires_at]}
    assert "wp-gone" not in world.packages_due.times() and "wp-rejected" not in world.packages_due.times()


def test_a_row_left_by_an_ended_grant_is_deleted_when_met() -> None:
    world = World()
    grant = world.granted()
    world.table.update_grant(  # ended behind the index's back (as a crash before its delete would)
        grant.transition(GrantStatus.REVOKED, revoked_at=world.clock.now(), ended_at=world.clock.now())
    )
    world.clock.moment = grant.expires_at

    report = world.sweep.sweep()

    assert report.expired == [] and "wp-unit:0" not in world.grants_due.times()


def test_a_failure_leaves_the_row_and_the_next_pass_finishes() -> None:
    world = World()
    grant = world.granted()
    world.email.faults.fail_at = {world.email.faults.calls + 1}  # the manager's notice fails once
    world.clock.moment = grant.expires_at

    first = world.sweep.sweep()

    assert first.expired == [] and first.failed == [grant.grant_id]
    assert world.grants_due.times() == {"wp-unit:0": [grant.expires_at]}
    assert world.sweep.sweep().expired == [grant.grant_id]
    assert "wp-unit:0" not in world.grants_due.times()


def test_an_index_that_does_not_answer_fails_the_pass_softly() -> None:
    world = World()
    world.granted()
    world.grants_due.faults.fail_at = {world.grants_due.faults.calls + 1}

    report = world.sweep.sweep()

    assert report.failed == ["due index"]


def test_records_from_before_the_index_are_found_by_a_full_pass_which_writes_their_rows() -> None:
    world = World()
    grant = world.granted()
    world.grants_due.rows.clear()  # as if the grant had been made before the index existed
    world.packages_due.rows.clear()
    soon = world.granted("wp-soon", expires_in_hours=1)
    world.grants_due.rows.clear()
    world.packages_due.rows.clear()
    world.clock.moment = soon.expires_at

    assert world.sweep.sweep().expired == [], "the index starts empty"
    report = world.sweep.sweep(full=True)

    assert report.expired == [soon.grant_id]
    assert world.grants_due.times() == {"wp-unit:0": [grant.expires_at]}
    world.clock.moment = grant.expires_at
    world.table.scans.clear()
    assert world.sweep.sweep().expired == [grant.grant_id]
    assert world.table.scans == []


@pytest.mark.parametrize("full", [False, True])
def test_a_full_pass_and_an_indexed_pass_do_the_same(full: bool) -> None:
    world = World()
    grants = [world.granted(f"wp-{n}", expires_in_hours=1 + n).grant_id for n in range(4)]
    world.clock.advance(hours=2, minutes=30)

    report = world.sweep.sweep(full=full)

    assert sorted(report.expired) == sorted(grants[:2])
    assert sorted(world.grants_due.times()) == ["wp-2:0", "wp-3:0"]
