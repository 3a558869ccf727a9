"""Container SAS URLs bound to stored access policies.

A token carries ``si`` (the policy), ``sr=c``, ``spr`` and ``sip`` only: permissions and expiry
live in the policy, so deleting the policy kills the token at once. Tokens are minted on
demand from the signing key and never stored.
"""

from __future__ import annotations

from azure.storage.blob import generate_container_sas

from shared.domain.policy import sas_ip
from shared.ports import BlobStore, Link, SigningKeys


class SasLinkMinter:
    def __init__(self, delivery: BlobStore, keys: SigningKeys, allow_http: bool = False) -> None:
        self._delivery = delivery
        self._keys = keys
        self._protocol = "https,http" if allow_http else "https"

    def links(self, container: str, policy_id: str, ip_ranges: list[str]) -> list[Link]:
        key = self._keys.account_key()
        base = self._delivery.container_url(container)
        links = []
        for ip_range in ip_ranges:
            token = generate_container_sas(
                self._delivery.account_name,
                container,
                account_key=key,
                policy_id=policy_id,
                ip=sas_ip(ip_range),
                protocol=self._protocol,
            )
            links.append(Link(ip_range=ip_range, url=f"{base}?{token}"))
        return links
