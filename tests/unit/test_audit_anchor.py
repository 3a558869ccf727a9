"""The anchored chain: what a chain alone cannot see, the registry's anchor does."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.domain.audit import AuditAnchor, AuditEntry, make_entry, verify_chain

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def chain(n: int, package_id: str = "wp-1", actor: str = "t") -> list[AuditEntry]:
    out: list[AuditEntry] = []
    for i in range(n):
        out.append(
            make_entry(out[-1] if out else None, at=NOW, package_id=package_id, action=f"s{i}", actor=actor, details={})
        )
    return out


def anchor_of(entries: list[AuditEntry]) -> AuditAnchor:
    return AuditAnchor(count=len(entries), head_hash=entries[-1].hash)


def test_an_intact_anchored_chain_verifies() -> None:
    entries = chain(4)
    assert verify_chain(entries, "wp-1", anchor_of(entries)) == []


def test_a_dropped_tail_and_a_truncation_are_seen_only_with_the_anchor() -> None:
    entries = chain(5)
    assert verify_chain(entries[:-1]) == [] and verify_chain(entries[:2]) == []
    assert "the last 1 were removed" in verify_chain(entries[:-1], "wp-1", anchor_of(entries))[0]
    assert "the last 3 were removed" in verify_chain(entries[:2], "wp-1", anchor_of(entries))[0]


def test_a_rehashed_chain_and_a_forged_append_are_seen() -> None:
    entries = chain(3)
    rewritten = chain(3, actor="mallory")
    assert verify_chain(rewritten) == []
    assert verify_chain(rewritten, "wp-1", anchor_of(entries)) == [
        "the last entry is not the anchored head: the chain was rewritten and re-hashed"
    ]
    forged = [*entries, make_entry(entries[-1], at=NOW, package_id="wp-1", action="x", actor="m", details={})]
    assert "appended outside the service" in verify_chain(forged, "wp-1", anchor_of(entries))[0]


def test_another_packages_chain_is_seen() -> None:
    other = chain(3, package_id="wp-2")
    problems = verify_chain(other, "wp-1", anchor_of(other))
    assert problems and all("belongs to package wp-2" in p for p in problems)


def test_the_event_id_is_part_of_what_the_hash_covers() -> None:
    (entry,) = [make_entry(None, at=NOW, package_id="wp-1", action="a", actor="t", details={}, event_id="e1")]
    edited = entry.model_copy(update={"event_id": "e2"})
    assert verify_chain([edited]) == ["entry 0 (a): content does not match its hash (edited)"]
