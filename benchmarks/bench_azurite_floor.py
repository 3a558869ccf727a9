"""How fast can Azurite serve the storage requests a package of small files needs, whatever the client?

The contract needs three storage requests per file between manifest and email: intake reads each
file to verify its SHA-256, and sealing reads it again, re-checks the SHA-256 and writes the sealed
copy (DESIGN.md section 3a, "Sealing re-checks every file's SHA-256"). This script starts its own
Azurite (as the tests do: in memory, no telemetry), stages ``--files`` small blobs and times exactly
that shape of work -- a GET per file, then a GET and a PUT per file -- twice, side by side:

  raw  a near-zero-cost client: ``http.client`` keep-alive connections, one per thread, signed by an
       account SAS. What is left is Azurite's own cost per request: the floor for any client.
  sdk  the blob SDK with the service's own client settings (``shared.adapters.blob_store``).
  aio  the blob SDK's asyncio client on aiohttp, the same number of requests in flight; only where
       aiohttp is installed (``.venv/bin/pip install aiohttp``: the service does not depend on it).

Each line gives the wall time, this process's CPU and Azurite's CPU (from /proc). Azurite is one
Node.js process: its CPU per request times the requests needed is a lower bound on the wall time.

    .venv/bin/python benchmarks/bench_azurite_floor.py [--files 1000] [--size 2048] [--threads 8]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

from shared.adapters.blob_store import client_options
from tests.support.servers import DEV_ACCOUNT, DEV_KEY, start_azurite

CONTAINER = "floor"


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_threads(
    work: Callable[[object, str], None], names: list[str], threads: int, connect: Callable[[], object]
) -> None:
    """``work(connection, name)`` for every name, ``threads`` at a time, each thread with its own connection."""
    todo: queue.Queue[str] = queue.Queue()
    for name in names:
        todo.put(name)
    failures: list[BaseException] = []

    def worker() -> None:
        connection = connect()
        while True:
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(connection, name)
            except BaseException as exc:
                failures.append(exc)
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed; first: {failures[0]!r}")


def measure(label: str, azurite_pid: int, files: int, requests_per_file: int, action: Callable[[], None]) -> float:
    wall, cpu, server = time.monotonic(), time.process_time(), process_cpu(azurite_pid)
    action()
    wall, cpu, server = time.monotonic() - wall, time.process_time() - cpu, process_cpu(azurite_pid) - server
    count = files * requests_per_file
    print(
        f"  {label:34s} {wall:5.2f} s wall; this process {1000 * cpu / count:4.2f} ms CPU a request, "
        f"Azurite {1000 * server / count:4.2f} ms CPU a request ({count:,} requests)"
    )
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048, help="bytes in each file")
    parser.add_argument("--threads", type=int, default=8, help="requests in flight (the service's COPY_WORKERS is 8)")
    args = parser.parse_args()

    azurite = start_azurite()
    try:
        service = BlobServiceClient.from_connection_string(azurite.connection_string(), **client_options())
        service.create_container(CONTAINER)
        body = os.urandom(args.size)
        staged = [f"pkg/files/f{i:05d}.csv" for i in range(args.files)]
        for name in staged:
            service.get_blob_client(CONTAINER, name).upload_blob(body)
        sas = generate_account_sas(
            DEV_ACCOUNT,
            DEV_KEY,
            ResourceTypes(object=True),
            AccountSasPermissions(read=True, write=True, create=True),
            expiry=datetime.now(UTC) + timedelta(hours=1),
        )
        endpoint = urlsplit(service.url)

        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(endpoint.hostname, endpoint.port)

        def raw(method: str, name: str, connection: http.client.HTTPConnection, data: bytes | None = None) -> bytes:
            headers = {"x-ms-version": "2025-01-05"}
            if data is not None:
                headers |= {"x-ms-blob-type": "BlockBlob", "Content-Length": str(len(data))}
            connection.request(
                method, f"{endpoint.path.rstrip('/')}/{CONTAINER}/{quote(name)}?{sas}", body=data, headers=headers
            )
            response = connection.getresponse()
            answer = response.read()
            if response.status >= 300:
                raise RuntimeError(f"{method} {name}: {response.status} {response.getheaders()!r} {answer[:200]!r}")
            return answer

        def raw_read(connection: object, name: str) -> None:
            raw("GET", name, connection)  # type: ignore[arg-type]

        def raw_seal(connection: object, name: str) -> None:
            data = raw("GET", name, connection)  # type: ignore[arg-type]
            raw("PUT", "sealed-raw/" + name, connection, data)  # type: ignore[arg-type]

        def sdk_read(_connection: object, name: str) -> None:
            service.get_blob_client(CONTAINER, name).download_blob(max_concurrency=1).readall()

        def sdk_seal(_connection: object, name: str) -> None:
            data = service.get_blob_client(CONTAINER, name).download_blob(max_concurrency=1).readall()
            service.get_blob_client(CONTAINER, "sealed-sdk/" + name).upload_blob(data, max_concurrency=1)

        print(
            f"{args.files:,} files of {args.size:,} bytes, {args.threads} requests in flight, "
            f"Azurite in memory with telemetry off, on {os.cpu_count()} cores:"
        )
        totals = {}
        for label, read, seal in (("raw", raw_read, raw_seal), ("sdk", sdk_read, sdk_seal)):
            intake = measure(
                f"{label}: read each file (intake)",
                azurite.process.pid,
                args.files,
                1,
                lambda read=read: run_threads(read, staged, args.threads, connect),
            )
            release = measure(
                f"{label}: read + write each (sealing)",
                azurite.process.pid,
                args.files,
                2,
                lambda seal=seal: run_threads(seal, staged, args.threads, connect),
            )
            totals[label] = intake + release
        try:
            import aiohttp  # noqa: F401 - the async SDK's transport
            from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
        except ImportError:
            print("  aio: skipped (aiohttp is not installed)")
        else:
            connection_string = azurite.connection_string()

            async def aio_run(seal: bool) -> None:
                async with AsyncBlobServiceClient.from_connection_string(
                    connection_string, max_single_get_size=client_options()["max_single_get_size"]
                ) as aio:
                    in_flight = asyncio.Semaphore(args.threads)

                    async def one(name: str) -> None:
                        async with in_flight:
                            download = await aio.get_blob_client(CONTAINER, name).download_blob(max_concurrency=1)
                            data = await download.readall()
                            if seal:
                                target = aio.get_blob_client(CONTAINER, "sealed-aio/" + name)
                                await target.upload_blob(data, max_concurrency=1)

                    await asyncio.gather(*(one(name) for name in staged))

            intake = measure(
                "aio: read each file (intake)", azurite.process.pid, args.files, 1, lambda: asyncio.run(aio_run(False))
            )
            release = measure(
                "aio: read + write each (sealing)",
                azurite.process.pid,
                args.files,
                2,
                lambda: asyncio.run(aio_run(True)),
            )
            totals["aio"] = intake + release
        print(
            "  three requests a file, storage alone: "
            + ", ".join(f"{label} {seconds:.2f} s" for label, seconds in totals.items())
            + f" (ratio sdk/raw {totals['sdk'] / totals['raw']:.2f})"
        )
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
