"""Download throughput of the local SFTP endpoint (devhost/sftp_server.py) against a direct download.

Starts its own Azurite and the SFTP server (``python -m devhost.sftp_server``, as ``make run`` does),
uploads one blob of ``--mib`` MiB of random bytes, makes an SFTP user for its container through
``TableSftpAccess`` and then, in alternating rounds, times:

  1. a direct download of the blob from Azurite with the SDK (the service's client settings:
     4 MiB ranges, one at a time), streamed and thrown away;
  2. Debian's OpenSSH ``sftp -b`` getting the same blob to /dev/null, with OpenSSH's default cipher
     (chacha20-poly1305) and with aes128-gcm, counting the whole session (connect, key exchange,
     password login, the transfer); a session that only logs in and runs ``pwd`` is timed too.

The first SFTP download goes to a file whose SHA-256 is checked. Figures are medians over
``--rounds``; the server's peak RSS (VmHWM) shows its memory stays bounded whatever the blob's size.

    .venv/bin/python benchmarks/bench_sftp.py [--mib 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from devhost.sftp_client import sftp_batch
from shared.adapters.blob_store import CHUNK_BYTES, client_options
from shared.adapters.sftp_local import TableSftpAccess
from shared.ports import SftpUser
from tests.support.servers import DEV_ACCOUNT, ROOT, free_port, start_azurite, wait_for_port

BLOB = "outputs/large.bin"
CIPHERS = {"OpenSSH defaults (chacha20-poly1305)": None, "aes128-gcm@openssh.com": "aes128-gcm@openssh.com"}


def upload(service: BlobServiceClient, container: str, mib: int) -> str:
    """``mib`` MiB of random bytes as a stream; their SHA-256."""
    sha = hashlib.sha256()
    block = os.urandom(CHUNK_BYTES)

    def chunks():  # a rotating pattern keeps generation cheap and memory flat
        for i in range(mib * 2**20 // CHUNK_BYTES):
            data = block[i % 97 :] + block[: i % 97]
            sha.update(data)
            yield data

    service.get_blob_client(container, BLOB).upload_blob(chunks(), overwrite=True, max_concurrency=1)
    return sha.hexdigest()


def direct(service: BlobServiceClient, container: str) -> float:
    start = time.monotonic()
    size = sum(len(c) for c in service.get_blob_client(container, BLOB).download_blob(max_concurrency=1).chunks())
    elapsed = time.monotonic() - start
    assert size > 0
    return elapsed


class Client:
    """OpenSSH sftp with a password (``devhost.sftp_client``), timed."""

    def __init__(self, workdir: Path, port: int, user: str, password: str) -> None:
        self.workdir, self.port, self.user, self.password = workdir, port, user, password

    def run(self, commands: list[str], cipher: str | None = None) -> float:
        start = time.monotonic()
        done = sftp_batch(
            "127.0.0.1",
            self.port,
            f"{DEV_ACCOUNT}.{self.user}",
            commands,
            cwd=self.workdir,
            password=self.password,
            timeout=600,
            options=("-c", cipher) if cipher else (),
        )
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            raise RuntimeError(f"sftp failed: {done.stderr}")
        return elapsed


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=100, help="size of the blob in MiB (default 100)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mib < 4 or args.mib % 4:
        parser.error("--mib must be a multiple of 4 (the upload's chunk)")

    azurite = start_azurite()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    server = None
    try:
        connection = azurite.connection_string()
        service = BlobServiceClient.from_connection_string(connection, **client_options())
        container = f"egress-bench{secrets.token_hex(3)}"
        service.create_container(container)
        digest = upload(service, container, args.mib)

        prefix = "bench"
        tables = TableServiceClient.from_connection_string(connection)
        port = free_port()
        access = TableSftpAccess(
            tables.get_table_client(f"{prefix}sftpusers"), account_name=DEV_ACCOUNT, host="127.0.0.1", port=port
        )
        access.ensure_table()
        user = f"bench{secrets.token_hex(4)}"
        access.ensure_user(SftpUser(user, container))
        password = access.new_password(user)

        (workdir / "settings.json").write_text('{"Values": {}}')
        env = {**os.environ, "EGRESS_STORAGE": connection, "SFTP_STORAGE": connection, "REGISTRY_TABLE_PREFIX": prefix}
        command = [sys.executable, "-m", "devhost.sftp_server", "--port", str(port)]
        command += ["--host-key", str(workdir / "host-key"), "--settings", str(workdir / "settings.json")]
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        client = Client(workdir, port, user, password)

        client.run([f"get {BLOB} {workdir / 'check.bin'}"])
        with (workdir / "check.bin").open("rb") as got:
            if hashlib.file_digest(got, "sha256").hexdigest() != digest:
                raise RuntimeError("the SFTP download differs from the blob")
        (workdir / "check.bin").unlink()

        times: dict[str, list[float]] = {"Azurite, direct SDK download": []}
        times |= {f"SFTP get, {name}": [] for name in CIPHERS}
        login = []
        for _ in range(args.rounds):
            times["Azurite, direct SDK download"].append(direct(service, container))
            for name, cipher in CIPHERS.items():
                times[f"SFTP get, {name}"].append(client.run([f"get {BLOB} /dev/null"], cipher))
            login.append(client.run(["pwd"]))

        mib = float(args.mib)
        print(f"\n{args.mib} MiB blob, median of {args.rounds} rounds (2 CPUs shared by Azurite, server and client)\n")
        print(f"{'':46} {'seconds':>8} {'MiB/s':>8} {'ratio':>7}")
        base = statistics.median(times["Azurite, direct SDK download"])
        for name, rounds in times.items():
            median = statistics.median(rounds)
            print(f"{name:46} {median:8.2f} {mib / median:8.0f} {base / median:7.2f}")
        print(f"{'SFTP session that only logs in (pwd)':46} {statistics.median(login):8.2f}")
        print(f"\nSFTP server peak RSS: {peak_rss_mib(server.pid):.0f} MiB")
        print("ratio = direct download time / this time (1.00 = as fast as reading Azurite directly)")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
        azurite.process.send_signal(signal.SIGINT)  # Azurite stops at once on SIGINT (SIGTERM waits 10 s)
        azurite.stop()
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
