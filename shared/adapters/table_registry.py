"""Registry of packages and grants in Azure Table Storage (Azurite serves the same API).

Tables: ``<prefix>packages`` (PartitionKey = package id), ``<prefix>grants`` (PartitionKey =
package id, RowKey = ``recipient-<index>``: one grant per recipient, enforced by the store's
insert-if-absent; the unguessable grant id is a property), ``<prefix>signoffs`` (PartitionKey =
package id, RowKey = role)
``<prefix>signofftokens`` (PartitionKey = SHA-256 of a sign-off token, RowKey = "token": which
sign-off it was issued for; the token itself is stored nowhere) and ``<prefix>grantids``
(PartitionKey = grant id, RowKey = "grant": which package and recipient it belongs to, so that
revoking by grant id is two point reads, not a pass over every grant). Every update is conditional on the ETag the
record was read with; a lost race raises ``ConcurrencyConflict`` instead of overwriting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ServiceRequestError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode
from pydantic import BaseModel

from shared.domain.manifest import Role
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus, SignoffRecord
from shared.errors import UNREACHABLE, ConcurrencyConflict, StorageUnavailable

_PACKAGE_ROW = "package"


def _recipient_row(index: int) -> str:
    return f"recipient-{index:02d}"


def _grant_row(record: GrantRecord) -> str:
    return _recipient_row(record.recipient_index)


_TOKEN_ROW = "token"
_GRANT_ID_ROW = "grant"
_LIST_FIELDS = {"rejection_reasons", "ip_ranges"}  # tables have no list type: stored as JSON text
_R = TypeVar("_R", bound=BaseModel)

# A string property holds at most 64 KiB of UTF-16, 32,768 code units (Azure and Azurite both refuse
# more with PropertyValueTooLarge). The JSON is written with ensure_ascii, so one character is one
# code unit. Below the limit with room to spare: a longer rejection list is stored cut short.
MAX_LIST_JSON = 32_000


def _int64(value: int) -> EntityProperty:
    """An int as Edm.Int64: the SDK writes a plain int as Int32 and refuses one past 2**31 - 1."""
    return EntityProperty(value, EdmType.INT64)


def _bounded_reasons(reasons: list[str], package_id: str) -> str:
    """``reasons`` as JSON of at most ``MAX_LIST_JSON`` characters.

    When the whole list does not fit, the first reasons that do are kept and a last entry says how
    many more there are and where they all are: the ``rejected`` audit entry holds every reason.
    """
    pieces: list[str] = []
    used = 2  # the brackets
    for reason in reasons:
        piece = json.dumps(reason)
        used += len(piece) + (2 if pieces else 0)  # with its ", " separator
        if used > MAX_LIST_JSON:
            break
        pieces.append(piece)
    else:
        return "[" + ", ".join(pieces) + "]"
    # Cut short: make room for the summary (sized for the widest count it can have).
    widest = json.dumps(_more_reasons(len(reasons), package_id))
    used = 2 + sum(len(p) + 2 for p in pieces)
    while pieces and used + len(widest) > MAX_LIST_JSON:
        used -= len(pieces.pop()) + 2
    summary = json.dumps(_more_reasons(len(reasons) - len(pieces), package_id))
    return "[" + ", ".join([*pieces, summary]) + "]"


def _more_reasons(more: int, package_id: str) -> str:
    what = "reason" if more == 1 else "reasons"
    return f"... {more:,} more {what}; the full list is in the audit trail (egress audit {package_id})"


def _to_entity(record: BaseModel, partition: str, row: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for key, value in record.model_dump(mode="python").items():
        if value is None:
            continue
        if key == "rejection_reasons":
            entity[key] = _bounded_reasons(value, partition)
        elif isinstance(value, list):
            entity[key] = json.dumps(value)
        elif hasattr(value, "value") and isinstance(value.value, str):  # StrEnum
            entity[key] = value.value
        elif isinstance(value, int) and not isinstance(value, bool):  # counts and sizes pass 2**31 - 1
            entity[key] = _int64(value)
        else:
            entity[key] = value
    return entity


def _from_entity(model: type[_R], entity: dict[str, Any]) -> _R:
    data = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
    # Edm.Int64 (and any other typed value) comes back wrapped in an EntityProperty: plain values here
    data = {k: v.value if isinstance(v, EntityProperty) else v for k, v in data.items()}
    for name in _LIST_FIELDS & data.keys():
        data[name] = json.loads(data[name])
    etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
    return model.model_validate({**data, "etag": etag})


_T = TypeVar("_T")


def _call(what: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except ResourceModifiedError as exc:
        raise ConcurrencyConflict(f"{what}: changed by someone else since it was read") from exc
    except ResourceExistsError as exc:
        raise ConcurrencyConflict(f"{what}: already exists") from exc
    except ServiceRequestError as exc:
        raise StorageUnavailable(f"{what}: {UNREACHABLE}") from exc
    except AzureError as exc:
        raise StorageUnavailable(f"{what}: the registry did not answer ({type(exc).__name__})") from exc


class TableRegistry:
    """Package and grant records with optimistic concurrency."""

    def __init__(self, service: TableServiceClient, prefix: str = "egress") -> None:
        self._packages: TableClient = service.get_table_client(f"{prefix}packages")
        self._grants: TableClient = service.get_table_client(f"{prefix}grants")
        self._signoffs: TableClient = service.get_table_client(f"{prefix}signoffs")
        self._tokens: TableClient = service.get_table_client(f"{prefix}signofftokens")
        self._grant_ids: TableClient = service.get_table_client(f"{prefix}grantids")

    def ensure_tables(self) -> None:
        for table in (self._packages, self._grants, self._signoffs, self._tokens, self._grant_ids):
            try:
                _call(f"creating table {table.table_name}", table.create_table)
            except ConcurrencyConflict:
                pass  # it exists

    def _get(self, table: TableClient, model: type[_R], partition: str, row: str) -> _R | None:
        try:
            entity = table.get_entity(partition, row)
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise StorageUnavailable(f"reading {table.table_name}: {type(exc).__name__}") from exc
        return _from_entity(model, entity)

    def _create(self, table: TableClient, model: type[_R], record: _R, partition: str, row: str) -> _R:
        meta = _call(
            f"creating {table.table_name} {partition}/{row}",
            lambda: table.create_entity(_to_entity(record, partition, row)),
        )
        return record.model_copy(update={"etag": meta.get("etag")})

    def _update(self, table: TableClient, record: _R, partition: str, row: str) -> _R:
        etag = getattr(record, "etag", None)
        if etag is None:
            raise ConcurrencyConflict(f"{partition}/{row}: update without a prior read")
        meta = _call(
            f"updating {table.table_name} {partition}/{row}",
            lambda: table.update_entity(
                _to_entity(record, partition, row),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            ),
        )
        return record.model_copy(update={"etag": meta.get("etag")})

    def _query(self, table: TableClient, model: type[_R], conditions: dict[str, str]) -> list[_R]:
        query = " and ".join(f"{key} eq @{key}" for key in conditions)
        if query:
            rows = _call(
                f"querying {table.table_name}", lambda: list(table.query_entities(query, parameters=conditions))
            )
        else:
            rows = _call(f"listing {table.table_name}", lambda: list(table.list_entities()))
        return [_from_entity(model, row) for row in rows]

    def get_package(self, package_id: str) -> PackageRecord | None:
        return self._get(self._packages, PackageRecord, package_id, _PACKAGE_ROW)

    def create_package(self, record: PackageRecord) -> PackageRecord:
        return self._create(self._packages, PackageRecord, record, record.package_id, _PACKAGE_ROW)

    def update_package(self, record: PackageRecord) -> PackageRecord:
        return self._update(self._packages, record, record.package_id, _PACKAGE_ROW)

    def list_packages(self, status: PackageStatus | None = None) -> list[PackageRecord]:
        return self._query(self._packages, PackageRecord, {"status": status.value} if status else {})

    def _index_grant(self, record: GrantRecord) -> None:
        # Written before the grant row: an id indexed whose row was never written (or was written
        # by another worker, with its own id) is simply unknown; a grant without its index row is
        # still found, by a pass over the table, and indexed then.
        entity = {
            "PartitionKey": record.grant_id,
            "RowKey": _GRANT_ID_ROW,
            "package_id": record.package_id,
            "recipient_index": record.recipient_index,
        }
        _call("indexing a grant id", lambda: self._grant_ids.upsert_entity(entity))

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        """By the id index: two point reads. Grants written before the index existed (no index row)
        are found by a pass over the table, and indexed."""
        try:
            entry = self._grant_ids.get_entity(grant_id, _GRANT_ID_ROW)
        except AzureError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise StorageUnavailable(f"reading {self._grant_ids.table_name}: {type(exc).__name__}") from exc
        else:
            row = _recipient_row(int(entry["recipient_index"]))
            found = self._get(self._grants, GrantRecord, str(entry["package_id"]), row)
            return found if found is not None and found.grant_id == grant_id else None
        scanned = self._query(self._grants, GrantRecord, {"grant_id": grant_id})
        if not scanned:
            return None
        self._index_grant(scanned[0])
        return scanned[0]

    def create_grant(self, record: GrantRecord) -> GrantRecord:
        """Insert-if-absent on (package, recipient): a second worker gets ConcurrencyConflict."""
        self._index_grant(record)
        try:
            return self._create(self._grants, GrantRecord, record, record.package_id, _grant_row(record))
        except ConcurrencyConflict:  # another worker's grant holds the recipient: this id is nobody's
            try:
                self._grant_ids.delete_entity(record.grant_id, _GRANT_ID_ROW)
            except AzureError:
                pass  # left behind it points at another id's row, so it finds nothing
            raise

    def update_grant(self, record: GrantRecord) -> GrantRecord:
        return self._update(self._grants, record, record.package_id, _grant_row(record))

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]:
        conditions: dict[str, str] = {}
        if package_id:
            conditions["PartitionKey"] = package_id
        if status:
            conditions["status"] = status.value
        grants = self._query(self._grants, GrantRecord, conditions)
        return sorted(grants, key=lambda g: (g.package_id, g.recipient_index))

    def delete_grant(self, record: GrantRecord) -> None:
        """The grant row, then its id's index row (one left behind points at nothing: unknown)."""
        for table, partition, row in (
            (self._grants, record.package_id, _grant_row(record)),
            (self._grant_ids, record.grant_id, _GRANT_ID_ROW),
        ):
            try:
                table.delete_entity(partition, row)
            except AzureError as exc:
                if getattr(exc, "status_code", None) == 404:
                    continue
                raise StorageUnavailable(f"deleting a grant of {record.package_id}: {type(exc).__name__}") from exc

    # -- sign-offs ----------------------------------------------------------------------

    def _index_token(self, record: SignoffRecord) -> None:
        # Written before the sign-off row: a token that is indexed but whose row never got its hash
        # is simply unknown, while the reverse would leave an emailed link that cannot be found.
        entity = {
            "PartitionKey": record.token_hash,
            "RowKey": _TOKEN_ROW,
            "package_id": record.package_id,
            "role": record.role.value,
        }
        _call("indexing a sign-off token", lambda: self._tokens.upsert_entity(entity))

    def create_signoff(self, record: SignoffRecord) -> SignoffRecord:
        self._index_token(record)
        return self._create(self._signoffs, SignoffRecord, record, record.package_id, record.role.value)

    def update_signoff(self, record: SignoffRecord) -> SignoffRecord:
        current = self.get_signoff(record.package_id, record.role)
        if current is not None and current.token_hash != record.token_hash:
            self._index_token(record)
        return self._update(self._signoffs, record, record.package_id, record.role.value)

    def get_signoff(self, package_id: str, role: Role) -> SignoffRecord | None:
        return self._get(self._signoffs, SignoffRecord, package_id, role.value)

    def list_signoffs(self, package_id: str) -> list[SignoffRecord]:
        found = self._query(self._signoffs, SignoffRecord, {"PartitionKey": package_id})
        order = list(Role)
        return sorted(found, key=lambda r: order.index(r.role))

    def find_signoff(self, token_hash: str) -> SignoffRecord | None:
        try:
            entity = self._tokens.get_entity(token_hash, _TOKEN_ROW)
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise StorageUnavailable(f"reading {self._tokens.table_name}: {type(exc).__name__}") from exc
        return self.get_signoff(str(entity["package_id"]), Role(entity["role"]))
