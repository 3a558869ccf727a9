"""The newcomer's path: `make run` brings the stack up, `make demo` plays the story and passes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.integration


def test_the_demo_passes_on_the_one_command_stack(tmp_path: Path) -> None:
    log = tmp_path / "stack.log"
    env = {**os.environ, "EGRESS_LOCAL_DIR": str(tmp_path / "local")}
    with log.open("wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "devhost.stack"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while "Local egress stack is up" not in log.read_text():
            assert stack.poll() is None, "the stack stopped at start:\n" + log.read_text()
            assert time.monotonic() < deadline, "the stack did not come up:\n" + log.read_text()
            time.sleep(0.2)
        for where in ("http://127.0.0.1:1080", "http://127.0.0.1:7071/api", "http://127.0.0.1:10000"):
            assert where in log.read_text()

        demo = subprocess.run(
            [sys.executable, "-m", "devhost.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert demo.stdout.rstrip().splitlines()[-1].startswith("PASS:")
        assert "Chain verified: intact." in demo.stdout
        # The sftp part: a real OpenSSH login with the emailed password, then refused after revoke.
        downloaded = re.search(r"(?m)^downloaded: (.+)$", demo.stdout)
        assert downloaded and "encrypted-manifest.json" in downloaded.group(1) and ".age" in downloaded.group(1)
        assert re.search(r"(?m)^sftp answered exit [1-9]", demo.stdout), "the revoked login was not refused"
        assert "Decrypted" in demo.stdout or "decrypted" in demo.stdout
        assert (tmp_path / "local" / "function-key").read_text() not in demo.stdout + demo.stderr
        # No leftovers of progress bars, and every echoed command pastes back into a shell as it ran.
        lines = (demo.stdout + demo.stderr).splitlines()
        for label in ("Hashing", "Checking", "Uploading", "Downloading"):
            assert not [line for line in lines if line.lstrip().startswith(label)], f"a {label} bar was printed"
        echoed = [line[2:] for line in demo.stdout.splitlines() if line.startswith("$ egress ")]
        assert len(echoed) >= 7
        assert "--title 'Regression results for the cohort paper'" in echoed[0]
        (download,) = [shlex.split(line) for line in echoed if line.startswith("egress download ")]
        link = re.search(r"Link for \S+: (http\S+)", demo.stdout).group(1)
        assert download[2] == link and "&" in link, "the link is echoed quoted, whole"
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()


def test_the_demo_without_the_stack_fails_with_a_message(tmp_path: Path) -> None:
    """`make demo` before `make run`: a FAIL line that says to start the stack, no traceback."""
    nothing = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "EGRESS_LOCAL_DIR": str(tmp_path), "EGRESS_DEMO_API": nothing, "EGRESS_DEMO_MAIL": nothing}
    demo = subprocess.run(
        [sys.executable, "-m", "devhost.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 1
    last = demo.stdout.rstrip().splitlines()[-1]
    assert last.startswith("FAIL: ") and "make run" in last
    assert "Traceback" not in demo.stdout + demo.stderr
