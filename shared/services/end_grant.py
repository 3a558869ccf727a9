"""Ending a grant: revocation by the system manager and expiry by the timer take one path.

The access dies first (the link's stored access policy, or the SFTP local user, is deleted), the
manager is told, then the record changes; if the email fails the grant stays `active` (its access
already dead) and a repeat finishes. An SFTP user is deleted again once the record says ended (so a
delivery that made it again meanwhile loses), and the SFTP firewall then drops the addresses no
active grant needs. Repeating it on an ended grant is harmless: the grant is returned as it is.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.domain import names
from shared.domain.records import GrantRecord, GrantStatus
from shared.errors import ConcurrencyConflict, EgressError, NotFound
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, Registry, SftpAccess
from shared.services import notifications, sftp_grants
from shared.services.config import PipelineConfig

logger = logging.getLogger(__name__)

EXPIRY_ACTOR = "expiry-timer"


class EndGrantService:
    def __init__(
        self,
        *,
        registry: Registry,
        delivery: BlobStore,
        audit: AuditTrail,
        email: EmailSender,
        clock: Clock,
        config: PipelineConfig,
        sftp: SftpAccess,
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._sftp = sftp
        self._audit = audit
        self._email = email
        self._clock = clock
        self._manager = config.system_manager_email

    def revoke_grant(self, grant_id: str, actor: str, reason: str | None) -> dict[str, Any]:
        grant = self._registry.get_grant(grant_id)
        if grant is None:
            raise NotFound(f"there is no grant {grant_id}")
        return self.end(grant, GrantStatus.REVOKED, actor, reason).public_view()

    def revoke_package(self, package_id: str, actor: str, reason: str | None) -> dict[str, Any]:
        if self._registry.get_package(package_id) is None:
            raise NotFound(f"there is no package {package_id}")
        grants: list[GrantRecord] = []
        failed: EgressError | None = None
        for grant in self._registry.list_grants(package_id=package_id):
            try:  # one grant that cannot be ended now does not keep the others alive
                grants.append(self.end(grant, GrantStatus.REVOKED, actor, reason))
            except EgressError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        return {"package_id": package_id, "grants": [g.public_view() for g in grants]}

    def end(self, grant: GrantRecord, to: GrantStatus, actor: str, reason: str | None = None) -> GrantRecord:
        """Revoke or expire ``grant``: the token dies now, it is recorded, and the manager is told once.

        The ETag-conditional state write decides between concurrent callers: the losers return the
        grant as the winner left it. An already ended grant gets its missing audit entry and notice
        (a crash between the state write and the audit append loses nothing).
        """
        for _ in range(5):
            if grant.status != GrantStatus.ACTIVE:
                self._record_end(grant)
                self._close_sftp(grant)
                return grant
            if grant.sftp_user and grant.sftp_user_deleted_at is None:
                # Recorded first, so that from now on nothing makes the user again, emails it a
                # password, counts its addresses or sends it the key, whatever fails below.
                try:
                    grant = self._registry.update_grant(
                        grant.model_copy(update={"sftp_user_deleted_at": self._clock.now()})
                    )
                except ConcurrencyConflict:
                    grant = self._fresh(grant)
                    continue
            self._cut_access(grant)
            now = self._clock.now()
            if to == GrantStatus.REVOKED:
                ended = grant.transition(to, revoked_at=now, revoked_by=actor, revoke_reason=reason, ended_at=now)
            else:
                ended = grant.transition(to, ended_at=now)
            # Told before the record changes, so a failed email leaves the grant active (its access is
            # already cut) and a repeat or the next sweep tells them; the outbox sends it once.
            self._notify(ended)
            try:
                saved = self._registry.update_grant(ended)
            except ConcurrencyConflict:
                grant = self._fresh(grant)
                continue
            self._record_end(saved)
            self._close_sftp(saved)
            logger.info("grant %s of %s ended: %s (%s)", grant.grant_id, grant.package_id, saved.status, actor)
            return saved
        raise ConcurrencyConflict(f"grant {grant.grant_id} kept changing while it was being ended; try again")

    def _fresh(self, grant: GrantRecord) -> GrantRecord:
        fresh = self._registry.get_grant(grant.grant_id)
        assert fresh is not None
        return fresh

    def _cut_access(self, grant: GrantRecord) -> None:
        if grant.sftp_user:
            self._sftp.delete_user(grant.sftp_user)
        else:
            self._delivery.update_policies(names.egress_container(grant.package_id), add=[], remove=[grant.policy_id])

    def _close_sftp(self, grant: GrantRecord) -> None:
        """Once the record says ended: the user deleted once more (a delivery may have made it again
        meanwhile) and the firewall closed to what no open grant needs. Best effort: what fails here
        the sweep's hourly check puts right (it deletes users without an open grant)."""
        if not grant.sftp_user:
            return
        try:
            self._sftp.delete_user(grant.sftp_user)
            sftp_grants.close_firewall(self._registry, self._sftp)
        except EgressError as exc:
            logger.warning(
                "grant %s ended; the SFTP account is put right by the sweep: %s", grant.grant_id, exc.message
            )

    def _record_end(self, grant: GrantRecord) -> None:
        """Audit entry and manager notice of an ended grant, each once (event id and outbox)."""
        revoked = grant.status == GrantStatus.REVOKED
        details: dict[str, object] = {"grant_id": grant.grant_id, "recipient": grant.recipient_email}
        if grant.sftp_user:
            details["sftp_username"] = grant.sftp_login
            details["sftp_user_deleted"] = True
        if revoked:
            details["reason"] = grant.revoke_reason
        self._audit.append(
            grant.package_id,
            "grant_revoked" if revoked else "grant_expired",
            (grant.revoked_by or "unknown") if revoked else EXPIRY_ACTOR,
            details,
            event_id=f"grant_ended:{grant.grant_id}",
        )
        self._notify(grant)

    def _notify(self, grant: GrantRecord) -> None:
        what = "was revoked" if grant.status == GrantStatus.REVOKED else "expired"
        self._email.send(notifications.manager_grant_ended(grant, what, self._manager))
