"""Benchmark of the egress pipeline on a local Azurite.

Starts its own Azurite and SMTP sink, then measures, in one run:
  1. verification throughput (streamed SHA-256 of a staged blob) as a ratio to a plain
     streamed download of the same blob with the same client settings;
  2. time from manifest upload to the recipient's email, for one large file and for 1,000 small files,
     with every named person approving at once through their emailed link (sign-off, DESIGN.md
     section 3a) and the release queue run as its trigger would; split into intake (upload ->
     sign-off requests sent), sign-off (the approvals) and release (seal + deliver -> email);
  3. this process's peak RSS across everything above.

    .venv/bin/python benchmarks/bench_pipeline.py [--large-mib 1024] [--small-files 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.storage.blob import BlobServiceClient

from shared.adapters.blob_store import CHUNK_BYTES, client_options
from shared.bootstrap import build_services
from shared.settings import Settings
from tests.support.flow import approve_all, drain
from tests.support.packages import manifest_for
from tests.support.servers import start_azurite, start_smtp_sink


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def run_package(services, service, sink, package_id: str, entries: list[dict]) -> dict[str, float]:
    """Upload -> intake -> everyone approves -> queued release; the seconds of each part and in all."""
    manifest = manifest_for(package_id, {})
    manifest["files"] = entries
    raw = json.dumps(manifest).encode()
    sink.clear()
    container = services.settings.staging_container
    start = time.monotonic()
    service.get_blob_client(container, f"{package_id}/manifest.json").upload_blob(raw, overwrite=True)
    outcome = services.intake.process(package_id, raw)
    if outcome != "awaiting_signoff":
        raise RuntimeError(f"{package_id}: {outcome} {services.registry.get_package(package_id)}")
    asked = time.monotonic()
    approve_all(services, sink, package_id)
    signed = time.monotonic()
    sink.clear()  # Ada is also the data provider representative: wait for her links, not her sign-off email
    drain(services)
    record = services.registry.get_package(package_id)
    if record is None or record.status != "granted":
        raise RuntimeError(f"{package_id}: not granted: {record}")
    done = wait_for_mail(sink, "ada@provider.example")
    return {"intake": asked - start, "signoff": signed - asked, "release": done - signed, "total": done - start}


def report(times: dict[str, float]) -> str:
    return (
        f"{times['total']:.1f} s (intake {times['intake']:.1f} s, sign-off {times['signoff']:.1f} s, "
        f"release {times['release']:.1f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    azurite = start_azurite()
    sink = start_smtp_sink()
    try:
        cs = azurite.connection_string()
        settings = Settings(
            EGRESS_STORAGE=cs, SMTP_PORT=sink.port, SAS_ALLOW_HTTP=True, SYSTEM_MANAGER_EMAIL="sm@dsh.example"
        )
        services = build_services(settings)
        service = BlobServiceClient.from_connection_string(cs, **client_options())
        container = settings.staging_container

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

        # 2b. 1,000 small files end to end
        entries = []
        for i in range(args.small_files):
            data = f"row,{i}\n".encode() * (1 + i % 50)
            service.get_blob_client(container, f"bench-small/files/part{i // 100}/f{i:05d}.csv").upload_blob(data)
            entries.append(
                {"path": f"part{i // 100}/f{i:05d}.csv", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
        small_time = run_package(services, service, sink, "bench-small", entries)
        print(f"small files: {args.small_files:,}")
        print(f"  manifest upload -> email: {report(small_time)}  (target <= 10 s)")
        print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB  (target < 200 MiB)")
    finally:
        sink.controller.stop()  # type: ignore[attr-defined]
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
