"""The small interfaces the services depend on; ``shared.adapters`` implements each once.

Tests use the real adapters against Azurite and an SMTP sink, or in-memory fakes of these
protocols for pure service tests. No SDK type crosses these interfaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Literal, Protocol

from shared.domain.audit import AuditAnchor, AuditEntry
from shared.domain.manifest import Role
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus, SignoffRecord


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str


@dataclass(frozen=True)
class AccessPolicy:
    """A stored access policy: read + list between ``start`` and ``expiry``."""

    policy_id: str
    start: datetime
    expiry: datetime


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str
    idempotency_key: str | None = None  # a UUID: the same key never sends twice where the backend supports it


@dataclass(frozen=True)
class Link:
    """A SAS URL that works from one declared address or block. Secret: email it, never log it."""

    ip_range: str
    url: str

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug logs
        return f"Link(ip_range={self.ip_range!r}, url=<redacted>)"


class BlobWriter(Protocol):
    """A blob being written in blocks: ``close()`` commits it whole, ``discard()`` drops it and
    commits nothing, so a failure part-way never leaves a partial blob behind."""

    def write(self, data: bytes) -> int: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...


class BlobStore(Protocol):
    """Blob containers of one storage account."""

    account_name: str

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]: ...
    def chunks(self, container: str, name: str) -> Iterator[bytes]: ...
    def digest(self, container: str, name: str) -> FileDigest: ...
    def read(self, container: str, name: str) -> bytes: ...
    def open_read(self, container: str, name: str) -> BinaryIO: ...
    def open_write(self, container: str, name: str) -> BlobWriter: ...
    def write(self, container: str, name: str, data: bytes | Iterable[bytes]) -> None: ...
    def ensure_container(self, container: str) -> None: ...
    def container_exists(self, container: str) -> bool: ...
    def delete_container(self, container: str) -> None: ...
    def delete_blobs(self, container: str, names: Iterable[str]) -> None: ...
    def copy_into(
        self, source: BlobStore, source_container: str, name: str, container: str, dest_name: str
    ) -> None: ...
    def container_url(self, container: str) -> str: ...
    def stored_policies(self, container: str) -> list[AccessPolicy]: ...
    def update_policies(self, container: str, add: Sequence[AccessPolicy], remove: Sequence[str]) -> None: ...


class Registry(Protocol):
    """Packages and grants, with ETag concurrency on every write."""

    def get_package(self, package_id: str) -> PackageRecord | None: ...
    def create_package(self, record: PackageRecord) -> PackageRecord: ...
    def update_package(self, record: PackageRecord) -> PackageRecord: ...
    def list_packages(self, status: PackageStatus | None = None) -> list[PackageRecord]: ...
    def get_grant(self, grant_id: str) -> GrantRecord | None: ...
    def create_grant(self, record: GrantRecord) -> GrantRecord: ...
    def update_grant(self, record: GrantRecord) -> GrantRecord: ...
    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]: ...
    def delete_grant(self, record: GrantRecord) -> None:
        """Remove an ended grant's row (its package closed and the record is archived); absent is fine."""
        ...

    def create_signoff(self, record: SignoffRecord) -> SignoffRecord: ...
    def update_signoff(self, record: SignoffRecord) -> SignoffRecord: ...
    def get_signoff(self, package_id: str, role: Role) -> SignoffRecord | None: ...
    def list_signoffs(self, package_id: str) -> list[SignoffRecord]: ...
    def find_signoff(self, token_hash: str) -> SignoffRecord | None:
        """The sign-off a token was issued for (its current token or an older, resent one)."""
        ...


class AuditTrail(Protocol):
    """Append-only, hash-chained events of each package, anchored in the registry.

    ``event_id`` names an event deterministically: appending it again returns the recorded entry.
    """

    def append(
        self, package_id: str, action: str, actor: str, details: dict[str, Any], event_id: str | None = None
    ) -> AuditEntry: ...
    def read(self, package_id: str) -> list[AuditEntry]: ...
    def anchor(self, package_id: str) -> AuditAnchor | None: ...


class SigningKeys(Protocol):
    """The delivery account's key that signs SAS tokens (Key Vault in Azure)."""

    def account_key(self) -> str: ...


class LinkMinter(Protocol):
    def links(self, container: str, policy_id: str, ip_ranges: list[str]) -> list[Link]: ...


@dataclass(frozen=True)
class KeyDeletion:
    """What deleting a package key did.

    ``purged``: no copy is left anywhere. ``soft_deleted``: the store keeps a recoverable copy until
    ``recoverable_until`` (Key Vault with purge protection), when it purges it itself. ``absent``:
    there was no key, live or deleted, to delete.
    """

    state: Literal["purged", "soft_deleted", "absent"]
    recoverable_until: datetime | None = None


class PackageKeys(Protocol):
    """Per-package decryption keys (Key Vault in Azure). Secret: never logged or stored elsewhere.

    ``delete`` says what it did (``KeyDeletion``); it raises ``SecretsUnavailable`` when it could not
    tell, so that the caller tries again later.
    """

    def put(self, package_id: str, secret: str) -> None: ...
    def get(self, package_id: str) -> str: ...
    def delete(self, package_id: str) -> KeyDeletion: ...


class Crypto(Protocol):
    def new_identity(self) -> tuple[str, str]: ...
    def public_of(self, identity: str) -> str: ...
    def encrypt(self, source: BinaryIO, target: BinaryIO, recipient: str) -> None: ...
    def decrypt(self, source: BinaryIO, target: BinaryIO, identity: str) -> None: ...


class EmailSender(Protocol):
    def send(self, message: OutgoingEmail) -> None: ...


class Outbox(Protocol):
    """Which emails were sent, by their deterministic id: so that each goes at most once.

    ``claim`` records the intent (insert-if-absent, or take over a claim older than ``lease``);
    only its winner sends, then ``mark_sent``; a failed send ``release``s the claim for a retry.
    """

    def claim(self, notice_id: str, now: datetime, lease: timedelta) -> bool: ...
    def mark_sent(self, notice_id: str, now: datetime) -> None: ...
    def release(self, notice_id: str) -> None: ...


class ReleaseQueue(Protocol):
    """Work handed from a request (or a trigger) to the queue-triggered release function."""

    def send(self, package_id: str, manifest_sha256: str) -> None: ...


@dataclass(frozen=True)
class Poisoned:
    """A message the host gave up on: a release, or a staged manifest's blob trigger."""

    queue: str
    message_id: str
    what: str  # for a person: the release of a package, or a staged blob
    package_id: str | None = None


class PoisonWatch(Protocol):
    """The poison queues the Functions host fills after its retries (read, never emptied here)."""

    def poisoned(self) -> list[Poisoned]: ...


@dataclass(frozen=True)
class SftpUser:
    """A local user of the SFTP account: read + list on one container, which is also its home.

    ``name`` is 3 to 64 lowercase letters and digits (Azure's rule); a client logs in as
    ``<account>.<name>``. With ``ssh_public_key`` (one OpenSSH public key line) the user logs in
    with that key; without it, with a password only the store generates (``new_password``).
    """

    name: str
    container: str
    ssh_public_key: str | None = None


class SftpAccess(Protocol):
    """Local users and firewall of the SFTP-enabled account: Azure's management plane in Azure,
    a table read by the local SFTP endpoint here.

    ``ensure_user`` creates or updates (the same call again changes nothing). ``new_password``
    makes a new password and returns it (the previous one stops working); it is a secret: email it,
    never store or log it. ``delete_user`` ends every login of that user at once (an absent user is
    fine). ``allow_ranges`` makes the account's firewall admit exactly these IPv4 addresses and
    CIDR blocks. Transport failures raise ``StorageUnavailable``.
    """

    account_name: str
    host: str
    port: int

    def ensure_user(self, user: SftpUser) -> None: ...
    def new_password(self, name: str) -> str: ...
    def delete_user(self, name: str) -> None: ...
    def user_names(self) -> list[str]: ...
    def allow_ranges(self, ranges: Sequence[str]) -> None: ...
    def allowed_ranges(self) -> list[str]: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class DueRow:
    """One row of a ``DueIndex``: look at ``key`` (a grant or a package) at ``due_at``.

    ``etag`` is the row as it was read, so that moving it loses to a writer who changed it meanwhile.
    """

    key: str
    due_at: datetime
    etag: str | None = None


class DueIndex(Protocol):
    """What the sweep must look at, and when: one row per thing and due time, stored by the hour it
    falls due, so that reading what is due by now never reads what is due later.

    ``put`` writes the row of ``key`` in ``due_at``'s hour (replacing one there); ``put_many`` many at
    once; ``remove`` deletes it (an absent row is fine). ``due`` lists the rows due by ``now``, oldest
    hours first. ``move`` puts a row read by ``due`` at ``to``, or deletes it for ``None``, only if
    nobody rewrote it since it was read: a newer row is left as its writer left it.
    """

    def put(self, key: str, due_at: datetime) -> None: ...
    def put_many(self, rows: Iterable[tuple[str, datetime]]) -> None: ...
    def remove(self, key: str, due_at: datetime) -> None: ...
    def due(self, now: datetime) -> list[DueRow]: ...
    def move(self, row: DueRow, to: datetime | None) -> None: ...
