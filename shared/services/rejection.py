"""Rejecting a package: shared by intake, sign-off, sealing and the sweep.

The manager is told before the record changes: if the email fails, the record keeps its status
and the retry tells them; recording first would turn the retry into a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.domain.records import PackageRecord, PackageStatus
from shared.ports import AuditTrail, Clock, EmailSender, Registry
from shared.services import notifications

logger = logging.getLogger(__name__)


def reject(
    record: PackageRecord,
    reasons: list[str],
    *,
    registry: Registry,
    audit: AuditTrail,
    email: EmailSender,
    clock: Clock,
    manager: str,
    actor: str,
) -> PackageRecord:
    email.send(notifications.manager_rejected(record.package_id, reasons, manager, record.manifest_sha256))
    updated = registry.update_package(
        record.transition(PackageStatus.REJECTED, rejection_reasons=reasons, updated_at=clock.now())
    )
    audit.append(updated.package_id, "rejected", actor, {"reasons": reasons})
    logger.info("package %s rejected: %d reason(s)", updated.package_id, len(reasons))
    return updated


@dataclass(frozen=True)
class Rejecter:
    """``reject`` with a stage's ports bound once, so each stage calls ``self._reject(record, reasons)``."""

    registry: Registry
    audit: AuditTrail
    email: EmailSender
    clock: Clock
    manager: str
    actor: str

    def __call__(self, record: PackageRecord, reasons: list[str]) -> PackageRecord:
        return reject(
            record,
            reasons,
            registry=self.registry,
            audit=self.audit,
            email=self.email,
            clock=self.clock,
            manager=self.manager,
            actor=self.actor,
        )
