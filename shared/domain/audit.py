"""The audit trail's hash chain: each entry commits to the one before it.

An entry's hash is SHA-256 over its canonical JSON (sorted keys, no spaces) without the
``hash`` field, and that JSON includes ``prev_hash``, the package id and the sequence number.
Editing, reordering or removing an entry breaks every later link, which ``verify_chain`` reports.

A chain alone cannot tell that its last entries were dropped, that it was rewritten and re-hashed
from the start, or that a well-formed entry was appended by someone else: the registry therefore
keeps an *anchor* per package (the count of entries and the head hash), written before each append,
and ``verify_chain`` holds the trail against it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    at: datetime
    package_id: str
    action: str
    actor: str
    details: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = None  # deterministic per event: a retry finds it and does not append it twice
    prev_hash: str
    hash: str


class AuditAnchor(BaseModel):
    """What the registry holds for a package's trail: how many entries, and the last one's hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=0)
    head_hash: str


def _digest(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def make_entry(
    previous: AuditEntry | None,
    *,
    at: datetime,
    package_id: str,
    action: str,
    actor: str,
    details: dict[str, Any],
    event_id: str | None = None,
) -> AuditEntry:
    """The entry that follows ``previous`` (or starts the chain)."""
    draft = AuditEntry(
        event_id=event_id,
        seq=0 if previous is None else previous.seq + 1,
        at=at,
        package_id=package_id,
        action=action,
        actor=actor,
        details=details,
        prev_hash=GENESIS if previous is None else previous.hash,
        hash="",
    )
    return draft.model_copy(update={"hash": _digest(draft.model_dump(mode="json", exclude={"hash"}))})


def verify_chain(
    entries: list[AuditEntry], package_id: str | None = None, anchor: AuditAnchor | None = None
) -> list[str]:
    """Every break in the chain, as sentences; an empty list means the chain holds.

    With ``package_id`` each entry must belong to that package; with ``anchor`` the trail must end
    exactly where the registry says it does.
    """
    problems: list[str] = []
    previous: AuditEntry | None = None
    for index, entry in enumerate(entries):
        if package_id is not None and entry.package_id != package_id:
            problems.append(f"entry {index}: belongs to package {entry.package_id}, not {package_id} (copied in)")
        if entry.seq != index:
            problems.append(f"entry {index}: sequence number is {entry.seq} (an entry was removed or reordered)")
        expected_prev = GENESIS if previous is None else previous.hash
        if entry.prev_hash != expected_prev:
            problems.append(f"entry {index}: does not follow the entry before it")
        fields = entry.model_dump(mode="json", exclude={"hash"})
        if _digest(fields) != entry.hash:
            problems.append(f"entry {index} ({entry.action}): content does not match its hash (edited)")
        previous = entry
    if anchor is not None:
        head = entries[-1].hash if entries else GENESIS
        if len(entries) < anchor.count:
            problems.append(
                f"the trail has {len(entries)} entries but the registry anchors {anchor.count}: "
                f"the last {anchor.count - len(entries)} were removed (dropped tail or truncation)"
            )
        elif len(entries) > anchor.count:
            problems.append(
                f"the trail has {len(entries)} entries but the registry anchors {anchor.count}: "
                f"entries {anchor.count} to {len(entries) - 1} were appended outside the service"
            )
        elif head != anchor.head_hash:
            problems.append("the last entry is not the anchored head: the chain was rewritten and re-hashed")
    return problems
