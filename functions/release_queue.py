"""Queue trigger: a signed-off package is sealed and delivered, outside any HTTP request.

The message names the package and the manifest that was signed off. Sealing and delivery each
check the state first, so a message delivered twice (queues deliver at least once) changes
nothing the second time; a failure re-raises so the host retries and, after maxDequeueCount,
moves the message to ``<queue>-poison``.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.bootstrap import get_services

logger = logging.getLogger(__name__)

bp = func.Blueprint()


def _decode(message: func.QueueMessage) -> tuple[str, str] | None:
    try:
        body = json.loads(message.get_body())
        return str(body["package_id"]), str(body["manifest_sha256"])
    except (ValueError, KeyError, TypeError):
        return None


@bp.function_name("release_package")
@bp.queue_trigger(arg_name="message", queue_name="%RELEASE_QUEUE%", connection="EGRESS_STORAGE")
def release_package(message: func.QueueMessage) -> None:
    decoded = _decode(message)
    if decoded is None:
        logger.error("release message %s is not {package_id, manifest_sha256}; dropped", message.id)
        return
    package_id, manifest_sha256 = decoded
    services = get_services()
    if services.seal.seal(package_id, manifest_sha256) is None:
        return  # not signed off, replaced, or rejected because a file changed: nothing to deliver
    record = services.deliver.deliver(package_id)
    logger.info("release of %s: %s", package_id, record.status if record else "no record")
