"""Sign-off: each named classifier approves with their own tier, or refuses, through their own link.

A person sees what would leave and to whom, never another person's tier or decision. When the
last person approves, the highest signed tier becomes the package's tier, policy is applied again
at that tier, and release is queued; the request that completes it never copies data itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.domain.manifest import Manifest
from shared.domain.policy import policy_problems
from shared.domain.records import PackageRecord, PackageStatus, SignoffRecord
from shared.domain.signoff import (
    ROLE_TITLES,
    TIER_MEANINGS,
    Choice,
    Signed,
    SignoffStatus,
    consensus,
    looks_like_token,
    same_hash,
    signed_manifest,
    token_hash,
)
from shared.errors import (
    ConcurrencyConflict,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    TransientError,
    Unauthorized,
    Unprocessable,
)
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, Registry, ReleaseQueue
from shared.services import notifications
from shared.services.config import PipelineConfig
from shared.services.records_io import load_manifest, save_manifest
from shared.services.rejection import Rejecter
from shared.services.signoff_requests import request_signoffs

logger = logging.getLogger(__name__)

ACTOR = "egress-signoff"
MAX_COMMENT = 2000


@dataclass(frozen=True)
class SignoffPage:
    """What one person's sign-off page shows: the package, and their own role. Nothing of the others'."""

    record: SignoffRecord
    manifest: Manifest

    def context(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "package_id": m.package_id,
            "title": m.title,
            "method": m.method.value,
            "expires_in_hours": m.expires_in_hours,
            "recipients": [{"name": r.name, "email": r.email, "ip_ranges": list(r.ip_ranges)} for r in m.recipients],
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in m.files],
            "total_bytes": m.total_bytes,
            "role": ROLE_TITLES[self.record.role],
            "name": self.record.name,
            "email": self.record.email,
            "link_expires_at": self.record.token_expires_at,
            "tiers": TIER_MEANINGS,
        }


@dataclass(frozen=True)
class Decided:
    package_id: str
    role: str
    decision: str
    tier: int | None
    package_status: str

    def as_json(self) -> dict[str, Any]:
        return {
            "package_id": self.package_id,
            "role": self.role,
            "decision": self.decision,
            "tier": self.tier,
            "package_status": self.package_status,
        }


class SignoffService:
    def __init__(
        self,
        *,
        records: BlobStore,
        registry: Registry,
        audit: AuditTrail,
        email: EmailSender,
        queue: ReleaseQueue,
        clock: Clock,
        config: PipelineConfig,
    ) -> None:
        self._records = records
        self._registry = registry
        self._audit = audit
        self._email = email
        self._queue = queue
        self._clock = clock
        self._config = config
        self._reject = Rejecter(registry, audit, email, clock, config.system_manager_email, ACTOR)

    # -- one person, through their link ------------------------------------------------------

    def page(self, token: str, principal: str | None) -> SignoffPage:
        """The page behind a link. Viewing changes nothing (mail scanners open links)."""
        record, _ = self._open(token, principal)
        return SignoffPage(record, load_manifest(self._records, self._config.records_container, record.package_id))

    def decide(self, token: str, choice: str, tier: int | None, comment: str | None, principal: str | None) -> Decided:
        record, package = self._open(token, principal)
        decision = self._checked(choice, tier, comment)
        now = self._clock.now()
        if decision == Choice.APPROVE:
            changes: dict[str, object] = {"status": SignoffStatus.APPROVED, "tier": tier}
        else:
            changes = {"status": SignoffStatus.REFUSED, "comment": (comment or "").strip()}
        try:
            saved = self._registry.update_signoff(record.decide(decided_at=now, principal=principal, **changes))
        except ConcurrencyConflict as exc:  # the same link used twice at once, or resent meanwhile
            raise Gone("this sign-off link has just been used or replaced; it works once") from exc
        details: dict[str, object] = {"role": record.role.value, "name": record.name, "email": record.email}
        if principal:
            details["principal"] = principal
        if decision == Choice.APPROVE:
            self._audit.append(
                package.package_id,
                "signoff_approved",
                record.email,
                {**details, "tier": tier},
                event_id=f"signoff_decided:{record.role.value}:{record.manifest_sha256}",
            )
            status = self._after_approval(package.package_id)
        else:
            self._audit.append(
                package.package_id,
                "signoff_refused",
                record.email,
                {**details, "comment": saved.comment},
                event_id=f"signoff_decided:{record.role.value}:{record.manifest_sha256}",
            )
            status = self._refuse(package, saved)
        logger.info("package %s: the %s %s", package.package_id, record.role, saved.status)
        return Decided(package.package_id, record.role.value, saved.status.value, saved.tier, status.value)

    def _open(self, token: str, principal: str | None) -> tuple[SignoffRecord, PackageRecord]:
        """The sign-off a link belongs to, if it may still be used; the right error otherwise."""
        digest = token_hash(token) if looks_like_token(token) else None
        record = self._registry.find_signoff(digest) if digest else None
        if record is None or digest is None:
            raise NotFound("this sign-off link is not known; use the link from your most recent email")
        if not same_hash(record.token_hash, digest):
            raise Gone("this sign-off link was replaced by a newer one; use the link from your most recent email")
        if record.status != SignoffStatus.PENDING:
            raise Gone(f"you have already {record.status} this package; each link works once")
        if record.token_expires_at <= self._clock.now():
            raise Gone("this sign-off link has expired; ask the system manager to send a new one")
        package = self._registry.get_package(record.package_id)
        if (
            package is None
            or package.status != PackageStatus.AWAITING_SIGNOFF
            or package.manifest_sha256 != record.manifest_sha256
        ):
            state = package.status.value if package else "gone"
            raise Gone(f"package {record.package_id} no longer awaits sign-off (it is {state})")
        self._check_principal(record, principal)
        return record, package

    def _check_principal(self, record: SignoffRecord, principal: str | None) -> None:
        if not self._config.signoff_require_principal:
            return
        if not principal:
            raise Unauthorized("sign in with your organisation account to sign off")
        if principal.strip().lower() != record.email.strip().lower():
            raise Forbidden(f"this link is for {record.name} ({record.role.value}); you are signed in as someone else")

    @staticmethod
    def _checked(choice: str, tier: int | None, comment: str | None) -> Choice:
        try:
            decision = Choice(choice)
        except ValueError:
            raise Unprocessable("decision must be 'approve' (with a tier) or 'refuse' (with a comment)") from None
        if decision == Choice.APPROVE and (tier is None or isinstance(tier, bool) or not 0 <= tier <= 4):
            raise Unprocessable("to approve, choose the tier you classify these outputs at (0 to 4)")
        if decision == Choice.REFUSE:
            if not comment or not comment.strip():
                raise Unprocessable("to refuse, say why in a comment: the system manager and the team will read it")
            if len(comment) > MAX_COMMENT:
                raise Unprocessable(f"the comment is longer than {MAX_COMMENT:,} characters")
        return decision

    # -- what a decision leads to ----------------------------------------------------------

    def _refuse(self, package: PackageRecord, refusal: SignoffRecord) -> PackageStatus:
        now = self._clock.now()
        self._email.send(notifications.manager_signoff_refused(package, refusal, self._config.system_manager_email))
        try:
            refused = self._registry.update_package(package.transition(PackageStatus.REFUSED, updated_at=now))
        except ConcurrencyConflict:
            fresh = self._registry.get_package(package.package_id)
            if fresh is None or fresh.status != PackageStatus.AWAITING_SIGNOFF:
                return fresh.status if fresh else package.status  # ended by someone else meanwhile
            refused = self._registry.update_package(fresh.transition(PackageStatus.REFUSED, updated_at=now))
        self._audit.append(
            package.package_id,
            "refused",
            refusal.email,
            {"role": refusal.role.value, "comment": refusal.comment},
            event_id=f"refused:{package.manifest_sha256}",
        )
        return refused.status

    def _after_approval(self, package_id: str) -> PackageStatus:
        package = self._registry.get_package(package_id)
        assert package is not None
        signoffs = [s for s in self._registry.list_signoffs(package_id) if s.manifest_sha256 == package.manifest_sha256]
        decisions = [Signed(s.role, s.status, s.tier, s.decided_at) for s in signoffs]
        result = consensus(decisions)
        manifest = load_manifest(self._records, self._config.records_container, package_id)
        if not result.complete or len(decisions) != len(manifest.classification.decisions):
            return package.status
        if package.status != PackageStatus.AWAITING_SIGNOFF:
            return package.status  # another approver's request completed it
        signed = signed_manifest(manifest, decisions)
        problems = policy_problems(signed, self._config.policy)
        if problems:
            reasons = [f"signed off at tier {result.tier}: {p}" for p in problems]
            try:
                rejected = self._reject(
                    package,
                    reasons,
                )
            except ConcurrencyConflict:
                return PackageStatus.REJECTED
            return rejected.status
        save_manifest(self._records, self._config.records_container, signed)
        now = self._clock.now()
        try:
            released = self._registry.update_package(
                package.transition(PackageStatus.PROCESSING, tier=result.tier, signoff_completed_at=now, updated_at=now)
            )
        except ConcurrencyConflict:
            logger.info("package %s: sign-off completed by another request", package_id)
            return PackageStatus.PROCESSING
        # Queue first: the person's decision is recorded and their link spent, so nothing after this
        # may stop the release (a lost message is queued again by the sweep, see stuck_after).
        self._queue.send(package_id, package.manifest_sha256)
        self._audit.append(
            package_id,
            "signoff_completed",
            ACTOR,
            {"mode": "required", "tier": result.tier, "manifest_sha256": package.manifest_sha256},
            event_id=f"signoff_completed:{package.manifest_sha256}",
        )
        try:
            self._email.send(
                notifications.manager_signoff_completed(signed, signoffs, self._config.system_manager_email)
            )
        except TransientError as exc:  # the grant email follows; the audit trail has the completion
            logger.warning("package %s: the sign-off notice to the manager failed: %s", package_id, exc.message)
        return released.status

    # -- the system manager ------------------------------------------------------------------

    def resend(self, package_id: str, actor: str) -> dict[str, Any]:
        """New links for everyone who has not decided; their old links die at once."""
        package = self._registry.get_package(package_id)
        if package is None:
            raise NotFound(f"there is no package {package_id}")
        if package.status != PackageStatus.AWAITING_SIGNOFF:
            raise Conflict(f"{package_id} is {package.status}; sign-off requests are resent only while it awaits them")
        manifest = load_manifest(self._records, self._config.records_container, package_id)
        now = self._clock.now()
        sent = request_signoffs(
            manifest=manifest,
            manifest_sha256=package.manifest_sha256,
            now=now,
            resend=True,
            registry=self._registry,
            audit=self._audit,
            email=self._email,
            config=self._config,
            actor=actor,
        )
        self._registry.update_package(
            package.model_copy(update={"signoff_deadline": now + self._config.signoff_ttl, "updated_at": now})
        )
        return {
            "package_id": package_id,
            "resent_to": [{"role": s.role.value, "name": s.name, "email": s.email} for s in sent],
            "links_expire_at": (now + self._config.signoff_ttl).isoformat(),
        }
