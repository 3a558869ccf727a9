"""Finding a grant by its id (``egress revoke GRANT_ID``, ``POST /api/grants/{id}/revoke``) on
Azurite: two point reads through the ``<prefix>grantids`` index, never a pass over every grant,
except for a grant written before the index existed, which is found by that pass once and indexed."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.table_registry import TableRegistry
from shared.bootstrap import Services
from shared.domain.records import GrantRecord, GrantStatus
from shared.errors import ConcurrencyConflict
from tests.support.packages import new_package_id

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _grant(package_id: str, index: int = 0) -> GrantRecord:
    grant_id = secrets.token_hex(16)
    return GrantRecord(
        grant_id=grant_id,
        package_id=package_id,
        recipient_index=index,
        recipient_name="Ada Byron",
        recipient_email="ada@provider.example",
        policy_id=grant_id,
        ip_ranges=["203.0.113.7"],
        status=GrantStatus.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=72),
    )


class NoPass:
    """Wraps the grants table: a query or listing of it fails the test."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.passes = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("query_entities", "list_entities"):
            self.passes += 1
            raise AssertionError(f"get_grant made a pass over the grants table ({name})")
        return getattr(self._inner, name)


@pytest.fixture
def registry(services: Services) -> TableRegistry:
    inner = services.registry.inner  # type: ignore[attr-defined]
    assert isinstance(inner, TableRegistry)
    return inner


def test_a_grant_is_found_by_its_id_with_point_reads_only(registry: TableRegistry, monkeypatch) -> None:
    package_id = new_package_id()
    grants = [registry.create_grant(_grant(package_id, i)) for i in range(3)]
    monkeypatch.setattr(registry, "_grants", NoPass(registry._grants))

    for grant in grants:
        found = registry.get_grant(grant.grant_id)
        assert found is not None and found.model_dump(exclude={"etag"}) == grant.model_dump(exclude={"etag"})
        assert found.etag == grant.etag, "the row as written, ready for a conditional update"


def test_an_unknown_id_is_none(registry: TableRegistry) -> None:
    registry.create_grant(_grant(new_package_id()))
    assert registry.get_grant(secrets.token_hex(16)) is None


def test_a_grant_written_before_the_index_is_found_once_by_a_pass_and_then_indexed(
    registry: TableRegistry, monkeypatch
) -> None:
    grant = registry.create_grant(_grant(new_package_id()))
    registry._grant_ids.delete_entity(grant.grant_id, "grant")  # as a grant written before the index

    found = registry.get_grant(grant.grant_id)
    assert found is not None and found.grant_id == grant.grant_id
    monkeypatch.setattr(registry, "_grants", NoPass(registry._grants))
    again = registry.get_grant(grant.grant_id)
    assert again is not None and again.grant_id == grant.grant_id


def test_the_id_of_a_worker_that_lost_the_race_for_a_recipient_is_unknown(registry: TableRegistry) -> None:
    package_id = new_package_id()
    winner = registry.create_grant(_grant(package_id))
    loser = _grant(package_id)  # the same recipient, another worker's id
    with pytest.raises(ConcurrencyConflict):
        registry.create_grant(loser)

    assert registry.get_grant(loser.grant_id) is None
    assert list(registry._grant_ids.query_entities("PartitionKey eq @id", parameters={"id": loser.grant_id})) == []
    found = registry.get_grant(winner.grant_id)
    assert found is not None and found.grant_id == winner.grant_id


def test_a_deleted_grant_is_gone_from_the_index_too(registry: TableRegistry) -> None:
    grant = registry.create_grant(_grant(new_package_id()))
    registry.delete_grant(grant)
    registry.delete_grant(grant)  # again: nothing left to delete is not an error

    assert registry.get_grant(grant.grant_id) is None
    assert list(registry._grant_ids.query_entities("PartitionKey eq @id", parameters={"id": grant.grant_id})) == []
