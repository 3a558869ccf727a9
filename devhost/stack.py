"""The whole local stack in one command: Azurite, a mail catcher with a web page, the SFTP endpoint
and the host.

    python -m devhost.stack        (make run)

Uses Azure Functions Core Tools (``func start``) when ``func`` is on the PATH, else our local
host; both read the same ``local.settings.json``. Data persists in ``.local/`` between runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devhost.settings_file import ROOT

LOCAL = Path(os.environ.get("EGRESS_LOCAL_DIR", ROOT / ".local"))  # tests point it at a temporary folder
BIN = ROOT / "node_modules" / ".bin"
PORTS = {
    "blob": 10000,
    "queue": 10001,
    "table": 10002,
    "smtp": 1025,
    "mail web": 1080,
    "sftp": 2222,
    "functions": 7071,
}


def function_key() -> str:
    """The local function key: made once, kept in .local/function-key (git-ignored)."""
    path = LOCAL / "function-key"
    if not path.exists():
        LOCAL.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait(port: int, what: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} stopped at start (exit {process.returncode}); is port {port} already in use?")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer on port {port} within {timeout:.0f} s")


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    if not (BIN / "azurite").exists():
        raise SystemExit("Azurite is not installed: run `make install` first")
    busy = [f"{name} ({port})" for name, port in PORTS.items() if _busy(port)]
    if busy:
        raise SystemExit(f"these ports are in use: {', '.join(busy)}; is the stack already running?")
    (LOCAL / "azurite").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOCAL_FUNCTION_KEY": function_key()}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        azurite = subprocess.Popen(
            [
                str(BIN / "azurite"),
                "--skipApiVersionCheck",
                "--silent",
                "--disableTelemetry",  # no usage reports leave the machine
                "--location",
                str(LOCAL / "azurite"),
            ],
            cwd=LOCAL,
        )
        processes.append(azurite)
        maildev = subprocess.Popen(
            [
                str(BIN / "maildev"),
                "--smtp",
                "1025",
                "--web",
                "1080",
                "--ip",
                "127.0.0.1",
                "--web-ip",
                "127.0.0.1",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
        )
        processes.append(maildev)
        _wait(10000, "Azurite", azurite)
        _wait(10002, "Azurite tables", azurite)
        _wait(1025, "maildev", maildev)
        sftp = subprocess.Popen(
            [sys.executable, "-m", "devhost.sftp_server", "--port", str(PORTS["sftp"]), "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
        )
        processes.append(sftp)
        _wait(PORTS["sftp"], "the SFTP server", sftp)
        func = shutil.which("func")
        command = [func, "start", "--port", "7071"] if func else [sys.executable, "-m", "devhost", "--port", "7071"]
        host = subprocess.Popen(command, cwd=ROOT, env=env)
        processes.append(host)
        _wait(7071, "the Functions host", host)
        print(
            "\n"
            "Local egress stack is up:\n"
            "  Storage (Azurite)   blob http://127.0.0.1:10000  queue http://127.0.0.1:10001  "
            "table http://127.0.0.1:10002  data in .local/azurite\n"
            "  Mail catcher        http://127.0.0.1:1080  (every email the service sends; SMTP on 1025)\n"
            f"  Functions host      http://127.0.0.1:7071/api  ({'func start' if func else 'local host'})\n"
            "  Function key        in .local/function-key (send as x-functions-key)\n"
            "  Sign-off pages      http://127.0.0.1:7071/api/signoff/<token>  (the links in the classifiers' emails)\n"
            f"  SFTP server         sftp -P {PORTS['sftp']} <account>.<user>@127.0.0.1  "
            "(users the service creates; read-only)\n"
            "\nIn another terminal:  make demo   (plays a whole egress on this stack)\n"
            "Press Ctrl+C to stop.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a part of the stack stopped; shutting the rest down", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                # Azurite ignores SIGTERM (it would wait out the kill below) and stops on SIGINT at once.
                process.send_signal(signal.SIGINT) if process is processes[0] else process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
