"""The delivery account reached without Shared Key, as in Azure (managed identity).

Azure refuses Get/Set Container ACL (stored access policies) to Microsoft Entra tokens; Azurite
refuses them to an account SAS the same way. So an account-SAS client stands in for the
identity-authorised client here, and the policies must go through the key-signed client.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

from shared.adapters.blob_store import AzureBlobStore, KeySignedService
from shared.adapters.secrets import LocalSigningKeys
from shared.errors import Forbidden
from shared.ports import AccessPolicy
from tests.support.servers import DEV_ACCOUNT, DEV_KEY, Azurite

pytestmark = pytest.mark.integration


class RotatingKeys:
    """A signing-key source whose answer the test changes, like a Key Vault secret rotated."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.reads = 0

    def account_key(self) -> str:
        self.reads += 1
        return self.key


def _data_client(azurite: Azurite) -> BlobServiceClient:
    sas = generate_account_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    return BlobServiceClient(f"http://127.0.0.1:{azurite.blob_port}/{DEV_ACCOUNT}", credential=sas)


def _policy(policy_id: str) -> AccessPolicy:
    now = datetime.now(UTC).replace(microsecond=0)
    return AccessPolicy(policy_id=policy_id, start=now - timedelta(minutes=15), expiry=now + timedelta(hours=1))


def test_policies_go_through_the_key_signed_client(azurite: Azurite) -> None:
    container = f"egress-{secrets.token_hex(4)}"
    data = _data_client(azurite)
    keys = RotatingKeys(DEV_KEY)
    store = AzureBlobStore(data, KeySignedService(data, keys))
    store.ensure_container(container)
    store.write(container, "files/a.csv", b"a,b\n")

    store.update_policies(container, add=[_policy("g1"), _policy("g2")], remove=[])
    store.update_policies(container, add=[], remove=["g1"])

    assert [p.policy_id for p in store.stored_policies(container)] == ["g2"]
    assert keys.reads >= 3  # the key is read on each use, so a rotation is picked up


def test_without_the_key_signed_client_the_policies_are_refused(azurite: Azurite) -> None:
    container = f"egress-{secrets.token_hex(4)}"
    data = _data_client(azurite)
    store = AzureBlobStore(data)
    store.ensure_container(container)

    with pytest.raises(Forbidden, match="access policies"):
        store.update_policies(container, add=[_policy("g1")], remove=[])


def test_a_wrong_key_is_refused_and_the_rotated_key_is_picked_up(azurite: Azurite) -> None:
    container = f"egress-{secrets.token_hex(4)}"
    data = _data_client(azurite)
    keys = RotatingKeys("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==")
    store = AzureBlobStore(data, KeySignedService(data, keys))
    store.ensure_container(container)

    with pytest.raises(Forbidden):
        store.update_policies(container, add=[_policy("g1")], remove=[])

    keys.key = DEV_KEY  # the secret was rotated in Key Vault
    store.update_policies(container, add=[_policy("g1")], remove=[])
    assert [p.policy_id for p in store.stored_policies(container)] == ["g1"]


def test_local_keys_without_a_key_say_what_to_set(azurite: Azurite) -> None:
    data = _data_client(azurite)
    store = AzureBlobStore(data, KeySignedService(data, LocalSigningKeys(None)))
    with pytest.raises(Exception, match="KEY_VAULT_URL"):
        store.stored_policies("egress-anything")
