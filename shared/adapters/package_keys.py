"""Where per-package decryption keys live: Key Vault in Azure, a private folder locally.

Never in storage, a log, the registry or the audit trail.
"""

from __future__ import annotations

import os
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from shared.errors import NotFound, SecretsUnavailable


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

    def delete(self, package_id: str) -> None:
        try:
            self._client.begin_delete_secret(secret_name(package_id)).wait()
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise SecretsUnavailable(
                f"Key Vault did not delete the key of {package_id} ({type(exc).__name__})"
            ) from exc


class LocalPackageKeys:
    """Local development: one file per key in a folder only the owner can read."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, package_id: str) -> Path:
        return self._folder / f"{secret_name(package_id)}.txt"

    def put(self, package_id: str, secret: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(package_id)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret)

    def get(self, package_id: str) -> str:
        try:
            return self._path(package_id).read_text()
        except FileNotFoundError as exc:
            raise NotFound(f"the key of {package_id} no longer exists") from exc

    def delete(self, package_id: str) -> None:
        self._path(package_id).unlink(missing_ok=True)
