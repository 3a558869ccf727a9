"""In-memory fakes of the ports, honouring ETags like the real adapters, for the unit tier.

Each fake can be told to fail at its Nth call (``fail_at``) with a transient error, injected through
the constructor; nothing patches private attributes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

from shared.domain.audit import AuditAnchor, AuditEntry, make_entry
from shared.domain.manifest import Role
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus, SignoffRecord
from shared.errors import ConcurrencyConflict, NotFound, StorageUnavailable
from shared.ports import AccessPolicy, BlobInfo, DueRow, FileDigest, Link, OutgoingEmail, SftpUser

_R = TypeVar("_R", bound=BaseModel)
_etags = itertools.count(1)


class Faults:
    """Counts calls; raises ``StorageUnavailable`` at the calls listed in ``fail_at`` (1-based)."""

    def __init__(self, fail_at: Iterable[int] = ()) -> None:
        self.calls = 0
        self.fail_at = set(fail_at)

    def tick(self, what: str) -> None:
        self.calls += 1
        if self.calls in self.fail_at:
            raise StorageUnavailable(f"injected fault at call {self.calls} ({what})")


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


class FakeRegistry:
    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rows: dict[tuple[str, str, str], BaseModel] = {}
        self.tokens: dict[str, tuple[str, Role]] = {}

    def _create(self, key: tuple[str, str, str], record: _R) -> _R:
        self.faults.tick(f"create {key}")
        if key in self.rows:
            raise ConcurrencyConflict(f"{key}: already exists")
        saved = record.model_copy(update={"etag": str(next(_etags))})
        self.rows[key] = saved
        return saved

    def _update(self, key: tuple[str, str, str], record: _R) -> _R:
        self.faults.tick(f"update {key}")
        current = self.rows.get(key)
        if current is None or getattr(current, "etag", None) != getattr(record, "etag", None):
            raise ConcurrencyConflict(f"{key}: changed by someone else since it was read")
        saved = record.model_copy(update={"etag": str(next(_etags))})
        self.rows[key] = saved
        return saved

    def _get(self, key: tuple[str, str, str]) -> Any:
        self.faults.tick(f"get {key}")
        return self.rows.get(key)

    def get_package(self, package_id: str) -> PackageRecord | None:
        return self._get(("p", package_id, ""))  # type: ignore[no-any-return]

    def create_package(self, record: PackageRecord) -> PackageRecord:
        return self._create(("p", record.package_id, ""), record)

    def update_package(self, record: PackageRecord) -> PackageRecord:
        return self._update(("p", record.package_id, ""), record)

    def list_packages(self, status: PackageStatus | None = None) -> list[PackageRecord]:
        self.faults.tick("list packages")
        found = [r for k, r in self.rows.items() if k[0] == "p"]
        return [r for r in found if status is None or r.status == status]  # type: ignore[attr-defined]

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        self.faults.tick("get grant")
        return next((r for k, r in self.rows.items() if k[0] == "g" and r.grant_id == grant_id), None)  # type: ignore[attr-defined]  # type: ignore[return-value]

    def create_grant(self, record: GrantRecord) -> GrantRecord:
        return self._create(("g", record.package_id, f"recipient-{record.recipient_index}"), record)

    def update_grant(self, record: GrantRecord) -> GrantRecord:
        return self._update(("g", record.package_id, f"recipient-{record.recipient_index}"), record)

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]:
        self.faults.tick("list grants")
        found = [r for k, r in self.rows.items() if k[0] == "g" and (package_id is None or k[1] == package_id)]
        return [g for g in found if status is None or g.status == status]  # type: ignore[attr-defined,misc]

    def delete_grant(self, record: GrantRecord) -> None:
        self.faults.tick("delete grant")
        self.rows.pop(("g", record.package_id, f"recipient-{record.recipient_index}"), None)

    def create_signoff(self, record: SignoffRecord) -> SignoffRecord:
        self.tokens[record.token_hash] = (record.package_id, record.role)
        return self._create(("s", record.package_id, record.role.value), record)

    def update_signoff(self, record: SignoffRecord) -> SignoffRecord:
        self.tokens[record.token_hash] = (record.package_id, record.role)
        return self._update(("s", record.package_id, record.role.value), record)

    def get_signoff(self, package_id: str, role: Role) -> SignoffRecord | None:
        return self._get(("s", package_id, role.value))  # type: ignore[no-any-return]

    def list_signoffs(self, package_id: str) -> list[SignoffRecord]:
        self.faults.tick("list signoffs")
        order = list(Role)
        found = [r for k, r in self.rows.items() if k[0] == "s" and k[1] == package_id]
        return sorted(found, key=lambda r: order.index(r.role))  # type: ignore[attr-defined,return-value]

    def find_signoff(self, token_hash: str) -> SignoffRecord | None:
        where = self.tokens.get(token_hash)
        return self.get_signoff(*where) if where else None


class FakeAudit:
    """The audit port in memory, with event ids and an anchor like the real one."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.chains: dict[str, list[AuditEntry]] = {}

    def append(
        self, package_id: str, action: str, actor: str, details: dict[str, Any], event_id: str | None = None
    ) -> AuditEntry:
        chain = self.chains.setdefault(package_id, [])
        if event_id is not None:
            done = next((e for e in chain if e.event_id == event_id), None)
            if done is not None:
                return done
        entry = make_entry(
            chain[-1] if chain else None,
            at=self.clock.now(),
            package_id=package_id,
            action=action,
            actor=actor,
            details=details,
            event_id=event_id,
        )
        chain.append(entry)
        return entry

    def read(self, package_id: str) -> list[AuditEntry]:
        return list(self.chains.get(package_id, []))

    def anchor(self, package_id: str) -> AuditAnchor | None:
        chain = self.chains.get(package_id)
        return AuditAnchor(count=len(chain), head_hash=chain[-1].hash) if chain else None

    def actions(self, package_id: str) -> list[str]:
        return [e.action for e in self.read(package_id)]


class FakeOutbox:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, datetime | None]] = {}
        self.lock = threading.Lock()

    def claim(self, notice_id: str, now: datetime, lease: timedelta) -> bool:
        with self.lock:
            row = self.rows.get(notice_id)
            if row is None or (row["sent_at"] is None and row["claimed_at"] + lease <= now):  # type: ignore[operator]
                self.rows[notice_id] = {"claimed_at": now, "sent_at": None}
                return True
            return False

    def mark_sent(self, notice_id: str, now: datetime) -> None:
        with self.lock:
            self.rows[notice_id]["sent_at"] = now

    def release(self, notice_id: str) -> None:
        with self.lock:
            self.rows.pop(notice_id, None)


class FakeEmail:
    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.sent: list[OutgoingEmail] = []

    def send(self, message: OutgoingEmail) -> None:
        self.faults.tick(f"email to {message.to}")
        self.sent.append(message)

    def to(self, address: str) -> list[OutgoingEmail]:
        return [m for m in self.sent if m.to == address]


@dataclass
class FakeQueue:
    messages: list[tuple[str, str]] = field(default_factory=list)

    def send(self, package_id: str, manifest_sha256: str) -> None:
        self.messages.append((package_id, manifest_sha256))


class _Writer:
    def __init__(self, store: FakeBlobStore, container: str, name: str) -> None:
        self._store, self._container, self._name, self._buffer = store, container, name, io.BytesIO()

    def write(self, data: bytes) -> int:
        return self._buffer.write(data)

    def close(self) -> None:
        self._store.blobs[(self._container, self._name)] = self._buffer.getvalue()

    def discard(self) -> None:
        self._buffer = io.BytesIO()


class FakeBlobStore:
    """Blobs in a dict; enough of the port for intake, sealing by copy and the records container."""

    account_name = "fakeaccount"

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.containers: set[str] = set()
        self.policies: dict[str, dict[str, AccessPolicy]] = {}

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        return [
            BlobInfo(n, len(d)) for (c, n), d in sorted(self.blobs.items()) if c == container and n.startswith(prefix)
        ]

    def read(self, container: str, name: str) -> bytes:
        try:
            return self.blobs[(container, name)]
        except KeyError:
            raise NotFound(f"{container}/{name}: not found") from None

    def chunks(self, container: str, name: str) -> Iterator[bytes]:
        yield self.read(container, name)

    def digest(self, container: str, name: str) -> FileDigest:
        data = self.read(container, name)
        return FileDigest(len(data), hashlib.sha256(data).hexdigest())

    def open_read(self, container: str, name: str) -> BinaryIO:
        return io.BytesIO(self.read(container, name))

    def open_write(self, container: str, name: str) -> _Writer:
        return _Writer(self, container, name)

    def write(self, container: str, name: str, data: bytes | Iterable[bytes]) -> None:
        self.blobs[(container, name)] = data if isinstance(data, bytes) else b"".join(data)

    def ensure_container(self, container: str) -> None:
        self.containers.add(container)

    def container_exists(self, container: str) -> bool:
        return container in self.containers

    def delete_container(self, container: str) -> None:
        self.containers.discard(container)
        for key in [k for k in self.blobs if k[0] == container]:
            del self.blobs[key]

    def delete_blobs(self, container: str, names: Iterable[str]) -> None:
        for name in names:
            self.blobs.pop((container, name), None)

    def copy_into(self, source: Any, source_container: str, name: str, container: str, dest_name: str) -> None:
        self.blobs[(container, dest_name)] = source.read(source_container, name)

    def container_url(self, container: str) -> str:
        return f"https://fake.example/{container}"

    def stored_policies(self, container: str) -> list[AccessPolicy]:
        return list(self.policies.get(container, {}).values())

    def update_policies(self, container: str, add: Sequence[AccessPolicy], remove: Sequence[str]) -> None:
        held = self.policies.setdefault(container, {})
        for policy in add:
            held[policy.policy_id] = policy
        for policy_id in remove:
            held.pop(policy_id, None)


class FakeSftpAccess:
    """SFTP local users and firewall in memory: who exists, with which password or key, and every call."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.account_name = "sftpacct"
        self.host = "sftp.fake.example"
        self.port = 22
        self.users: dict[str, SftpUser] = {}
        self.passwords: dict[str, str] = {}
        self.ranges: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self._faults = faults or Faults()
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def _call(self, what: str, name: str) -> None:
        self._faults.tick(what)
        self.calls.append((what, name))

    def ensure_user(self, user: SftpUser) -> None:
        with self._lock:
            self._call("ensure_user", user.name)
            self.users[user.name] = user

    def new_password(self, name: str) -> str:
        with self._lock:
            self._call("new_password", name)
            if name not in self.users:
                raise NotFound(f"no SFTP user {name}")
            self.passwords[name] = f"pw-{next(self._count)}-{name}"
            return self.passwords[name]

    def delete_user(self, name: str) -> None:
        with self._lock:
            self._call("delete_user", name)
            self.users.pop(name, None)
            self.passwords.pop(name, None)

    def user_names(self) -> list[str]:
        return sorted(self.users)

    def allow_ranges(self, ranges: Sequence[str]) -> None:
        with self._lock:
            self._call("allow_ranges", ",".join(ranges))
            self.ranges = list(ranges)

    def allowed_ranges(self) -> list[str]:
        return list(self.ranges)


class FakeLinks:
    def links(self, container: str, policy_id: str, ip_ranges: list[str]) -> list[Link]:
        return [Link(ip, f"https://fake.example/{container}?si={policy_id}&sig=fake") for ip in ip_ranges]


def _hour(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H")


class FakeDueIndex:
    """A due index in memory, keyed like ``TableDueIndex`` (the due hour, then the key), with ETags.

    ``reads`` counts the reads of what is due; ``faults`` can fail any call.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rows: dict[tuple[str, str], DueRow] = {}
        self.reads = 0

    def put(self, key: str, due_at: datetime) -> None:
        self.faults.tick(f"index {key}")
        self.rows[(_hour(due_at), key)] = DueRow(key, due_at, str(next(_etags)))

    def put_many(self, rows: Iterable[tuple[str, datetime]]) -> None:
        for key, due_at in rows:
            self.put(key, due_at)

    def remove(self, key: str, due_at: datetime) -> None:
        self.faults.tick(f"unindex {key}")
        self.rows.pop((_hour(due_at), key), None)

    def due(self, now: datetime) -> list[DueRow]:
        self.faults.tick("read the due rows")
        self.reads += 1
        hour = _hour(now)
        return [row for (h, _), row in sorted(self.rows.items()) if h <= hour and row.due_at <= now]

    def move(self, row: DueRow, to: datetime | None) -> None:
        self.faults.tick(f"move {row.key}")
        here = (_hour(row.due_at), row.key)
        current = self.rows.get(here)
        if current is None or current.etag != row.etag:
            return  # gone, or rewritten since it was read
        if to is not None and _hour(to) == here[0]:
            self.rows[here] = DueRow(row.key, to, str(next(_etags)))
            return
        if to is not None:
            self.put(row.key, to)
        del self.rows[here]

    def times(self) -> dict[str, list[datetime]]:
        """{key: [due times]} of every row."""
        found: dict[str, list[datetime]] = {}
        for (_, key), row in sorted(self.rows.items()):
            found.setdefault(key, []).append(row.due_at)
        return found
