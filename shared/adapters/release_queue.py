"""The release queue on Azure Storage queues (Azurite locally), read by the queue-triggered function.

Messages are base64 text, the Functions queue extension's default encoding, holding
``{"package_id": ..., "manifest_sha256": ...}``: no token, key or personal data.
"""

from __future__ import annotations

import base64
import binascii
import json

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError
from azure.storage.queue import QueueClient

from shared.errors import UNREACHABLE, StorageUnavailable
from shared.ports import Poisoned

BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"  # where the host puts a staged blob it gave up on


class StorageReleaseQueue:
    def __init__(self, client: QueueClient) -> None:
        self._client = client

    def ensure_queue(self) -> None:
        try:
            self._client.create_queue()
        except ResourceExistsError:
            pass
        except ServiceRequestError as exc:
            raise StorageUnavailable(f"creating the release queue: {UNREACHABLE}") from exc
        except AzureError as exc:
            raise StorageUnavailable(f"creating the release queue: {type(exc).__name__}") from exc

    def send(self, package_id: str, manifest_sha256: str) -> None:
        body = json.dumps({"package_id": package_id, "manifest_sha256": manifest_sha256})
        try:
            self._client.send_message(body)
        except ServiceRequestError as exc:
            raise StorageUnavailable(f"queueing the release of {package_id}: {UNREACHABLE}") from exc
        except AzureError as exc:
            raise StorageUnavailable(f"queueing the release of {package_id}: {type(exc).__name__}") from exc


class StoragePoisonWatch:
    """Peeks the release queue's ``-poison`` twin and the blob trigger's poison queue."""

    def __init__(self, queues: list[QueueClient]) -> None:
        self._queues = queues

    def poisoned(self) -> list[Poisoned]:
        found = []
        for client in self._queues:
            try:
                messages = list(client.peek_messages(max_messages=32))
            except ResourceNotFoundError:
                continue  # nothing was ever poisoned there
            except AzureError as exc:
                raise StorageUnavailable(f"reading {client.queue_name}: {type(exc).__name__}") from exc
            for message in messages:
                what, package_id = _what(message.content)
                found.append(Poisoned(client.queue_name, message.id, what, package_id))
        return found


def _what(content: object) -> tuple[str, str | None]:
    text = str(content)
    try:
        body = json.loads(text)
    except ValueError:
        try:  # the host's default encoding is base64 text
            body = json.loads(base64.b64decode(text, validate=True))
        except (ValueError, binascii.Error):
            return "an unreadable message", None
    if not isinstance(body, dict):
        return "an unreadable message", None
    if "package_id" in body:
        return f"the release of package {body['package_id']}", str(body["package_id"])
    if "BlobName" in body:
        blob = str(body["BlobName"])
        package = blob.split("/")[0] if blob.endswith("/manifest.json") else None
        return f"the staged blob {body.get('ContainerName', '?')}/{blob}", package
    return "an unreadable message", None
