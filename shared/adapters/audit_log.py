"""Audit trail on append blobs, one ``<package_id>.jsonl`` per package and one entry a line, anchored
in a table row per package (``<prefix>auditanchors``: the entry count and the head hash).

Each append is written ahead: the anchor row moves first, conditional on its ETag, and carries the
new entry as ``pending``; then the entry is appended to the blob, conditional on the blob's length.
Two writers serialise on the anchor; a writer that finds a pending entry missing from the blob (its
writer died) appends it first, so no event is lost and the chain never forks. An entry with an
``event_id`` already in the trail is not appended again, so a retry adds only what is missing.
In Azure the audit container also carries a time-based immutability policy (infra/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from pydantic import ValidationError

from shared.domain import names
from shared.domain.audit import AuditAnchor, AuditEntry, make_entry
from shared.errors import AuditCorrupt, ConcurrencyConflict, StorageUnavailable

_ROW = "anchor"
_INLINE_PENDING = 30_000
_BLOB_MARK = "blob:"
_PENDING_PREFIX = "pending/"


def _count(row: dict[str, Any]) -> int:
    value = row["count"]  # written as Edm.Int64, read back as an EntityProperty
    return int(getattr(value, "value", value))


class BlobAuditTrail:
    """Hash-chained, append-only events per package, anchored in the registry."""

    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        anchors: TableClient,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._container = service.get_container_client(container)
        self._anchors = anchors
        self._clock = clock or (lambda: datetime.now(UTC))

    def ensure_container(self) -> None:
        for create in (self._container.create_container, self._anchors.create_table):
            try:
                create()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise StorageUnavailable(f"creating the audit trail's storage: {type(exc).__name__}") from exc

    # -- reading ------------------------------------------------------------------------

    def _load(self, package_id: str) -> tuple[list[AuditEntry], int]:
        blob = self._container.get_blob_client(names.audit_blob(package_id))
        try:
            raw = blob.download_blob().readall()
        except ResourceNotFoundError:
            return [], -1
        except AzureError as exc:
            raise StorageUnavailable(f"reading the audit trail of {package_id}: {type(exc).__name__}") from exc
        entries = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(AuditEntry.model_validate_json(line))
            except ValidationError as exc:
                raise AuditCorrupt(
                    f"the audit trail of {package_id} is damaged: line {number} is not a valid entry "
                    f"({exc.errors()[0]['msg']})"
                ) from None
        return entries, len(raw)

    def _anchor_row(self, package_id: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            entity = self._anchors.get_entity(package_id, _ROW)
        except ResourceNotFoundError:
            return None, None
        except AzureError as exc:
            raise StorageUnavailable(f"reading the audit anchor of {package_id}: {type(exc).__name__}") from exc
        return dict(entity), entity.metadata.get("etag")

    def anchor(self, package_id: str) -> AuditAnchor | None:
        row, _ = self._anchor_row(package_id)
        if row is None:
            return None
        return AuditAnchor(count=_count(row), head_hash=str(row["head_hash"]))

    def read(self, package_id: str) -> list[AuditEntry]:
        row, _ = self._anchor_row(package_id)
        entries, length = self._load(package_id)
        return self._complete_pending(package_id, row, entries, length)[0]

    # -- writing ------------------------------------------------------------------------

    def _complete_pending(
        self, package_id: str, row: dict[str, Any] | None, entries: list[AuditEntry], length: int
    ) -> tuple[list[AuditEntry], int]:
        """Append the anchor's pending entry if its writer stopped before the blob had it."""
        if row is None or not row.get("pending") or len(entries) != _count(row) - 1:
            return entries, length
        pending = self._pending_entry(package_id, str(row["pending"]))
        if pending is None:
            return entries, length
        if pending.prev_hash != (entries[-1].hash if entries else pending.prev_hash) or pending.seq != len(entries):
            return entries, length  # not the continuation of this blob: verification will say so
        try:
            written = self._append_blob(package_id, pending, length)
        except ConcurrencyConflict:
            entries, written = self._load(package_id)  # someone else moved the blob on: take what is there
            return entries, written
        return [*entries, pending], written

    def _append_blob(self, package_id: str, entry: AuditEntry, length: int) -> int:
        blob = self._container.get_blob_client(names.audit_blob(package_id))
        line = (entry.model_dump_json() + "\n").encode("utf-8")
        try:
            if length < 0:
                try:
                    blob.create_append_blob(if_none_match="*")
                except ResourceExistsError:
                    pass
                length = 0
            blob.append_block(line, appendpos_condition=length)
        except HttpResponseError as exc:
            if exc.status_code == 412:  # the blob moved: in only if someone else appended this very entry
                entries, now = self._load(package_id)
                if len(entries) > entry.seq and entries[entry.seq].hash == entry.hash:
                    return now
                raise ConcurrencyConflict(f"the audit trail of {package_id} moved during an append") from exc
            raise StorageUnavailable(f"appending to the audit trail of {package_id}: {type(exc).__name__}") from exc
        except AzureError as exc:
            raise StorageUnavailable(f"appending to the audit trail of {package_id}: {type(exc).__name__}") from exc
        return length + len(line)

    def _move_anchor(self, package_id: str, entry: AuditEntry, etag: str | None) -> str | None:
        """The anchor's new ETag, or None when another writer moved it first."""
        entity = {
            "PartitionKey": package_id,
            "RowKey": _ROW,
            "count": EntityProperty(entry.seq + 1, EdmType.INT64),
            "head_hash": entry.hash,
            "pending": self._stash(package_id, entry),
        }
        try:
            if etag is None:
                meta = self._anchors.create_entity(entity)
            else:
                meta = self._anchors.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except ResourceExistsError:
            return None
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                return None
            raise StorageUnavailable(f"moving the audit anchor of {package_id}: {type(exc).__name__}") from exc
        except AzureError as exc:
            raise StorageUnavailable(f"moving the audit anchor of {package_id}: {type(exc).__name__}") from exc
        return str(meta.get("etag"))

    def _stash(self, package_id: str, entry: AuditEntry) -> str:
        """The pending entry as the anchor holds it: inline when it fits a table property (32K
        characters), else in a side blob named by the entry's hash (a rejection can carry 10,000 reasons)."""
        text = entry.model_dump_json()
        if len(text) <= _INLINE_PENDING:
            return text
        name = f"{_PENDING_PREFIX}{package_id}/{entry.hash}.json"
        try:
            self._container.get_blob_client(name).upload_blob(text.encode("utf-8"), overwrite=True)
        except AzureError as exc:
            raise StorageUnavailable(f"writing the audit trail of {package_id}: {type(exc).__name__}") from exc
        return f"{_BLOB_MARK}{name}"

    def _pending_entry(self, package_id: str, held: str) -> AuditEntry | None:
        if not held.startswith(_BLOB_MARK):
            return AuditEntry.model_validate_json(held)
        try:
            raw = self._container.get_blob_client(held[len(_BLOB_MARK) :]).download_blob().readall()
        except ResourceNotFoundError:
            return None  # the verification will report the gap
        except AzureError as exc:
            raise StorageUnavailable(f"reading the audit trail of {package_id}: {type(exc).__name__}") from exc
        return AuditEntry.model_validate_json(raw)

    def _clear_pending(self, package_id: str, etag: str) -> None:
        """The entry is in the blob: from now on a missing last entry is a dropped tail, not a crash."""
        try:
            self._anchors.update_entity(
                {"PartitionKey": package_id, "RowKey": _ROW, "pending": ""},
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except AzureError:
            pass  # a later writer already moved the anchor (and replaced pending) or the next one clears it

    def append(
        self, package_id: str, action: str, actor: str, details: dict[str, Any], event_id: str | None = None
    ) -> AuditEntry:
        seen: tuple[str | None, int] | None = None
        for _ in range(30):
            row, etag = self._anchor_row(package_id)
            entries, length = self._load(package_id)
            entries, length = self._complete_pending(package_id, row, entries, length)
            if event_id is not None:
                done = next((e for e in entries if e.event_id == event_id), None)
                if done is not None:
                    return done  # a retry: already recorded
            if row is not None and _count(row) != len(entries):
                # Read between another writer's anchor move and its append: look again. Only a
                # mismatch that stays put is damage.
                if (etag, length) != seen:
                    seen = (etag, length)
                    time.sleep(0.05)
                    continue
                raise AuditCorrupt(
                    f"the audit trail of {package_id} has {len(entries)} entries but its anchor says "
                    f"{_count(row)}; it was changed outside the service. Nothing more is recorded until "
                    "someone who may investigates (egress audit --verify)"
                )
            entry = make_entry(
                entries[-1] if entries else None,
                at=self._clock(),
                package_id=package_id,
                action=action,
                actor=actor,
                details=details,
                event_id=event_id,
            )
            moved = self._move_anchor(package_id, entry, etag)
            if moved is None:
                continue  # another writer moved the anchor first: chain from its entry
            try:
                self._append_blob(package_id, entry, length)
            except ConcurrencyConflict:
                return entry  # anchored and pending: the next writer or reader appends it (write-ahead)
            self._clear_pending(package_id, moved)
            return entry
        raise ConcurrencyConflict(f"the audit trail of {package_id} kept changing; try again")
