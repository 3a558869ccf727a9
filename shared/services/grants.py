"""What the system manager does: look at packages and grants, revoke at once."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.domain.records import GrantRecord, GrantStatus, PackageRecord
from shared.errors import ConcurrencyConflict, NotFound
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, Registry
from shared.services import notifications
from shared.services.egress import egress_container

logger = logging.getLogger(__name__)


class GrantService:
    def __init__(
        self,
        *,
        registry: Registry,
        delivery: BlobStore,
        records: BlobStore,
        records_container: str,
        audit: AuditTrail,
        email: EmailSender,
        clock: Clock,
        system_manager_email: str,
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._records = records
        self._records_container = records_container
        self._audit = audit
        self._email = email
        self._clock = clock
        self._manager = system_manager_email

    def package_status(self, package_id: str) -> dict[str, Any]:
        record = self._require_package(package_id)
        grants = self._registry.list_grants(package_id=package_id)
        return {
            "package_id": record.package_id,
            "status": record.status.value,
            "title": record.title,
            "tier": record.tier,
            "method": record.method,
            "file_count": record.file_count,
            "bytes": record.total_bytes,
            "files": self._files(record),
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "sealed_at": record.sealed_at.isoformat() if record.sealed_at else None,
            "granted_at": record.granted_at.isoformat() if record.granted_at else None,
            "closed_at": record.closed_at.isoformat() if record.closed_at else None,
            "rejection_reasons": list(record.rejection_reasons),
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "key_released_at": record.key_released_at.isoformat() if record.key_released_at else None,
            "key_released_by": record.key_released_by,
            "key_destroyed_at": record.key_destroyed_at.isoformat() if record.key_destroyed_at else None,
            "grants": [g.public_view() for g in grants],
            "audit": [e.model_dump(mode="json") for e in self._audit.read(package_id)],
        }

    def _files(self, record: PackageRecord) -> list[dict[str, Any]]:
        try:
            raw = self._records.read(self._records_container, f"manifests/{record.package_id}.json")
        except NotFound:
            return []  # rejected before sealing: the files are described by the staged manifest
        return [dict(f) for f in json.loads(raw)["files"]]

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[dict[str, Any]]:
        return [g.public_view() for g in self._registry.list_grants(package_id=package_id, status=status)]

    def revoke_grant(self, grant_id: str, actor: str, reason: str | None) -> dict[str, Any]:
        grant = self._registry.get_grant(grant_id)
        if grant is None:
            raise NotFound(f"there is no grant {grant_id}")
        return self._revoke(grant, actor, reason).public_view()

    def revoke_package(self, package_id: str, actor: str, reason: str | None) -> dict[str, Any]:
        self._require_package(package_id)
        grants = [self._revoke(g, actor, reason) for g in self._registry.list_grants(package_id=package_id)]
        return {"package_id": package_id, "grants": [g.public_view() for g in grants]}

    def _revoke(self, grant: GrantRecord, actor: str, reason: str | None) -> GrantRecord:
        """Delete the policy first (the token dies now), tell the manager, then record.

        Repeating it is harmless: an ended grant is returned as it is. If the email fails the
        grant stays `active` in the registry (its link is already dead) and a repeat finishes.
        """
        for _ in range(5):
            if grant.status != GrantStatus.ACTIVE:
                return grant
            self._delivery.update_policies(egress_container(grant.package_id), add=[], remove=[grant.policy_id])
            now = self._clock.now()
            revoked = grant.transition(
                GrantStatus.REVOKED, revoked_at=now, revoked_by=actor, revoke_reason=reason, ended_at=now
            )
            self._email.send(notifications.manager_grant_ended(revoked, "was revoked", self._manager))
            try:
                saved = self._registry.update_grant(revoked)
            except ConcurrencyConflict:
                fresh = self._registry.get_grant(grant.grant_id)
                assert fresh is not None
                grant = fresh
                continue
            self._audit.append(
                grant.package_id,
                "grant_revoked",
                actor,
                {"grant_id": grant.grant_id, "recipient": grant.recipient_email, "reason": reason},
            )
            logger.info("grant %s of %s revoked by %s", grant.grant_id, grant.package_id, actor)
            return saved
        raise ConcurrencyConflict(f"grant {grant.grant_id} kept changing while being revoked; try again")

    def _require_package(self, package_id: str) -> PackageRecord:
        record = self._registry.get_package(package_id)
        if record is None:
            raise NotFound(f"there is no package {package_id}")
        return record
