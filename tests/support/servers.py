"""Real local stand-ins started by the test session: Azurite (blobs, tables) and an SMTP sink."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every Azurite install; not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DELIVERY_ACCOUNT = "deliveryacct"
DELIVERY_KEY = "ZGVsaXZlcnkta2V5LWZvci1sb2NhbC10ZXN0cy1vbmx5LW5vdC1hLXNlY3JldA=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class Azurite:
    blob_port: int
    table_port: int
    process: subprocess.Popen[bytes]
    workdir: str
    queue_port: int = 0

    def connection_string(self, account: str = DEV_ACCOUNT, key: str = DEV_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{account};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{account};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{account};"
        )

    def stop(self) -> None:
        # SIGINT: Azurite stops on it in milliseconds, while it ignores SIGTERM until the 10 s kill.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_azurite() -> Azurite:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise RuntimeError("Azurite is not installed: run `make install` (npm ci) first")
    blob_port, queue_port, table_port = free_port(), free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{DEV_ACCOUNT}:{DEV_KEY};{DELIVERY_ACCOUNT}:{DELIVERY_KEY}"}
    with open(Path(workdir) / "azurite.err", "wb") as errors:  # the child keeps its own copy
        process = subprocess.Popen(
            [
                str(binary),
                "--skipApiVersionCheck",
                "--silent",
                "--inMemoryPersistence",
                "--disableTelemetry",  # Azurite reports usage to Microsoft unless told not to; it also costs CPU
                "--blobPort",
                str(blob_port),
                "--queuePort",
                str(queue_port),
                "--tablePort",
                str(table_port),
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        wait_for_port(blob_port)
        wait_for_port(table_port)
        wait_for_port(queue_port)
    except RuntimeError:
        process.kill()
        process.wait()
        raise RuntimeError("Azurite did not start: " + (Path(workdir) / "azurite.err").read_text()) from None
    return Azurite(blob_port, table_port, process, workdir, queue_port)


@dataclass
class SmtpSink:
    """An aiosmtpd server that keeps every message it receives, and when (``time.monotonic()``)."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: object = None

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[attr-defined]
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.arrivals.append(time.monotonic())
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]

    def first_arrival(self, address: str) -> float | None:
        """When the first message to ``address`` since the last ``clear()`` arrived; None if none has."""
        with self.lock:
            return next((t for m, t in zip(self.messages, self.arrivals, strict=True) if address in str(m["To"])), None)

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.arrivals.clear()


def start_smtp_sink() -> SmtpSink:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    sink.controller = controller
    return sink


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())
