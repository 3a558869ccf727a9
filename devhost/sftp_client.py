"""OpenSSH's ``sftp`` client, run as a recipient would, without a person at the keyboard.

Used by ``make demo`` and the tests. A password goes through ``SSH_ASKPASS`` (a small script in a
private temporary folder that prints it), never on a command line; a key through ``-i``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SFTP = shutil.which("sftp") or "/usr/bin/sftp"


def sftp_batch(
    host: str,
    port: int,
    username: str,
    commands: list[str],
    *,
    cwd: Path,
    password: str | None = None,
    identity: Path | None = None,
    timeout: float = 120,
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``commands`` (an ``sftp -b`` batch) as ``username`` at ``host:port``; never raises on a
    refused login (the caller reads ``returncode`` and ``stderr``). ``options``: more ``sftp``
    arguments (for example ``("-c", "aes128-gcm@openssh.com")``)."""
    if (password is None) == (identity is None):
        raise ValueError("give a password or an identity file, one of them")
    arguments = [
        *options,
        "-F", "/dev/null",  # none of the user's own ssh configuration
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=20",
        "-o", "NumberOfPasswordPrompts=1",
        "-P", str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_") and k != "DISPLAY"}
    with tempfile.TemporaryDirectory(prefix="egress-sftp-") as private:
        folder = Path(private)
        if password is not None:
            secret = folder / "password"
            secret.write_text(password)
            secret.chmod(0o600)
            askpass = folder / "askpass"
            askpass.write_text(f"#!/bin/sh\ncat '{secret}'\n")
            askpass.chmod(0o700)
            env |= {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
            # -b sets BatchMode=yes, which forbids asking for a password; ssh keeps the first value
            # of an option, so BatchMode=no goes before -b.
            arguments += ["-o", "BatchMode=no", "-o", "PreferredAuthentications=password,keyboard-interactive"]
            arguments += ["-o", "PubkeyAuthentication=no"]
        else:
            assert identity is not None
            arguments += ["-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey", "-i", str(identity)]
        batch = folder / "batch"
        batch.write_text("\n".join(commands) + "\n")
        return subprocess.run(
            [SFTP, *arguments, "-b", str(batch), f"{username}@{host}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
