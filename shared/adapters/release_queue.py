"""The release queue on Azure Storage queues (Azurite locally), read by the queue-triggered function.

Messages are base64 text, the Functions queue extension's default encoding, holding
``{"package_id": ..., "manifest_sha256": ...}``: no token, key or personal data.
"""

from __future__ import annotations

import json

from azure.core.exceptions import AzureError, ResourceExistsError, ServiceRequestError
from azure.storage.queue import QueueClient

from shared.errors import UNREACHABLE, StorageUnavailable


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
