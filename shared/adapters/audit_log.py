"""Audit trail on append blobs: one ``<package_id>.jsonl`` per package, one entry a line.

Append blobs cannot be rewritten in place by an append; in Azure the container also carries
a time-based immutability policy (infra/). Each append is conditional on the blob's length
when the previous entry was read, so two writers cannot both chain from the same entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.domain.audit import AuditEntry, make_entry
from shared.errors import ConcurrencyConflict, StorageUnavailable


class BlobAuditTrail:
    """Hash-chained, append-only events per package."""

    def __init__(self, service: BlobServiceClient, container: str, clock: Callable[[], datetime] | None = None) -> None:
        self._container = service.get_container_client(container)
        self._clock = clock or (lambda: datetime.now(UTC))

    def ensure_container(self) -> None:
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"creating the audit container: {type(exc).__name__}") from exc

    def _load(self, package_id: str) -> tuple[list[AuditEntry], int]:
        blob = self._container.get_blob_client(f"{package_id}.jsonl")
        try:
            raw = blob.download_blob().readall()
        except ResourceNotFoundError:
            return [], -1
        except AzureError as exc:
            raise StorageUnavailable(f"reading the audit trail of {package_id}: {type(exc).__name__}") from exc
        entries = [AuditEntry.model_validate_json(line) for line in raw.splitlines() if line.strip()]
        return entries, len(raw)

    def read(self, package_id: str) -> list[AuditEntry]:
        return self._load(package_id)[0]

    def append(self, package_id: str, action: str, actor: str, details: dict[str, Any]) -> AuditEntry:
        blob = self._container.get_blob_client(f"{package_id}.jsonl")
        for _ in range(20):
            entries, length = self._load(package_id)
            if length < 0:
                try:
                    blob.create_append_blob(if_none_match="*")
                except ResourceExistsError:
                    pass
                except AzureError as exc:
                    raise StorageUnavailable(f"starting the audit trail of {package_id}: {type(exc).__name__}") from exc
                length = 0
            entry = make_entry(
                entries[-1] if entries else None,
                at=self._clock(),
                package_id=package_id,
                action=action,
                actor=actor,
                details=details,
            )
            line = (entry.model_dump_json() + "\n").encode("utf-8")
            try:
                blob.append_block(line, appendpos_condition=length)
                return entry
            except HttpResponseError as exc:
                if exc.status_code == 412:  # another writer appended first: chain from its entry
                    continue
                raise StorageUnavailable(f"appending to the audit trail of {package_id}: {type(exc).__name__}") from exc
            except AzureError as exc:
                raise StorageUnavailable(f"appending to the audit trail of {package_id}: {type(exc).__name__}") from exc
        raise ConcurrencyConflict(f"the audit trail of {package_id} kept changing; try again")
