"""The timer's sweep: end grants past their expiry, destroy keys of expired encrypted packages, close
packages after retention, reject packages whose sign-off ran out of time, and queue again any
signed-off package whose release message was lost. A failure on one item is logged and left for
the next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from shared.domain import names
from shared.domain.manifest import Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.domain.signoff import SignoffStatus
from shared.errors import ConcurrencyConflict, EgressError
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, PackageKeys, PoisonWatch, Registry, ReleaseQueue
from shared.services import notifications
from shared.services.config import PipelineConfig
from shared.services.rejection import reject

logger = logging.getLogger(__name__)

ACTOR = "expiry-timer"
_ENCRYPTED = (Method.SFTP, Method.PHYSICAL)


class GrantEnder(Protocol):
    """The one path that ends a grant (``EndGrantService`` in production)."""

    def end(self, grant: GrantRecord, to: GrantStatus, actor: str, reason: str | None = None) -> GrantRecord: ...


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
    ) -> None:
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

    def sweep(self) -> SweepReport:
        report = SweepReport()
        now = self._clock.now()
        for grant in self._registry.list_grants(status=GrantStatus.ACTIVE):
            if grant.expires_at > now:
                continue
            self._attempt(report, grant.grant_id, lambda g=grant: self._expire(g, report))
        for package in self._registry.list_packages(status=PackageStatus.GRANTED):
            self._attempt(report, package.package_id, lambda p=package: self._end_package(p, now, report))
        for package in self._registry.list_packages(status=PackageStatus.AWAITING_SIGNOFF):
            if package.signoff_deadline is not None and package.signoff_deadline <= now:
                self._attempt(report, package.package_id, lambda p=package: self._time_out(p, report))
        for status in (PackageStatus.PROCESSING, PackageStatus.SEALED):
            for package in self._registry.list_packages(status=status):
                self._attempt(report, package.package_id, lambda p=package: self._unstick(p, now, report))
        self._attempt(report, "poison queues", lambda: self._report_poison(report))
        logger.info(
            "sweep: %d grant(s) expired, %d package(s) closed, %d key(s) destroyed, %d sign-off(s) timed out",
            len(report.expired),
            len(report.closed),
            len(report.keys_destroyed),
            len(report.signoff_timed_out),
        )
        return report

    @staticmethod
    def _attempt(report: SweepReport, what: str, work: object) -> None:
        try:
            work()  # type: ignore[operator]
        except ConcurrencyConflict:
            pass  # changed by someone else meanwhile; the next pass sees the new state
        except EgressError as exc:
            logger.warning("sweep: %s not done yet: %s", what, exc.message)
            report.failed.append(what)

    def _expire(self, grant: GrantRecord, report: SweepReport) -> None:
        ended = self._grants.end(grant, GrantStatus.EXPIRED, ACTOR)
        if ended.status == GrantStatus.EXPIRED:
            report.expired.append(grant.grant_id)

    def _end_package(self, package: PackageRecord, now: datetime, report: SweepReport) -> None:
        if package.method in _ENCRYPTED:
            expires_at = package.expires_at
            if expires_at is None or expires_at > now:
                return
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
                return
            container, prefix = names.encrypted_location(
                package.package_id, package.method or "", self._config.sftp_container
            )
            if prefix:
                self._delivery.delete_blobs(container, [b.name for b in self._delivery.list_blobs(container, prefix)])
            else:
                self._delivery.delete_container(container)
            deleted = f"{container}/{prefix}"
        else:
            grants = self._registry.list_grants(package_id=package.package_id)
            if any(g.status == GrantStatus.ACTIVE for g in grants):
                return
            last_end = max((g.ended_at or g.expires_at for g in grants), default=package.granted_at or now)
            if last_end + self._config.retention > now:
                return
            deleted = names.egress_container(package.package_id)
            self._delivery.delete_container(deleted)
        self._email.send(notifications.manager_closed(package.package_id, self._config.system_manager_email))
        closed = self._registry.update_package(package.transition(PackageStatus.CLOSED, closed_at=now, updated_at=now))
        self._audit.append(closed.package_id, "closed", ACTOR, {"deleted": deleted})
        report.closed.append(closed.package_id)

    def _unstick(self, package: PackageRecord, now: datetime, report: SweepReport) -> None:
        """A signed-off package whose release did not finish is queued again (release is idempotent),
        each time the interval doubles (backoff); one stuck far longer is reported to the manager once."""
        since = package.signoff_completed_at if package.status == PackageStatus.PROCESSING else package.sealed_at
        since = since or package.updated_at
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
        reject(
            package,
            [reason],
            registry=self._registry,
            audit=self._audit,
            email=self._email,
            clock=self._clock,
            manager=self._config.system_manager_email,
            actor=ACTOR,
        )
        report.signoff_timed_out.append(package.package_id)
