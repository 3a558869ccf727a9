"""Benchmark of sign-off latency through the local Functions host, on a local Azurite.

Starts its own Azurite, SMTP sink and local host (``python -m devhost``, a subprocess with its own
settings file and function key, on free ports), then for each of N packages of small files, one
after another:
  A. manifest upload done -> all three "Sign-off needed" emails received by the SMTP sink;
  B. the last approval's HTTP POST sent -> the recipient's "ready to download" email received
     (the first two approvals are posted before the clock starts).

    .venv/bin/python benchmarks/bench_signoff.py [--packages 20] [--files 10] [--poll-seconds 0.25]

Targets (from the issue): A p50 <= 1 s, B p50 <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from azure.storage.blob import BlobServiceClient

from devhost.host import MIN_POLLING_INTERVAL, QueueOptions
from shared.settings import Settings
from tests.support.flow import TOKEN_RE
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, manifest_for, new_package_id
from tests.support.servers import ROOT, SmtpSink, body_text, free_port, start_azurite, wait_for_port
from tests.support.settings_file import write_local_settings

CLASSIFIERS = [PROVIDER, INVESTIGATOR, REFEREE]  # the order they approve in: the referee's is the last
RECIPIENT = "ada@provider.example"  # manifest_for's recipient
MANAGER = "system-manager@dsh.example"
TARGETS = {"A": 1000.0, "B": 2000.0}  # p50, ms
# What the local host must not take from this process's environment: the settings file is its only source.
APP_SETTINGS = {f.alias for f in Settings.model_fields.values() if f.alias} | {
    "LOCAL_FUNCTION_KEY",
    "BLOB_TRIGGER_SOURCE",
}


class TimedSink(SmtpSink):
    """The tests' aiosmtpd sink, noting when each message arrived (same clock as the benchmark)."""

    arrivals: list[tuple[float, EmailMessage]]

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        arrived = time.monotonic()
        message = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[attr-defined]
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.arrivals.append((arrived, message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def matching(self, test: Callable[[EmailMessage], bool]) -> list[tuple[float, EmailMessage]]:
        with self.lock:
            return [(t, m) for t, m in self.arrivals if test(m)]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.arrivals.clear()


def start_timed_sink() -> TimedSink:
    from aiosmtpd.controller import Controller

    sink = TimedSink(port=free_port())
    sink.arrivals = []
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    sink.controller = controller
    return sink


class Host:
    """``python -m devhost`` as a subprocess, logging to a file."""

    def __init__(self, port: int, settings_file: Path, log: Path, poll_seconds: float) -> None:
        self.port = port
        self.log = log
        self.settings_file = settings_file
        self.poll_seconds = poll_seconds
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
        command = [sys.executable, "-m", "devhost", "--port", str(self.port), "--settings", str(self.settings_file)]
        command += ["--poll-seconds", str(self.poll_seconds)]
        with self.log.open("ab") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:  # the port answers once every trigger's thread has started
            if not self.alive():
                raise RuntimeError(f"the local host stopped at start:\n{self.tail()}")
            try:
                wait_for_port(self.port, timeout=0.5)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the local host did not answer within 60 s:\n{self.tail()}") from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/{path}"

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no host log)"


def wait_until(check: Callable[[], bool], what: str, host: Host, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not host.alive():
            raise RuntimeError(f"the local host stopped while waiting for {what}:\n{host.tail()}")
        time.sleep(0.005)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}; host log tail:\n{host.tail()}")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def backed_off_after(options: QueueOptions) -> float:
    """Idle seconds after which the queue poller's back-off interval is near its maximum.

    The nominal intervals after a poll that found a message are 0.1 s, then 0.1 + 0.1 * 2^(n-1) s
    (0.2, 0.3, 0.5, 0.9, 1.7, ... s) up to maxPollingInterval: this sums them while they are below
    80 % of the maximum (2.0 s for a 2 s maximum: the next gaps are then 1.7 s and 2 s).
    """
    idle, exponent, interval = 0.0, 0, MIN_POLLING_INTERVAL
    while interval < 0.8 * options.max_polling_interval:
        idle += interval
        exponent += 1
        interval = MIN_POLLING_INTERVAL + 2 ** (exponent - 1) * MIN_POLLING_INTERVAL
    return idle


class Bench:
    def __init__(
        self,
        host: Host,
        sink: TimedSink,
        service: BlobServiceClient,
        settings: Settings,
        args: argparse.Namespace,
        pace: tuple[float, float] | None,
    ) -> None:
        self.host = host
        self.sink = sink
        self.service = service
        self.settings = settings
        self.args = args
        self.pace = pace  # (idle, spread): last approval at previous release email + idle + U(0, spread)
        self.last_release: float | None = None

    def stage_files(self, package_id: str) -> dict[str, bytes]:
        files = {
            f"tables/t{i:02d}.csv": f"cohort,n,mean\n{package_id},{i},{secrets.randbelow(1000)}\n".encode() * (1 + i)
            for i in range(self.args.files)
        }
        container = self.service.get_container_client(self.settings.staging_container)
        for path, data in files.items():
            container.upload_blob(f"{package_id}/files/{path}", data, overwrite=True)
        return files

    def signoff_emails(self, package_id: str) -> list[tuple[float, EmailMessage]]:
        subject = f"Sign-off needed: {package_id}"
        return self.sink.matching(lambda m: m["Subject"] == subject)

    def one(self) -> tuple[float, float]:
        """One package end to end; returns (A, B) in seconds."""
        package_id = new_package_id("bench")
        files = self.stage_files(package_id)
        raw = json.dumps(manifest_for(package_id, files), indent=2).encode()
        blob = self.service.get_blob_client(self.settings.staging_container, f"{package_id}/manifest.json")
        blob.upload_blob(raw, overwrite=True)
        uploaded = time.monotonic()  # A starts: the manifest upload is done

        wanted = {c["email"] for c in CLASSIFIERS}
        wait_until(
            lambda: {str(m["To"]) for _, m in self.signoff_emails(package_id)} >= wanted,
            f"the sign-off emails of {package_id}",
            self.host,
            self.args.timeout,
        )
        emails = self.signoff_emails(package_id)
        a = max(t for t, m in emails if str(m["To"]) in wanted) - uploaded

        tokens: dict[str, str] = {}
        for _, message in emails:
            match = TOKEN_RE.search(body_text(message))
            if not match:
                raise RuntimeError(f"a sign-off email of {package_id} without its link")
            tokens[str(message["To"])] = match.group(1)
        links = {c["email"]: self.host.url(f"signoff/{tokens[c['email']]}") for c in CLASSIFIERS}
        for person in CLASSIFIERS[:-1]:
            self.approve(links[person["email"]], package_id, "awaiting_signoff")
        if self.pace and self.last_release is not None:
            # Reviewers click at their own moment: the release queue has been idle, its poller backed off,
            # and the click falls anywhere within one polling interval.
            idle, spread = self.pace
            time.sleep(max(0.0, self.last_release + idle + random.uniform(0, spread) - time.monotonic()))

        subject = f"Data egress: {package_id} is ready to download"

        def ready() -> list[tuple[float, EmailMessage]]:
            return self.sink.matching(lambda m: m["Subject"] == subject and RECIPIENT in str(m["To"]))

        posted = time.monotonic()  # B starts: the last approval's POST is sent
        self.approve(links[CLASSIFIERS[-1]["email"]], package_id, None)
        wait_until(lambda: bool(ready()), f"the recipient's email for {package_id}", self.host, self.args.timeout)
        self.last_release = ready()[0][0]
        return a, self.last_release - posted

    def approve(self, link: str, package_id: str, expect_status: str | None) -> None:
        answer = requests.post(link, json={"decision": "approve", "tier": 2}, timeout=self.args.timeout)
        if answer.status_code != 200:
            raise RuntimeError(f"approval of {package_id} answered {answer.status_code}: {answer.text[:500]}")
        status = answer.json().get("package_status")
        if expect_status and status != expect_status:
            raise RuntimeError(f"approval of {package_id}: package status {status!r}, expected {expect_status!r}")


def row(label: str, values_ms: list[float], target: float) -> str:
    p50 = percentile(values_ms, 50)
    figures = [p50, percentile(values_ms, 95), min(values_ms), max(values_ms)]
    verdict = "PASS" if p50 <= target else "MISS"
    return f"  {label:<44}" + "".join(f"{v:>8.0f}" for v in figures) + f"   p50 <= {target:>5.0f}  {verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=20, help="packages measured, one after another")
    parser.add_argument("--files", type=int, default=10, help="small files per package")
    parser.add_argument("--poll-seconds", type=float, default=0.25, help="the host's blob polling interval")
    parser.add_argument("--warmup", type=int, default=1, help="packages run first and not counted")
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="post the last approval at once, while the queue poller is still polling fast after the previous "
        "release (default: only once the release queue has been idle long enough for the poller to back off, "
        "at a random moment within one maxPollingInterval, as a reviewer's click would come)",
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for any one email")
    parser.add_argument("--keep-log", action="store_true", help="print the host's log path and keep it")
    args = parser.parse_args()
    if args.packages < 1 or args.files < 1:
        parser.error("--packages and --files must be at least 1")

    options = QueueOptions.from_host_json(json.loads((ROOT / "host.json").read_text()))
    raw_interval = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"].get("maxPollingInterval")
    pace = None if args.back_to_back else (backed_off_after(options), options.max_polling_interval)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-signoff-"))
    azurite = sink = host = None
    try:
        azurite = start_azurite()
        sink = start_timed_sink()
        cs = azurite.connection_string()
        host_port = free_port()
        settings = Settings(
            EGRESS_STORAGE=cs,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=sink.port,
            SAS_ALLOW_HTTP=True,
            SYSTEM_MANAGER_EMAIL=MANAGER,
            PUBLIC_BASE_URL=f"http://127.0.0.1:{host_port}",
            LOCAL_SECRETS_DIR=str(workdir / "secrets"),
        )
        settings_file = write_local_settings(
            settings,
            workdir / "local.settings.json",
            LOCAL_FUNCTION_KEY=secrets.token_urlsafe(24),
            BLOB_TRIGGER_SOURCE="LogsAndContainerScan",
        )
        host = Host(host_port, settings_file, workdir / "host.log", args.poll_seconds)
        host.start()
        service = BlobServiceClient.from_connection_string(cs)
        staging = service.get_container_client(settings.staging_container)
        if not staging.exists():
            staging.create_container()

        bench = Bench(host, sink, service, settings, args, pace)
        for _ in range(args.warmup):
            bench.one()
            sink.clear()
        a_ms, b_ms = [], []
        for n in range(args.packages):
            a, b = bench.one()
            a_ms.append(a * 1000)
            b_ms.append(b * 1000)
            sink.clear()
            print(f"  package {n + 1:>3}/{args.packages}: A {a * 1000:6.0f} ms   B {b * 1000:6.0f} ms", flush=True)

        elapsed = time.monotonic() - started
        print()
        print(
            f"sign-off latency: {args.packages} packages x {args.files} small files, sequential "
            f"({args.warmup} warm-up not counted), local host on Azurite; run took {elapsed:.0f} s"
        )
        print(
            f"  settings: --poll-seconds {args.poll_seconds:g} (blob polling); host.json "
            f"extensions.queues.maxPollingInterval {raw_interval} ({options.max_polling_interval:g} s, "
            f"back-off from {MIN_POLLING_INTERVAL:g} s)"
        )
        if pace:
            print(
                f"  pacing: each last approval posted {pace[0]:.1f} s + U(0, {pace[1]:g}) s after the previous "
                "release email (the queue idle and its poller backed off, as between real reviewers' clicks)"
            )
        else:
            print("  pacing: --back-to-back (last approval at once: the queue poller may still be polling fast)")
        print(
            "  figures include: A = the local blob polling delay (0..poll seconds; in Azure an Event Grid "
            "event replaces it) + intake (verify files, registry, 3 emails via SMTP); B = the approval POST + "
            "queue polling delay (0..maxPollingInterval, as in Azure) + seal + deliver + email via SMTP"
        )
        print(f"  {'':<44}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}   (ms)")
        print(row("A manifest uploaded -> 3 sign-off emails", a_ms, TARGETS["A"]))
        print(row("B last approval POST -> recipient's email", b_ms, TARGETS["B"]))
        return 0
    finally:
        if host is not None:
            host.stop()
        if sink is not None:
            sink.controller.stop()  # type: ignore[attr-defined]
        if azurite is not None:
            azurite.stop()
        if args.keep_log and (workdir / "host.log").exists():
            print(f"host log kept: {workdir / 'host.log'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
