"""Blob trigger: a manifest landing in the staging container starts processing its package."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_services
from shared.domain import names
from shared.domain.manifest import MAX_MANIFEST_BYTES
from shared.settings import blob_trigger_source

logger = logging.getLogger(__name__)

bp = func.Blueprint()


def package_id_of(blob_name: str, container: str) -> str | None:
    """``<container>/<package_id>/manifest.json`` -> ``<package_id>``; None for any other path.

    ``blob_name`` is what the host passes as the trigger's name (its ``BlobTrigger`` metadata):
    ``<container>/<blob name>``, with the polling source and with Event Grid alike. In Azure the
    trigger's ``{package_id}`` matches across ``/`` and Event Grid's suffix filter matches nested
    blobs, so a ``files/.../manifest.json`` output reaches this handler too: it is ignored. A folder
    directly under the container that is not a valid package id is passed on: intake tells the manager.
    """
    prefix = container + "/"
    if not blob_name.startswith(prefix):
        return None
    return names.package_of_manifest(blob_name[len(prefix) :])


@bp.function_name("process_manifest")
@bp.blob_trigger(
    arg_name="manifest",
    path="%STAGING_CONTAINER%/{package_id}/manifest.json",
    connection="EGRESS_STORAGE",
    source=func.BlobSource(blob_trigger_source()),
)
def process_manifest(manifest: func.InputStream) -> None:
    services = get_services()
    package_id = package_id_of(manifest.name or "", services.settings.staging_container)
    if package_id is None:
        logger.info("%r is not a package's manifest.json; ignored", manifest.name)
        return
    raw = manifest.read(MAX_MANIFEST_BYTES + 1)  # one byte more tells a manifest that is too large
    size = manifest.length
    if size is None and len(raw) > MAX_MANIFEST_BYTES:  # count the rest, to say how large it is
        size = len(raw) + sum(len(chunk) for chunk in iter(lambda: manifest.read(1 << 20), b""))
    # Errors propagate: the host retries (transient faults, lost races) and then records a poison blob.
    outcome = services.intake.process(package_id, raw, size=size)
    logger.info("manifest of %r processed: %s", package_id, outcome)
