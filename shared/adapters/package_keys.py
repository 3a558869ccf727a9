"""Where per-package decryption keys live: Key Vault in Azure, a private folder locally.

Never in storage, a log, the registry or the audit trail.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import DeletedSecret, SecretClient

from shared.errors import NotFound, SecretsUnavailable
from shared.ports import KeyDeletion

logger = logging.getLogger(__name__)

# How long ``delete`` waits for Key Vault to move the secret into its deleted collection (it polls
# every 2 s; usually a few seconds). Past it, the next sweep finds the deleted secret and goes on.
DELETE_WAIT_SECONDS = 60.0


def secret_name(package_id: str) -> str:
    return f"package-key-{package_id}"


class KeyVaultPackageKeys:
    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def put(self, package_id: str, secret: str) -> None:
        try:
            self._client.set_secret(secret_name(package_id), secret, content_type="age-identity")
        except AzureError as exc:
            raise SecretsUnavailable(f"Key Vault did not store the key of {package_id} ({type(exc).__name__})") from exc

    def get(self, package_id: str) -> str:
        try:
            value = self._client.get_secret(secret_name(package_id)).value
        except ResourceNotFoundError as exc:
            raise NotFound(f"the key of {package_id} no longer exists") from exc
        except AzureError as exc:
            raise SecretsUnavailable(f"Key Vault did not answer ({type(exc).__name__})") from exc
        if not value:
            raise NotFound(f"the key of {package_id} is empty")
        return value

    def delete(self, package_id: str) -> KeyDeletion:
        """Delete the key, then try to purge the deleted copy, and say which happened.

        Key Vault always soft-deletes: the secret moves to the vault's deleted collection, recoverable
        (by anyone holding ``secrets/recover``) until its scheduled purge date. Purging removes it at
        once, unless the vault has purge protection, when Key Vault refuses (403) and purges it itself
        on that date. A secret missing from the live collection (a previous pass deleted it and then
        failed) is looked up in the deleted collection so that the answer is the same.
        """
        name = secret_name(package_id)
        try:
            try:
                poller = self._client.begin_delete_secret(name)
            except ResourceNotFoundError:
                try:
                    deleted = self._client.get_deleted_secret(name)
                except ResourceNotFoundError:
                    return KeyDeletion("absent")
            else:
                deleted = poller.result()
                poller.wait(timeout=DELETE_WAIT_SECONDS)
                if not poller.done():
                    raise SecretsUnavailable(f"Key Vault is still deleting the key of {package_id}")
            if deleted.recovery_id is None:
                return KeyDeletion("purged")  # a vault without soft delete: nothing is kept
            return self._purge(package_id, deleted)
        except AzureError as exc:
            raise SecretsUnavailable(
                f"Key Vault did not delete the key of {package_id} ({type(exc).__name__})"
            ) from exc

    def _purge(self, package_id: str, deleted: DeletedSecret) -> KeyDeletion:
        try:
            self._client.purge_deleted_secret(secret_name(package_id))
        except ResourceNotFoundError:
            return KeyDeletion("purged")  # the deleted copy is already gone
        except HttpResponseError as exc:
            if exc.status_code not in (400, 403):
                raise  # transient: the next pass finds the deleted secret and purges again
            code = exc.error.code if exc.error is not None else None
            if not (exc.status_code == 403 and code == "Forbidden" and "purge protection" in str(exc.message)):
                # Not purge protection (the vault's own rule) but e.g. a missing role: worth a look.
                logger.warning("Key Vault refused to purge the key of %s (%s %s)", package_id, exc.status_code, code)
            return KeyDeletion("soft_deleted", deleted.scheduled_purge_date)
        return KeyDeletion("purged")


class LocalPackageKeys:
    """Local development: one file per key in a folder only the owner can read."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, package_id: str) -> Path:
        return self._folder / f"{secret_name(package_id)}.txt"

    def put(self, package_id: str, secret: str) -> None:
        """Written whole to a file of its own, then renamed into place: a reader never sees half a key."""
        self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(package_id)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret)
        os.replace(partial, path)

    def get(self, package_id: str) -> str:
        try:
            return self._path(package_id).read_text()
        except FileNotFoundError as exc:
            raise NotFound(f"the key of {package_id} no longer exists") from exc

    def delete(self, package_id: str) -> KeyDeletion:
        try:
            self._path(package_id).unlink()
        except FileNotFoundError:
            return KeyDeletion("absent")
        return KeyDeletion("purged")
