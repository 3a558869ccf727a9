"""The sweep's due indexes in Azure Table Storage: ``<prefix>grantsdue`` and ``<prefix>packagesdue``.

PartitionKey = the UTC hour a row falls due, ``yyyymmddHH``; RowKey = what it names
(``<package_id>:<recipient_index>`` for a grant, the package id for a package); ``due_at`` = the
exact moment. The hours sort as text, so the rows due by now are one key-range read,
``PartitionKey le '<this hour>' and due_at le <now>``, that never touches a row due later. The
sweep deletes or moves every row it has dealt with, so that range holds only what is due (and
what failed last time, to try again); no watermark or look-back window is needed.

A row is only a hint: the sweep decides from the grant or package record itself, and deletes a
row that no longer names any work. The rows are written by ``shared.adapters.indexed_registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ServiceRequestError
from azure.data.tables import TableClient, UpdateMode

from shared.errors import UNREACHABLE, StorageUnavailable
from shared.ports import DueRow

_HOUR = "%Y%m%d%H"
_BATCH = 100  # the most operations one entity group transaction may hold
_T = TypeVar("_T")


def due_hour(moment: datetime) -> str:
    """The partition of a row due at ``moment``: its UTC hour (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_HOUR)


def _call(what: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except ServiceRequestError as exc:
        raise StorageUnavailable(f"{what}: {UNREACHABLE}") from exc
    except AzureError as exc:
        raise StorageUnavailable(f"{what}: the due index did not answer ({type(exc).__name__})") from exc


def _entity(key: str, due_at: datetime) -> dict[str, Any]:
    return {"PartitionKey": due_hour(due_at), "RowKey": key, "due_at": due_at}


class TableDueIndex:
    """One due index (a table of its own)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    @property
    def table_name(self) -> str:
        return str(self._table.table_name)

    def ensure_table(self) -> None:
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"creating table {self.table_name}: {type(exc).__name__}") from exc

    def put(self, key: str, due_at: datetime) -> None:
        _call(
            f"indexing {key} in {self.table_name}",
            lambda: self._table.upsert_entity(_entity(key, due_at), mode=UpdateMode.REPLACE),
        )

    def put_many(self, rows: Iterable[tuple[str, datetime]]) -> None:
        """Upserts by partition, up to 100 to a transaction (a key given twice keeps its last time)."""
        by_hour: dict[str, dict[str, datetime]] = {}
        for key, due_at in rows:
            by_hour.setdefault(due_hour(due_at), {})[key] = due_at
        for keys in by_hour.values():
            entities = [_entity(key, due_at) for key, due_at in keys.items()]
            for start in range(0, len(entities), _BATCH):
                batch = [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities[start : start + _BATCH]]
                _call(
                    f"indexing {len(batch)} row(s) in {self.table_name}", partial(self._table.submit_transaction, batch)
                )

    def remove(self, key: str, due_at: datetime) -> None:
        _call(
            f"unindexing {key} from {self.table_name}",
            lambda: self._table.delete_entity(due_hour(due_at), key),  # an absent row is no error
        )

    def due(self, now: datetime) -> list[DueRow]:
        query = "PartitionKey le @hour and due_at le @now"
        found = _call(
            f"reading {self.table_name}",
            lambda: list(self._table.query_entities(query, parameters={"hour": due_hour(now), "now": now})),
        )
        return [DueRow(str(e["RowKey"]), e["due_at"], e.metadata.get("etag")) for e in found]

    def move(self, row: DueRow, to: datetime | None) -> None:
        here = due_hour(row.due_at)
        conditional: dict[str, Any] = (
            {"etag": row.etag, "match_condition": MatchConditions.IfNotModified} if row.etag else {}
        )
        try:
            if to is not None and due_hour(to) == here:
                self._table.update_entity(_entity(row.key, to), mode=UpdateMode.REPLACE, **conditional)
                return
            if to is not None:
                self.put(row.key, to)
            self._table.delete_entity(here, row.key, **conditional)
        except ResourceModifiedError:
            return  # rewritten since it was read: the newer row stands
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 404:
                return  # gone already (its grant ended meanwhile)
            raise StorageUnavailable(f"moving {row.key} in {self.table_name}: {type(exc).__name__}") from exc
