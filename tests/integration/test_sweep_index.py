"""The sweep's due indexes on a real Azurite: the rows each write leaves, the one key-range read of
what is due, and a sweep that reads no whole table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient

from shared.adapters.grant_index import TableDueIndex, due_hour
from shared.bootstrap import Services
from shared.domain.records import GrantRecord, GrantStatus
from shared.ports import DueRow
from tests.support.flow import egress
from tests.support.packages import stage_new
from tests.support.servers import SmtpSink

pytestmark = pytest.mark.integration


def table(services: Services, suffix: str) -> TableClient:
    tables = TableServiceClient.from_connection_string(services.settings.egress_storage)
    return tables.get_table_client(f"{services.settings.registry_table_prefix}{suffix}")


def rows(services: Services, suffix: str) -> dict[tuple[str, str], datetime]:
    return {(e["PartitionKey"], e["RowKey"]): e["due_at"] for e in table(services, suffix).list_entities()}


def granted(services: Services, blob_service: Any, smtp: SmtpSink, **overrides: Any) -> GrantRecord:
    package_id, raw = stage_new(services, blob_service, **overrides)
    assert egress(services, smtp, package_id, raw) == "granted"
    (grant,) = services.registry.list_grants(package_id=package_id)
    return grant


def test_a_grant_is_indexed_by_its_expiry_hour_and_its_end_by_when_the_package_may_close(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    grant = granted(services, blob_service, smtp)
    key = f"{grant.package_id}:0"
    assert rows(services, "grantsdue") == {(grant.expires_at.strftime("%Y%m%d%H"), key): grant.expires_at}

    services.end_grant.revoke_grant(grant.grant_id, "sm@dsh.example", "done")

    (ended,) = services.registry.list_grants(package_id=grant.package_id)
    assert ended.ended_at is not None
    assert rows(services, "grantsdue") == {}
    closable = ended.ended_at + services.config.retention
    assert rows(services, "packagesdue")[(due_hour(closable), grant.package_id)] == closable


def test_what_is_due_is_one_key_range_read_and_a_move_loses_to_a_newer_write(services: Services) -> None:
    index = TableDueIndex(table(services, "scratchdue"))
    index.ensure_table()
    # Ten minutes into an hour, so that now + 2 h and now + 2 h 1 min fall in the same hour's partition.
    now = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
    index.put("old", now - timedelta(days=30))
    index.put("past", now - timedelta(seconds=1))
    index.put("soon", now + timedelta(seconds=1))
    index.put("later", now + timedelta(hours=5))
    index.put_many((f"batch-{n:03d}", now - timedelta(hours=n % 3, seconds=1)) for n in range(250))

    due = index.due(now)

    assert {r.key for r in due} == {"old", "past"} | {f"batch-{n:03d}" for n in range(250)}
    assert due[0].key == "old", "oldest hours first"
    index.remove("nothing", now)  # an absent row is no error

    (past,) = [r for r in due if r.key == "past"]
    index.move(past, now + timedelta(hours=2))
    index.put("past", now + timedelta(hours=2, minutes=1))  # rewritten by someone else meanwhile
    (moved,) = [r for r in index.due(now + timedelta(hours=3)) if r.key == "past"]
    index.move(DueRow(moved.key, moved.due_at, past.etag), None)  # a stale read: changes nothing
    assert [r.due_at for r in index.due(now + timedelta(hours=3)) if r.key == "past"] == [
        now + timedelta(hours=2, minutes=1)
    ]
    index.move(moved, None)
    assert [r for r in index.due(now + timedelta(hours=3)) if r.key == "past"] == []


def test_an_indexed_sweep_expires_and_closes_without_reading_a_whole_table(
    services: Services, blob_service, smtp: SmtpSink, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = granted(services, blob_service, smtp)
    grant = granted(services, blob_service, smtp, expires_in_hours=1)
    table_registry = services.registry.inner
    list_grants = table_registry.list_grants

    def one_package_only(package_id: str | None = None, status: GrantStatus | None = None) -> list[GrantRecord]:
        assert package_id is not None, "a whole-table read of the grants"
        return list_grants(package_id=package_id, status=status)

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("a whole-table read of the packages")

    monkeypatch.setattr(table_registry, "list_grants", one_package_only)
    monkeypatch.setattr(table_registry, "list_packages", no_scan)

    assert services.sweep.sweep().looked_at == 0
    clock.offset = timedelta(hours=1, seconds=1)
    report = services.sweep.sweep()
    assert report.expired == [grant.grant_id] and report.failed == []
    assert services.sweep.sweep().expired == []
    clock.offset += services.config.retention
    assert services.sweep.sweep().closed == [grant.package_id]
    assert [k for _, k in rows(services, "grantsdue")] == [f"{late.package_id}:0"]


def test_the_index_starts_empty_and_a_full_sweep_backfills_it(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    soon = granted(services, blob_service, smtp, expires_in_hours=1)
    late = granted(services, blob_service, smtp)
    for suffix in ("grantsdue", "packagesdue"):  # as for grants made before the index existed
        client = table(services, suffix)
        for entity in client.list_entities():
            client.delete_entity(entity)
    clock.offset = timedelta(hours=1, seconds=1)

    assert services.sweep.sweep().expired == []
    report = services.sweep.sweep(full=True)

    assert report.expired == [soon.grant_id]
    assert rows(services, "grantsdue") == {(due_hour(late.expires_at), f"{late.package_id}:0"): late.expires_at}
    clock.offset = timedelta(hours=48, seconds=1)
    assert services.sweep.sweep().expired == [late.grant_id]


def test_rows_that_name_no_work_are_deleted_when_met(services: Services, blob_service, smtp: SmtpSink) -> None:
    grant = granted(services, blob_service, smtp)
    past = datetime.now(UTC) - timedelta(hours=3)
    services.grants_due.put("wp-nobody:0", past)
    services.grants_due.put(f"{grant.package_id}:0", past)  # early: the grant expires in 48 hours
    services.packages_due.put("wp-nobody", past)

    report = services.sweep.sweep()

    assert report.failed == [] and report.expired == []
    assert rows(services, "grantsdue") == {(due_hour(grant.expires_at), f"{grant.package_id}:0"): grant.expires_at}
    assert "wp-nobody" not in {k for _, k in rows(services, "packagesdue")}
