"""A real SFTP endpoint over Azurite: the local stand-in for Azure Blob SFTP (DESIGN section 4a).

    python -m devhost.sftp_server --port 2222 [--host 127.0.0.1] [--host-key PATH] [--settings FILE]

Clients log in as ``<account>.<user>``, as with Azure: the account is the SFTP account's name
(``SFTP_STORAGE``, else ``DELIVERY_STORAGE``, else ``EGRESS_STORAGE``) and the users are the ones
the service keeps in the table ``<REGISTRY_TABLE_PREFIX>sftpusers`` (``TableSftpAccess``), read
again at every login and every open, list and stat: a deleted user cannot log in, and a session
that is already open fails at its next operation, and a download under way stops once what was
already read ahead (at most 16 MiB) is sent.

Each user sees their own container as ``/`` and nothing else (``..`` stops at ``/``), read-only:
list, stat and read; every write, remove, rename, mkdir, rmdir, setstat and link is answered with
permission denied. Blob names are shown as folders at each ``/``. Reads stream the blob in chunks
of ``CHUNK_BYTES``, a few ahead of the client, so memory per open file stays bounded.

The host key is made once and kept in ``.local/sftp-host-key`` (or ``--host-key``). The firewall
ranges the service records are not enforced here: every local client comes from 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh
from asyncssh.constants import (
    ACE4_APPEND_DATA,
    ACE4_WRITE_ATTRIBUTES,
    ACE4_WRITE_DATA,
    FXF_ACCESS_DISPOSITION,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_OPEN_EXISTING,
    FXF_TRUNC,
    FXF_WRITE,
)

if TYPE_CHECKING:  # imported in a thread at start, so the port opens before the SDKs are loaded
    from azure.storage.blob import BlobServiceClient

    from shared.adapters.sftp_local import LocalSftpUser, TableSftpAccess

logger = logging.getLogger("devhost.sftp")

CHUNK_BYTES = 4 * 1024 * 1024  # one blob range request
READ_AHEAD = 3  # chunks fetched ahead of the client: at most (1 + READ_AHEAD) chunks per open file
_LIST_BATCH = 500
_DIR_MODE = stat.S_IFDIR | 0o555
_FILE_MODE = stat.S_IFREG | 0o444
_WRITE_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL
_WRITE_ACCESS = ACE4_WRITE_DATA | ACE4_APPEND_DATA | ACE4_WRITE_ATTRIBUTES
_T = TypeVar("_T")


def default_host_key_path() -> Path:
    from devhost.stack import LOCAL  # honours EGRESS_LOCAL_DIR, as the rest of the stack does

    return LOCAL / "sftp-host-key"


def host_key(path: Path) -> asyncssh.SSHKey:
    """The server's ed25519 host key: read from ``path``, or made there once (mode 600)."""
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="egress local sftp")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it meanwhile
        return asyncssh.read_private_key(path)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    logger.info("made a new host key in %s", path)
    return key


def blob_path(path: bytes) -> str:
    """The blob name (or folder prefix, without its ``/``) a client's path means inside the user's
    container: ``.`` and empty segments dropped, ``..`` resolved and stopped at the root."""
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        raise asyncssh.SFTPNoSuchFile("no such file") from None
    parts: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return "/".join(parts)


def _dir_attrs() -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs(permissions=_DIR_MODE, size=0, uid=0, gid=0, nlink=1)


def _file_attrs(size: int, modified: float | None) -> asyncssh.SFTPAttrs:
    mtime = int(modified) if modified is not None else None
    return asyncssh.SFTPAttrs(permissions=_FILE_MODE, size=size, uid=0, gid=0, nlink=1, atime=mtime, mtime=mtime)


def _timestamp(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass
class Backend:
    """What every session reads: the users table and the SFTP account's blobs."""

    users: TableSftpAccess
    blobs: BlobServiceClient

    @property
    def account(self) -> str:
        return self.users.account_name

    def user_name(self, login: str) -> str | None:
        """``user`` out of ``<account>.<user>``, or None when the login names another account."""
        account, dot, user = login.partition(".")
        return user if dot and account == self.account else None


def build_backend(settings_file: Path | None, port: int) -> Backend:
    """Read the settings (``local.settings.json``, where the environment wins) and make the clients."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from devhost.settings_file import load_local_settings
    from shared.adapters.blob_store import client_options
    from shared.adapters.sftp_local import TableSftpAccess
    from shared.settings import Settings

    if settings_file is not None and not settings_file.exists():
        raise FileNotFoundError(f"no settings file {settings_file}")
    try:
        load_local_settings(settings_file)
    except FileNotFoundError:
        pass  # no local.settings.json: the environment alone
    settings = Settings()
    # SFTP_STORAGE: the SFTP account; unset = the delivery account, and that unset = EGRESS_STORAGE.
    connection = settings.sftp_storage or settings.delivery_storage or settings.egress_storage
    blobs = BlobServiceClient.from_connection_string(connection, **client_options())
    tables = TableServiceClient.from_connection_string(settings.egress_storage)
    users = TableSftpAccess(
        tables.get_table_client(f"{settings.registry_table_prefix}sftpusers"),
        account_name=str(blobs.account_name),
        host=settings.sftp_host,
        port=port,
    )
    # No storage call here: the service makes the table, and a start never waits on Azurite (until
    # the table exists, every login is refused as an unknown user).
    return Backend(users=users, blobs=blobs)


class App:
    """State shared by every connection: the backend (ready once its thread has built it) and the
    open connections, closed on shutdown."""

    def __init__(self, backend: asyncio.Future[Backend]) -> None:
        self._backend = backend
        self.connections: set[asyncssh.SSHServerConnection] = set()

    async def backend(self) -> Backend:
        return await asyncio.shield(self._backend)


def _why(exc: BaseException) -> str:
    """An error for the log: our own message (never a secret), else only its type (an SDK message
    can carry a request's address)."""
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) and type(exc).__module__.startswith("shared.") else type(exc).__name__


def _start_problem(exc: BaseException) -> str:
    """Why the server could not start, for a person: a setting's name and rule, never its value."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        return "; ".join(f"setting {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    if isinstance(exc, FileNotFoundError | ValueError):
        return str(exc)  # a missing settings file, a malformed connection string (the SDK names no key)
    return _why(exc)


async def _in_thread(call: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)


class Gate(asyncssh.SSHServer):
    """One connection's login: ``<account>.<user>`` with the user's password or public key, checked
    against the table on every attempt. Logs logins and refusals, never a password."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"
        self._login = ""
        self._method = ""
        self._logged_in = False
        self._tried: list[str] = []
        self._told = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        self._app.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._app.connections.discard(self._conn)
        if not self._logged_in and self._tried and not self._told:
            self._refused(self._login, f"tried {', '.join(self._tried)}")

    def _refused(self, login: str, why: str) -> None:
        logger.info("login refused: %r from %s (%s)", login, self._peer, why)
        self._told = True

    def begin_auth(self, username: str) -> bool:
        self._login = username
        return True  # every login needs a password or a key

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        self._tried.append("password")
        try:
            backend = await self._app.backend()
            name = backend.user_name(username)
            # An unknown account or user costs the same scrypt as a known one (verify_password).
            ok = await _in_thread(backend.users.verify_password, name or "", password)
        except Exception as exc:
            self._refused(username, f"the users table did not answer: {_why(exc)}")
            return False
        if ok:
            self._method = "password"
        else:
            self._refused(username, "wrong password or no such user")
        return ok

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if "public key" not in self._tried:
            self._tried.append("public key")
        try:
            backend = await self._app.backend()
            name = backend.user_name(username)
            user = await _in_thread(backend.users.lookup, name) if name else None
        except Exception as exc:
            self._refused(username, f"the users table did not answer: {_why(exc)}")
            return False
        if user is None or not user.ssh_public_key:
            return False
        try:
            allowed = asyncssh.import_public_key(user.ssh_public_key)
        except (asyncssh.KeyImportError, ValueError):
            logger.warning("SFTP user %s has a public key that cannot be read; key login refused", user.name)
            return False
        if allowed.public_data != key.public_data:
            return False
        self._method = "public key"  # asyncssh checks the signature after this, before auth completes
        return True

    def auth_completed(self) -> None:
        self._logged_in = True
        logger.info("login: %s from %s (%s)", self._login, self._peer, self._method)


class BlobReader:
    """An open blob: reads are served from chunks fetched ahead in threads, each fetch re-checking
    that the user still exists and reading the version that was opened (its ETag)."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, attrs: asyncssh.SFTPAttrs) -> None:
        self._fetch = fetch
        self.size = size
        self.attrs = attrs
        self._chunks: dict[int, asyncio.Future[bytes]] = {}

    @property
    def held(self) -> int:
        """Chunks fetched or being fetched: at most ``1 + READ_AHEAD``."""
        return len(self._chunks)

    def _schedule(self, index: int) -> None:
        start = index * CHUNK_BYTES
        if start >= self.size or index in self._chunks:
            return
        future = asyncio.ensure_future(_in_thread(self._fetch, start, min(CHUNK_BYTES, self.size - start)))
        future.add_done_callback(_consume)
        self._chunks[index] = future

    async def _chunk(self, index: int) -> bytes:
        for old in [i for i in self._chunks if i < index or i > index + READ_AHEAD]:
            self._chunks.pop(old).cancel()
        for ahead in range(index, index + READ_AHEAD + 1):
            self._schedule(ahead)
        try:
            return await self._chunks[index]
        except BaseException:
            self._chunks.pop(index, None)  # the next read tries again
            raise

    async def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        pieces: list[bytes] = []
        while size > 0:
            index, start = divmod(offset, CHUNK_BYTES)
            piece = (await self._chunk(index))[start : start + size]
            if not piece:
                break
            pieces.append(piece)
            offset += len(piece)
            size -= len(piece)
        return b"".join(pieces)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """For asyncssh's sparse-ranges extension: a blob is all data, no holes."""
        if whence == getattr(os, "SEEK_DATA", -1):
            if offset >= self.size:
                raise OSError(6, "no data past the end")  # ENXIO, which asyncssh reads as the end
            return offset
        if whence == getattr(os, "SEEK_HOLE", -2):
            return self.size
        raise OSError(22, "cannot seek a blob")

    def close(self) -> None:
        for future in self._chunks.values():
            future.cancel()
        self._chunks.clear()


def _consume(future: asyncio.Future[bytes]) -> None:
    """Retrieve a dropped read-ahead's error, so that asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()


class ReadOnlySftp(asyncssh.SFTPServer):
    """One SFTP session: the user's container as ``/``, read and list only."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], app: App) -> None:
        super().__init__(chan)
        self._app = app
        login = str(chan.get_extra_info("username"))
        self._login = login
        self._name = login.partition(".")[2]

    # -- who and where ---------------------------------------------------------------------------

    async def _user(self, needs: str) -> tuple[Backend, LocalSftpUser]:
        """The user as the table has it now; refused when deleted or without the permission."""
        backend = await self._app.backend()
        user = await self._storage("reading the user", backend.users.lookup, self._name)
        if user is None:
            logger.info("%s: refused, the user no longer exists", self._login)
            raise asyncssh.SFTPPermissionDenied("access ended: this user no longer exists")
        if needs not in user.permissions:
            raise asyncssh.SFTPPermissionDenied("permission denied")
        return backend, user

    async def _storage(self, what: str, call: Callable[..., _T], *args: Any) -> _T:
        try:
            return await _in_thread(call, *args)
        except Exception as exc:
            raise self._sftp_error(what, exc) from None

    def _sftp_error(self, what: str, exc: Exception) -> Exception:
        """What to answer the client for a failure of the table or the blobs (never a trace)."""
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        from shared.errors import EgressError

        if isinstance(exc, asyncssh.SFTPError):
            return exc
        if isinstance(exc, ResourceNotFoundError):
            return asyncssh.SFTPNoSuchFile("no such file")
        if isinstance(exc, ResourceModifiedError):
            return asyncssh.SFTPFailure("the file changed while it was read; read it again")
        if isinstance(exc, AzureError | EgressError):
            logger.warning("%s: %s: storage did not answer (%s)", self._login, what, type(exc).__name__)
            return asyncssh.SFTPFailure("storage is unavailable; try again")
        logger.exception("%s: %s failed", self._login, what, exc_info=exc)
        return asyncssh.SFTPFailure("the server failed; try again")

    def map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("permission denied")  # nothing here reaches a local file

    def format_user(self, uid: int | None) -> str:
        return self._name

    def format_group(self, gid: int | None) -> str:
        return self._name

    def realpath(self, path: bytes) -> bytes:
        return ("/" + blob_path(path)).encode("utf-8")

    # -- read ------------------------------------------------------------------------------------

    async def _attrs(self, backend: Backend, container: str, name: str) -> asyncssh.SFTPAttrs:
        if not name:
            return _dir_attrs()
        client = backend.blobs.get_container_client(container)
        try:
            props = await self._storage("stat", client.get_blob_client(name).get_blob_properties)
        except asyncssh.SFTPNoSuchFile:
            pass
        else:
            return _file_attrs(int(props.size), _timestamp(props.last_modified))
        first = await self._storage("stat", _first_blob, client, name + "/")
        if first is None:
            raise asyncssh.SFTPNoSuchFile("no such file")
        return _dir_attrs()

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        backend, user = await self._user("l")
        return await self._attrs(backend, user.container, blob_path(path))

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return await self.stat(path)  # no links here

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        if not isinstance(file_obj, BlobReader):
            raise asyncssh.SFTPInvalidHandle("invalid handle")
        return file_obj.attrs

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        backend, user = await self._user("l")
        name = blob_path(path)
        attrs = await self._attrs(backend, user.container, name)
        if not stat.S_ISDIR(attrs.permissions or 0):
            raise asyncssh.SFTPNotADirectory("not a folder")
        prefix = f"{name}/" if name else ""
        client = backend.blobs.get_container_client(user.container)
        entries = await self._storage("listing", _walk, client, prefix)
        while True:
            batch = await self._storage("listing", _take, entries, _LIST_BATCH)
            if not batch:
                return
            for item in batch:
                entry = item.name[len(prefix) :]
                folder = entry.endswith("/")
                entry = entry.rstrip("/")
                if not entry or entry in (".", "..") or "/" in entry:
                    continue  # a name no path can reach (an empty or dot segment)
                attrs = _dir_attrs() if folder else _file_attrs(int(item.size), _timestamp(item.last_modified))
                sftp_name = asyncssh.SFTPName(entry.encode("utf-8"), attrs=attrs)
                self.format_longname(sftp_name)
                yield sftp_name

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> BlobReader:
        if pflags & _WRITE_FLAGS:
            self._refuse("open for writing", path)
        return await self._open_read(path)

    async def open56(self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs) -> BlobReader:
        if desired_access & _WRITE_ACCESS or flags & FXF_ACCESS_DISPOSITION != FXF_OPEN_EXISTING:
            self._refuse("open for writing", path)
        return await self._open_read(path)

    async def _open_read(self, path: bytes) -> BlobReader:
        backend, user = await self._user("r")
        name = blob_path(path)
        if not name:
            raise asyncssh.SFTPFileIsADirectory("a folder")
        blob = backend.blobs.get_blob_client(user.container, name)
        try:
            props = await self._storage("open", blob.get_blob_properties)
        except asyncssh.SFTPNoSuchFile:
            await self._attrs(backend, user.container, name)  # a folder: say so; else no such file
            raise asyncssh.SFTPFileIsADirectory("a folder") from None
        etag = props.etag
        users, container, user_name = backend.users, user.container, user.name

        def fetch(offset: int, length: int) -> bytes:
            from azure.core import MatchConditions

            current = users.lookup(user_name)
            if current is None or current.container != container:
                raise asyncssh.SFTPPermissionDenied("access ended: this user no longer exists")
            download = blob.download_blob(
                offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return download.readall()

        size = int(props.size)
        logger.info("%s: reading %r (%d bytes)", self._login, name, size)
        return BlobReader(fetch, size, _file_attrs(size, _timestamp(props.last_modified)))

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, BlobReader):
            raise asyncssh.SFTPInvalidHandle("invalid handle")
        try:
            return await file_obj.read(offset, size)
        except Exception as exc:
            raise self._sftp_error("read", exc) from None

    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, BlobReader):
            file_obj.close()

    # -- everything else is refused --------------------------------------------------------------

    def _refuse(self, what: str, *paths: bytes) -> None:
        shown = ", ".join(repr(p.decode("utf-8", "replace")) for p in paths)
        logger.info("%s: refused %s %s (read-only)", self._login, what, shown)
        raise asyncssh.SFTPPermissionDenied("permission denied: read-only access")

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        raise asyncssh.SFTPPermissionDenied("permission denied: read-only access")

    def remove(self, path: bytes) -> None:
        self._refuse("remove", path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse("rename", oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse("rename", oldpath, newpath)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._refuse("mkdir", path)

    def rmdir(self, path: bytes) -> None:
        self._refuse("rmdir", path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._refuse("setstat", path)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._refuse("setstat", path)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("permission denied: read-only access")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse("symlink", oldpath, newpath)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._refuse("link", oldpath, newpath)

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("not a symbolic link: there are none here")

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    def fsync(self, file_obj: object) -> None:
        return None  # nothing is ever written


def _first_blob(client: Any, prefix: str) -> object | None:
    return next(iter(client.list_blobs(name_starts_with=prefix, results_per_page=1)), None)


def _walk(client: Any, prefix: str) -> Iterator[Any]:
    return iter(client.walk_blobs(name_starts_with=prefix or None, delimiter="/"))


def _take(entries: Iterator[Any], count: int) -> list[Any]:
    return list(itertools.islice(entries, count))


async def serve(host: str, port: int, key_path: Path, settings_file: Path | None) -> int:
    loop = asyncio.get_running_loop()
    # Blob ranges, listings and table reads run in threads: enough of them for a few clients' read-ahead.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="sftp"))
    started = time.monotonic()
    backend = loop.run_in_executor(None, build_backend, settings_file, port)
    app = App(backend)
    key = host_key(key_path)
    try:
        server = await asyncssh.create_server(
            lambda: Gate(app),
            host,
            port,
            server_host_keys=[key],
            sftp_factory=lambda chan: ReadOnlySftp(chan, app),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            kbdint_auth=False,
            login_timeout=60,
        )
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    first: list[asyncio.Future[Any]] = [backend, stopping]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not backend.done():
        server.close()
        return 0
    try:
        ready = backend.result()
    except Exception as exc:
        logger.error("cannot start: %s", _start_problem(exc))
        server.close()
        return 2
    logger.info(
        "SFTP on %s:%d (host key %s), read-only, for the users of account %s (table %s): "
        "log in as %s.<user>; ready in %.2f s",
        host,
        port,
        key.get_fingerprint(),
        ready.account,
        ready.users.table_name,
        ready.account,
        time.monotonic() - started,
    )
    await stopping
    logger.info("stopping")
    server.close()
    for conn in list(app.connections):
        conn.close()
    closing = [asyncio.ensure_future(conn.wait_closed()) for conn in list(app.connections)]
    if closing:
        await asyncio.wait(closing, timeout=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--host-key", type=Path, default=None, help="the host key file (default .local/sftp-host-key)")
    parser.add_argument("--settings", type=Path, default=None, help="local.settings.json (default: the project's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] sftp: %(message)s", stream=sys.stderr)
    for noisy in ("asyncssh", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    key_path = args.host_key or default_host_key_path()
    return asyncio.run(serve(args.host, args.port, key_path, args.settings))


if __name__ == "__main__":
    raise SystemExit(main())
