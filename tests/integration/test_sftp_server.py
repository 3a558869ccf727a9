"""The local SFTP endpoint (devhost/sftp_server.py) on a real Azurite, driven by Debian's OpenSSH
``sftp``, and the table of local users behind it (``TableSftpAccess``).

The server runs as the stack runs it, ``python -m devhost.sftp_server``, in a subprocess started
once for this module; each test makes its own containers and users.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient

from devhost.sftp_client import sftp_batch
from devhost.sftp_server import CHUNK_BYTES, READ_AHEAD, BlobReader, blob_path
from shared.adapters.sftp_local import TableSftpAccess
from shared.errors import InvalidRequest, NotFound, StorageUnavailable
from shared.ports import SftpUser
from tests.support.servers import DEV_ACCOUNT, DEV_KEY, Azurite, free_port, wait_for_port
from tests.support.sftp_endpoint import start_server, stop

pytestmark = pytest.mark.integration

SFTP = "/usr/bin/sftp"
if not Path(SFTP).exists():  # `make install` installs it (openssh-client)
    pytest.skip("OpenSSH's sftp client is not installed: run `make install`", allow_module_level=True)


@dataclass
class Endpoint:
    port: int
    prefix: str
    process: subprocess.Popen[bytes]
    log: Path
    access: TableSftpAccess

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def endpoint(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    prefix = f"s{secrets.token_hex(3)}"
    tables = TableServiceClient.from_connection_string(azurite.connection_string())
    access = TableSftpAccess(
        tables.get_table_client(f"{prefix}sftpusers"), account_name=DEV_ACCOUNT, host="127.0.0.1", port=0
    )
    access.ensure_table()
    process, port, log = start_server(azurite, tmp_path_factory.mktemp("sftp"), prefix)
    wait_for_port(port, timeout=15)
    access.port = port
    yield Endpoint(port, prefix, process, log, access)
    assert stop(process) == 0, log.read_text(errors="replace")


@pytest.fixture
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string())


def container_with(blobs: BlobServiceClient, files: dict[str, bytes]) -> str:
    name = f"egress-t{secrets.token_hex(4)}"
    blobs.create_container(name)
    for path, data in files.items():
        blobs.get_blob_client(name, path).upload_blob(data)
    return name


def new_user_name() -> str:
    return f"u{secrets.token_hex(6)}"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def sftp(
    endpoint: Endpoint,
    user: str,
    commands: list[str],
    tmp_path: Path,
    *,
    password: str | None = None,
    key: Path | None = None,
    account: str = DEV_ACCOUNT,
) -> Run:
    """Run OpenSSH ``sftp -b`` as ``<account>.<user>`` with a password (through SSH_ASKPASS) or a key."""
    done = sftp_batch(
        "127.0.0.1", endpoint.port, f"{account}.{user}", commands, cwd=tmp_path, password=password, identity=key,
        timeout=60,
    )  # fmt: skip
    return Run(done.returncode, done.stdout, done.stderr)


def snapshot(blobs: BlobServiceClient) -> dict[str, dict[str, str]]:
    """Every blob of every container, with its ETag."""
    return {
        c.name: {b.name: str(b.etag) for b in blobs.get_container_client(c.name).list_blobs()}
        for c in blobs.list_containers()
    }


# -- logins and downloads ------------------------------------------------------------------------


def test_a_password_login_lists_the_container_and_downloads_the_exact_bytes(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    table = os.urandom(2 * CHUNK_BYTES + 12_345)  # across read-ahead chunks
    container = container_with(blobs, {"tables/table1.csv": table, "README.txt": b"read me\n"})
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    password = endpoint.access.new_password(user)

    commands = ["pwd", "ls -l", "ls tables", "get tables/table1.csv got.csv", "get -r tables", "get -r / whole"]
    run = sftp(endpoint, user, commands, tmp_path, password=password)

    assert run.returncode == 0, run.stderr
    assert "Remote working directory: /" in run.stdout
    assert "README.txt" in run.stdout and "tables" in run.stdout
    assert "tables/table1.csv" in run.stdout  # `ls tables` lists the folder's blob
    assert (tmp_path / "got.csv").read_bytes() == table
    assert (tmp_path / "tables" / "table1.csv").read_bytes() == table  # a folder, recursively
    assert (tmp_path / "whole" / "README.txt").read_bytes() == b"read me\n"  # the whole container
    assert (tmp_path / "whole" / "tables" / "table1.csv").read_bytes() == table
    log = endpoint.log_text()
    assert f"login: {DEV_ACCOUNT}.{user} from 127.0.0.1 (password)" in log
    assert password not in log


def test_a_key_login_with_an_ed25519_key_made_by_ssh_keygen(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    container = container_with(blobs, {"out/result.bin": b"\x00\x01binary\xff" * 1000})
    key = tmp_path / "id_ed25519"
    other = tmp_path / "other_ed25519"
    for path in (key, other):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container, ssh_public_key=(tmp_path / "id_ed25519.pub").read_text()))

    run = sftp(endpoint, user, ["get out/result.bin result.bin"], tmp_path, key=key)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "result.bin").read_bytes() == b"\x00\x01binary\xff" * 1000
    assert f"login: {DEV_ACCOUNT}.{user} from 127.0.0.1 (public key)" in endpoint.log_text()

    refused = sftp(endpoint, user, ["ls"], tmp_path, key=other)
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    # no password was ever made for this user: none logs in
    assert sftp(endpoint, user, ["ls"], tmp_path, password="").returncode != 0


def test_a_wrong_password_or_another_account_is_refused(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    container = container_with(blobs, {"a.txt": b"a"})
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    password = endpoint.access.new_password(user)
    wrong = secrets.token_urlsafe(32)

    refused = sftp(endpoint, user, ["get a.txt a.txt"], tmp_path, password=wrong)
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    assert not (tmp_path / "a.txt").exists()
    # the right password, but not as <account>.<user>
    assert sftp(endpoint, user, ["ls"], tmp_path, password=password, account="otheraccount").returncode != 0
    assert sftp(endpoint, f"{user}x", ["ls"], tmp_path, password=password).returncode != 0
    log = endpoint.log_text()
    assert f"login refused: '{DEV_ACCOUNT}.{user}' from 127.0.0.1" in log
    assert wrong not in log and password not in log


def test_another_users_container_is_reachable_by_no_path(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    mine = container_with(blobs, {"mine.txt": b"mine"})
    theirs = container_with(blobs, {"theirs-secret.txt": b"theirs", "deep/theirs-deep.txt": b"deep"})
    user, other = new_user_name(), new_user_name()
    endpoint.access.ensure_user(SftpUser(user, mine))
    endpoint.access.ensure_user(SftpUser(other, theirs))
    password = endpoint.access.new_password(user)

    attempts = [
        "ls /",
        "ls ..",
        "ls /..",
        "ls ../..",
        f"-ls /{theirs}",
        f"-ls /../{theirs}",
        f"-ls ../{theirs}",
        f"-ls /../../{theirs}/deep",
        f"-get /{theirs}/theirs-secret.txt g1",
        f"-get /../{theirs}/theirs-secret.txt g2",
        f"-get ../{theirs}/theirs-secret.txt g3",
        f"-get /../../{theirs}/deep/theirs-deep.txt g4",
        "-get /theirs-secret.txt g5",
        "cd ..",
        "pwd",
        "ls",
        "cd /../..",
        "ls",
    ]
    run = sftp(endpoint, user, attempts, tmp_path, password=password)

    assert run.returncode == 0, run.stderr
    answers = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("sftp> "))
    assert "theirs" not in answers
    assert "mine.txt" in run.stdout
    assert "Remote working directory: /\n" in run.stdout  # `cd ..` from / stays at /
    assert run.stderr.count("not found") >= 9
    assert not any((tmp_path / f"g{i}").exists() for i in range(1, 6))


def test_writes_of_every_kind_are_refused_and_nothing_changes_in_storage(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    container = container_with(blobs, {"data.csv": b"1,2\n", "folder/inner.txt": b"inner"})
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    password = endpoint.access.new_password(user)
    (tmp_path / "upload.txt").write_text("should never arrive")
    before = snapshot(blobs)

    refused = [
        "-put upload.txt upload.txt",
        "-put upload.txt data.csv",
        "-rename data.csv renamed.csv",
        "-rm data.csv",
        "-rm folder/inner.txt",
        "-mkdir newfolder",
        "-rmdir folder",
        "-chmod 777 data.csv",
        "-symlink data.csv link.csv",
        "-ln data.csv hard.csv",
    ]
    run = sftp(endpoint, user, [*refused, "ls"], tmp_path, password=password)

    assert run.returncode == 0, run.stderr
    assert run.stderr.count("Permission denied") == len(refused), run.stderr
    assert snapshot(blobs) == before
    log = endpoint.log_text()
    assert f"{DEV_ACCOUNT}.{user}: refused remove '/data.csv' (read-only)" in log


# -- the users table decides, at every login and every operation ----------------------------------


def test_after_delete_user_the_login_fails_and_an_open_session_fails_at_its_next_operation(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    container = container_with(blobs, {"one.txt": b"one" * 1000, "two.txt": b"two"})
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    password = endpoint.access.new_password(user)
    assert sftp(endpoint, user, ["ls"], tmp_path, password=password).returncode == 0

    # An open session: sftp reads its commands from a pipe; the first download proves it is in.
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    session = subprocess.Popen(
        [
            *[SFTP, "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"],
            *["-o", "LogLevel=ERROR", "-o", "BatchMode=no", "-o", "PreferredAuthentications=password", "-b", "-"],
            *["-P", str(endpoint.port), f"{DEV_ACCOUNT}.{user}@127.0.0.1"],
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    assert session.stdin is not None
    try:
        session.stdin.write(b"get one.txt one.txt\n")
        session.stdin.flush()
        deadline = time.monotonic() + 15
        while not ((tmp_path / "one.txt").exists() and (tmp_path / "one.txt").stat().st_size == 3000):
            assert time.monotonic() < deadline, "the first download did not finish"
            time.sleep(0.02)
        endpoint.access.delete_user(user)
        _, err = session.communicate(b"get two.txt two.txt\nls\n", timeout=30)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert session.returncode != 0, err
    assert not (tmp_path / "two.txt").exists()
    # OpenSSH's `get` globs first, and reports the refused stat as "not found"
    assert b'"/two.txt" not found' in err
    assert f"{DEV_ACCOUNT}.{user}: refused, the user no longer exists" in endpoint.log_text()

    assert sftp(endpoint, user, ["ls"], tmp_path, password=password).returncode != 0
    endpoint.access.delete_user(user)  # again: nothing to do


def test_a_download_under_way_stops_within_its_read_ahead_once_the_user_is_deleted(
    endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path
) -> None:
    size = 12 * CHUNK_BYTES
    container = f"egress-t{secrets.token_hex(4)}"
    blobs.create_container(container)
    blobs.get_blob_client(container, "large.bin").upload_blob(b"\x5a" * size)
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    password = endpoint.access.new_password(user)
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    (tmp_path / "batch").write_text("get large.bin large.bin\n")
    download = subprocess.Popen(
        [
            *[SFTP, "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"],
            *["-o", "LogLevel=ERROR", "-o", "BatchMode=no", "-o", "PreferredAuthentications=password"],
            *["-b", "batch", "-P", str(endpoint.port), f"{DEV_ACCOUNT}.{user}@127.0.0.1"],
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"},
    )
    local = tmp_path / "large.bin"
    try:
        deadline = time.monotonic() + 15
        while not (local.exists() and local.stat().st_size > 0):
            assert time.monotonic() < deadline and download.poll() is None, "the download did not start"
            time.sleep(0.002)
        endpoint.access.delete_user(user)
        _, err = download.communicate(timeout=30)
    finally:
        if download.poll() is None:
            download.kill()
            download.wait()
    assert download.returncode != 0
    assert b"Permission denied" in err
    assert local.stat().st_size < size - 4 * CHUNK_BYTES  # what was read ahead at most, and no more


def test_a_new_password_ends_the_old_one(endpoint: Endpoint, blobs: BlobServiceClient, tmp_path: Path) -> None:
    container = container_with(blobs, {"a.txt": b"a"})
    user = new_user_name()
    endpoint.access.ensure_user(SftpUser(user, container))
    first = endpoint.access.new_password(user)
    assert sftp(endpoint, user, ["ls"], tmp_path, password=first).returncode == 0

    second = endpoint.access.new_password(user)

    assert second != first
    assert sftp(endpoint, user, ["ls"], tmp_path, password=first).returncode != 0
    assert sftp(endpoint, user, ["ls"], tmp_path, password=second).returncode == 0


def test_the_server_starts_fast_and_stops_cleanly_on_sigterm_and_sigint(azurite: Azurite, tmp_path: Path) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        started = time.monotonic()
        process, port, log = start_server(azurite, tmp_path, f"s{secrets.token_hex(3)}")
        try:
            wait_for_port(port, timeout=15)
            listening = time.monotonic() - started
            deadline = time.monotonic() + 10
            while "ready in" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
        finally:
            code = stop(process, signum)
        assert code == 0, log.read_text()
        assert listening < 3, f"took {listening:.2f} s to listen"  # about 0.3 s here; bounded loosely for CI
        assert (tmp_path / "host-key").stat().st_mode & 0o777 == 0o600


# -- the server's pieces -------------------------------------------------------------------------


def test_a_client_path_always_means_a_blob_of_the_users_own_container() -> None:
    assert blob_path(b"/") == blob_path(b".") == blob_path(b"..") == blob_path(b"/../../..") == ""
    assert blob_path(b"/../other-container/x.txt") == "other-container/x.txt"  # inside the user's container
    assert blob_path(b"a//b/./c/../d/") == "a/b/d"
    assert blob_path(b"../../a") == "a"


def run_alone(coroutine: Any) -> Any:
    """``asyncio.run`` on a thread of its own: the session's browser (Playwright's sync API) keeps an
    event loop running on the main thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_reads_stream_through_a_bounded_read_ahead_and_say_when_a_fetch_fails() -> None:
    data = os.urandom(3 * CHUNK_BYTES + 777)
    fetched: list[int] = []

    def fetch(offset: int, length: int) -> bytes:
        fetched.append(offset)
        if offset >= 3 * CHUNK_BYTES and failing:
            raise OSError("storage went away")
        return data[offset : offset + length]

    async def read_all(reader: BlobReader, size: int) -> tuple[bytes, int]:
        out, offset, most = [], 0, 0
        while piece := await reader.read(offset, size):
            out.append(piece)
            offset += len(piece)
            most = max(most, reader.held)
        return b"".join(out), most

    failing = False
    reader = BlobReader(fetch, len(data), asyncssh.SFTPAttrs())
    got, most = run_alone(read_all(reader, 261_120))  # OpenSSH's read size with asyncssh's limits
    assert got == data
    assert most <= 1 + READ_AHEAD
    assert sorted(fetched) == [i * CHUNK_BYTES for i in range(4)]  # each chunk once
    assert run_alone(reader.read(CHUNK_BYTES - 10, 100)) == data[CHUNK_BYTES - 10 : CHUNK_BYTES + 90]
    reader.close()

    failing = True
    reader = BlobReader(fetch, len(data), asyncssh.SFTPAttrs())
    with pytest.raises(OSError, match="storage went away"):
        run_alone(read_all(reader, 1_000_000))


# -- TableSftpAccess, the table behind the server -------------------------------------------------


@pytest.fixture
def table(azurite: Azurite) -> TableClient:
    tables = TableServiceClient.from_connection_string(azurite.connection_string())
    return tables.get_table_client(f"u{secrets.token_hex(4)}sftpusers")


def table_access(table: TableClient | RacingTable) -> TableSftpAccess:
    return TableSftpAccess(table, account_name=DEV_ACCOUNT, host="127.0.0.1", port=2222)  # type: ignore[arg-type]


@pytest.fixture
def access(table: TableClient) -> TableSftpAccess:
    store = table_access(table)
    store.ensure_table()
    store.ensure_table()  # a second time is fine
    return store


def test_ensure_user_is_idempotent_and_keeps_the_password(access: TableSftpAccess, table: TableClient) -> None:
    access.ensure_user(SftpUser("alice1", "egress-pkg-1"))
    password = access.new_password("alice1")
    before = table.get_entity("user", "alice1")

    access.ensure_user(SftpUser("alice1", "egress-pkg-1"))
    assert table.get_entity("user", "alice1").metadata["etag"] == before.metadata["etag"]  # no write

    access.ensure_user(SftpUser("alice1", "egress-pkg-2", ssh_public_key="ssh-ed25519  AAAAC3Nza  me@example \n"))
    user = access.lookup("alice1")
    assert user is not None
    assert (user.container, user.permissions, user.has_password) == ("egress-pkg-2", "rl", True)
    assert user.ssh_public_key == "ssh-ed25519 AAAAC3Nza me@example"
    assert access.verify_password("alice1", password)

    access.ensure_user(SftpUser("alice1", "egress-pkg-2"))  # the key goes, the password stays
    user = access.lookup("alice1")
    assert user is not None and user.ssh_public_key is None
    assert access.verify_password("alice1", password)
    assert access.user_names() == ["alice1"]


def test_the_table_keeps_a_salted_hash_never_the_password(access: TableSftpAccess, table: TableClient) -> None:
    for name in ("bob1", "carol1"):
        access.ensure_user(SftpUser(name, "egress-pkg-1"))
    bob, carol = access.new_password("bob1"), access.new_password("carol1")

    assert len(bob) >= 40 and bob != carol
    rows = {row["RowKey"]: row for row in table.list_entities()}
    for name, password in (("bob1", bob), ("carol1", carol)):
        row = rows[name]
        assert password not in str(dict(row))
        assert row["password_hash"].startswith("scrypt$")
    assert rows["bob1"]["password_hash"].split("$")[4] != rows["carol1"]["password_hash"].split("$")[4]  # salts
    assert access.verify_password("bob1", bob)
    assert not access.verify_password("bob1", carol)
    assert not access.verify_password("bob1", "")
    assert not access.verify_password("nobody1", bob)
    assert not access.verify_password("Not A Name", bob)


def test_new_password_of_an_absent_user_is_not_found_and_delete_is_idempotent(access: TableSftpAccess) -> None:
    with pytest.raises(NotFound):
        access.new_password("ghost1")
    access.ensure_user(SftpUser("dave1", "egress-pkg-1"))
    access.delete_user("dave1")
    access.delete_user("dave1")
    access.delete_user("Not A Name")
    assert access.lookup("dave1") is None
    assert access.user_names() == []
    with pytest.raises(NotFound):
        access.new_password("dave1")


def test_names_containers_and_keys_are_checked(access: TableSftpAccess) -> None:
    for bad in (SftpUser("ab", "egress-x"), SftpUser("Alice", "egress-x"), SftpUser("a.b1", "egress-x")):
        with pytest.raises(InvalidRequest):
            access.ensure_user(bad)
    with pytest.raises(InvalidRequest):
        access.ensure_user(SftpUser("erin1", "Not_A_Container"))
    with pytest.raises(InvalidRequest):
        access.ensure_user(SftpUser("erin1", "egress-x", ssh_public_key="ssh-ed25519"))
    assert access.user_names() == []


def test_allow_ranges_round_trip(access: TableSftpAccess) -> None:
    assert access.allowed_ranges() == []
    access.allow_ranges(["203.0.113.7", "198.51.100.0/28", "203.0.113.7"])
    assert access.allowed_ranges() == ["203.0.113.7", "198.51.100.0/28"]
    access.allow_ranges([])
    assert access.allowed_ranges() == []
    for bad in ("2001:db8::1", "10.0.0.1/8", "not an address"):
        with pytest.raises(InvalidRequest):
            access.allow_ranges([bad])
    assert access.user_names() == []  # the firewall row is not a user


def test_an_unreachable_table_is_storage_unavailable_without_the_key(access: TableSftpAccess) -> None:
    closed = free_port()
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"TableEndpoint=http://127.0.0.1:{closed}/{DEV_ACCOUNT};"
    )
    tables = TableServiceClient.from_connection_string(connection, retry_total=0)
    unreachable = TableSftpAccess(
        tables.get_table_client("nosftpusers"), account_name=DEV_ACCOUNT, host="127.0.0.1", port=2222
    )
    for call in (
        lambda: unreachable.ensure_user(SftpUser("frank1", "egress-x")),
        lambda: unreachable.new_password("frank1"),
        lambda: unreachable.user_names(),
        lambda: unreachable.allowed_ranges(),
        lambda: unreachable.lookup("frank1"),
    ):
        with pytest.raises(StorageUnavailable) as raised:
            call()
        assert DEV_KEY not in raised.value.message
        assert "EGRESS_STORAGE" in raised.value.message


class RacingTable:
    """A table on which another writer makes the row between our read and our first create."""

    def __init__(self, table: TableClient, container: str) -> None:
        self._table = table
        self._container = container
        self.creates = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._table, name)

    def create_entity(self, entity: dict[str, str]) -> object:
        self.creates += 1
        if self.creates == 1:
            self._table.create_entity({**entity, "container": self._container})
            raise ResourceExistsError("made meanwhile")
        return self._table.create_entity(entity)


def test_ensure_user_wins_a_race_with_another_writer(access: TableSftpAccess, table: TableClient) -> None:
    """A row made by someone else between the read and the create is updated, not refused."""
    racing = table_access(RacingTable(table, "egress-someone-else"))
    racing.ensure_user(SftpUser("gina1", "egress-mine"))
    user = access.lookup("gina1")
    assert user is not None and user.container == "egress-mine"
