"""SFTP local users and firewall of the SFTP-enabled account, through Azure's management plane.

Azure Blob SFTP has no data-plane API for its users: local users and the account's IP rules are
ARM resources (``Microsoft.Storage/storageAccounts/localUsers`` and the account's ``networkAcls``),
reached with ``azure-mgmt-storage`` and the app's managed identity. The identity needs the custom
role "Egress SFTP local users" on that one account (infra/modules/roles.bicep).

A password comes back from ``regenerate_password`` only, once; it is returned to the caller and
never logged, stored or put in an error message.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import (
    IPRule,
    LocalUser,
    LocalUserProperties,
    PermissionScope,
    SshPublicKey,
    StorageAccountPropertiesUpdateParameters,
    StorageAccountUpdateParameters,
)

from shared.domain.policy import firewall_problem
from shared.errors import EgressError, InvalidRequest, NotFound, StorageUnavailable
from shared.ports import SftpUser

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

ROLE_NAME = "Egress SFTP local users"
# Azure's limit on IP rules per storage account (Azure Storage scalability targets).
MAX_IP_RULES = 400
SFTP_PORT = 22

_ACCOUNT_ID = re.compile(
    r"/subscriptions/(?P<subscription>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/resourceGroups/(?P<group>[-\w.()]{0,89}[-\w()])"
    r"/providers/Microsoft\.Storage/storageAccounts/(?P<account>[a-z0-9]{3,24})",
    flags=re.IGNORECASE | re.ASCII,
)
_USER_NAME = re.compile(r"[a-z0-9]{3,64}", flags=re.ASCII)


@dataclass(frozen=True)
class AccountRef:
    """Where the SFTP account is in ARM."""

    subscription_id: str
    resource_group: str
    name: str


def parse_account_id(resource_id: str) -> AccountRef:
    """The parts of a storage account's ARM resource id (the ``SFTP_ACCOUNT_ID`` setting).

    Raises ``ValueError`` with the expected form when ``resource_id`` is not one.
    """
    match = _ACCOUNT_ID.fullmatch(resource_id.strip().rstrip("/"))
    if not match:
        raise ValueError(
            "SFTP_ACCOUNT_ID must be the SFTP storage account's resource id, "
            "/subscriptions/<subscription id>/resourceGroups/<group>"
            "/providers/Microsoft.Storage/storageAccounts/<name> "
            "(3 to 24 lowercase letters and digits; `az storage account show --query id` prints it); "
            f"got {resource_id[:300]!r}"
        )
    return AccountRef(match["subscription"], match["group"], match["account"].lower())


def firewall_rules(ranges: Iterable[str]) -> list[str]:
    """The IP rules that admit exactly ``ranges``: /32 as the bare address and /31 as its two
    addresses (Azure accepts neither prefix), duplicates once, in address order.

    Raises ``InvalidRequest`` naming every range Azure would refuse, or when more than
    ``MAX_IP_RULES`` rules would be needed.
    """
    problems: list[str] = []
    networks: set[ipaddress.IPv4Network] = set()
    for value in ranges:
        problem = firewall_problem(value)
        if problem:
            problems.append(f"{value[:64]!r} {problem}")
            continue
        network = ipaddress.IPv4Network(value.strip())
        if network.prefixlen == 31:
            networks.update(ipaddress.IPv4Network(address) for address in network)
        else:
            networks.add(network)
    if problems:
        raise InvalidRequest("the SFTP account's firewall cannot admit these ranges: " + "; ".join(problems))
    if len(networks) > MAX_IP_RULES:
        raise InvalidRequest(
            f"the SFTP account's firewall would need {len(networks)} IP rules; "
            f"Azure allows {MAX_IP_RULES} on one storage account (end or narrow some grants' ranges)"
        )
    return sorted((str(n.network_address) if n.prefixlen == 32 else str(n) for n in networks), key=_sort_key)


def _as_rule(value: str) -> str:
    """An IP rule as Azure returned it, in the form ``firewall_rules`` writes (for comparing)."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return value
    return str(network.network_address) if network.num_addresses == 1 else str(network)


class AzureSftpAccess:
    """``SftpAccess`` on an Azure storage account with SFTP enabled (hierarchical namespace).

    Each user gets one permission scope, read + list (``rl``) on its container in the blob
    service, with that container as its home directory, no shared key, and either key login (the
    recipient's OpenSSH public key) or a password only Azure generates. The firewall is the
    account's ``networkAcls.ipRules``; everything else in ``networkAcls`` is written back as read.
    """

    def __init__(self, client: StorageManagementClient, account: AccountRef, host: str, port: int = SFTP_PORT) -> None:
        self._client = client
        self._account = account
        self.account_name = account.name
        self.host = host
        self.port = port

    @classmethod
    def from_resource_id(
        cls,
        resource_id: str,
        credential: TokenCredential,
        host: str | None = None,
        port: int = SFTP_PORT,
        **client_options: Any,
    ) -> AzureSftpAccess:
        """The adapter for the account ``resource_id`` names (``SFTP_ACCOUNT_ID``).

        ``host`` defaults to the account's blob endpoint host, where Azure serves SFTP.
        ``client_options`` go to ``StorageManagementClient`` (``transport``, retry settings...).
        """
        account = parse_account_id(resource_id)
        client = StorageManagementClient(credential, account.subscription_id, **client_options)
        return cls(client, account, host or f"{account.name}.blob.core.windows.net", port)

    # Local users

    def ensure_user(self, user: SftpUser) -> None:
        _check_user_name(user.name)
        properties = LocalUserProperties(
            permission_scopes=[PermissionScope(permissions="rl", service="blob", resource_name=user.container)],
            home_directory=user.container,
            has_shared_key=False,
            allow_acl_authorization=False,
        )
        if user.ssh_public_key:
            properties.ssh_authorized_keys = [SshPublicKey(description="recipient", key=_key_line(user.ssh_public_key))]
            properties.has_ssh_key = True
            properties.has_ssh_password = False  # false removes any password an earlier call made
        else:
            properties.has_ssh_key = False  # false removes any key an earlier call set
            properties.has_ssh_password = True
        try:
            self._client.local_users.create_or_update(
                self._account.resource_group, self._account.name, user.name, LocalUser(properties=properties)
            )
        except AzureError as exc:
            raise self._error(exc, f"create the local user {user.name}") from exc
        logger.info(
            "SFTP local user %s on %s: read and list on %s, %s login",
            user.name,
            self._account.name,
            user.container,
            "key" if user.ssh_public_key else "password",
        )

    def new_password(self, name: str) -> str:
        _check_user_name(name)
        # Errors here are raised outside the handler, so that they carry no trace of the SDK's:
        # azure-core puts the body of an answer it could not read into its exception's text, and
        # this answer's body is the password (``from None`` would still keep it as __context__).
        failure: EgressError | None = None
        try:
            result = self._client.local_users.regenerate_password(
                self._account.resource_group, self._account.name, name
            )
        except ResourceNotFoundError as exc:
            failure = (
                self._error(exc, f"make a password for the local user {name}")
                if _misplaced(exc)
                else NotFound(f"the SFTP account {self._account.name} has no local user {name}")
            )
        except AzureError as exc:
            failure = self._error(exc, f"make a password for the local user {name}")
        if failure is not None:
            raise failure
        password = result.ssh_password
        if not password:
            raise StorageUnavailable(f"Azure made no password for the local user {name} on {self._account.name}")
        logger.info("new password made for SFTP local user %s on %s", name, self._account.name)
        return password

    def delete_user(self, name: str) -> None:
        _check_user_name(name)
        try:
            self._client.local_users.delete(self._account.resource_group, self._account.name, name)
        except ResourceNotFoundError as exc:
            if _misplaced(exc):
                raise self._error(exc, f"delete the local user {name}") from exc
            logger.info("SFTP local user %s was already gone from %s", name, self._account.name)
            return
        except AzureError as exc:
            raise self._error(exc, f"delete the local user {name}") from exc
        logger.info("SFTP local user %s deleted from %s", name, self._account.name)

    def user_names(self) -> list[str]:
        try:
            users = list(self._client.local_users.list(self._account.resource_group, self._account.name))
        except AzureError as exc:
            raise self._error(exc, "list the local users") from exc
        return sorted(user.name for user in users if user.name)

    # Firewall

    def allow_ranges(self, ranges: Sequence[str]) -> None:
        wanted = firewall_rules(ranges)
        rules = self._network_rules()
        current = {_as_rule(rule.ip_address_or_range) for rule in rules.ip_rules or []}
        if current == set(wanted):
            return
        rules.ip_rules = [IPRule(ip_address_or_range=value, action="Allow") for value in wanted]
        update = StorageAccountUpdateParameters(
            properties=StorageAccountPropertiesUpdateParameters(network_rule_set=rules)
        )
        try:
            self._client.storage_accounts.update(self._account.resource_group, self._account.name, update)
        except AzureError as exc:
            raise self._error(exc, "change the firewall's IP rules") from exc
        logger.info("SFTP account %s firewall: %d IP rules (was %d)", self._account.name, len(wanted), len(current))

    def allowed_ranges(self) -> list[str]:
        rules = self._network_rules()
        return sorted({_as_rule(rule.ip_address_or_range) for rule in rules.ip_rules or []}, key=_sort_key)

    def _network_rules(self) -> Any:
        try:
            account = self._client.storage_accounts.get_properties(self._account.resource_group, self._account.name)
        except AzureError as exc:
            raise self._error(exc, "read the account's firewall") from exc
        rules = account.network_rule_set
        if rules is None:
            raise StorageUnavailable(f"Azure returned no network rules for the SFTP account {self._account.name}")
        if str(getattr(rules.default_action, "value", rules.default_action)).lower() == "allow":
            logger.warning(
                "the firewall of SFTP account %s admits every address (defaultAction Allow): IP rules change nothing",
                self._account.name,
            )
        return rules

    def _error(self, exc: AzureError, doing: str) -> EgressError:
        """Our error for an Azure failure while trying to do ``doing``: what happened and what to do."""
        where = f"on the SFTP account {self._account.name}"
        if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
            return StorageUnavailable(
                f"could not {doing} {where}: the app's managed identity got no token for Azure Resource Manager "
                f"({type(exc).__name__})"
            )
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            code = exc.error.code if exc.error is not None and exc.error.code else type(exc).__name__
            status = exc.status_code
            if status == 403:
                return StorageUnavailable(
                    f"could not {doing} {where}: Azure refused the app's identity ({status} {code}); assign it the "
                    f"custom role '{ROLE_NAME}' on that account (infra/modules/roles.bicep). A new assignment "
                    "can take a few minutes to apply"
                )
            if status == 401:
                return StorageUnavailable(
                    f"could not {doing} {where}: Azure Resource Manager refused the app's token ({status} {code})"
                )
            if status == 404 and (code == "ResourceNotFound" or _misplaced(exc)):
                return StorageUnavailable(
                    f"could not {doing}: Azure has no account {self._account.name} in resource group "
                    f"{self._account.resource_group} ({code}); check SFTP_ACCOUNT_ID"
                )
            if status == 429:
                return StorageUnavailable(
                    f"could not {doing} {where}: Azure Resource Manager is throttling the app ({code}); it retries"
                )
            if status < 400:
                return StorageUnavailable(f"could not {doing} {where}: Azure's answer could not be read ({code})")
            detail = exc.error.message if exc.error is not None and exc.error.message else ""
            return StorageUnavailable(
                f"could not {doing} {where}: Azure answered {status} {code}" + (f": {detail[:300]}" if detail else "")
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return StorageUnavailable(
                f"could not {doing} {where}: Azure Resource Manager could not be reached ({type(exc).__name__})"
            )
        return StorageUnavailable(f"could not {doing} {where} ({type(exc).__name__})")


def _misplaced(exc: HttpResponseError) -> bool:
    """A 404 that says SFTP_ACCOUNT_ID points nowhere, not that a local user is missing."""
    return exc.error is not None and exc.error.code in ("ResourceGroupNotFound", "SubscriptionNotFound")


def _check_user_name(name: str) -> None:
    if not _USER_NAME.fullmatch(name):
        raise InvalidRequest(
            f"SFTP local user names are 3 to 64 lowercase letters and digits (Azure's rule); got {name[:80]!r}"
        )


def _key_line(public_key: str) -> str:
    """``<type> <base64>`` of one OpenSSH public key line, the form Azure stores (no comment)."""
    fields = public_key.split()
    if len(fields) < 2:
        raise InvalidRequest("an SSH public key is one OpenSSH line: '<type> <base64 key> [comment]'")
    return f"{fields[0]} {fields[1]}"


def _sort_key(value: str) -> tuple[int, int, str]:
    """Address order, as ``firewall_rules`` writes them (anything unparsable first)."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return (-1, 0, value)
    return (int(network.network_address), network.prefixlen, value)
