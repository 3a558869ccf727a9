"""Benchmark of the egress pipeline on a local Azurite.

Starts its own Azurite and SMTP sink, then measures, in one run:
  1. verification throughput (streamed SHA-256 of a staged blob) as a ratio to a plain
     streamed download of the same blob with the same client settings;
  2. time from manifest upload to the recipient's email, for one large file and for 1,000 small files,
     with every named person approving at once through their emailed link (sign-off, DESIGN.md
     section 3a) and the release queue run as its trigger would; split into intake (upload ->
     sign-off requests sent), sign-off (the approvals) and release (seal + deliver -> email), and,
     for each part of the small-file package, where the time went: storage requests per file (as
     sent through azure-core's transport), this process's CPU and Azurite's CPU;
  3. this process's peak RSS across everything above.

    .venv/bin/python benchmarks/bench_pipeline.py [--large-mib 1024] [--small-files 1000] [--small-only]
        [--two-accounts]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient

from shared.adapters.blob_store import CHUNK_BYTES, client_options
from shared.bootstrap import build_services
from shared.settings import Settings
from tests.support.flow import approve_all, drain
from tests.support.packages import manifest_for
from tests.support.servers import DELIVERY_ACCOUNT, DELIVERY_KEY, start_azurite, start_smtp_sink


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Requests:
    """Counts every storage request this process sends, by kind (instrumentation for this script only)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self._lock = threading.Lock()
        send = RequestsTransport.send

        def counted(transport, request, **kwargs):  # type: ignore[no-untyped-def]
            query = request.url.partition("?")[2]
            comp = ",".join(p for p in query.split("&") if p.startswith(("comp=", "restype=")))
            kind = f"{request.method} {comp}{' copy' if 'x-ms-copy-source' in request.headers else ''}".strip()
            with self._lock:
                self.kinds[kind] += 1
            return send(transport, request, **kwargs)

        RequestsTransport.send = counted  # type: ignore[method-assign]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.kinds)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Mark:
    wall: float
    cpu: float
    azurite_cpu: float
    requests: Counter[str]


class Meter:
    def __init__(self, azurite_pid: int, requests: Requests) -> None:
        self._pid = azurite_pid
        self._requests = requests

    def mark(self) -> Mark:
        return Mark(time.monotonic(), time.process_time(), process_cpu(self._pid), self._requests.snapshot())

    @staticmethod
    def line(name: str, start: Mark, end: Mark, files: int) -> str:
        wall, cpu, azurite = end.wall - start.wall, end.cpu - start.cpu, end.azurite_cpu - start.azurite_cpu
        kinds = end.requests - start.requests
        count = sum(kinds.values())
        top = ", ".join(f"{n:,} {k}" for k, n in kinds.most_common(4))
        per_request = f", {1000 * wall / count:.1f} ms wall a request" if count else ""
        return (
            f"    {name:8s} {wall:5.1f} s: this process {cpu:4.1f} s CPU, Azurite {azurite:4.1f} s CPU; "
            f"{count:,} requests ({count / files:.2f} a file{per_request}): {top}"
        )


def upload_large(service: BlobServiceClient, container: str, name: str, mib: int) -> tuple[int, str]:
    """Upload ``mib`` MiB of random bytes as a stream; return size and SHA-256."""
    sha = hashlib.sha256()
    block = os.urandom(CHUNK_BYTES)

    def chunks():  # a rotating pattern keeps generation cheap and memory flat
        for i in range(mib * 1024 * 1024 // CHUNK_BYTES):
            data = block[i % 97 :] + block[: i % 97]
            sha.update(data)
            yield data

    service.get_blob_client(container, name).upload_blob(chunks(), overwrite=True, max_concurrency=1)
    return mib * 1024 * 1024, sha.hexdigest()


def wait_for_mail(sink, address: str, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.to(address):
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError("no email arrived")


def run_package(
    services, service, sink, package_id: str, entries: list[dict], meter: Meter | None = None
) -> dict[str, float]:
    """Upload -> intake -> everyone approves -> queued release; the seconds of each part and in all.
    With ``meter``, also prints where each part's time went."""
    manifest = manifest_for(package_id, {})
    manifest["files"] = entries
    raw = json.dumps(manifest).encode()
    sink.clear()
    container = services.settings.staging_container
    marks = [meter.mark()] if meter else []
    start = time.monotonic()
    service.get_blob_client(container, f"{package_id}/manifest.json").upload_blob(raw, overwrite=True)
    outcome = services.intake.process(package_id, raw)
    if outcome != "awaiting_signoff":
        raise RuntimeError(f"{package_id}: {outcome} {services.registry.get_package(package_id)}")
    asked = time.monotonic()
    marks += [meter.mark()] if meter else []
    approve_all(services, sink, package_id)
    signed = time.monotonic()
    marks += [meter.mark()] if meter else []
    sink.clear()  # Ada is also the data provider representative: wait for her links, not her sign-off email
    drain(services)
    record = services.registry.get_package(package_id)
    if record is None or record.status != "granted":
        raise RuntimeError(f"{package_id}: not granted: {record}")
    finished = time.monotonic()
    wait_for_mail(sink, "ada@provider.example")
    done = sink.first_arrival("ada@provider.example")  # the handler goes on to empty staging after it
    assert done is not None
    if meter:
        marks.append(meter.mark())
        for name, begin, end in zip(("intake", "sign-off", "release"), marks, marks[1:], strict=False):
            print(meter.line(name, begin, end, len(entries)))
        print(f"    (release went on for {max(0.0, finished - done):.1f} s after the email, emptying staging)")
    return {"intake": asked - start, "signoff": signed - asked, "release": done - signed, "total": done - start}


def report(times: dict[str, float]) -> str:
    return (
        f"{times['total']:.1f} s (intake {times['intake']:.1f} s, sign-off {times['signoff']:.1f} s, "
        f"release {times['release']:.1f} s)"
    )


def large(args: argparse.Namespace, services, service: BlobServiceClient, sink, container: str) -> None:
    """Parts 1 and 2a: verification throughput, and one large file end to end."""
    # 1. verification vs plain download, same blob, alternating rounds
    size, digest = upload_large(service, container, "bench-large/files/large.bin", args.large_mib)
    plain, verify = [], []
    for _ in range(args.rounds):
        t = time.monotonic()
        n = sum(len(c) for c in services.staging.chunks(container, "bench-large/files/large.bin"))
        plain.append(time.monotonic() - t)
        assert n == size
        t = time.monotonic()
        found = services.staging.digest(container, "bench-large/files/large.bin")
        verify.append(time.monotonic() - t)
        assert found.sha256 == digest
    mib = size / 2**20
    print(f"large file: {mib:.0f} MiB")
    print(f"  plain download : best {min(plain):.2f} s  ({mib / min(plain):.0f} MiB/s)")
    print(f"  verify (sha256): best {min(verify):.2f} s  ({mib / min(verify):.0f} MiB/s)")
    print(f"  verification throughput ratio: {min(plain) / min(verify):.2f}  (target >= 0.90)")

    # 2a. the large package end to end
    large_time = run_package(
        services, service, sink, "bench-large", [{"path": "large.bin", "size": size, "sha256": digest}]
    )
    print(f"  manifest upload -> email, {mib:.0f} MiB package: {report(large_time)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-only", action="store_true", help="only the small-file package (no large file)")
    parser.add_argument(
        "--two-accounts",
        action="store_true",
        help="seal into a second Azurite account (DELIVERY_STORAGE), as Azure copies from staging to delivery",
    )
    args = parser.parse_args()

    azurite = start_azurite()
    sink = start_smtp_sink()
    try:
        cs = azurite.connection_string()
        delivery = {"DELIVERY_STORAGE": azurite.connection_string(DELIVERY_ACCOUNT, DELIVERY_KEY)}
        settings = Settings(
            EGRESS_STORAGE=cs,
            SMTP_PORT=sink.port,
            SAS_ALLOW_HTTP=True,
            SYSTEM_MANAGER_EMAIL="sm@dsh.example",
            **(delivery if args.two_accounts else {}),
        )
        services = build_services(settings)
        service = BlobServiceClient.from_connection_string(cs, **client_options())
        container = settings.staging_container
        if not args.small_only:
            large(args, services, service, sink, container)

        # 2b. 1,000 small files end to end
        entries = []
        for i in range(args.small_files):
            data = f"row,{i}\n".encode() * (1 + i % 50)
            service.get_blob_client(container, f"bench-small/files/part{i // 100}/f{i:05d}.csv").upload_blob(data)
            entries.append(
                {"path": f"part{i // 100}/f{i:05d}.csv", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
        print(f"small files: {args.small_files:,} (where the time went:)")
        meter = Meter(azurite.process.pid, Requests())
        small_time = run_package(services, service, sink, "bench-small", entries, meter)
        print(f"  manifest upload -> email: {report(small_time)}  (target <= 5 s)")
        print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB  (target < 200 MiB)")
    finally:
        sink.controller.stop()  # type: ignore[attr-defined]
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
