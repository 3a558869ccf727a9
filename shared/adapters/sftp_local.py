"""SFTP local users kept in an Azure Table: the local stand-in for Azure Blob SFTP's local users.

Azure keeps an SFTP account's local users and firewall in its management plane; here they live in
one table (``<prefix>sftpusers``) that the local SFTP endpoint (``devhost/sftp_server.py``) reads
on every login and every file operation:

    PartitionKey "user",     RowKey <name>    container, permissions ("rl"), ssh_public_key (or
                                              absent), password_hash (or absent)
    PartitionKey "firewall", RowKey "ranges"  ranges: the admitted IPv4 addresses and blocks, as JSON

A password exists only at the moment ``new_password`` makes it: the row holds a salted scrypt hash.
Writes are conditional on the ETag they read, so ``new_password`` and ``ensure_user`` racing each
other never lose a hash.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.errors import UNREACHABLE, ConcurrencyConflict, InvalidRequest, NotFound, StorageUnavailable
from shared.ports import SftpUser

logger = logging.getLogger(__name__)

USERS = "user"
FIREWALL = "firewall"
_RANGES_ROW = "ranges"
PERMISSIONS = "rl"  # read and list: the only scope the service grants
NAME = re.compile(r"[a-z0-9]{3,64}")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_MAX_KEY_CHARS = 16_384
_RETRIES = 5

# A password here is 256 random bits, which no hash cost makes stronger or weaker: the salted hash
# keeps a leaked table from being a list of passwords. scrypt at N=2^14 (about 70 ms, 16 MiB) is
# the usual interactive-login cost and keeps each login fast.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SALT_BYTES = 16
_HASH_BYTES = 32
_PASSWORD_BYTES = 32  # 43 URL-safe characters, like the long random passwords Azure generates

_T = TypeVar("_T")


@dataclass(frozen=True)
class LocalSftpUser:
    """What the local SFTP endpoint needs to know about a user (never the password or its hash)."""

    name: str
    container: str
    permissions: str
    ssh_public_key: str | None
    has_password: bool


def _call(what: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``call(*args, **kwargs)``, with transport and service failures as ``StorageUnavailable`` (ETag and
    existence errors are left to the caller, who retries on them)."""
    try:
        return call(*args, **kwargs)
    except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
        raise
    except ServiceRequestError as exc:
        raise StorageUnavailable(f"{what}: {UNREACHABLE}") from exc
    except AzureError as exc:
        raise StorageUnavailable(f"{what}: the SFTP users table did not answer ({type(exc).__name__})") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$<N>$<r>$<p>$<salt>$<hash>`` (base64): what the table keeps instead of a password."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_HASH_BYTES,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


@functools.cache
def _dummy_hash() -> str:
    """Checked against when a user has no password, so that a login takes as long whether the user
    exists or not (made on first use: importing this module costs no scrypt)."""
    return hash_password(secrets.token_urlsafe(_PASSWORD_BYTES))


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored``, compared in constant time; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        cost, block, parallel = int(n), int(r), int(p)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    # Bounds: a row changed by hand must not make a login cost gigabytes.
    if scheme != "scrypt" or not (2 <= cost <= 2**17 and 1 <= block <= 16 and 1 <= parallel <= 4) or not expected:
        return False
    actual = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=cost, r=block, p=parallel, maxmem=_SCRYPT_MAXMEM, dklen=len(expected)
    )
    return hmac.compare_digest(actual, expected)


def _check_user(user: SftpUser) -> None:
    if not NAME.fullmatch(user.name):
        raise InvalidRequest("an SFTP user name is 3 to 64 lowercase letters and digits")
    if not _CONTAINER.fullmatch(user.container):
        raise InvalidRequest(f"SFTP user {user.name}: {user.container[:70]!r} is not a container name")
    key = user.ssh_public_key
    if key is not None and (len(key) > _MAX_KEY_CHARS or "\n" in key.strip() or len(key.split()) < 2):
        raise InvalidRequest(f"SFTP user {user.name}: the SSH public key is not one OpenSSH public key line")


def _check_range(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise InvalidRequest(f"{value[:50]!r} is not an IPv4 address or CIDR block") from None
    if network.version != 4:
        raise InvalidRequest(f"{value[:50]!r}: the SFTP firewall admits IPv4 only")
    return value


class TableSftpAccess:
    """``SftpAccess`` over an Azure Table, for the local SFTP endpoint (Azurite serves the same API).

    ``account_name``, ``host`` and ``port`` say where clients connect: they log in as
    ``<account_name>.<user>`` at ``host:port``. The firewall ranges are recorded but the local
    endpoint does not enforce them (every local client comes from 127.0.0.1).
    """

    def __init__(self, table: TableClient, *, account_name: str, host: str, port: int) -> None:
        self._table = table
        self.account_name = account_name
        self.host = host
        self.port = port

    @property
    def table_name(self) -> str:
        return str(self._table.table_name)

    def ensure_table(self) -> None:
        try:
            _call(f"creating table {self.table_name}", self._table.create_table)
        except ResourceExistsError:
            pass  # it exists

    # -- users ---------------------------------------------------------------------------------

    def _row(self, name: str) -> dict[str, Any] | None:
        try:
            entity: dict[str, Any] = _call(f"reading SFTP user {name}", self._table.get_entity, USERS, name)
        except ResourceNotFoundError:
            return None
        return entity

    def ensure_user(self, user: SftpUser) -> None:
        """Create the user, or make an existing one match ``user`` (keeping its password)."""
        _check_user(user)
        key = " ".join(user.ssh_public_key.split()) if user.ssh_public_key else None
        what = f"writing SFTP user {user.name}"
        for _ in range(_RETRIES):
            existing = self._row(user.name)
            wanted: dict[str, Any] = {
                "PartitionKey": USERS,
                "RowKey": user.name,
                "container": user.container,
                "permissions": PERMISSIONS,
            }
            if key:
                wanted["ssh_public_key"] = key
            if existing is None:
                try:
                    _call(what, self._table.create_entity, wanted)
                except ResourceExistsError:
                    continue  # made meanwhile: read it and update it
                logger.info("SFTP user %s created (container %s)", user.name, user.container)
                return
            if existing.get("password_hash"):
                wanted["password_hash"] = existing["password_hash"]
            if {k: existing.get(k) for k in wanted} == wanted and existing.keys() <= wanted.keys():
                return  # already so
            etag = existing.metadata["etag"]  # type: ignore[attr-defined]
            try:
                _call(what, self._replace, wanted, etag)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # changed or deleted meanwhile: start again from what is there now
            logger.info("SFTP user %s updated (container %s)", user.name, user.container)
            return
        raise ConcurrencyConflict(f"{what}: it kept changing under us; try again")

    def _replace(self, entity: dict[str, Any], etag: str) -> None:
        self._table.update_entity(
            entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
        )

    def new_password(self, name: str) -> str:
        """A new long random password for ``name`` (the previous one stops working). Only its hash
        is kept; the caller must not log or store it."""
        what = f"setting a password for SFTP user {name}"
        for _ in range(_RETRIES):
            existing = self._row(name) if NAME.fullmatch(name) else None
            if existing is None:
                raise NotFound(f"SFTP user {name[:70]!r}: no such user")
            password = secrets.token_urlsafe(_PASSWORD_BYTES)
            updated = dict(existing)
            updated["password_hash"] = hash_password(password)
            etag = existing.metadata["etag"]  # type: ignore[attr-defined]
            try:
                _call(what, self._replace, updated, etag)
            except ResourceModifiedError:
                continue
            except ResourceNotFoundError:
                raise NotFound(f"SFTP user {name}: no such user (deleted meanwhile)") from None
            logger.info("SFTP user %s has a new password", name)
            return password
        raise ConcurrencyConflict(f"{what}: it kept changing under us; try again")

    def delete_user(self, name: str) -> None:
        """Remove ``name``; its logins, and any open session's next operation, fail from now on."""
        if not NAME.fullmatch(name):
            return  # no such user can exist
        try:
            _call(f"deleting SFTP user {name}", self._table.delete_entity, USERS, name)
        except ResourceNotFoundError:
            pass  # already gone
        logger.info("SFTP user %s deleted", name)

    def user_names(self) -> list[str]:
        def names() -> list[str]:
            rows = self._table.query_entities(f"PartitionKey eq '{USERS}'", select=["RowKey"])
            return sorted(str(row["RowKey"]) for row in rows)

        try:
            return _call("listing SFTP users", names)
        except ResourceNotFoundError:
            return []  # no table yet: no users

    def lookup(self, name: str) -> LocalSftpUser | None:
        """The user ``name`` as the SFTP endpoint needs it, or None when there is no such user."""
        if not NAME.fullmatch(name):
            return None
        row = self._row(name)
        if row is None:
            return None
        return LocalSftpUser(
            name=name,
            container=str(row.get("container", "")),
            permissions=str(row.get("permissions", "")),
            ssh_public_key=row.get("ssh_public_key") or None,
            has_password=bool(row.get("password_hash")),
        )

    def verify_password(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s current password. Takes the same time whether the user
        exists, has a password, or not (one scrypt every time)."""
        row = self._row(name) if NAME.fullmatch(name) else None
        stored = str(row.get("password_hash") or "") if row is not None else ""
        matched = password_matches(password, stored or _dummy_hash())
        return matched and bool(stored)

    # -- firewall ------------------------------------------------------------------------------

    def allow_ranges(self, ranges: Sequence[str]) -> None:
        """Record exactly these IPv4 addresses and blocks as admitted (not enforced locally)."""
        wanted = list(dict.fromkeys(_check_range(r) for r in ranges))
        entity = {"PartitionKey": FIREWALL, "RowKey": _RANGES_ROW, "ranges": json.dumps(wanted)}
        _call("writing the SFTP firewall ranges", self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)
        logger.info("SFTP firewall admits %d address range(s)", len(wanted))

    def allowed_ranges(self) -> list[str]:
        try:
            row = _call("reading the SFTP firewall ranges", self._table.get_entity, FIREWALL, _RANGES_ROW)
        except ResourceNotFoundError:
            return []
        return [str(r) for r in json.loads(row.get("ranges") or "[]")]
