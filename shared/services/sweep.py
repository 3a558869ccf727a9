"""The timer's sweep: end grants past their expiry, destroy keys of expired encrypted packages, close
packages after retention, reject packages whose sign-off ran out of time, and queue again any
signed-off package whose release message was lost. A failure on one item is logged and left for
the next pass.

What is due is read from two due indexes (``DueIndex``: rows partitioned by the hour they fall
due), never by scanning every grant or package: a pass reads the rows due by now, decides each
from the grant or package record itself, and then moves the row to the next moment that record
needs the sweep, or deletes it. ``SweepSchedule`` says when that is; the registry adapter writes
the same rows around each write of a record (``shared.adapters.indexed_registry``). A row that no
longer names any work (its grant ended, its package moved on) is deleted when met.

The indexes start empty: ``sweep(full=True)`` reads every active grant and every package the sweep
acts on, as every pass did before the indexes, acts on what is due and writes the rows of the rest
(run it once after upgrading). Without indexes every pass is a full one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from shared.domain import names
from shared.domain.manifest import Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.domain.signoff import SignoffStatus
from shared.errors import ConcurrencyConflict, EgressError
from shared.ports import (
    AuditTrail,
    BlobStore,
    Clock,
    DueIndex,
    DueRow,
    EmailSender,
    PackageKeys,
    PoisonWatch,
    Registry,
    ReleaseQueue,
    SftpAccess,
)
from shared.services import notifications, sftp_grants
from shared.services.config import PipelineConfig
from shared.services.records_io import archive_grants
from shared.services.rejection import Rejecter
from shared.services.staging import empty_staging

logger = logging.getLogger(__name__)

ACTOR = "expiry-timer"
_ENCRYPTED = (Method.SFTP, Method.PHYSICAL)


class GrantEnder(Protocol):
    """The one path that ends a grant (``EndGrantService`` in production)."""

    def end(self, grant: GrantRecord, to: GrantStatus, actor: str, reason: str | None = None) -> GrantRecord: ...


def stuck_since(package: PackageRecord) -> datetime:
    """Since when a processing or sealed package should have moved on."""
    since = package.signoff_completed_at if package.status == PackageStatus.PROCESSING else package.sealed_at
    return since or package.updated_at


@dataclass(frozen=True)
class SweepSchedule:
    """When the sweep next has work for a record: what its due indexes hold.

    Grants index: ``<package_id>:<recipient_index>`` at the grant's expiry. Packages index: the
    package id at its sign-off deadline (awaiting sign-off), at its next stuck check (processing,
    sealed), at its key destruction and then its closing (granted sftp/physical); for a link
    package, when it may close after each grant's end, and once retention after it was granted
    (the sweep then closes it if no grant is active, or waits for the last grant's end).
    """

    retention: timedelta
    stuck_after: timedelta

    @classmethod
    def of(cls, config: PipelineConfig) -> SweepSchedule:
        return cls(retention=config.retention, stuck_after=config.stuck_after)

    @staticmethod
    def grant_key(package_id: str, recipient_index: int) -> str:
        return f"{package_id}:{recipient_index}"

    @staticmethod
    def grant_of(key: str) -> tuple[str, int] | None:
        package_id, _, index = key.rpartition(":")
        return (package_id, int(index)) if package_id and index.isdigit() else None

    def closable_at(self, grant: GrantRecord) -> datetime:
        """The earliest moment the package of an ended grant may close."""
        return (grant.ended_at or grant.expires_at) + self.retention

    def package_due(self, record: PackageRecord, now: datetime | None = None) -> datetime | None:
        """The next moment the sweep has work for ``record``, as far as the record alone tells.

        ``now``: as the sweep leaves a stuck package it has just looked at (its next re-queue or
        report). A granted link package's closing follows its grants' ends (``closable_at``); the
        record alone only gives the earliest it could close, retention after it was granted.
        """
        if record.status == PackageStatus.AWAITING_SIGNOFF:
            return record.signoff_deadline
        if record.status in (PackageStatus.PROCESSING, PackageStatus.SEALED):
            return self._stuck_check(record, now)
        if record.status != PackageStatus.GRANTED:
            return None
        if record.method not in _ENCRYPTED:
            return (record.granted_at or record.updated_at) + self.retention
        if record.expires_at is None:
            return None
        return record.expires_at if record.key_destroyed_at is None else record.expires_at + self.retention

    def _stuck_check(self, record: PackageRecord, now: datetime | None) -> datetime | None:
        since = stuck_since(record)
        limit = self.stuck_after
        if now is None or now - since < limit:
            return since + limit
        if record.signoff_completed_at is None:
            return None  # reported once; staging the manifest again writes the record, and a new row
        waited = now - since
        step = limit
        while step <= waited:
            step *= 2
        if waited < limit * 6:
            return min(since + step, since + limit * 6)  # the next re-queue, or the long-stuck report
        return since + step


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    keys_destroyed: list[str] = field(default_factory=list)
    signoff_timed_out: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    firewall_fixed: list[str] = field(default_factory=list)  # SFTP firewall ranges added or removed
    sftp_users_removed: list[str] = field(default_factory=list)  # SFTP local users without an open grant
    looked_at: int = 0  # grants and packages read to decide (due rows met, or every one in a full pass)


class SweepService:
    def __init__(
        self,
        *,
        registry: Registry,
        delivery: BlobStore,
        keys: PackageKeys,
        audit: AuditTrail,
        email: EmailSender,
        queue: ReleaseQueue,
        grants: GrantEnder,
        poison: PoisonWatch,
        clock: Clock,
        config: PipelineConfig,
        sftp_store: BlobStore,
        records: BlobStore,
        grants_due: DueIndex | None = None,
        packages_due: DueIndex | None = None,
        sftp: SftpAccess | None = None,
        firewall_every: timedelta = timedelta(hours=1),
    ) -> None:
        self._sftp = sftp
        self._firewall_every = firewall_every
        self._firewall_checked: datetime | None = None
        self._sftp_store = sftp_store
        self._records = records
        self._poison = poison
        self._registry = registry
        self._delivery = delivery
        self._keys = keys
        self._audit = audit
        self._email = email
        self._queue = queue
        self._grants = grants
        self._clock = clock
        self._config = config
        self._reject = Rejecter(registry, audit, email, clock, config.system_manager_email, ACTOR)
        self._grants_due = grants_due
        self._packages_due = packages_due
        self._schedule = SweepSchedule.of(config)

    def sweep(self, full: bool = False) -> SweepReport:
        """One pass over what is due; ``full``: over every active grant and package, writing their rows."""
        report = SweepReport()
        now = self._clock.now()
        if full or self._grants_due is None or self._packages_due is None:
            self._full_pass(now, report)
        else:
            self._indexed_pass(self._grants_due, self._packages_due, now, report)
        self._attempt(report, "poison queues", lambda: self._report_poison(report))
        self._attempt(report, "SFTP account", partial(self._check_sftp, now, report))
        logger.info(
            "sweep: %d grant(s) expired, %d package(s) closed, %d key(s) destroyed, %d sign-off(s) timed out "
            "(%d looked at)",
            len(report.expired),
            len(report.closed),
            len(report.keys_destroyed),
            len(report.signoff_timed_out),
            report.looked_at,
        )
        return report

    @staticmethod
    def _attempt(report: SweepReport, what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except ConcurrencyConflict:
            pass  # changed by someone else meanwhile; the next pass sees the new state
        except EgressError as exc:
            logger.warning("sweep: %s not done yet: %s", what, exc.message)
            report.failed.append(what)

    # -- the passes -------------------------------------------------------------------------

    def _indexed_pass(self, grants_due: DueIndex, packages_due: DueIndex, now: datetime, report: SweepReport) -> None:
        grant_rows: dict[str, dict[int, list[DueRow]]] = {}
        for row in self._due(report, grants_due, now):
            grant = self._schedule.grant_of(row.key)
            if grant is None:  # not a row this service writes
                self._attempt(report, row.key, partial(grants_due.move, row, None))
                continue
            grant_rows.setdefault(grant[0], {}).setdefault(grant[1], []).append(row)
        for package_id, by_index in grant_rows.items():
            self._attempt(report, package_id, partial(self._grant_rows, package_id, by_index, now, report))
        package_rows: dict[str, list[DueRow]] = {}
        for row in self._due(report, packages_due, now):
            package_rows.setdefault(row.key, []).append(row)
        for package_id, rows in package_rows.items():
            self._attempt(report, package_id, partial(self._package_rows, package_id, rows, now, report))

    def _due(self, report: SweepReport, index: DueIndex, now: datetime) -> list[DueRow]:
        rows: list[DueRow] = []
        self._attempt(report, "due index", lambda: rows.extend(index.due(now)))
        return rows

    def _grant_rows(
        self, package_id: str, by_index: dict[int, list[DueRow]], now: datetime, report: SweepReport
    ) -> None:
        assert self._grants_due is not None
        index = self._grants_due
        grants = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
        for recipient_index, rows in by_index.items():
            grant = grants.get(recipient_index)
            what = grant.grant_id if grant else self._schedule.grant_key(package_id, recipient_index)
            self._attempt(report, what, partial(self._settle_grant, index, grant, rows, now, report))

    def _settle_grant(
        self, index: DueIndex, grant: GrantRecord | None, rows: list[DueRow], now: datetime, report: SweepReport
    ) -> None:
        report.looked_at += 1
        ends_now = grant is not None and grant.status == GrantStatus.ACTIVE and grant.expires_at <= now
        due = self._grant_due(grant, now, report)
        for row in rows:
            if ends_now and grant is not None and due is None and row.due_at == grant.expires_at:
                continue  # deleted as the grant ended
            index.move(row, due)

    def _package_rows(self, package_id: str, rows: list[DueRow], now: datetime, report: SweepReport) -> None:
        assert self._packages_due is not None
        report.looked_at += 1
        package = self._registry.get_package(package_id)
        due = self._package_due(package, now, report) if package is not None else None
        for row in rows:
            self._packages_due.move(row, due)

    def _full_pass(self, now: datetime, report: SweepReport) -> None:
        grant_rows: list[tuple[str, datetime]] = []
        for grant in self._registry.list_grants(status=GrantStatus.ACTIVE):
            self._attempt(report, grant.grant_id, partial(self._collect, grant_rows, grant, now, report))
        package_rows: list[tuple[str, datetime]] = []
        for status in (
            PackageStatus.GRANTED,
            PackageStatus.AWAITING_SIGNOFF,
            PackageStatus.PROCESSING,
            PackageStatus.SEALED,
        ):
            for package in self._registry.list_packages(status=status):
                report.looked_at += 1
                self._attempt(
                    report, package.package_id, partial(self._collect_package, package_rows, package, now, report)
                )
        for index, rows in ((self._grants_due, grant_rows), (self._packages_due, package_rows)):
            if index is not None and rows:
                self._attempt(report, "due index", partial(index.put_many, rows))

    def _collect(
        self, rows: list[tuple[str, datetime]], grant: GrantRecord, now: datetime, report: SweepReport
    ) -> None:
        report.looked_at += 1
        self._keep(
            rows, self._schedule.grant_key(grant.package_id, grant.recipient_index), self._grant_due(grant, now, report)
        )

    def _collect_package(
        self, rows: list[tuple[str, datetime]], package: PackageRecord, now: datetime, report: SweepReport
    ) -> None:
        self._keep(rows, package.package_id, self._package_due(package, now, report))

    @staticmethod
    def _keep(rows: list[tuple[str, datetime]], key: str, due: datetime | None) -> None:
        if due is not None:
            rows.append((key, due))

    # -- what is due, and when next ------------------------------------------------------------

    def _grant_due(self, grant: GrantRecord | None, now: datetime, report: SweepReport) -> datetime | None:
        """Expires ``grant`` if its time has come; returns when it is next due (``None``: never)."""
        if grant is None or grant.status != GrantStatus.ACTIVE:
            return None
        if grant.expires_at > now:
            return grant.expires_at
        ended = self._grants.end(grant, GrantStatus.EXPIRED, ACTOR)
        if ended.status == GrantStatus.EXPIRED:
            report.expired.append(grant.grant_id)
        return None

    def _package_due(self, package: PackageRecord, now: datetime, report: SweepReport) -> datetime | None:
        """Does what is due for ``package``; returns when it is next due (``None``: not until it is written again)."""
        if package.status == PackageStatus.AWAITING_SIGNOFF:
            deadline = package.signoff_deadline
            if deadline is not None and deadline <= now:
                self._time_out(package, report)
                return None
            return deadline
        if package.status in (PackageStatus.PROCESSING, PackageStatus.SEALED):
            self._unstick(package, now, report)
            return self._schedule.package_due(package, now)
        if package.status == PackageStatus.GRANTED:
            return self._end_package(package, now, report)
        return None

    def _end_package(self, package: PackageRecord, now: datetime, report: SweepReport) -> datetime | None:
        if package.method in _ENCRYPTED:
            expires_at = package.expires_at
            if expires_at is None:
                return None
            if expires_at > now:
                return expires_at
            if package.key_destroyed_at is None:
                # The key can no longer be released from now on; whether a copy can still be
                # recovered from the vault, and until when, is recorded as it is.
                deletion = self._keys.delete(package.package_id)
                until = deletion.recoverable_until if deletion.state == "soft_deleted" else None
                package = self._registry.update_package(
                    package.model_copy(
                        update={"key_destroyed_at": now, "key_recoverable_until": until, "updated_at": now}
                    )
                )
                if deletion.state == "soft_deleted":
                    details = {"recoverable_until": until.isoformat() if until else None}
                    self._audit.append(package.package_id, "key_soft_deleted", ACTOR, details)
                else:
                    self._audit.append(package.package_id, "key_destroyed", ACTOR, {"state": deletion.state})
                report.keys_destroyed.append(package.package_id)
            if expires_at + self._config.retention > now:
                return expires_at + self._config.retention
            if any(g.status == GrantStatus.ACTIVE for g in self._registry.list_grants(package_id=package.package_id)):
                return None  # an sftp login is still open (its end writes the row of when the package may close)
            deleted = names.egress_container(package.package_id)
            store = self._sftp_store if package.method == Method.SFTP else self._delivery
            store.delete_container(deleted)
        else:
            grants = self._registry.list_grants(package_id=package.package_id)
            if any(g.status == GrantStatus.ACTIVE for g in grants):
                return None  # each grant's end writes the row of when its package may close
            last_end = max((g.ended_at or g.expires_at for g in grants), default=package.granted_at or now)
            if last_end + self._config.retention > now:
                return last_end + self._config.retention
            deleted = names.egress_container(package.package_id)
            self._delivery.delete_container(deleted)
        left_staged = self._empty_staging(package.package_id)
        archived = self._archive_grants(package.package_id)
        self._email.send(notifications.manager_closed(package.package_id, self._config.system_manager_email))
        closed = self._registry.update_package(package.transition(PackageStatus.CLOSED, closed_at=now, updated_at=now))
        closing: dict[str, object] = {"deleted": deleted, **archived}
        if left_staged:
            closing["staged_blobs_removed"] = left_staged
        self._audit.append(closed.package_id, "closed", ACTOR, closing)
        report.closed.append(closed.package_id)
        return None

    def _check_sftp(self, now: datetime, report: SweepReport) -> None:
        """Once an hour (per worker), put the SFTP account right: delete local users without an open
        grant (made again by a delivery that raced a revocation, or left by a worker that died), and
        make the firewall admit what open grants need (a redeployment of the Bicep empties it)."""
        if self._sftp is None:
            return
        if self._firewall_checked is not None and now - self._firewall_checked < self._firewall_every:
            return
        before = set(self._sftp.allowed_ranges())
        if not before and not self._sftp.user_names():
            self._firewall_checked = now  # no user, nothing admitted: no grant to read
            return
        report.sftp_users_removed = sftp_grants.remove_stray_users(self._registry, self._sftp)
        after = set(sftp_grants.close_firewall(self._registry, self._sftp))
        self._firewall_checked = now
        if before != after:
            report.firewall_fixed = sorted(before ^ after)
        if report.firewall_fixed or report.sftp_users_removed:
            logger.warning(
                "sweep: the SFTP account was out of step with the open grants: "
                "%d user(s) removed, %d range(s) put right",
                len(report.sftp_users_removed),
                len(report.firewall_fixed),
            )

    def _empty_staging(self, package_id: str) -> int:
        """Whatever of the package is still staged when it closes: delivery empties staging once the
        recipients are told, but that cleanup may never have finished (its message went to poison,
        or its worker died after another had recorded the package granted). ``self._records`` is the
        staging account's store, which holds the staging container too."""
        left = empty_staging(self._records, self._config.staging_container, package_id)
        if left:
            logger.warning("package %s still had %d staged blob(s) when it closed; removed", package_id, left)
        return left

    def _archive_grants(self, package_id: str) -> dict[str, object]:
        """Move a closing package's grant records out of the registry into the records container, so
        that the grants table holds only what may still change; ``egress status`` reads the archive."""
        grants = self._registry.list_grants(package_id=package_id)
        if not grants:
            return {}
        blob = archive_grants(self._records, self._config.records_container, package_id, grants)
        for grant in grants:
            self._registry.delete_grant(grant)
        return {"grants_archived": len(grants), "archive": f"{self._config.records_container}/{blob}"}

    def _unstick(self, package: PackageRecord, now: datetime, report: SweepReport) -> None:
        """A signed-off package whose release did not finish is queued again (release is idempotent),
        each time the interval doubles (backoff); one stuck far longer is reported to the manager once."""
        since = stuck_since(package)
        waited = now - since
        limit = self._config.stuck_after
        if waited < limit:
            return
        signed_off = package.signoff_completed_at is not None
        if signed_off:
            # Re-queue at limit, 2*limit, 4*limit ... after the moment it should have moved on.
            step = limit
            while step * 2 <= waited:
                step *= 2
            if waited - step < self._sweep_period(limit):
                self._queue.send(package.package_id, package.manifest_sha256)
                report.requeued.append(package.package_id)
        if waited >= limit * 6 or not signed_off:
            what = (
                "Its release has been queued again with growing intervals; if it stays, read the host's log."
                if signed_off
                else "Intake broke off before it finished; stage the manifest again to check the package again."
            )
            self._email.send(
                notifications.manager_stuck(
                    package.package_id, package.status.value, since, limit, what, self._config.system_manager_email
                )
            )
            report.stuck.append(package.package_id)

    @staticmethod
    def _sweep_period(limit: timedelta) -> timedelta:
        return min(limit, timedelta(minutes=5))  # the timer's default period: a re-queue fires once per step

    def _report_poison(self, report: SweepReport) -> None:
        for poisoned in self._poison.poisoned():
            self._email.send(
                notifications.manager_poisoned(
                    poisoned.queue,
                    poisoned.message_id,
                    poisoned.what,
                    poisoned.package_id,
                    self._config.system_manager_email,
                )
            )
            report.poisoned.append(poisoned.message_id)

    def _time_out(self, package: PackageRecord, report: SweepReport) -> None:
        pending = [
            f"{s.name} ({s.role.value})"
            for s in self._registry.list_signoffs(package.package_id)
            if s.status == SignoffStatus.PENDING and s.manifest_sha256 == package.manifest_sha256
        ]
        hours = self._config.signoff_ttl.total_seconds() / 3600
        reason = (
            f"sign-off was not complete within {hours:g} hours (still waiting for {', '.join(pending) or 'nobody'}); "
            "nothing was released. Stage the package again to ask again"
        )
        self._reject(
            package,
            [reason],
        )
        report.signoff_timed_out.append(package.package_id)
