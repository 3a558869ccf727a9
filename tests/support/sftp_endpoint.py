"""The local SFTP endpoint (``devhost/sftp_server.py``) started for a test, on a free port, over the
test's Azurite and the local users' table of a registry prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.servers import ROOT, Azurite, free_port


def start_server(azurite: Azurite, workdir: Path, prefix: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    settings = workdir / "local.settings.json"  # no Values: this server reads only what the test sets
    settings.write_text('{"Values": {}}')
    port = free_port()
    log = workdir / f"sftp-{port}.log"
    connection = azurite.connection_string()
    env = {**os.environ, "EGRESS_STORAGE": connection, "SFTP_STORAGE": connection, "REGISTRY_TABLE_PREFIX": prefix}
    env.pop("DELIVERY_STORAGE", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devhost.sftp_server",
                "--port",
                str(port),
                "--host-key",
                str(workdir / "host-key"),
                "--settings",
                str(settings),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, port, log


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
