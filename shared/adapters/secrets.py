"""Where the SAS signing key comes from: Key Vault in Azure, the connection string locally."""

from __future__ import annotations

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from shared.errors import SecretsUnavailable


class KeyVaultSigningKeys:
    """Reads the delivery account's key from a Key Vault secret on each use, so a rotation
    is picked up without a restart."""

    def __init__(self, client: SecretClient, secret_name: str) -> None:
        self._client = client
        self._secret_name = secret_name

    def account_key(self) -> str:
        try:
            secret = self._client.get_secret(self._secret_name)
        except ResourceNotFoundError as exc:
            raise SecretsUnavailable(
                f"Key Vault has no secret named {self._secret_name!r}; store the delivery account's key there"
            ) from exc
        except AzureError as exc:
            raise SecretsUnavailable(f"Key Vault did not answer ({type(exc).__name__})") from exc
        if not secret.value:
            raise SecretsUnavailable(f"Key Vault secret {self._secret_name!r} is empty")
        return secret.value


class LocalSigningKeys:
    """Local development: the key that came with the delivery account's connection string."""

    def __init__(self, account_key: str | None) -> None:
        self._account_key = account_key

    def account_key(self) -> str:
        if not self._account_key:
            raise SecretsUnavailable(
                "no signing key: set KEY_VAULT_URL, or give DELIVERY_STORAGE a connection string with AccountKey"
            )
        return self._account_key
