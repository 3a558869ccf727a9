"""Exactly once under concurrency, counted over many rounds (issue: 2, 4 and 8 workers x 50 rounds).

Each round stages one package; every worker (its own service instance, as separate Functions
instances are) runs intake on the same manifest at the same moment; the three named people approve
at the same moment; then every worker runs the release of the one message at the same moment. A
round is exact when it ends granted with one grant, one live policy and one link email for the
recipient, one sign-off email per person, a verifying anchored audit trail, no event twice and
nothing left in staging.

    .venv/bin/python benchmarks/bench_concurrency.py [--rounds 50] [--workers 2 4 8]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.storage.blob import BlobServiceClient

from shared.bootstrap import build_services
from shared.settings import Settings
from tests.support.rounds import run_round
from tests.support.servers import start_azurite, start_smtp_sink


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    azurite, sink = start_azurite(), start_smtp_sink()
    failed = 0
    try:
        blob_service = BlobServiceClient.from_connection_string(azurite.connection_string())
        print(f"{'workers':>7} {'rounds':>6} {'exact':>6} {'s/round':>8}  first inexact round")
        for workers in args.workers:
            tag = secrets.token_hex(3)
            settings = Settings(
                EGRESS_STORAGE=azurite.connection_string(),
                STAGING_CONTAINER=f"staging-{tag}",
                AUDIT_CONTAINER=f"audit-{tag}",
                RECORDS_CONTAINER=f"records-{tag}",
                REGISTRY_TABLE_PREFIX=f"t{tag}",
                RELEASE_QUEUE=f"release-{tag}",
                SMTP_PORT=sink.port,
                SAS_ALLOW_HTTP=True,
            )
            instances = [build_services(settings) for _ in range(workers)]
            started = time.monotonic()
            results = [run_round(instances, blob_service, sink) for _ in range(args.rounds)]
            elapsed = (time.monotonic() - started) / args.rounds
            exact = sum(r.exact for r in results)
            first_bad = next((r for r in results if not r.exact), None)
            failed += args.rounds - exact
            print(f"{workers:>7} {args.rounds:>6} {exact:>6} {elapsed:>8.2f}  {first_bad or '-'}", flush=True)
    finally:
        sink.controller.stop()  # type: ignore[attr-defined]
        azurite.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
