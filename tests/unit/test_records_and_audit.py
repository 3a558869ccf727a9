"""State machines and the audit chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.audit import AuditEntry, make_entry, verify_chain
from shared.domain.records import (
    GRANT_TRANSITIONS,
    PACKAGE_TRANSITIONS,
    GrantRecord,
    GrantStatus,
    PackageRecord,
    PackageStatus,
)
from shared.errors import IllegalTransition

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def package(status: PackageStatus) -> PackageRecord:
    return PackageRecord(package_id="wp-1", status=status, manifest_sha256="0" * 64, created_at=NOW, updated_at=NOW)


@pytest.mark.parametrize("start", list(PackageStatus))
@pytest.mark.parametrize("to", list(PackageStatus))
def test_package_transitions_follow_the_table(start: PackageStatus, to: PackageStatus) -> None:
    if to in PACKAGE_TRANSITIONS[start]:
        assert package(start).transition(to).status == to
    else:
        with pytest.raises(IllegalTransition):
            package(start).transition(to)


def test_ended_grants_stay_ended() -> None:
    grant = GrantRecord(
        grant_id="g",
        package_id="wp-1",
        recipient_index=0,
        recipient_name="A",
        recipient_email="a@x.example",
        policy_id="p",
        ip_ranges=["203.0.113.7"],
        status=GrantStatus.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    revoked = grant.transition(GrantStatus.REVOKED, revoked_by="sm")
    assert GRANT_TRANSITIONS[GrantStatus.REVOKED] == frozenset()
    with pytest.raises(IllegalTransition):
        revoked.transition(GrantStatus.EXPIRED)
    assert "url" not in str(grant.public_view()) and "policy_id" not in grant.public_view()


def chain(n: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for i in range(n):
        entries.append(
            make_entry(
                entries[-1] if entries else None,
                at=NOW + timedelta(seconds=i),
                package_id="wp-1",
                action=f"step{i}",
                actor="t",
                details={"i": i},
            )
        )
    return entries


def test_an_intact_chain_verifies() -> None:
    assert verify_chain(chain(5)) == []


def test_an_edited_entry_is_detected() -> None:
    entries = chain(5)
    entries[2] = entries[2].model_copy(update={"details": {"i": 99}})
    assert verify_chain(entries) == ["entry 2 (step2): content does not match its hash (edited)"]


def test_a_deleted_entry_is_detected() -> None:
    entries = chain(5)
    del entries[1]
    problems = verify_chain(entries)
    assert any("removed or reordered" in p for p in problems) and any("does not follow" in p for p in problems)


def test_a_rehashed_edit_still_breaks_the_next_link() -> None:
    entries = chain(3)
    forged = make_entry(entries[0], at=NOW, package_id="wp-1", action="forged", actor="t", details={})
    entries[1] = forged
    assert verify_chain(entries) == ["entry 2: does not follow the entry before it"]
