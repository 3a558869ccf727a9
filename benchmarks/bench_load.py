"""Load benchmark (issue 10): many packages staged at once on the parallel local host.

Starts its own Azurite, SMTP sink and local host (``python -m devhost --instances N``, a subprocess
with its own settings file and function key, on free ports), then:
  1. stages P packages of F small files at once: every file first, then every manifest, each batch
     uploaded as fast as a thread pool can;
  2. as each package's three "Sign-off needed" emails arrive, approves through each link (JSON POST
     ``{"decision": "approve", "tier": 2}``), packages concurrently;
  3. waits for every package's recipient email ("... is ready to download"), then a settling time
     in which a duplicate would still show up;
  4. checks that every package was released exactly once: status ``granted`` (``GET
     /api/packages/{id}`` with the function key), exactly one grant, exactly one link email and
     exactly one sign-off email per classifier.

    .venv/bin/python benchmarks/bench_load.py [--packages 50] [--files 10] [--instances 2]
        [--poll-seconds 0.25] [--timeout 300] [--settle 10]

Prints EXACT, or the packages that were not exact with the evidence, and then exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from requests.adapters import HTTPAdapter

from benchmarks.bench_signoff import (
    APP_SETTINGS,
    CLASSIFIERS,
    MANAGER,
    RECIPIENT,
    Host,
    TimedSink,
    percentile,
    start_timed_sink,
)
from shared.settings import Settings
from tests.support.flow import TOKEN_RE
from tests.support.packages import manifest_for, new_package_id
from tests.support.rounds import ONCE
from tests.support.servers import ROOT, body_text, free_port, start_azurite, wait_for_port
from tests.support.settings_file import write_local_settings

PREFIX = "load"
PACKAGE_RE = re.compile(rf"{PREFIX}-[0-9a-f]{{8}}")
FILE_THREADS = 32
APPROVAL_THREADS = 16
ROLE_OF = {c["email"]: c["role"] for c in CLASSIFIERS}
# Manager emails of a released package, by the words of their subject (shared/services/notifications.py).
MANAGER_KINDS = {
    "sign-off requested": re.compile(r"^Data egress: sign-off requested for (\S+)$"),
    "signed off": re.compile(r"^Data egress: (\S+) signed off at tier \d+$"),
    "grants issued": re.compile(r"^Data egress: grants issued for (\S+)$"),
}
EXECUTED_RE = re.compile(
    r"(?:\[instance (\d+)\] )?Executed 'Functions\.(\w+)' \((Succeeded|Failed), Id=[^,]+, Duration=(\d+)ms"
)


class ParallelHost(Host):
    """bench_signoff's Host with ``--instances``: waits until every instance has started."""

    def __init__(self, port: int, settings_file: Path, log: Path, poll_seconds: float, instances: int) -> None:
        super().__init__(port, settings_file, log, poll_seconds)
        self.instances = instances
        self.extra_pids: list[int] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
        command = [sys.executable, "-m", "devhost", "--port", str(self.port), "--settings", str(self.settings_file)]
        command += ["--poll-seconds", str(self.poll_seconds), "--instances", str(self.instances)]
        with self.log.open("ab") as out:  # the child (and the instances it starts) keep their own copy
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:  # the port answers once instance 0's triggers have started
            if not self.alive():
                raise RuntimeError(f"the local host stopped at start:\n{self.tail()}")
            try:
                wait_for_port(self.port, timeout=0.5)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the local host did not answer within 90 s:\n{self.tail()}") from None
        wanted = {f"Instance {k} (" for k in range(1, self.instances)}
        while True:  # then the extra instances, which instance 0 starts after its own triggers
            text = self.log.read_text(errors="replace")
            if all(w in text for w in wanted):
                break
            if not self.alive():
                raise RuntimeError(f"the local host stopped at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every host instance started within 90 s:\n{self.tail()}")
            time.sleep(0.1)
        self.extra_pids = self._children()

    def _children(self) -> list[int]:
        if self.process is None:
            return []
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # instance 0 stops the others (up to 20 s) and then itself
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # An extra instance stops within a second of its parent; any still there is ended by its id.
        deadline = time.monotonic() + 5
        for pid in self.extra_pids:
            while _is_our_instance(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_our_instance(pid):
                try:
                    os.kill(pid, 15)
                except OSError:
                    pass


def _is_our_instance(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"devhost" in cmdline and b"--instance" in cmdline


@dataclass
class Package:
    package_id: str
    files: dict[str, bytes]
    manifest_started: float = 0.0
    manifest_uploaded: float = 0.0
    signoffs: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))  # email -> links
    links: list[float] = field(default_factory=list)  # arrival of each "ready to download" email
    manager: Counter[str] = field(default_factory=Counter)
    approval: Future[float] | None = None  # the moment the last approval's POST was sent
    approval_error: str | None = None
    status: dict[str, Any] | None = None
    status_error: str | None = None

    def signed_off_requested(self) -> bool:
        return all(self.signoffs.get(c["email"]) for c in CLASSIFIERS)

    def last_approval(self) -> float | None:
        if self.approval is None or not self.approval.done() or self.approval.exception() is not None:
            return None
        return self.approval.result()

    def problems(self) -> list[str]:
        found = []
        if self.approval_error:
            found.append(f"approval failed: {self.approval_error}")
        if self.status_error:
            found.append(f"status query failed: {self.status_error}")
        elif self.status is not None:
            if self.status["status"] != "granted":
                found.append(f"status {self.status['status']!r}")
            grants = self.status.get("grants", [])
            if len(grants) != 1:
                found.append(f"{len(grants)} grants {[g['grant_id'] for g in grants]}")
            actions = Counter(e["action"] for e in self.status.get("audit", []))
            repeated = {a: actions[a] for a in ONCE if actions[a] != 1}
            if repeated:
                found.append(f"audit events not exactly once {repeated}")
        if len(self.links) != 1:
            found.append(f"{len(self.links)} link emails")
        for c in CLASSIFIERS:
            count = len(self.signoffs.get(c["email"], []))
            if count != 1:
                found.append(f"{count} sign-off emails to {c['role']}")
        return found


class Mailbox:
    """Sorts the sink's arrivals into the packages, reading only what came since the last look."""

    def __init__(self, sink: TimedSink, packages: dict[str, Package]) -> None:
        self.sink = sink
        self.packages = packages
        self.seen = 0
        self.other: list[str] = []

    def read(self) -> None:
        with self.sink.lock:
            new = self.sink.arrivals[self.seen :]
            self.seen += len(new)
        for arrived, message in new:
            subject, to = str(message["Subject"]), str(message["To"])
            match = PACKAGE_RE.search(subject)
            package = self.packages.get(match.group(0)) if match else None
            if package is None:
                self.other.append(f"{to}: {subject}")
            elif subject == f"Sign-off needed: {package.package_id}":
                link = TOKEN_RE.search(body_text(message))
                package.signoffs[to].append((arrived, link.group(1) if link else ""))
            elif subject == f"Data egress: {package.package_id} is ready to download" and RECIPIENT in to:
                package.links.append(arrived)
            elif MANAGER in to:
                kind = next((k for k, r in MANAGER_KINDS.items() if (m := r.match(subject)) and m.group(1)), None)
                package.manager[kind or f"other ({subject})"] += 1
            else:
                self.other.append(f"{to}: {subject}")


def small_files(package_id: str, count: int) -> dict[str, bytes]:
    """bench_signoff's small files: a few lines of CSV each."""
    return {
        f"tables/t{i:02d}.csv": f"cohort,n,mean\n{package_id},{i},{secrets.randbelow(1000)}\n".encode() * (1 + i)
        for i in range(count)
    }


def approve(host: Host, package: Package, timeout: float) -> float:
    """Each classifier approves through their own link, in order; returns when the last POST was sent."""
    sent = 0.0
    for person in CLASSIFIERS:
        token = package.signoffs[person["email"]][0][1]
        if not token:
            raise RuntimeError(f"the sign-off email to {person['role']} has no link")
        sent = time.monotonic()
        answer = requests.post(host.url(f"signoff/{token}"), json={"decision": "approve", "tier": 2}, timeout=timeout)
        if answer.status_code != 200:
            raise RuntimeError(f"{person['role']}'s approval answered {answer.status_code}: {answer.text[:300]}")
    return sent


def blob_service(connection_string: str, pool: int) -> BlobServiceClient:
    """A client whose connection pool is as large as the thread pool that shares it."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    transport = RequestsTransport(session=session, session_owner=False)
    return BlobServiceClient.from_connection_string(connection_string, transport=transport)


def stage_all(service: BlobServiceClient, container: str, packages: list[Package]) -> tuple[float, float]:
    """Every file, then every manifest, at once; returns the two phases' durations."""
    client = service.get_container_client(container)
    files = [(p.package_id, path, data) for p in packages for path, data in p.files.items()]
    started = time.monotonic()
    with ThreadPoolExecutor(FILE_THREADS) as pool:
        list(pool.map(lambda f: client.upload_blob(f"{f[0]}/files/{f[1]}", f[2], overwrite=True), files))
    files_done = time.monotonic()
    manifests = {p.package_id: json.dumps(manifest_for(p.package_id, p.files), indent=2).encode() for p in packages}

    def upload(package: Package) -> None:
        package.manifest_started = time.monotonic()
        client.upload_blob(f"{package.package_id}/manifest.json", manifests[package.package_id], overwrite=True)
        package.manifest_uploaded = time.monotonic()

    start_manifests = threading.Barrier(len(packages))

    def upload_together(package: Package) -> None:
        start_manifests.wait(timeout=60)
        upload(package)

    with ThreadPoolExecutor(len(packages)) as pool:
        list(pool.map(upload_together, packages))
    return files_done - started, max(p.manifest_uploaded for p in packages) - min(p.manifest_started for p in packages)


def drive(host: Host, mailbox: Mailbox, packages: list[Package], args: argparse.Namespace, deadline: float) -> bool:
    """Approve each package once its sign-off emails are in; True once every link email has come."""
    with ThreadPoolExecutor(APPROVAL_THREADS) as pool:
        while True:
            mailbox.read()
            for package in packages:
                if package.approval is None and package.signed_off_requested():
                    package.approval = pool.submit(approve, host, package, args.timeout)
                if package.approval is not None and package.approval.done() and package.approval.exception():
                    package.approval_error = str(package.approval.exception())
            waiting = [p for p in packages if not p.links and not p.approval_error]
            if not waiting:
                return all(p.links for p in packages)
            if not host.alive():
                raise RuntimeError(f"the local host stopped during the run:\n{host.tail()}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


def fetch_status(host: Host, key: str, package: Package) -> None:
    try:
        answer = requests.get(host.url(f"packages/{package.package_id}"), headers={"x-functions-key": key}, timeout=60)
        if answer.status_code != 200:
            package.status_error = f"{answer.status_code}: {answer.text[:300]}"
        else:
            package.status = answer.json()
    except requests.RequestException as exc:
        package.status_error = str(exc)


def ms(values: list[float]) -> str:
    if not values:
        return "       -" * 4
    figures = [percentile(values, 50), percentile(values, 95), min(values), max(values)]
    return "".join(f"{v * 1000:>8.0f}" for v in figures) + f"   n={len(values)}"


def distribution(counts: list[int]) -> str:
    """ "1 x 50" or "1 x 48, 2 x 2": how many packages had each count."""
    return ", ".join(f"{n} x {k}" for n, k in sorted(Counter(counts).items()))


def host_summary(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    runs: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for match in EXECUTED_RE.finditer(text):
        runs[(match.group(2), match.group(3))][match.group(1) or "0"] += 1
        durations[(match.group(2), match.group(3))].append(int(match.group(4)) / 1000)
    lines = []
    for (name, outcome), per_instance in sorted(runs.items()):
        if name in ("signoff_decide", "signoff_page", "package_status"):
            continue
        split = ", ".join(f"instance {k}: {n}" for k, n in sorted(per_instance.items()))
        took = durations[(name, outcome)]
        lines.append(
            f"  {name} {outcome}: {sum(per_instance.values())} ({split}); duration p50 "
            f"{percentile(took, 50) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms"
        )
    troubles = [
        line
        for line in text.splitlines()
        if re.search(r"WARNING|ERROR|Traceback|System\.Exception|poison|lease .* lost", line)
    ]
    lines.append(f"  warning/error/exception lines in the host log: {len(troubles)}")
    lines += [f"    {line}" for line in troubles[:20]]
    return lines


def queue_depths(settings: Settings) -> str:
    found = []
    for name in (settings.release_queue, f"{settings.release_queue}-poison"):
        client = QueueClient.from_connection_string(settings.egress_storage, name)
        try:
            found.append(f"{name} {client.get_queue_properties().approximate_message_count}")
        except Exception:  # the poison queue exists only once a message went there
            found.append(f"{name} (none)")
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=50, help="packages staged at once")
    parser.add_argument("--files", type=int, default=10, help="small files per package")
    parser.add_argument("--instances", type=int, default=2, help="local host instances on the same storage")
    parser.add_argument("--poll-seconds", type=float, default=0.25, help="the host's blob polling interval")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds from the first manifest upload to the last link email"
    )
    parser.add_argument(
        "--settle", type=float, default=10, help="seconds to keep listening after the last link email (duplicates)"
    )
    parser.add_argument("--keep-log", action="store_true", help="keep the host's log (kept anyway when not exact)")
    args = parser.parse_args()
    if args.packages < 1 or args.files < 1 or args.instances < 1:
        parser.error("--packages, --files and --instances must be at least 1")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    keep = args.keep_log
    azurite = sink = host = None
    try:
        azurite = start_azurite()
        sink = start_timed_sink()
        cs = azurite.connection_string()
        host_port = free_port()
        key = secrets.token_urlsafe(24)
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
            LOCAL_FUNCTION_KEY=key,
            BLOB_TRIGGER_SOURCE="LogsAndContainerScan",
        )
        host = ParallelHost(host_port, settings_file, workdir / "host.log", args.poll_seconds, args.instances)
        host.start()
        service = blob_service(cs, max(FILE_THREADS, args.packages))
        staging = service.get_container_client(settings.staging_container)
        if not staging.exists():
            staging.create_container()

        ids = [new_package_id(PREFIX) for _ in range(args.packages)]
        packages = [Package(package_id, small_files(package_id, args.files)) for package_id in ids]
        by_id = {p.package_id: p for p in packages}
        mailbox = Mailbox(sink, by_id)

        files_s, manifests_s = stage_all(service, settings.staging_container, packages)
        first = min(p.manifest_started for p in packages)
        complete = drive(host, mailbox, packages, args, first + args.timeout)
        last_link = max((p.links[0] for p in packages if p.links), default=None)
        time.sleep(args.settle)  # a duplicate email would come now
        mailbox.read()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: fetch_status(host, key, p), packages))
        mailbox.read()
        depths = queue_depths(settings)

        print()
        print(
            f"load: {args.packages} packages x {args.files} small files staged at once; local host "
            f"--instances {args.instances} --poll-seconds {args.poll_seconds:g} on Azurite; run took "
            f"{time.monotonic() - started:.0f} s"
        )
        print(
            f"  staging: {args.packages * args.files} files in {files_s:.2f} s ({FILE_THREADS} threads), then "
            f"{args.packages} manifests in {manifests_s:.2f} s ({args.packages} threads, released together); "
            f"approvals on {APPROVAL_THREADS} threads, each package's three in turn"
        )
        if last_link is not None:
            print(
                f"  wall time, first manifest upload -> last link email: {last_link - first:.2f} s"
                + ("" if complete else f"  (INCOMPLETE: timed out after {args.timeout:g} s)")
            )
        else:
            print(f"  wall time: no link email at all within {args.timeout:g} s")
        print(f"  {'':<42}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}   (ms)")
        to_signoff = [
            max(p.signoffs[c["email"]][0][0] for c in CLASSIFIERS) - p.manifest_uploaded
            for p in packages
            if p.signed_off_requested()
        ]
        to_link = [p.links[0] - p.manifest_uploaded for p in packages if p.links]
        from_approval = [p.links[0] - t for p in packages if p.links and (t := p.last_approval()) is not None]
        print(f"  {'manifest uploaded -> 3 sign-off emails':<42}{ms(to_signoff)}")
        print(f"  {'manifest uploaded -> link email':<42}{ms(to_link)}")
        print(f"  {'last approval POST sent -> link email':<42}{ms(from_approval)}")

        print(f"emails per package (count x packages), after {args.settle:g} s of settling:")
        for c in CLASSIFIERS:
            counts = [len(p.signoffs.get(c["email"], [])) for p in packages]
            print(f"  {'sign-off request to ' + c['role']:<50}{distribution(counts)}")
        print(f"  {'link email to the recipient':<50}{distribution([len(p.links) for p in packages])}")
        kinds = list(MANAGER_KINDS) + sorted({k for p in packages for k in p.manager if k not in MANAGER_KINDS})
        for kind in kinds:
            print(f"  {'manager: ' + kind:<50}{distribution([p.manager[kind] for p in packages])}")
        print(f"  {'manager emails in all':<50}{distribution([sum(p.manager.values()) for p in packages])}")
        if mailbox.other:
            print(f"  emails not of a package: {len(mailbox.other)}")
            for line in mailbox.other[:10]:
                print(f"    {line}")
        print("host:")
        for line in host_summary(host.log):
            print(line)
        print(f"  queues after settling: {depths}")

        print("exactly once (status granted, one grant, one link email, one sign-off email per classifier):")
        inexact = {p.package_id: p.problems() for p in packages if p.problems()}
        if not inexact:
            print(f"EXACT ({len(packages)}/{len(packages)} packages)")
            return 0
        keep = True
        print(f"NOT EXACT: {len(inexact)} of {len(packages)} packages")
        log_lines = host.log.read_text(errors="replace").splitlines()
        for package_id, problems in inexact.items():
            print(f"  {package_id}: {'; '.join(problems)}")
            for line in [line for line in log_lines if package_id in line][:15]:
                print(f"      {line}")
        return 1
    except BaseException:
        keep = True
        raise
    finally:
        if host is not None:
            host.stop()
        if sink is not None:
            sink.controller.stop()  # type: ignore[attr-defined]
        if azurite is not None:
            azurite.stop()
        if keep and (workdir / "host.log").exists():
            print(f"host log kept: {workdir / 'host.log'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
