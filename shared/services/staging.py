"""Emptying a package's staging folder once it has left (delivery) or closes (the sweep's backstop)."""

from __future__ import annotations

from shared.domain import names
from shared.ports import BlobStore


def empty_staging(staging: BlobStore, container: str, package_id: str) -> int:
    """Delete whatever is staged under ``<package_id>/``: the files first, the manifest last, so that
    a fault part-way leaves the manifest for the retry. Returns how many blobs there were."""
    left = [b.name for b in staging.list_blobs(container, f"{package_id}/")]
    manifest = names.manifest_blob(package_id)
    staging.delete_blobs(container, [name for name in left if name != manifest])
    if manifest in left:
        staging.delete_blobs(container, [manifest])
    return len(left)
