"""The timer's job: end grants past their expiry, and close packages after retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import ConcurrencyConflict, EgressError
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, Registry
from shared.services import notifications
from shared.services.egress import egress_container
from shared.services.encrypted import EncryptedDelivery

logger = logging.getLogger(__name__)

ACTOR = "expiry-timer"


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    keys_destroyed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class ExpiryService:
    def __init__(
        self,
        *,
        registry: Registry,
        delivery: BlobStore,
        audit: AuditTrail,
        email: EmailSender,
        clock: Clock,
        system_manager_email: str,
        retention: timedelta,
        encrypted: EncryptedDelivery | None = None,
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._audit = audit
        self._email = email
        self._clock = clock
        self._manager = system_manager_email
        self._retention = retention
        self._encrypted = encrypted

    def sweep(self) -> SweepReport:
        """One pass; a failure on one grant or package is logged and left for the next pass."""
        report = SweepReport()
        now = self._clock.now()
        for grant in self._registry.list_grants(status=GrantStatus.ACTIVE):
            if grant.expires_at > now:
                continue
            try:
                # The link dies first; the manager is told before the record changes, so a failed
                # email leaves the grant `active` and the next sweep tells them.
                self._delivery.update_policies(egress_container(grant.package_id), add=[], remove=[grant.policy_id])
                ended = grant.transition(GrantStatus.EXPIRED, ended_at=now)
                self._email.send(notifications.manager_grant_ended(ended, "expired", self._manager))
                self._registry.update_grant(ended)
            except ConcurrencyConflict:
                continue  # revoked meanwhile: already ended
            except EgressError as exc:
                logger.warning("grant %s: could not expire it yet: %s", grant.grant_id, exc.message)
                report.failed.append(grant.grant_id)
                continue
            self._audit.append(
                grant.package_id,
                "grant_expired",
                ACTOR,
                {"grant_id": grant.grant_id, "recipient": grant.recipient_email},
            )
            report.expired.append(grant.grant_id)

        if self._encrypted is not None:
            try:
                keys_destroyed, encrypted_closed = self._encrypted.sweep(now)
                report.keys_destroyed += keys_destroyed
                report.closed += encrypted_closed
            except EgressError as exc:
                logger.warning("encrypted packages: sweep incomplete: %s", exc.message)
        for package in self._registry.list_packages(status=PackageStatus.GRANTED):
            if package.method in ("sftp", "physical"):
                continue  # closed by the encrypted delivery's own sweep above
            grants = self._registry.list_grants(package_id=package.package_id)
            if any(g.status == GrantStatus.ACTIVE for g in grants):
                continue
            last_end = max((g.ended_at or g.expires_at for g in grants), default=package.granted_at or now)
            if last_end + self._retention > now:
                continue
            try:
                self._delivery.delete_container(egress_container(package.package_id))
                self._email.send(notifications.manager_closed(package.package_id, self._manager))
                closed = self._registry.update_package(
                    package.transition(PackageStatus.CLOSED, closed_at=now, updated_at=now)
                )
            except EgressError as exc:
                logger.warning("package %s: could not close it yet: %s", package.package_id, exc.message)
                report.failed.append(package.package_id)
                continue
            self._audit.append(
                closed.package_id, "closed", ACTOR, {"container_deleted": egress_container(closed.package_id)}
            )
            report.closed.append(closed.package_id)
        logger.info("expiry sweep: %d grant(s) expired, %d package(s) closed", len(report.expired), len(report.closed))
        return report
