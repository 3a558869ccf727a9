"""Builders for classified work packages as the classification team stages them."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from azure.storage.blob import BlobServiceClient

PROVIDER = {"role": "data_provider_representative", "name": "Ada Byron", "email": "ada@provider.example"}
INVESTIGATOR = {"role": "investigator", "name": "Alan Turing", "email": "alan@institute.example"}
REFEREE = {"role": "referee", "name": "Grace Hopper", "email": "grace@referee.example"}

SAMPLE_FILES = {
    "tables/table1.csv": b"cohort,n,mean\nA,120,3.4\nB,98,2.9\n",
    "figures/figure1.txt": b"a figure stand-in\n" * 50,
    "README.md": b"# Outputs\nRegression tables for the cohort paper.\n",
}


def new_package_id(prefix: str = "wp") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def manifest_for(package_id: str, files: dict[str, bytes], tier: int = 2, **overrides: Any) -> dict[str, Any]:
    decisions = [PROVIDER, INVESTIGATOR] + ([REFEREE] if tier >= 2 else [])
    manifest: dict[str, Any] = {
        "schema_version": 1,
        "package_id": package_id,
        "title": "Regression tables for the cohort paper",
        "classification": {
            "tier": tier,
            "decisions": [{**d, "tier": tier, "decided_at": "2026-11-20T10:00:00Z"} for d in decisions],
        },
        "method": "storage_explorer",
        "recipients": [
            {"name": "Ada Byron", "email": "ada@provider.example", "ip_ranges": ["203.0.113.7", "198.51.100.0/28"]}
        ],
        "expires_in_hours": 48,
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in files.items()
        ],
    }
    manifest.update(overrides)
    return manifest


def stage(
    service: BlobServiceClient,
    container: str,
    package_id: str,
    files: dict[str, bytes],
    manifest: dict[str, Any] | bytes,
) -> bytes:
    """Upload the files, then the manifest last; return the manifest's bytes."""
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for path, data in files.items():
        client.upload_blob(f"{package_id}/files/{path}", data, overwrite=True)
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=2).encode()
    client.upload_blob(f"{package_id}/manifest.json", raw, overwrite=True)
    return raw


def staged(service: BlobServiceClient, container: str, package_id: str) -> dict[str, bytes]:
    client = service.get_container_client(container)
    return {
        b.name: client.download_blob(b.name).readall() for b in client.list_blobs(name_starts_with=f"{package_id}/")
    }


def stage_new(
    services: Any, blob_service: BlobServiceClient, files: dict[str, bytes] = SAMPLE_FILES, **overrides: Any
) -> tuple[str, bytes]:
    """Stage a new classified package in ``services``' staging container; return its id and manifest bytes."""
    package_id = new_package_id()
    manifest = manifest_for(package_id, files, **overrides)
    return package_id, stage(blob_service, services.settings.staging_container, package_id, files, manifest)
