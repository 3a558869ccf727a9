"""Reading and writing the manifests kept in the records container (shared by every stage)."""

from __future__ import annotations

import json
from typing import Any

from shared.domain import names
from shared.domain.manifest import Manifest
from shared.domain.records import GrantRecord
from shared.errors import NotFound
from shared.ports import BlobStore


def save_manifest(records: BlobStore, container: str, manifest: Manifest) -> None:
    records.write(container, names.record_manifest(manifest.package_id), manifest.model_dump_json(indent=2).encode())


def load_manifest(records: BlobStore, container: str, package_id: str) -> Manifest:
    """The verified manifest (after sign-off: as signed). Raises NotFound when there is none."""
    return Manifest.model_validate_json(records.read(container, names.record_manifest(package_id)))


def archive_grants(records: BlobStore, container: str, package_id: str, grants: list[GrantRecord]) -> str:
    """Write a closing package's grant records to the records container; returns the blob's name."""
    name = names.archived_grants(package_id)
    # Merged with what an earlier, interrupted pass archived (and may already have removed from the table).
    merged = {g.grant_id: g for g in load_archived_grants(records, container, package_id)}
    merged.update((g.grant_id, g) for g in grants)
    ordered = sorted(merged.values(), key=lambda g: g.recipient_index)
    records.write(container, name, json.dumps([g.model_dump(mode="json") for g in ordered], indent=2).encode())
    return name


def load_archived_grants(records: BlobStore, container: str, package_id: str) -> list[GrantRecord]:
    """The grants of a closed package (none when it had none, or closed before grants were archived)."""
    try:
        data = json.loads(records.read(container, names.archived_grants(package_id)))
    except NotFound:
        return []
    return [GrantRecord.model_validate(g) for g in data]


def load_encrypted_manifest(delivery: BlobStore, container: str, prefix: str) -> dict[str, Any]:
    return dict(json.loads(delivery.read(container, prefix + names.ENCRYPTED_MANIFEST)))
