"""The email outbox in Table Storage: one row per notice id (``<prefix>outbox``), so that each email
goes at most once however many workers try, and a retry after a failed send sends it then.

A claim is an insert-if-absent; a claim older than its lease (its worker died before sending) can
be taken over, conditional on the row's ETag. Only a crash between the send and ``mark_sent`` can
repeat an email, after the lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.errors import StorageUnavailable

_ROW = "notice"


class TableOutbox:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def ensure_table(self) -> None:
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"creating the outbox table: {type(exc).__name__}") from exc

    def claim(self, notice_id: str, now: datetime, lease: timedelta) -> bool:
        try:
            self._table.create_entity({"PartitionKey": notice_id, "RowKey": _ROW, "claimed_at": now})
            return True
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"claiming notice {notice_id}: {type(exc).__name__}") from exc
        try:
            row = self._table.get_entity(notice_id, _ROW)
        except ResourceNotFoundError:
            return False  # released meanwhile: the next try claims it
        except AzureError as exc:
            raise StorageUnavailable(f"reading notice {notice_id}: {type(exc).__name__}") from exc
        claimed = row.get("claimed_at")
        if row.get("sent_at") is not None or (claimed is not None and claimed + lease > now):
            return False  # sent, or being sent by another worker
        try:
            self._table.update_entity(
                {"PartitionKey": notice_id, "RowKey": _ROW, "claimed_at": now},
                mode=UpdateMode.REPLACE,
                etag=row.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            return False
        except AzureError as exc:
            raise StorageUnavailable(f"taking over notice {notice_id}: {type(exc).__name__}") from exc
        return True

    def mark_sent(self, notice_id: str, now: datetime) -> None:
        try:
            self._table.upsert_entity(
                {"PartitionKey": notice_id, "RowKey": _ROW, "sent_at": now}, mode=UpdateMode.MERGE
            )
        except AzureError as exc:
            raise StorageUnavailable(f"recording notice {notice_id} as sent: {type(exc).__name__}") from exc

    def release(self, notice_id: str) -> None:
        try:
            self._table.delete_entity(notice_id, _ROW)
        except AzureError:
            pass  # the lease lets a later try take it over anyway
