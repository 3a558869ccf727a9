"""The local host run in parallel, as the real one: a pool of blob invocations per instance, and
several instances on one storage account coordinated through receipt leases and singleton locks."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import azure.functions as func
import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from devhost.host import (
    RECEIPTS_CONTAINER,
    BlobOptions,
    BlobPoller,
    Indexed,
    ListenerLock,
    Timer,
    TimerRunner,
    default_blob_parallelism,
    index_app,
)
from devhost.ncrontab import Schedule
from devhost.settings_file import ROOT
from shared.settings import Settings
from tests.support.servers import Azurite, free_port, wait_for_port
from tests.support.settings_file import write_local_settings

pytestmark = pytest.mark.integration
CONNECTION = "PARALLEL_HOST_TEST_STORAGE"


@pytest.fixture
def storage(azurite: Azurite) -> Iterator[BlobServiceClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string()) as client:
        yield client


@pytest.fixture
def inbox(azurite: Azurite, storage: BlobServiceClient, monkeypatch: pytest.MonkeyPatch) -> ContainerClient:
    name = f"inbox-{secrets.token_hex(4)}"
    monkeypatch.setenv("TEST_INBOX", name)
    monkeypatch.setenv(CONNECTION, azurite.connection_string())
    container = storage.get_container_client(name)
    container.create_container()
    return container


@pytest.fixture
def host_id() -> str:
    return f"parallel-{secrets.token_hex(4)}"  # receipts and locks of one test only


def app_with(handler: Callable[[func.InputStream], None]) -> Indexed:
    app = func.FunctionApp()

    @app.function_name("ingest")
    @app.blob_trigger(arg_name="blob", path="%TEST_INBOX%/{name}", connection=CONNECTION)
    def ingest(blob: func.InputStream) -> None:
        handler(blob)

    return index_app(app)


@pytest.fixture
def pollers(host_id: str) -> Iterator[Callable[..., BlobPoller]]:
    made: list[BlobPoller] = []

    def make(indexed: Indexed, options: BlobOptions, instance_id: str = "instance-0", **kwargs: float) -> BlobPoller:
        made.append(BlobPoller(indexed.blobs, host_id, options, 0.1, instance_id=instance_id, **kwargs))
        return made[-1]

    yield make
    for poller in made:
        poller.close()


@pytest.fixture
def hosts(storage: BlobServiceClient) -> ContainerClient:
    """The host's own container: receipts and locks."""
    return storage.get_container_client(RECEIPTS_CONTAINER)


def receipts(hosts: ContainerClient, inbox: ContainerClient, host_id: str) -> dict[str, dict[str, str]]:
    """Each receipt's blob name -> its metadata."""
    prefix = f"blobreceipts/{host_id}/Host.Functions.ingest/"
    return {
        r.name.rsplit("/", 1)[-1]: dict(r.metadata or {})
        for r in hosts.list_blobs(name_starts_with=prefix, include=["metadata"])
        if f"/{inbox.container_name}/" in r.name
    }


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_blobs_run_concurrently_on_the_pool_and_are_not_submitted_twice(
    inbox: ContainerClient, hosts: ContainerClient, host_id: str, pollers: Callable[..., BlobPoller]
) -> None:
    all_in, release = threading.Event(), threading.Event()
    barrier = threading.Barrier(4, action=all_in.set, timeout=5)
    done: list[str] = []

    def handler(blob: func.InputStream) -> None:
        barrier.wait()  # breaks (and the handler fails) unless all four run at once
        assert release.wait(10)
        done.append(blob.name or "")

    poller = pollers(app_with(handler), BlobOptions(max_degree_of_parallelism=4))
    for n in range(4):
        inbox.upload_blob(f"file-{n}.txt", f"content {n}".encode())

    assert poller.scan_once(wait=False) == 4
    assert all_in.wait(5), "the four blobs did not run at once"
    assert poller.scan_once(wait=False) == 0, "a blob in flight is not submitted again"
    assert poller.in_flight() == 4
    release.set()
    eventually(lambda: poller.in_flight() == 0, 10, "the invocations to finish")

    assert sorted(done) == [f"{inbox.container_name}/file-{n}.txt" for n in range(4)]
    assert {name: meta["status"] for name, meta in receipts(hosts, inbox, host_id).items()} == {
        f"file-{n}.txt": "succeeded" for n in range(4)
    }
    assert poller.scan_once() == 0, "completed receipts are not run again"


def test_the_pool_holds_concurrency_to_max_degree_of_parallelism(
    inbox: ContainerClient, pollers: Callable[..., BlobPoller]
) -> None:
    lock = threading.Lock()
    running, peak = [0], [0]

    def handler(blob: func.InputStream) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.15)
        with lock:
            running[0] -= 1

    poller = pollers(app_with(handler), BlobOptions(max_degree_of_parallelism=3))
    for n in range(8):
        inbox.upload_blob(f"file-{n}.txt", b"x")

    assert poller.scan_once() == 8
    assert peak[0] == 3


def test_two_instances_on_one_storage_run_each_blob_exactly_once(
    inbox: ContainerClient, hosts: ContainerClient, host_id: str, pollers: Callable[..., BlobPoller]
) -> None:
    lock = threading.Lock()
    ran: list[str] = []

    def handler(blob: func.InputStream) -> None:
        time.sleep(0.1)
        with lock:
            ran.append(blob.name or "")

    indexed = app_with(handler)
    instances = [pollers(indexed, BlobOptions(4), instance_id=name) for name in ("instance-a", "instance-b")]
    names = [f"file-{n:02}.txt" for n in range(30)]
    for name in names:
        inbox.upload_blob(name, name.encode())

    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,), daemon=True) for p in instances]
    for thread in threads:
        thread.start()
    try:
        eventually(
            lambda: sum(m.get("status") == "succeeded" for m in receipts(hosts, inbox, host_id).values()) == 30,
            20,
            "30 completed receipts",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert Counter(ran) == {f"{inbox.container_name}/{name}": 1 for name in names}
    records = receipts(hosts, inbox, host_id)
    assert {m["attempts"] for m in records.values()} == {"1"}
    assert Counter(m["instance"] for m in records.values()).keys() == {"instance-a", "instance-b"}, (
        "both instances took a share"
    )


def test_failures_count_across_instances_to_the_poison_threshold(
    inbox: ContainerClient,
    hosts: ContainerClient,
    host_id: str,
    pollers: Callable[..., BlobPoller],
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def handler(blob: func.InputStream) -> None:
        calls.append(blob.name or "")
        raise RuntimeError("intake failed")

    indexed = app_with(handler)
    a = pollers(indexed, BlobOptions(4, poison_blob_threshold=3), instance_id="instance-a")
    b = pollers(indexed, BlobOptions(4, poison_blob_threshold=3), instance_id="instance-b")
    inbox.upload_blob("bad.txt", b"bad")

    with caplog.at_level(logging.ERROR, logger="devhost"):
        assert [a.scan_once(), b.scan_once(), a.scan_once(), b.scan_once(), a.scan_once()] == [1, 1, 1, 0, 0]
    assert len(calls) == 3
    record = receipts(hosts, inbox, host_id)["bad.txt"]
    assert (record["status"], record["attempts"], record["instance"]) == ("poison", "3", "instance-a")
    assert "Incomplete" not in record
    assert "failed 3 times: recorded as poison, not retried" in caplog.text


def test_starts_that_never_finished_count_too(
    inbox: ContainerClient, hosts: ContainerClient, host_id: str, pollers: Callable[..., BlobPoller]
) -> None:
    """An instance that died mid-run left its attempt counted: at the threshold the blob is poison, unrun."""
    ran: list[str] = []
    poller = pollers(app_with(lambda blob: ran.append(blob.name or "")), BlobOptions(4, poison_blob_threshold=3))
    blob = inbox.upload_blob("crashy.txt", b"x")
    etag = blob.get_blob_properties().etag.strip('"')
    receipt = hosts.get_blob_client(
        f"blobreceipts/{host_id}/Host.Functions.ingest/{etag}/{inbox.container_name}/crashy.txt"
    )
    receipt.upload_blob(b"", metadata={"Incomplete": "Incomplete", "attempts": "2"})
    held = receipt.acquire_lease(lease_duration=15)  # another instance is running it

    assert poller.scan_once() == 0
    assert ran == []
    held.release()  # it died: its lease is gone (here released rather than expired)
    assert poller.scan_once() == 1
    assert ran == [f"{inbox.container_name}/crashy.txt"]
    assert receipts(hosts, inbox, host_id)["crashy.txt"]["attempts"] == "3"

    receipt.set_blob_metadata({"Incomplete": "Incomplete", "attempts": "3"})
    assert poller.scan_once() == 0
    assert ran == [f"{inbox.container_name}/crashy.txt"]
    assert receipts(hosts, inbox, host_id)["crashy.txt"]["status"] == "poison"


def test_a_timer_runs_on_one_instance_and_moves_when_that_instance_stops(
    storage: BlobServiceClient, host_id: str
) -> None:
    service = storage
    fired: list[str] = []

    def runner(instance: str) -> TimerRunner:
        timer = Timer("tick", "timer", Schedule.parse("* * * * * *"), False, lambda timer: fired.append(instance))
        lock = ListenerLock(service, host_id, "tick", period=15)
        return TimerRunner([timer], {"tick": lock}, recovery_seconds=0.5)

    stops = {"a": threading.Event(), "b": threading.Event()}
    threads = {name: threading.Thread(target=runner(name).run, args=(stops[name],), daemon=True) for name in stops}
    try:
        threads["a"].start()
        eventually(lambda: "a" in fired, 5, "the first instance's timer")
        threads["b"].start()
        time.sleep(1.5)
        assert set(fired) == {"a"}, "the second instance waits for the lock"
        assert service.get_blob_client(RECEIPTS_CONTAINER, f"locks/{host_id}/Host.Functions.tick.Listener").exists()

        stops["a"].set()  # stopping releases the lock
        threads["a"].join(5)
        eventually(lambda: "b" in fired, 5, "the second instance to take over")
    finally:
        for name in stops:
            stops[name].set()
            if threads[name].ident:
                threads[name].join(5)
    last_a = max(i for i, instance in enumerate(fired) if instance == "a")
    assert last_a < fired.index("b"), "never both at once"


def test_blob_options_from_host_json(monkeypatch: pytest.MonkeyPatch) -> None:
    project = BlobOptions.from_host_json(json.loads((ROOT / "host.json").read_text()))
    assert project == BlobOptions(max_degree_of_parallelism=4, poison_blob_threshold=5)
    monkeypatch.delenv("WEBSITE_SKU", raising=False)
    assert BlobOptions.from_host_json({}).max_degree_of_parallelism == 8 * len(os.sched_getaffinity(0))
    monkeypatch.setenv("WEBSITE_SKU", "Dynamic")  # the Consumption plan counts one processor
    assert default_blob_parallelism() == 8
    assert BlobOptions.from_host_json({"extensions": {"blobs": {"MaxDegreeOfParallelism": 2}}}) == BlobOptions(2)
    with pytest.raises(ValueError):
        BlobOptions(max_degree_of_parallelism=0)


def test_instances_flag_starts_workers_that_share_the_timer_lock_and_stop_with_the_first(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings_file = write_local_settings(
        settings,
        tmp_path / "local.settings.json",
        LOCAL_FUNCTION_KEY="k",
        AzureFunctionsWebHost__hostid=f"parallel-{secrets.token_hex(4)}",
    )
    log = tmp_path / "host.log"
    app_settings = {f.alias for f in Settings.model_fields.values() if f.alias} | {"LOCAL_FUNCTION_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in app_settings}  # the file is the only source
    command = [sys.executable, "-m", "devhost", "--instances", "2", "--port", str(port)]
    command += ["--settings", str(settings_file), "--poll-seconds", "0.3"]
    with log.open("ab") as out:
        host = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        eventually(lambda: "runs on another instance" in log.read_text(), 30, "the second instance to start")
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
    finally:
        host.terminate()
        host.wait(30)
    text = log.read_text()
    assert host.returncode == 0, text
    holders = [line for line in text.splitlines() if "took the singleton lock" in line and "expire_grants" in line]
    waiting = [line for line in text.splitlines() if "expire_grants runs on another instance" in line]
    assert len(holders) == 1 and len(waiting) == 1, text
    assert {holders[0].split("] ")[1], waiting[0].split("] ")[1]} == {"[instance 0", "[instance 1"}
    assert "[instance 0] Host stopped." in text and "[instance 1] Host stopped." in text
    leftover = subprocess.run(["pgrep", "-f", str(settings_file)], capture_output=True, check=False)
    assert leftover.stdout == b"", "the extra instance stops with the first"
