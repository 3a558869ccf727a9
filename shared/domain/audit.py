"""The audit trail's hash chain: each entry commits to the one before it.

An entry's hash is SHA-256 over its canonical JSON (sorted keys, no spaces) without the
``hash`` field, and that JSON includes ``prev_hash``. Editing, reordering or removing an
entry breaks every later link, which ``verify_chain`` reports.
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
    prev_hash: str
    hash: str


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
) -> AuditEntry:
    """The entry that follows ``previous`` (or starts the chain)."""
    draft = AuditEntry(
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


def verify_chain(entries: list[AuditEntry]) -> list[str]:
    """Every break in the chain, as sentences; an empty list means the chain holds."""
    problems: list[str] = []
    previous: AuditEntry | None = None
    for index, entry in enumerate(entries):
        if entry.seq != index:
            problems.append(f"entry {index}: sequence number is {entry.seq} (an entry was removed or reordered)")
        expected_prev = GENESIS if previous is None else previous.hash
        if entry.prev_hash != expected_prev:
            problems.append(f"entry {index}: does not follow the entry before it")
        fields = entry.model_dump(mode="json", exclude={"hash"})
        if _digest(fields) != entry.hash:
            problems.append(f"entry {index} ({entry.action}): content does not match its hash (edited)")
        previous = entry
    return problems
