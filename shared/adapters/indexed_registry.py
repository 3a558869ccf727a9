"""The registry as the services use it: every write of a package or grant also keeps the sweep's
due indexes (``shared.adapters.grant_index``), whichever service makes it.

- A grant created active: a row in the grants index at its expiry.
- A grant ended (revoked or expired): a row in the packages index when its package may close
  (the end plus retention; the sweep checks then that no other grant is still active), and its
  grants row is deleted.
- A package written: a row in the packages index at the next moment the sweep has work for it,
  from the record alone (sign-off deadline, stuck check, key destruction or closing of an
  encrypted package, the earliest closing of a link package); none for a state the sweep leaves
  alone (rejected, refused, closed).

Rows are written *before* the record (a row whose write then fails is a harmless hint, deleted
when the sweep meets it; a record without its row would be missed), and a grant's row is deleted
*after* the grant ended (if that delete fails the sweep deletes the row when it meets it). Earlier
rows of the same package are not looked up: the sweep meets them and moves or deletes them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from shared.domain.manifest import Role
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus, SignoffRecord
from shared.errors import EgressError
from shared.ports import DueIndex, Registry

logger = logging.getLogger(__name__)


class Schedule(Protocol):
    """When the sweep next has work for a record (``shared.services.sweep.SweepSchedule``)."""

    def grant_key(self, package_id: str, recipient_index: int) -> str: ...
    def package_due(self, record: PackageRecord, now: datetime | None = None) -> datetime | None: ...
    def closable_at(self, grant: GrantRecord) -> datetime: ...


class IndexedRegistry:
    """A ``Registry`` that writes the sweep's due rows around the records it writes."""

    def __init__(self, inner: Registry, *, grants_due: DueIndex, packages_due: DueIndex, schedule: Schedule) -> None:
        self.inner = inner
        self._grants_due = grants_due
        self._packages_due = packages_due
        self._schedule = schedule

    # -- packages ---------------------------------------------------------------------------

    def _index_package(self, record: PackageRecord) -> None:
        due = self._schedule.package_due(record)
        if due is not None:
            self._packages_due.put(record.package_id, due)

    def create_package(self, record: PackageRecord) -> PackageRecord:
        self._index_package(record)
        return self.inner.create_package(record)

    def update_package(self, record: PackageRecord) -> PackageRecord:
        self._index_package(record)
        return self.inner.update_package(record)

    def get_package(self, package_id: str) -> PackageRecord | None:
        return self.inner.get_package(package_id)

    def list_packages(self, status: PackageStatus | None = None) -> list[PackageRecord]:
        return self.inner.list_packages(status)

    # -- grants -----------------------------------------------------------------------------

    def create_grant(self, record: GrantRecord) -> GrantRecord:
        if record.status == GrantStatus.ACTIVE:
            self._grants_due.put(self._schedule.grant_key(record.package_id, record.recipient_index), record.expires_at)
        return self.inner.create_grant(record)

    def update_grant(self, record: GrantRecord) -> GrantRecord:
        if record.status == GrantStatus.ACTIVE:
            return self.inner.update_grant(record)
        self._packages_due.put(record.package_id, self._schedule.closable_at(record))
        saved = self.inner.update_grant(record)
        key = self._schedule.grant_key(record.package_id, record.recipient_index)
        try:
            self._grants_due.remove(key, record.expires_at)
        except EgressError as exc:  # the grant has ended: the sweep deletes the row when it meets it
            logger.warning("the due row of grant %s stays until the sweep meets it: %s", record.grant_id, exc.message)
        return saved

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        return self.inner.get_grant(grant_id)

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]:
        return self.inner.list_grants(package_id=package_id, status=status)

    def delete_grant(self, record: GrantRecord) -> None:
        self.inner.delete_grant(record)

    # -- sign-offs (not indexed) ------------------------------------------------------------

    def create_signoff(self, record: SignoffRecord) -> SignoffRecord:
        return self.inner.create_signoff(record)

    def update_signoff(self, record: SignoffRecord) -> SignoffRecord:
        return self.inner.update_signoff(record)

    def get_signoff(self, package_id: str, role: Role) -> SignoffRecord | None:
        return self.inner.get_signoff(package_id, role)

    def list_signoffs(self, package_id: str) -> list[SignoffRecord]:
        return self.inner.list_signoffs(package_id)

    def find_signoff(self, token_hash: str) -> SignoffRecord | None:
        return self.inner.find_signoff(token_hash)
