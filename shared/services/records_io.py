"""Reading and writing the manifests kept in the records container (shared by every stage)."""

from __future__ import annotations

import json
from typing import Any

from shared.domain import names
from shared.domain.manifest import Manifest
from shared.ports import BlobStore


def save_manifest(records: BlobStore, container: str, manifest: Manifest) -> None:
    records.write(container, names.record_manifest(manifest.package_id), manifest.model_dump_json(indent=2).encode())


def load_manifest(records: BlobStore, container: str, package_id: str) -> Manifest:
    """The verified manifest (after sign-off: as signed). Raises NotFound when there is none."""
    return Manifest.model_validate_json(records.read(container, names.record_manifest(package_id)))


def load_encrypted_manifest(delivery: BlobStore, container: str, prefix: str) -> dict[str, Any]:
    return dict(json.loads(delivery.read(container, prefix + names.ENCRYPTED_MANIFEST)))
