"""Memory and size bounds of a rejection with 10,000 reasons (issue 11, item 3).

A manifest lists 10,000 files with 1,024-character paths (about 11 MB of JSON) and none of them is
staged, so intake finds 10,000 reasons of about 1,080 characters each. Measured, each in its own
subprocess so that one measurement does not inherit another's heap:

  build   tracemalloc peak of building the reasons, the manager's rejection email and the
          registry entity from them (no storage), and the sizes of what was built;
  intake  peak RSS (getrusage) of ``IntakeService.process`` on that manifest on a local Azurite,
          with the process's RSS before it (imports and clients) for comparison, the outcome,
          where the package ended, and the size of the email the SMTP sink received.

    .venv/bin/python benchmarks/bench_bounds.py [--files 10000] [--path-chars 1024]

Targets: the email under 1 MB (both parts together), the stored rejection list under one table
property (32,768 UTF-16 code units), intake under 200 MiB peak RSS. Exit 1 if one is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.packages import manifest_for, new_package_id

MIB = 2**20
TARGET_EMAIL_BYTES = 1_000_000
TARGET_RSS_MIB = 200.0
MANAGER = "system-manager@dsh.example"


def _path(i: int, chars: int) -> str:
    """A valid path of exactly ``chars`` characters: folders of 200 (a name may have 255 bytes at most)."""
    head, tail = f"outputs/run-{i:05d}/", ".csv"
    body = "/".join("p" * 200 for _ in range(chars // 201 + 1))[: chars - len(head) - len(tail)]
    return head + body.rstrip("/") + "q" * (chars - len(head) - len(tail) - len(body.rstrip("/"))) + tail


def build_manifest(package_id: str, files: int, path_chars: int) -> bytes:
    manifest = manifest_for(package_id, {"placeholder": b""})
    manifest["files"] = [{"path": _path(i, path_chars), "size": 1_000 + i, "sha256": "0" * 64} for i in range(files)]
    return json.dumps(manifest).encode()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- children ---------------------------------------------------------------------------------------


def child_build(manifest_file: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from shared.adapters.table_registry import _to_entity
    from shared.domain.manifest import parse_manifest
    from shared.domain.records import PackageRecord, PackageStatus
    from shared.services import notifications

    raw = Path(manifest_file).read_bytes()
    manifest = parse_manifest(raw)
    tracemalloc.start()
    reasons = [f"file {f.path!r} is listed in the manifest but was not staged" for f in manifest.files]
    mail = notifications.manager_rejected(manifest.package_id, reasons, MANAGER, "b" * 64)
    now = datetime.now(UTC)
    record = PackageRecord(
        package_id=manifest.package_id,
        status=PackageStatus.REJECTED,
        manifest_sha256="b" * 64,
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        rejection_reasons=reasons,
        created_at=now,
        updated_at=now,
    )
    entity = _to_entity(record, record.package_id, "package")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "reasons": len(reasons),
        "reason_chars": len(reasons[0]),
        "reasons_total_chars": sum(len(r) for r in reasons),
        "email_text_bytes": len(mail.text.encode()),
        "email_html_bytes": len(mail.html.encode()),
        "stored_reasons_chars": len(entity["rejection_reasons"]),
        "tracemalloc_peak_mib": round(peak / MIB, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def child_intake(manifest_file: str, connection: str, smtp_port: int) -> dict[str, Any]:
    from azure.storage.blob import BlobServiceClient

    from shared.bootstrap import build_services
    from shared.settings import Settings

    tag = secrets.token_hex(3)
    settings = Settings(
        EGRESS_STORAGE=connection,
        STAGING_CONTAINER=f"staging-{tag}",
        AUDIT_CONTAINER=f"audit-{tag}",
        RECORDS_CONTAINER=f"records-{tag}",
        REGISTRY_TABLE_PREFIX=f"t{tag}",
        RELEASE_QUEUE=f"release-{tag}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp_port,
        SYSTEM_MANAGER_EMAIL=MANAGER,
        SAS_ALLOW_HTTP=True,
    )
    services = build_services(settings)
    raw = Path(manifest_file).read_bytes()
    package_id = json.loads(raw)["package_id"]
    container = BlobServiceClient.from_connection_string(connection).get_container_client(settings.staging_container)
    if not container.exists():
        container.create_container()
    container.upload_blob(f"{package_id}/manifest.json", raw)  # no files staged: every one is a reason
    before = _peak_rss_mib()
    started = time.monotonic()
    try:
        outcome = str(services.intake.process(package_id, raw))
        error = None
    except Exception as exc:  # a measurement: report what broke and where the package was left
        outcome = "raised"
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    elapsed = time.monotonic() - started
    record = services.registry.get_package(package_id)
    return {
        "outcome": outcome,
        "error": error,
        "seconds": round(elapsed, 1),
        "status": record.status.value if record else None,
        "stored_reasons": len(record.rejection_reasons) if record else None,
        "audit_actions": [e.action for e in services.audit.read(package_id)],
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


# -- parent -----------------------------------------------------------------------------------------


def _run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--path-chars", type=int, default=1_024)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_build(*rest) if kind == "build" else child_intake(rest[0], rest[1], int(rest[2]))
        print(json.dumps(result))
        return 0

    from tests.support.servers import start_azurite, start_smtp_sink

    with tempfile.TemporaryDirectory() as folder:
        manifest_file = Path(folder) / "manifest.json"
        manifest_file.write_bytes(build_manifest(new_package_id("bench"), args.files, args.path_chars))
        size = manifest_file.stat().st_size
        print(f"manifest: {args.files:,} files, {args.path_chars:,}-character paths, {size:,} bytes")

        build = _run_child("build", str(manifest_file))
        print(json.dumps({"build": build}, indent=2))

        azurite, sink = start_azurite(), start_smtp_sink()
        try:
            intake = _run_child("intake", str(manifest_file), azurite.connection_string(), str(sink.port))
            with sink.lock:
                sizes = [len(m.as_bytes()) for m in sink.messages]
        finally:
            sink.controller.stop()  # type: ignore[attr-defined]
            azurite.stop()
        intake["emails_received_bytes"] = sizes
        print(json.dumps({"intake": intake}, indent=2))

    email = build["email_text_bytes"] + build["email_html_bytes"]
    missed = []
    if email >= TARGET_EMAIL_BYTES:
        missed.append(f"rejection email {email:,} bytes (target under {TARGET_EMAIL_BYTES:,})")
    if build["stored_reasons_chars"] > 32_768:
        missed.append(f"stored rejection list {build['stored_reasons_chars']:,} characters (at most 32,768)")
    if intake["peak_rss_mib"] >= TARGET_RSS_MIB:
        missed.append(f"intake peak RSS {intake['peak_rss_mib']} MiB (target under {TARGET_RSS_MIB:g})")
    if intake["outcome"] != "rejected" or intake["status"] != "rejected":
        missed.append(f"intake ended {intake['outcome']} with the package {intake['status']}: {intake['error']}")
    print("PASS" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
