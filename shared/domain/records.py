"""Registry records (packages and grants) and their state machines.

A status only changes along an edge of the transition tables below; ``transition`` is the
one way to change it, so an illegal move is a bug that fails loudly rather than a silent
overwrite.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.manifest import Role
from shared.domain.signoff import SignoffStatus
from shared.errors import IllegalTransition


class PackageStatus(StrEnum):
    PROCESSING = "processing"  # claimed by a trigger and verifying; or signed off and queued for sealing
    AWAITING_SIGNOFF = "awaiting_signoff"  # verified; each named classifier has been asked to sign off
    REFUSED = "refused"  # a classifier refused: nothing leaves; staged files kept; a new package id is needed
    REJECTED = "rejected"  # kept in staging with reasons; a corrected manifest may follow
    SEALED = "sealed"  # copied into egress-<id> and verified; grants being issued
    GRANTED = "granted"  # every recipient has been sent their link (or key instructions)
    CLOSED = "closed"  # retention passed; egressed data deleted


class GrantStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


PACKAGE_TRANSITIONS: dict[PackageStatus, frozenset[PackageStatus]] = {
    PackageStatus.PROCESSING: frozenset({PackageStatus.AWAITING_SIGNOFF, PackageStatus.REJECTED, PackageStatus.SEALED}),
    # processing again once every person approved (sealing is queued); rejected when the signed
    # tier breaks policy or time runs out
    PackageStatus.AWAITING_SIGNOFF: frozenset(
        {PackageStatus.PROCESSING, PackageStatus.REFUSED, PackageStatus.REJECTED}
    ),
    PackageStatus.REFUSED: frozenset(),
    PackageStatus.REJECTED: frozenset({PackageStatus.PROCESSING}),
    PackageStatus.SEALED: frozenset({PackageStatus.GRANTED}),
    PackageStatus.GRANTED: frozenset({PackageStatus.CLOSED}),
    PackageStatus.CLOSED: frozenset(),
}

GRANT_TRANSITIONS: dict[GrantStatus, frozenset[GrantStatus]] = {
    GrantStatus.ACTIVE: frozenset({GrantStatus.REVOKED, GrantStatus.EXPIRED}),
    GrantStatus.REVOKED: frozenset(),
    GrantStatus.EXPIRED: frozenset(),
}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    etag: str | None = Field(default=None, exclude=True)


class PackageRecord(_Record):
    """What the registry knows about one work package (never a token or key)."""

    package_id: str
    status: PackageStatus
    manifest_sha256: str
    title: str = ""
    tier: int | None = None
    method: str | None = None
    file_count: int = 0
    total_bytes: int = 0
    recipient_count: int = 0
    expires_in_hours: int | None = None
    rejection_reasons: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    sealed_at: datetime | None = None
    # The worker sealing it, one at a time, any method (the name is older than link packages being
    # claimed too; kept so that stored records still read).
    encryption_claimed_at: datetime | None = None
    granted_at: datetime | None = None
    closed_at: datetime | None = None
    expires_at: datetime | None = None  # sftp/physical: the key can be released until then
    recipients_notified_at: datetime | None = None
    key_released_at: datetime | None = None
    key_released_by: str | None = None
    key_destroyed_at: datetime | None = None
    key_recoverable_until: datetime | None = None  # key soft-deleted, not purged: Key Vault purges it then
    signoff_mode: str | None = None  # "required" or "manifest": how this package was approved
    signoff_requested_at: datetime | None = None
    signoff_deadline: datetime | None = None  # the timer rejects the package if sign-off is still incomplete
    signoff_completed_at: datetime | None = None  # every named person approved (or the manifest was trusted)

    def transition(self, to: PackageStatus, **changes: object) -> PackageRecord:
        if to not in PACKAGE_TRANSITIONS[self.status]:
            raise IllegalTransition(f"package {self.package_id}: {self.status} -> {to} is not allowed")
        return self.model_copy(update={"status": to, **changes})


class SignoffRecord(_Record):
    """One named classifier's sign-off of one package. Holds the hash of their current token, never the token."""

    package_id: str
    manifest_sha256: str  # the manifest this person is asked about
    role: Role
    name: str
    email: str
    status: SignoffStatus = SignoffStatus.PENDING
    token_hash: str
    token_expires_at: datetime
    requested_at: datetime
    emailed_at: datetime | None = None
    tier: int | None = None
    comment: str | None = None
    decided_at: datetime | None = None
    principal: str | None = None

    def decide(self, **changes: object) -> SignoffRecord:
        if self.status != SignoffStatus.PENDING:
            raise IllegalTransition(f"sign-off of {self.package_id} by the {self.role}: already {self.status}")
        return self.model_copy(update=changes)

    def public_view(self, show_tier: bool) -> dict[str, object]:
        """As the system manager sees it; the tier only once every person has decided (blinded review)."""
        return {
            "role": self.role.value,
            "name": self.name,
            "email": self.email,
            "status": self.status.value,
            "requested_at": self.requested_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "tier": self.tier if show_tier else None,
            "comment": self.comment if show_tier else None,
        }


class GrantRecord(_Record):
    """One recipient's access to one sealed package: a stored access policy and its links, or (sftp)
    an SFTP local user. The record names the user, never its password."""

    grant_id: str
    package_id: str
    recipient_index: int
    recipient_name: str
    recipient_email: str
    policy_id: str  # "" for an sftp grant
    ip_ranges: list[str]
    status: GrantStatus
    created_at: datetime
    expires_at: datetime
    notified_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    ended_at: datetime | None = None
    sftp_user: str | None = None  # the local user (sftp grants)
    sftp_login: str | None = None  # what the recipient types: <account>.<user>
    sftp_key_login: bool = False  # the recipient gave an SSH public key: no password
    # Whoever sets this (ETag-conditional) makes the password and emails it; generation numbers the
    # passwords, so that a new one after a failed or abandoned try is a new email.
    password_claimed_at: datetime | None = None
    password_generation: int = 0
    sftp_user_deleted_at: datetime | None = None

    def transition(self, to: GrantStatus, **changes: object) -> GrantRecord:
        if to not in GRANT_TRANSITIONS[self.status]:
            raise IllegalTransition(f"grant {self.grant_id}: {self.status} -> {to} is not allowed")
        return self.model_copy(update={"status": to, **changes})

    @property
    def method(self) -> str:
        return "sftp" if self.sftp_user else "storage_explorer"

    @property
    def sftp_login_open(self) -> bool:
        """An sftp grant whose local user may exist: active, and its ending not begun."""
        return bool(self.sftp_user) and self.status == GrantStatus.ACTIVE and self.sftp_user_deleted_at is None

    def sftp_view(self) -> dict[str, object] | None:
        """The SFTP login and whether it still works (``deleted`` once the grant ended)."""
        if not self.sftp_user:
            return None
        return {
            "username": self.sftp_login or self.sftp_user,
            "login": "ssh key" if self.sftp_key_login else "password",
            "state": "active" if self.sftp_login_open else "deleted",
            "deleted_at": self.sftp_user_deleted_at.isoformat() if self.sftp_user_deleted_at else None,
        }

    def public_view(self) -> dict[str, object]:
        """The grant as the HTTP API shows it (there is no token or password in a record to leak)."""
        return {
            "grant_id": self.grant_id,
            "method": self.method,
            "package_id": self.package_id,
            "recipient": {"name": self.recipient_name, "email": self.recipient_email},
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "ip_ranges": list(self.ip_ranges),
            "notified_at": self.notified_at.isoformat() if self.notified_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "sftp": self.sftp_view(),
        }
