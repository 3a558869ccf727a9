"""Blob trigger: a manifest landing in the staging container starts processing its package."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_services
from shared.settings import blob_trigger_source

logger = logging.getLogger(__name__)

bp = func.Blueprint()

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # 10,000 files at the longest paths fit well inside


def package_id_of(blob_name: str) -> str:
    """``egress-staging/<package_id>/manifest.json`` -> ``<package_id>``."""
    parts = blob_name.split("/")
    return parts[-2] if len(parts) >= 2 else ""


@bp.function_name("process_manifest")
@bp.blob_trigger(
    arg_name="manifest",
    path="%STAGING_CONTAINER%/{package_id}/manifest.json",
    connection="EGRESS_STORAGE",
    source=func.BlobSource(blob_trigger_source()),
)
def process_manifest(manifest: func.InputStream) -> None:
    package_id = package_id_of(manifest.name or "")
    raw = manifest.read(MAX_MANIFEST_BYTES + 1)
    # Errors propagate: the host retries (transient faults, lost races) and then records a poison blob.
    outcome = get_services().egress.process(package_id, raw)
    logger.info("manifest of %s processed: %s", package_id, outcome)
