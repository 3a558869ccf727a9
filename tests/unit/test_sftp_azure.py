"""The Azure SFTP adapter with the real management client against a fake Azure Resource Manager.

The fake is an azure-core transport: every request the SDK would send to management.azure.com is
checked here (method, path, api-version, JSON body) and answered as ARM answers, from a small state
of local users and the account's network rules. No network, no Azure.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse

from shared.adapters.sftp_azure import (
    ROLE_NAME,
    AzureSftpAccess,
    firewall_problem,
    firewall_rules,
    parse_account_id,
)
from shared.errors import InvalidRequest, NotFound, StorageUnavailable
from shared.ports import SftpAccess, SftpUser

SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
GROUP = "rg-egress-test"
ACCOUNT = "sftpk3x9"
ACCOUNT_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
)
ACCOUNT_PATH = ACCOUNT_ID
# azure-mgmt-storage 25.3.0's api-version (requirements.txt pins the SDK; a new pin changes it here).
API_VERSION = "2026-09-01"
PASSWORD = "Zq8-not-a-real-password-4f1c9e7a2b"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1kD0nP3Vt3yM9mCkq5cY8fJq0s2o1lD3w1y2K4c5Xa alice@example.org"
SUBNET = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
RESOURCE_RULE = {
    "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "resourceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Synapse/workspaces/w",
}


class FakeCredential:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake-arm-token", int(time.time()) + 3600)


@dataclass
class Seen:
    """One request as the SDK sent it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class ArmResponse(HttpResponse):
    """An ARM answer: a status and a JSON body (azure-core's documented way to write a transport)."""

    def __init__(self, request: HttpRequest, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._request = request
        self._status = status
        self._content = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        self._headers = {"Content-Type": "application/json", "x-ms-request-id": "fake", **(headers or {})}
        self._closed = False

    @property
    def request(self) -> HttpRequest:
        return self._request

    @property
    def status_code(self) -> int:
        return self._status

    @property
    def headers(self) -> Any:
        return self._headers

    @property
    def reason(self) -> str:
        return {200: "OK", 204: "No Content", 403: "Forbidden", 404: "Not Found"}.get(self._status, "Error")

    @property
    def content_type(self) -> str | None:
        return self._headers.get("Content-Type")

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def is_stream_consumed(self) -> bool:
        return True

    @property
    def encoding(self) -> str | None:
        return "utf-8"

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        return

    @property
    def url(self) -> str:
        return self._request.url

    @property
    def content(self) -> bytes:
        return self._content

    def text(self, encoding: str | None = None) -> str:
        return self._content.decode(encoding or "utf-8")

    def json(self) -> Any:
        return json.loads(self._content) if self._content else None

    def raise_for_status(self) -> None:
        return

    def read(self) -> bytes:
        return self._content

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._content

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._content

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ArmResponse:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


Reply = tuple[int, object]


class FakeArm(HttpTransport[HttpRequest, HttpResponse]):
    """The management plane of one storage account: its local users and its network rules."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.network_acls: dict[str, Any] = {
            "bypass": "AzureServices",
            "defaultAction": "Deny",
            "virtualNetworkRules": [{"id": SUBNET, "action": "Allow", "state": "Succeeded"}],
            "resourceAccessRules": [RESOURCE_RULE],
            "ipRules": [],
            "ipv6Rules": [],
        }
        self.delete_status = 200
        # (method, path suffix) -> reply, answered instead of the state (faults, refusals)
        self.overrides: dict[tuple[str, str], Reply] = {}
        self.fail_with: Exception | None = None
        self.page_size = 0  # list local users in pages of this many (0: one page)

    # the transport

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if self.fail_with is not None:
            raise self.fail_with
        url = urlsplit(request.url)
        content = request.content
        body = json.loads(content) if content else None
        seen = Seen(request.method, url.path, parse_qs(url.query), dict(request.headers.items()), body)
        self.seen.append(seen)
        assert url.scheme == "https" and url.netloc == "management.azure.com", request.url
        assert seen.headers["Authorization"] == "Bearer fake-arm-token"
        assert seen.query["api-version"] == [API_VERSION], seen.query
        status, payload = self._answer(seen)
        return ArmResponse(request, status, payload)

    def open(self) -> None:
        return

    def close(self) -> None:
        return

    def __enter__(self) -> FakeArm:
        return self

    def __exit__(self, *args: object) -> None:
        return

    # ARM

    def _answer(self, seen: Seen) -> Reply:
        assert seen.path.startswith(ACCOUNT_PATH), f"outside the SFTP account: {seen.path}"
        rest = seen.path[len(ACCOUNT_PATH) :]
        for (method, suffix), reply in self.overrides.items():
            if method == seen.method and rest.endswith(suffix):
                return reply
        if rest == "" and seen.method == "GET":
            return 200, self._account()
        if rest == "" and seen.method == "PATCH":
            assert set(seen.body) == {"properties"} and set(seen.body["properties"]) == {"networkAcls"}, seen.body
            self.network_acls = seen.body["properties"]["networkAcls"]
            return 200, self._account()
        if rest == "/localUsers" and seen.method == "GET":
            return 200, self._user_page(seen)
        parts = rest.split("/")
        assert parts[1] == "localUsers", rest
        name = parts[2]
        if len(parts) == 3 and seen.method == "PUT":
            self.users[name] = seen.body["properties"]
            return 200, self._user(name)
        if len(parts) == 3 and seen.method == "DELETE":
            if self.users.pop(name, None) is None:
                return 204, None
            return self.delete_status, None
        if parts[3:] == ["regeneratePassword"] and seen.method == "POST":
            if name not in self.users:
                return 404, _arm_error("ResourceNotFound", f"The local user '{name}' was not found.")
            return 200, {"sshPassword": PASSWORD}
        raise AssertionError(f"unexpected {seen.method} {seen.path}")

    def _account(self) -> dict[str, Any]:
        return {
            "id": ACCOUNT_ID,
            "name": ACCOUNT,
            "type": "Microsoft.Storage/storageAccounts",
            "location": "uksouth",
            "kind": "StorageV2",
            "sku": {"name": "Standard_ZRS", "tier": "Standard"},
            "properties": {
                "isHnsEnabled": True,
                "isSftpEnabled": True,
                "isLocalUserEnabled": True,
                "allowSharedKeyAccess": False,
                "publicNetworkAccess": "Enabled",
                "provisioningState": "Succeeded",
                "networkAcls": self.network_acls,
                "primaryEndpoints": {"blob": f"https://{ACCOUNT}.blob.core.windows.net/"},
            },
        }

    def _user(self, name: str) -> dict[str, Any]:
        # ARM answers with what was set, plus what the service generates; never a password.
        properties = {k: v for k, v in self.users[name].items() if k != "sshPassword"}
        properties |= {"sid": "S-1-2-0-1234567890-123456789-1234567890-1000", "userId": 1000}
        return {
            "id": f"{ACCOUNT_ID}/localUsers/{name}",
            "name": name,
            "type": "Microsoft.Storage/storageAccounts/localUsers",
            "properties": properties,
        }

    def _user_page(self, seen: Seen) -> dict[str, Any]:
        names = sorted(self.users)
        if not self.page_size:
            return {"value": [self._user(n) for n in names]}
        start = int(seen.query.get("skip", ["0"])[0])
        page: dict[str, Any] = {"value": [self._user(n) for n in names[start : start + self.page_size]]}
        if start + self.page_size < len(names):
            page["nextLink"] = (
                f"https://management.azure.com{ACCOUNT_PATH}/localUsers?api-version={API_VERSION}"
                f"&skip={start + self.page_size}"
            )
        return page

    # what tests look at

    def writes(self) -> list[Seen]:
        return [s for s in self.seen if s.method != "GET"]


def _arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@pytest.fixture
def arm() -> FakeArm:
    return FakeArm()


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
def sftp(arm: FakeArm, credential: FakeCredential) -> AzureSftpAccess:
    # No retries: a fault is answered at once, so the tests see the adapter's mapping directly.
    return AzureSftpAccess.from_resource_id(ACCOUNT_ID, credential, transport=arm, retry_total=0)


def user_path(name: str) -> str:
    return f"{ACCOUNT_PATH}/localUsers/{name}"


# Construction


def test_it_is_an_sftp_access_for_the_account_the_resource_id_names(
    sftp: AzureSftpAccess, arm: FakeArm, credential: FakeCredential
) -> None:
    access: SftpAccess = sftp
    assert (access.account_name, access.host, access.port) == (ACCOUNT, f"{ACCOUNT}.blob.core.windows.net", 22)
    assert sftp.user_names() == []
    assert credential.scopes == ["https://management.azure.com/.default"]
    named = AzureSftpAccess.from_resource_id(ACCOUNT_ID, credential, host="sftp.dsh.example", transport=arm)
    assert named.host == "sftp.dsh.example"


@pytest.mark.parametrize(
    "resource_id",
    [
        "",
        ACCOUNT,
        ACCOUNT_ID.replace(SUBSCRIPTION, "not-a-subscription"),
        ACCOUNT_ID.replace("Microsoft.Storage", "Microsoft.KeyVault"),
        ACCOUNT_ID.replace(ACCOUNT, "Has-Dashes"),
        ACCOUNT_ID.replace(ACCOUNT, "ab"),
        ACCOUNT_ID + "/blobServices/default",
        f"https://management.azure.com{ACCOUNT_ID}",
    ],
)
def test_a_wrong_resource_id_is_refused_with_the_form_expected(resource_id: str) -> None:
    with pytest.raises(ValueError, match=r"SFTP_ACCOUNT_ID must be .*/providers/Microsoft\.Storage/storageAccounts/"):
        parse_account_id(resource_id)


def test_a_resource_id_is_read_whatever_the_case_of_its_keywords() -> None:
    account = parse_account_id(ACCOUNT_ID.lower().replace("resourcegroups", "RESOURCEGROUPS") + "/")
    assert (account.subscription_id, account.resource_group, account.name) == (SUBSCRIPTION, GROUP, ACCOUNT)


# Local users


def test_a_password_user_reads_and_lists_its_one_container_from_home(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1"))

    (put,) = arm.writes()
    assert (put.method, put.path) == ("PUT", user_path("ug1a2b3c"))
    assert put.headers["Content-Type"] == "application/json"
    assert put.body == {
        "properties": {
            "permissionScopes": [{"permissions": "rl", "service": "blob", "resourceName": "egress-pkg-1"}],
            "homeDirectory": "egress-pkg-1",
            "hasSharedKey": False,
            "allowAclAuthorization": False,
            "hasSshKey": False,
            "hasSshPassword": True,
        }
    }
    assert sftp.user_names() == ["ug1a2b3c"]


def test_a_key_user_logs_in_with_its_key_only(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1", ssh_public_key=ED25519))

    (put,) = arm.writes()
    properties = put.body["properties"]
    assert properties["hasSshKey"] is True and properties["hasSshPassword"] is False
    assert properties["hasSharedKey"] is False
    # Azure stores '<type> <base64>'; the comment (often an email address) is not sent.
    assert properties["sshAuthorizedKeys"] == [{"description": "recipient", "key": " ".join(ED25519.split()[:2])}]
    assert properties["permissionScopes"] == [{"permissions": "rl", "service": "blob", "resourceName": "egress-pkg-1"}]
    assert properties["homeDirectory"] == "egress-pkg-1"


def test_ensuring_a_user_again_sends_the_same_definition(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    user = SftpUser("ug1a2b3c", "egress-pkg-1")
    sftp.ensure_user(user)
    sftp.ensure_user(user)
    first, second = arm.writes()
    assert first.body == second.body and first.path == second.path
    assert sftp.user_names() == ["ug1a2b3c"]


@pytest.mark.parametrize("name", ["ab", "UPPER123", "with-dash", "x" * 65, "u.dot"])
def test_a_name_azure_would_refuse_is_refused_before_any_call(sftp: AzureSftpAccess, arm: FakeArm, name: str) -> None:
    with pytest.raises(InvalidRequest, match="3 to 64 lowercase letters and digits"):
        sftp.ensure_user(SftpUser(name, "egress-pkg-1"))
    assert arm.seen == []


def test_new_password_is_azures_and_is_never_logged(
    sftp: AzureSftpAccess, arm: FakeArm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1"))

    assert sftp.new_password("ug1a2b3c") == PASSWORD

    post = arm.seen[-1]
    assert (post.method, post.path, post.body) == ("POST", user_path("ug1a2b3c") + "/regeneratePassword", None)
    assert caplog.records, "the SDK and the adapter log each call"
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert PASSWORD not in repr(record.args) and PASSWORD not in repr(record.__dict__)


def test_a_password_in_a_broken_answer_reaches_no_exception_text(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1"))
    arm.overrides[("POST", "/regeneratePassword")] = (200, f'{{"sshPassword": "{PASSWORD}"'.encode())

    with pytest.raises(StorageUnavailable) as caught:
        sftp.new_password("ug1a2b3c")

    shown = "".join(traceback.format_exception(caught.value))
    assert "make a password for the local user ug1a2b3c" in shown
    assert PASSWORD not in shown
    # Nothing the SDK raised is kept on the error, not even where `from None` would hide it.
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert PASSWORD not in repr(vars(caught.value))


def test_a_password_for_a_user_that_is_gone_is_not_found(sftp: AzureSftpAccess) -> None:
    with pytest.raises(NotFound, match=f"{ACCOUNT} has no local user ugone"):
        sftp.new_password("ugone")


@pytest.mark.parametrize("status", [200, 204])
def test_delete_ends_the_user(sftp: AzureSftpAccess, arm: FakeArm, status: int) -> None:
    arm.delete_status = status
    sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1"))

    sftp.delete_user("ug1a2b3c")

    delete = arm.seen[-1]
    assert (delete.method, delete.path, delete.body) == ("DELETE", user_path("ug1a2b3c"), None)
    assert sftp.user_names() == []


def test_deleting_a_user_that_is_gone_is_fine_whether_arm_says_204_or_404(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    sftp.delete_user("ugone")  # the fake answers 204, as ARM does for most absent children
    arm.overrides[("DELETE", "/localUsers/ugone")] = (404, _arm_error("ResourceNotFound", "not found"))
    sftp.delete_user("ugone")
    assert [s.method for s in arm.seen] == ["DELETE", "DELETE"]


def test_users_are_listed_across_pages(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    names = [f"u{i:03d}" for i in range(7)]
    for name in names:
        sftp.ensure_user(SftpUser(name, "egress-pkg-1"))
    arm.page_size = 3

    assert sftp.user_names() == names
    lists = [s for s in arm.seen if s.method == "GET"]
    assert [s.path for s in lists] == [f"{ACCOUNT_PATH}/localUsers"] * 3


# Firewall


def test_allow_ranges_writes_exactly_the_ip_rules_and_keeps_the_rest(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.network_acls["ipRules"] = [{"value": "51.140.7.0/24", "action": "Allow"}]

    sftp.allow_ranges(["81.2.69.160/28", "51.145.3.7/32", "81.2.69.160/28", "20.50.1.8/31"])

    get, patch = arm.seen
    assert (get.method, get.path) == ("GET", ACCOUNT_PATH)
    assert (patch.method, patch.path) == ("PATCH", ACCOUNT_PATH)
    assert patch.body == {
        "properties": {
            "networkAcls": {
                "bypass": "AzureServices",
                "defaultAction": "Deny",
                "virtualNetworkRules": [{"id": SUBNET, "action": "Allow", "state": "Succeeded"}],
                "resourceAccessRules": [RESOURCE_RULE],
                "ipRules": [
                    {"value": "20.50.1.8", "action": "Allow"},
                    {"value": "20.50.1.9", "action": "Allow"},
                    {"value": "51.145.3.7", "action": "Allow"},
                    {"value": "81.2.69.160/28", "action": "Allow"},
                ],
                "ipv6Rules": [],
            }
        }
    }
    assert sftp.allowed_ranges() == ["20.50.1.8", "20.50.1.9", "51.145.3.7", "81.2.69.160/28"]


def test_allow_ranges_changes_nothing_when_the_rules_are_already_those(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.network_acls["ipRules"] = [{"value": "81.2.69.160/28", "action": "Allow"}, {"value": "51.145.3.7"}]
    sftp.allow_ranges(["51.145.3.7/32", "81.2.69.160/28"])
    assert arm.writes() == []


def test_allow_no_ranges_empties_the_ip_rules(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.network_acls["ipRules"] = [{"value": "81.2.69.160/28", "action": "Allow"}]
    sftp.allow_ranges([])
    (patch,) = arm.writes()
    assert patch.body["properties"]["networkAcls"]["ipRules"] == []
    assert patch.body["properties"]["networkAcls"]["defaultAction"] == "Deny"
    assert sftp.allowed_ranges() == []


def test_an_open_firewall_is_pointed_out(sftp: AzureSftpAccess, arm: FakeArm, caplog: pytest.LogCaptureFixture) -> None:
    arm.network_acls["defaultAction"] = "Allow"
    with caplog.at_level(logging.WARNING, logger="shared.adapters.sftp_azure"):
        sftp.allow_ranges(["81.2.69.160/28"])
    assert "admits every address (defaultAction Allow)" in caplog.text
    # it is the operator's setting: the adapter leaves it as it is
    assert arm.writes()[0].body["properties"]["networkAcls"]["defaultAction"] == "Allow"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10.1.2.0/24", "private (RFC 1918)"),
        ("172.20.0.1", "private (RFC 1918)"),
        ("192.168.1.1/32", "private (RFC 1918)"),
        ("8.0.0.0/6", "private (RFC 1918)"),  # a public-looking block that holds 10.0.0.0/8
        ("127.0.0.1", "loopback"),
        ("169.254.1.0/24", "link-local"),
        ("100.64.0.0/16", "carrier-grade NAT"),
        ("198.18.0.0/24", "benchmarking"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0/0", "private (RFC 1918)"),
        ("2001:db8::/64", "IPv6"),
        ("81.2.69.161/28", "host bits"),
        ("not an address", "not an IPv4 address"),
    ],
)
def test_ranges_azure_refuses_are_refused_clearly_before_any_call(
    sftp: AzureSftpAccess, arm: FakeArm, value: str, reason: str
) -> None:
    problem = firewall_problem(value)
    assert problem is not None and reason in problem
    with pytest.raises(InvalidRequest, match="firewall cannot admit") as caught:
        sftp.allow_ranges(["81.2.69.160/28", value])
    assert value in caught.value.message and reason in caught.value.message
    assert arm.seen == []


def test_documentation_ranges_stay_allowed_as_the_contract_says_so_that_samples_work() -> None:
    assert firewall_rules(["198.51.100.0/24", "203.0.113.7/32", "192.0.2.8/31"]) == [
        "192.0.2.8",
        "192.0.2.9",
        "198.51.100.0/24",
        "203.0.113.7",
    ]


def test_every_refused_range_is_named_at_once() -> None:
    with pytest.raises(InvalidRequest) as caught:
        firewall_rules(["10.0.0.1", "81.2.69.160/28", "127.0.0.1"])
    assert "'10.0.0.1'" in caught.value.message and "'127.0.0.1'" in caught.value.message


def test_more_ip_rules_than_azure_allows_are_refused() -> None:
    addresses = [f"81.2.{i // 256}.{i % 256}" for i in range(401)]
    assert len(firewall_rules(addresses[:400])) == 400
    with pytest.raises(InvalidRequest, match="401 IP rules; Azure allows 400"):
        firewall_rules(addresses)
    # a /31 is two rules
    with pytest.raises(InvalidRequest, match="401 IP rules"):
        firewall_rules([*addresses[:399], "20.50.1.8/31"])


# Failures


def test_a_refusal_names_the_role_the_identity_needs(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    message = (
        "The client 'f0e1' with object id 'f0e1' does not have authorization to perform action "
        "'Microsoft.Storage/storageAccounts/localUsers/write' over scope '...' or the scope is invalid."
    )
    arm.overrides[("PUT", "/localUsers/ug1a2b3c")] = (403, _arm_error("AuthorizationFailed", message))

    with pytest.raises(StorageUnavailable) as caught:
        sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1"))

    text = caught.value.message
    assert f"custom role '{ROLE_NAME}'" in text and "AuthorizationFailed" in text
    assert ACCOUNT in text and "create the local user ug1a2b3c" in text
    assert caught.value.http_status == 503


def test_a_refused_firewall_change_names_the_role_too(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.overrides[("PATCH", "")] = (403, _arm_error("AuthorizationFailed", "no storageAccounts/write"))
    with pytest.raises(StorageUnavailable, match=f"'{ROLE_NAME}'.*roles.bicep"):
        sftp.allow_ranges(["81.2.69.160/28"])


def test_an_account_that_is_not_there_points_at_the_setting(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.overrides[("GET", "")] = (404, _arm_error("ResourceNotFound", "The Resource was not found."))
    with pytest.raises(StorageUnavailable, match="check SFTP_ACCOUNT_ID"):
        sftp.allowed_ranges()
    arm.overrides[("DELETE", "/localUsers/ugone")] = (404, _arm_error("ResourceGroupNotFound", "no group"))
    with pytest.raises(StorageUnavailable, match="check SFTP_ACCOUNT_ID"):
        sftp.delete_user("ugone")


def test_an_arm_error_is_reported_with_its_code(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.overrides[("PATCH", "")] = (
        400,
        _arm_error("NetworkAclsValidationFailure", "Validation of network acls failure"),
    )
    with pytest.raises(StorageUnavailable, match="400 NetworkAclsValidationFailure: Validation of network acls"):
        sftp.allow_ranges(["81.2.69.160/28"])


def test_a_transport_failure_is_storage_unavailable(sftp: AzureSftpAccess, arm: FakeArm) -> None:
    arm.fail_with = ServiceRequestError("connection refused")
    for call in (
        lambda: sftp.ensure_user(SftpUser("ug1a2b3c", "egress-pkg-1")),
        lambda: sftp.new_password("ug1a2b3c"),
        lambda: sftp.delete_user("ug1a2b3c"),
        sftp.user_names,
        lambda: sftp.allow_ranges(["81.2.69.160/28"]),
        sftp.allowed_ranges,
    ):
        with pytest.raises(StorageUnavailable, match="Azure Resource Manager could not be reached"):
            call()


def test_no_token_is_storage_unavailable(arm: FakeArm) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class NoToken:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")

    sftp = AzureSftpAccess.from_resource_id(ACCOUNT_ID, NoToken(), transport=arm, retry_total=0)
    with pytest.raises(StorageUnavailable, match="managed identity got no token"):
        sftp.user_names()
    assert arm.seen == []
