"""Sweep benchmark (issue 11, item 8): the timer's pass over N active grants on N packages.

Starts its own Azurite and SMTP sink. For each N it wires the service as the app does
(``build_services``), then writes N granted link packages, each with one active grant that is not
due (expiries spread over the next 14 days), straight through the registry adapter (a thread pool:
each package is its own partition, so nothing batches) and their grants-index rows through the
index adapter (``submit_transaction`` per hour partition, up to 100 rows each). It then times:

  1. ``sweep()`` with nothing due, ``--repeat`` times (median and slowest);
  2. ``sweep()`` with K more grants due (each a real package with its container and stored access
     policy, so ending it does everything a real expiry does: the policy update, the manager's
     email, the audit entry, the record);
  3. unless N > ``--full-max``, on the same records with nothing due: the sweep as it was before
     the indexes (the same service without them: a whole-table pass), and ``sweep(full=True)``,
     that pass plus writing the index rows of all it read (the one-off backfill);
  4. where the records are written: finding a grant by its id, as revoking by id does (median of
     ``--lookups``), through the grant id index, and for a grant without its index row (as one
     written before the index existed): the pass over the whole grants table every lookup made before.

    .venv/bin/python benchmarks/bench_sweep.py [--sizes 2000 10000 100000] [--due 100] [--repeat 5]
        [--full-max 10000] [--records-max 10000] [--threads 4]

Azurite answers one request at a time (5-10 ms each on the 2-core development machine), so the
setup takes 10-20 ms per grant. Above ``--records-max`` only the index rows are written, not the
package and grant records: an indexed pass with nothing due reads the index alone, so what grows
with N there is the index table. ``--records-max 100000`` writes them all (about half an hour).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from shared.adapters.email import SmtpEmailSender
from shared.adapters.package_keys import LocalPackageKeys
from shared.adapters.release_queue import BLOB_POISON_QUEUE, StoragePoisonWatch
from shared.adapters.table_registry import TableRegistry
from shared.bootstrap import Services, SystemClock, build_services
from shared.domain.manifest import Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.ports import AccessPolicy
from shared.services.sweep import SweepReport, SweepSchedule, SweepService
from shared.settings import Settings
from tests.support.servers import Azurite, start_azurite, start_smtp_sink

CHUNK = 250  # records per task of the writing pool


@dataclass
class Row:
    n: int
    records: bool
    setup_s: float
    idle_ms: list[float]
    due: int
    due_s: float
    due_looked_at: int
    idle_after_ms: float
    before_s: float | None
    full_s: float | None
    lookup_ms: float | None
    lookup_pass_ms: float | None


def settings_for(azurite: Azurite, smtp_port: int, secrets_dir: str) -> Settings:
    tag = secrets.token_hex(3)
    return Settings(
        EGRESS_STORAGE=azurite.connection_string(),
        STAGING_CONTAINER=f"staging-{tag}",
        AUDIT_CONTAINER=f"audit-{tag}",
        RECORDS_CONTAINER=f"records-{tag}",
        REGISTRY_TABLE_PREFIX=f"b{tag}",
        RELEASE_QUEUE=f"release-{tag}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp_port,
        SAS_ALLOW_HTTP=True,
        LOCAL_SECRETS_DIR=secrets_dir,
    )


def package(package_id: str, now: datetime) -> PackageRecord:
    return PackageRecord(
        package_id=package_id,
        status=PackageStatus.GRANTED,
        manifest_sha256="0" * 64,
        title="sweep benchmark",
        method=Method.STORAGE_EXPLORER.value,
        recipient_count=1,
        created_at=now,
        updated_at=now,
        sealed_at=now,
        granted_at=now,
    )


def grant(package_id: str, now: datetime, expires_at: datetime) -> GrantRecord:
    return GrantRecord(
        grant_id=secrets.token_hex(16),
        package_id=package_id,
        recipient_index=0,
        recipient_name="Ada Byron",
        recipient_email="ada@provider.example",
        policy_id=f"p{secrets.token_hex(12)}",
        ip_ranges=["203.0.113.7"],
        status=GrantStatus.ACTIVE,
        created_at=now,
        expires_at=expires_at,
    )


def write_active(services: Services, n: int, threads: int, records: bool) -> list[GrantRecord]:
    """N granted packages with one active grant each, not due (``records``: else only their index
    rows); their rows in the grants index. Returns the grants."""
    now = datetime.now(UTC).replace(microsecond=0)
    spread = 14 * 24 * 60  # minutes: expiries from one hour ahead over the next 14 days
    grants = [grant(f"bench-{i:06d}", now, now + timedelta(hours=1, minutes=(i * 7919) % spread)) for i in range(n)]
    local = threading.local()
    settings = services.settings

    def registry() -> TableRegistry:
        if not hasattr(local, "registry"):  # a client per thread
            tables = TableServiceClient.from_connection_string(settings.egress_storage)
            local.registry = TableRegistry(tables, settings.registry_table_prefix)
        return local.registry  # type: ignore[no-any-return]

    def write(chunk: list[GrantRecord]) -> None:
        table = registry()
        for record in chunk:
            table.create_package(package(record.package_id, now))
            table.create_grant(record)

    if records:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, [grants[i : i + CHUNK] for i in range(0, n, CHUNK)]))
    schedule = SweepSchedule.of(services.config)
    services.grants_due.put_many((schedule.grant_key(g.package_id, 0), g.expires_at) for g in grants)
    return grants


def lookups(services: Services, grants: list[GrantRecord], count: int) -> tuple[float, float]:
    """Median ms to find a grant by id through the index, then for one without its index row (the
    pass over the whole table; ``get_grant`` indexes it again afterwards)."""
    registry = services.registry.inner
    sample = grants[:: max(1, len(grants) // count)][:count]
    indexed = []
    for record in sample:
        seconds, found = timed(lambda record=record: registry.get_grant(record.grant_id))
        assert isinstance(found, GrantRecord) and found.grant_id == record.grant_id
        indexed.append(seconds * 1000)
    passes = []
    for record in sample[:3]:
        registry._grant_ids.delete_entity(record.grant_id, "grant")  # as if written before the index
        seconds, found = timed(lambda record=record: registry.get_grant(record.grant_id))
        assert isinstance(found, GrantRecord) and found.grant_id == record.grant_id
        passes.append(seconds * 1000)
    return statistics.median(indexed), statistics.median(passes)


def write_due(services: Services, k: int, tag: str) -> list[str]:
    """K grants due a minute ago, each on a real package with its container and stored access policy."""
    now = datetime.now(UTC).replace(microsecond=0)
    made = []
    for i in range(k):
        record = grant(f"due-{tag}-{i:04d}", now - timedelta(hours=1), now - timedelta(minutes=1))
        container = f"egress-{record.package_id}"
        services.delivery.ensure_container(container)
        services.delivery.update_policies(
            container, add=[AccessPolicy(record.policy_id, record.created_at, record.expires_at)], remove=[]
        )
        services.registry.inner.create_package(package(record.package_id, now))
        services.registry.inner.create_grant(record)
        made.append(record)
    schedule = SweepSchedule.of(services.config)
    services.grants_due.put_many((schedule.grant_key(g.package_id, 0), g.expires_at) for g in made)
    return [g.grant_id for g in made]


def timed(work: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def unindexed(services: Services, secrets_dir: str) -> SweepService:
    """The same sweep without its indexes: every pass reads every active grant and package, as before."""
    settings = services.settings
    poison = StoragePoisonWatch(
        [
            QueueClient.from_connection_string(settings.egress_storage, name)
            for name in (f"{settings.release_queue}-poison", BLOB_POISON_QUEUE)
        ]
    )
    return SweepService(
        registry=services.registry.inner,
        delivery=services.delivery,
        sftp_store=services.sftp_store,
        records=services.staging,
        keys=LocalPackageKeys(Path(secrets_dir)),
        audit=services.audit,
        email=SmtpEmailSender(settings.smtp_host, settings.smtp_port, settings.email_sender),
        queue=services.queue,
        grants=services.end_grant,
        poison=poison,
        clock=SystemClock(),
        config=services.config,
    )


def run(azurite: Azurite, smtp_port: int, n: int, args: argparse.Namespace, secrets_dir: str) -> Row:
    services = build_services(settings_for(azurite, smtp_port, secrets_dir))
    records = n <= args.records_max
    what = "packages, grants and their index rows" if records else "index rows only"
    print(f"N={n:,}: writing {what} ...", flush=True)
    started = time.perf_counter()
    grants = write_active(services, n, args.threads, records)
    setup_s = time.perf_counter() - started
    lookup_ms, lookup_pass_ms = lookups(services, grants, args.lookups) if records else (None, None)
    services.sweep.sweep()  # warm: connections, tables
    idle = []
    for _ in range(args.repeat):
        seconds, report = timed(services.sweep.sweep)
        assert isinstance(report, SweepReport) and report.looked_at == 0 and not report.failed, report
        idle.append(seconds * 1000)
    before_s = full_s = None
    if records and n <= args.full_max:
        print(f"N={n:,}: the sweep without indexes, then a full pass ...", flush=True)
        before_s, report = timed(unindexed(services, secrets_dir).sweep)
        assert isinstance(report, SweepReport) and report.looked_at >= n and not report.failed, report
        full_s, report = timed(lambda: services.sweep.sweep(full=True))
        assert isinstance(report, SweepReport) and report.looked_at >= n and not report.failed, report
    due_ids = write_due(services, args.due, secrets.token_hex(2))
    due_s, report = timed(services.sweep.sweep)
    assert isinstance(report, SweepReport) and sorted(report.expired) == sorted(due_ids) and not report.failed
    looked_at = report.looked_at
    after_s, _ = timed(services.sweep.sweep)
    return Row(
        n,
        records,
        setup_s,
        idle,
        args.due,
        due_s,
        looked_at,
        after_s * 1000,
        before_s,
        full_s,
        lookup_ms,
        lookup_pass_ms,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 100000])
    parser.add_argument("--due", type=int, default=100, help="grants due in the second timing (K)")
    parser.add_argument("--repeat", type=int, default=5, help="passes timed with nothing due")
    parser.add_argument("--full-max", type=int, default=10000, help="largest N to time a full pass for")
    parser.add_argument("--records-max", type=int, default=10000, help="largest N to write records for")
    parser.add_argument("--threads", type=int, default=4, help="writers of the setup")
    parser.add_argument("--lookups", type=int, default=20, help="grants found by id through the index")
    args = parser.parse_args()
    azurite, sink = start_azurite(), start_smtp_sink()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as secrets_dir:
            rows = [run(azurite, sink.port, n, args, secrets_dir) for n in args.sizes]
    finally:
        sink.controller.stop()  # type: ignore[attr-defined]
        azurite.stop()
    print()
    print(
        f"{'active grants':>13} {'setup':>6} {'nothing due: median / slowest':>29} {'K due':>5} {'looked at':>9} "
        f"{'pass':>7} {'per due':>8} {'then':>6} {'before (no index)':>17} {'full=True':>9} "
        f"{'grant by id: index / a pass':>27}"
    )
    for r in rows:
        idle = f"{statistics.median(r.idle_ms):.0f} / {max(r.idle_ms):.0f} ms"
        per_due = f"{r.due_s * 1000 / r.due:.0f} ms" if r.due else "-"
        before = f"{r.before_s:.1f} s" if r.before_s is not None else "-"
        full = f"{r.full_s:.1f} s" if r.full_s is not None else "-"
        n = f"{r.n:,}" + ("" if r.records else "*")
        lookup = f"{r.lookup_ms:.0f} / {r.lookup_pass_ms:.0f} ms" if r.lookup_ms is not None else "-"
        print(
            f"{n:>13} {r.setup_s:>5.0f}s {idle:>29} {r.due:>5} {r.due_looked_at:>9} {r.due_s:>6.2f}s "
            f"{per_due:>8} {r.idle_after_ms:>3.0f} ms {before:>17} {full:>9} {lookup:>27}"
        )
    if not all(r.records for r in rows):
        print("* index rows only (no package or grant records): see --records-max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
