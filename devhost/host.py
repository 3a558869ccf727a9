"""The local host: runs ``function_app.app`` as the Functions host would.

    python -m devhost [--port 7071] [--settings local.settings.json] [--poll-seconds 2] [--instances 1]

Blob triggers poll their container and keep receipts in ``azure-webjobs-hosts`` (so a blob fires
once, even across restarts), running up to ``extensions.blobs.maxDegreeOfParallelism`` blobs at
once; HTTP triggers are served under ``/api`` with function keys; timers run on their NCRONTAB
schedule, each as a singleton (a lease on its ``locks/`` blob); queue triggers poll their queue as
the storage queues extension does (batches, back-off, retries, ``<queue>-poison``; settings from
``extensions.queues`` in host.json). Each invocation is logged as ``func start`` logs it.

``--instances N`` starts N-1 more host processes on the same storage, as a scaled-out app runs: all
of them run the blob, queue and timer triggers, coordinated through storage as the real instances
are (receipt leases, message visibility, singleton locks); only the first serves HTTP.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devhost.ncrontab import Schedule
from devhost.settings_file import ROOT, connection_string, load_local_settings, resolve

log = logging.getLogger("devhost")
RECEIPTS_CONTAINER = "azure-webjobs-hosts"
_label = {"instance": ""}  # "[instance K] " in each log line when several instances share the output


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def invoke(name: str, reason: str, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one invocation with the host's Executing/Executed log lines."""
    invocation = uuid.uuid4()
    tag = _label["instance"]
    print(f"[{_stamp()}] {tag}Executing 'Functions.{name}' (Reason='{reason}', Id={invocation})", flush=True)
    started = time.monotonic()
    try:
        result = call()
    except Exception as exc:
        ms = int((time.monotonic() - started) * 1000)
        print(f"[{_stamp()}] {tag}Executed 'Functions.{name}' (Failed, Id={invocation}, Duration={ms}ms)", flush=True)
        print(f"[{_stamp()}] {tag}System.Exception: {type(exc).__name__}: {exc}", flush=True)
        return False, exc
    ms = int((time.monotonic() - started) * 1000)
    print(f"[{_stamp()}] {tag}Executed 'Functions.{name}' (Succeeded, Id={invocation}, Duration={ms}ms)", flush=True)
    return True, result


def _pattern(template: str) -> re.Pattern[str]:
    """``{package_id}/manifest.json`` -> a regex with a named group per ``{name}``."""
    out, pos = "", 0
    for match in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        pos = match.end()
    return re.compile("^" + out + re.escape(template[pos:]) + "$")


@dataclass
class BlobTrigger:
    name: str
    template: str
    arg: str
    container: str
    pattern: re.Pattern[str]
    connection: str
    handler: Callable[..., Any]


@dataclass
class HttpRoute:
    name: str
    template: str
    arg: str
    route: re.Pattern[str]
    methods: set[str]
    auth_level: str
    handler: Callable[..., Any]


@dataclass
class Timer:
    name: str
    arg: str
    schedule: Schedule
    run_on_startup: bool
    handler: Callable[..., Any]


@dataclass
class QueueTrigger:
    name: str
    queue: str
    arg: str
    connection: str
    handler: Callable[..., Any]


@dataclass
class Indexed:
    """The app's functions, by trigger kind."""

    blobs: list[BlobTrigger] = field(default_factory=list)
    routes: list[HttpRoute] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    queues: list[QueueTrigger] = field(default_factory=list)


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _queue_name(name: str, function: str) -> str:
    """The host lower-cases a trigger's queue name, then checks the storage naming rules."""
    name = name.lower()
    if not _QUEUE_NAME.match(name):
        raise ValueError(
            f"{function}: {name!r} is not a valid queue name (3-63 characters: letters, digits, single hyphens)"
        )
    return name


def index_app(app: Any) -> Indexed:
    """Read the app's own bindings (``get_functions`` may be called once per app)."""
    indexed = Indexed()
    for function in app.get_functions():
        trigger = function.get_bindings_dict()["bindings"][0]
        kind, name, handler = trigger["type"], function.get_function_name(), function.get_user_function()
        if kind == "blobTrigger":
            container, _, rest = resolve(trigger["path"]).partition("/")
            indexed.blobs.append(
                BlobTrigger(
                    name,
                    f"{container}/{rest}",
                    trigger["name"],
                    container,
                    _pattern(rest),
                    trigger["connection"],
                    handler,
                )
            )
        elif kind == "httpTrigger":
            route = trigger.get("route") or name
            methods = {_value(m).upper() for m in trigger.get("methods") or ["GET", "POST"]}
            level = _value(trigger.get("authLevel", "function")).lower()
            indexed.routes.append(HttpRoute(name, route, trigger["name"], _pattern(route), methods, level, handler))
        elif kind == "timerTrigger":
            schedule = Schedule.parse(resolve(trigger["schedule"]))
            indexed.timers.append(Timer(name, trigger["name"], schedule, bool(trigger.get("runOnStartup")), handler))
        elif kind == "queueTrigger":
            queue = _queue_name(resolve(trigger["queueName"]), name)
            connection = trigger.get("connection") or "AzureWebJobsStorage"
            indexed.queues.append(QueueTrigger(name, queue, trigger["name"], connection, handler))
        else:
            raise ValueError(f"{name}: the local host does not run {kind} triggers")
    return indexed


RECEIPT_LEASE_SECONDS = 30.0  # the host's BlobReceiptManager lease period
LISTENER_LOCK_SECONDS = 60.0  # SingletonOptions.ListenerLockPeriod
LISTENER_LOCK_RECOVERY_SECONDS = 60.0  # SingletonOptions.ListenerLockRecoveryPollingInterval
_INCOMPLETE = "Incomplete"  # the host's receipt metadata: present while a blob is not yet done


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _lease_lost(exc: Exception) -> bool:
    """The lease is gone (expired and taken, released) or so is its blob: nothing left to renew or write."""
    return getattr(exc, "status_code", None) == 404 or _error_code(exc) in {
        "LeaseIdMismatchWithLeaseOperation",
        "LeaseIdMismatchWithBlobOperation",
        "LeaseLost",
        "LeaseNotPresentWithLeaseOperation",
        "LeaseNotPresentWithBlobOperation",
        "LeaseIdMissing",
        "BlobNotFound",
        "ContainerNotFound",
    }


def _blob_service(connection: str, pool_size: int) -> Any:
    """A BlobServiceClient whose HTTP pool keeps one connection per concurrent invocation."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    transport = RequestsTransport(session=session, session_owner=True)
    return BlobServiceClient.from_connection_string(connection_string(connection), transport=transport)


def _ensure_container(container: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        container.create_container()
    except ResourceExistsError:
        pass


@dataclass(eq=False)
class _KeptLease:
    lease: Any  # BlobLeaseClient
    period: float
    renew_at: float
    on_lost: Callable[[], None] | None


class LeaseRenewer:
    """Keeps blob leases alive, renewing each half-way through its period, as the host renews its leases.

    A lease that cannot be renewed because it is gone (taken by another instance after it expired,
    or its blob deleted) is dropped and its ``on_lost`` called; other errors are retried every second.
    """

    def __init__(self, name: str = "leases") -> None:
        self._name = name
        self._kept: dict[str, _KeptLease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def keep(self, lease: Any, period: float, on_lost: Callable[[], None] | None = None) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the lease renewer is closed")
            self._kept[lease.id] = _KeptLease(lease, period, time.monotonic() + period / 2, on_lost)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._wake.set()

    def drop(self, lease_id: str) -> None:
        with self._lock:
            self._kept.pop(lease_id, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._kept.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = [(key, kept) for key, kept in self._kept.items() if kept.renew_at <= now]
            for key, kept in due:
                try:
                    kept.lease.renew()
                    kept.renew_at = time.monotonic() + kept.period / 2
                except Exception as exc:
                    with self._lock:
                        if self._kept.get(key) is not kept:
                            continue  # dropped meanwhile: released by its holder
                        if _lease_lost(exc):
                            del self._kept[key]
                    if not _lease_lost(exc):
                        log.warning("could not renew lease %s: %s; retrying", key, exc)
                        kept.renew_at = time.monotonic() + 1
                        continue
                    log.warning("lease %s was lost: %s", key, _error_code(exc) or exc)
                    if kept.on_lost:
                        kept.on_lost()
            with self._lock:
                upcoming = [kept.renew_at for kept in self._kept.values()]
            timeout = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
            self._wake.wait(timeout)
            self._wake.clear()


def default_blob_parallelism() -> int:
    """The blobs extension's default ``maxDegreeOfParallelism``: 8 x the processor count.

    As the extension's ``SkuUtility`` counts them: one on the Consumption plan (``WEBSITE_SKU`` is
    ``Dynamic``), else the processors this process may run on.
    """
    if os.environ.get("WEBSITE_SKU", "").lower() == "dynamic":
        return 8
    processors = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 8 * max(1, processors)


@dataclass(frozen=True)
class BlobOptions:
    """``extensions.blobs`` in host.json, with the storage blobs extension's defaults."""

    max_degree_of_parallelism: int = field(default_factory=default_blob_parallelism)
    poison_blob_threshold: int = 5

    def __post_init__(self) -> None:
        if self.max_degree_of_parallelism < 1:
            raise ValueError("maxDegreeOfParallelism must be at least 1")
        if self.poison_blob_threshold < 1:
            raise ValueError("poisonBlobThreshold must be at least 1")

    @classmethod
    def from_host_json(cls, host: dict[str, Any]) -> BlobOptions:
        """Read ``extensions.blobs`` (keys are case-insensitive, as in the host's configuration)."""
        section = {k.lower(): v for k, v in (host.get("extensions", {}).get("blobs") or {}).items()}
        kwargs: dict[str, Any] = {}
        if "maxdegreeofparallelism" in section:
            kwargs["max_degree_of_parallelism"] = int(section["maxdegreeofparallelism"])
        if "poisonblobthreshold" in section:
            kwargs["poison_blob_threshold"] = int(section["poisonblobthreshold"])
        return cls(**kwargs)


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BlobPoller:
    """Runs blob-triggered functions: polls like the host's LogsAndContainerScan source, with receipts in storage.

    Every scan lists each trigger's container and the function's receipts
    (``azure-webjobs-hosts/blobreceipts/<hostId>/Host.Functions.<fn>/<etag>/<container>/<blob>``) and
    submits each matching blob without a completed receipt to a pool of ``maxDegreeOfParallelism``
    threads shared by all blob functions, as the host's shared blob queue runs them; a blob already in
    flight in this process is not submitted again.

    Several pollers (host instances) may share the storage, as scaled-out instances do: before it runs
    a blob, a worker creates the receipt if absent (marked ``Incomplete``, as the host's
    ``BlobReceiptManager`` creates it) and takes a 30 s lease on it, skipping the blob when another
    instance holds the lease or the receipt is already complete. The lease is renewed while the
    function runs, so a second instance runs the same blob only if the lease is lost (the process
    stalls or storage is unreachable for longer than the lease). Each start is counted in the
    receipt's ``attempts`` metadata (the host's dequeue count), so the poison threshold holds across
    instances and restarts. Success completes the receipt (``status=succeeded``); a failure releases
    the lease for the next scan to retry, until ``poisonBlobThreshold`` starts have been made, when
    the receipt is completed as ``status=poison`` and the blob is not run again.

    Unlike the host, which only enqueues a message under the receipt's lease and runs the function
    from its ``azure-webjobs-blobtrigger-<hostId>`` queue (poison: ``webjobs-blobtrigger-poison``),
    this poller runs the function under the lease and records poison in the receipt.
    """

    def __init__(
        self,
        triggers: list[BlobTrigger],
        host_id: str,
        options: BlobOptions | None = None,
        poll_seconds: float = 2.0,
        *,
        instance_id: str | None = None,
        lease_seconds: float = RECEIPT_LEASE_SECONDS,
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        self.options = options or BlobOptions()
        self.instance_id = instance_id or _instance_id()
        self._triggers = triggers
        self._host_id = host_id
        self._poll_seconds = poll_seconds
        self._lease_seconds = lease_seconds
        pool_size = self.options.max_degree_of_parallelism + 4
        self._clients = {t.connection: _blob_service(t.connection, pool_size) for t in triggers}
        self._pool = ThreadPoolExecutor(
            max_workers=self.options.max_degree_of_parallelism, thread_name_prefix="blob-trigger"
        )
        self._renewer = LeaseRenewer("blob-leases")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._receipts_ready: set[str] = set()
        self._closed = False

    def _prefix(self, trigger: BlobTrigger) -> str:
        return f"blobreceipts/{self._host_id}/Host.Functions.{trigger.name}/"

    def _receipt(self, trigger: BlobTrigger, etag: str, blob: str) -> str:
        etag = etag.strip('"')
        return f"{self._prefix(trigger)}{etag}/{trigger.container}/{blob}"

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # -- scanning --------------------------------------------------------------------------------

    def scan_once(self, wait: bool = True) -> int:
        """One pass over every trigger's container, submitting each new blob to the pool.

        With ``wait`` the submitted blobs are waited for and the number of invocations that ran is
        returned (a blob another instance took is not counted); without, the number submitted.
        """
        futures: list[Future[bool]] = []
        for trigger in self._triggers:
            futures += self._scan(trigger)
        if not wait:
            return len(futures)
        wait_futures(futures)
        return sum(1 for f in futures if not f.cancelled() and f.exception() is None and f.result())

    def _scan(self, trigger: BlobTrigger) -> list[Future[bool]]:
        service = self._clients[trigger.connection]
        container = service.get_container_client(trigger.container)
        if not container.exists():
            return []
        receipts = service.get_container_client(RECEIPTS_CONTAINER)
        if trigger.connection not in self._receipts_ready:
            _ensure_container(receipts)
            self._receipts_ready.add(trigger.connection)
        known = {r.name: r for r in receipts.list_blobs(name_starts_with=self._prefix(trigger), include=["metadata"])}
        futures = []
        for blob in container.list_blobs():
            if not trigger.pattern.match(blob.name):
                continue
            name = self._receipt(trigger, blob.etag, blob.name)
            receipt = known.get(name)
            if receipt is not None:
                if _INCOMPLETE.lower() not in {k.lower() for k in (receipt.metadata or {})}:
                    continue  # completed: succeeded, poison, or changed before it ran
                if receipt.lease.state == "leased":
                    continue  # running on an instance (this one or another)
            with self._lock:
                if name in self._in_flight:
                    continue
                self._in_flight.add(name)
            try:
                future = self._pool.submit(self._process, trigger, blob.name, blob.etag, name)
            except RuntimeError:  # the pool is shut down: the host is stopping
                with self._lock:
                    self._in_flight.discard(name)
                break
            future.add_done_callback(lambda _, n=name: self._finished(n))
            futures.append(future)
        return futures

    def _finished(self, name: str) -> None:
        with self._lock:
            self._in_flight.discard(name)

    # -- one blob --------------------------------------------------------------------------------

    def _process(self, trigger: BlobTrigger, blob_name: str, etag: str, name: str) -> bool:
        """Lease the receipt and run the function once; False when the blob was not run here."""
        try:
            return self._run_leased(trigger, blob_name, etag, name)
        except Exception:
            log.exception("blob %s/%s could not be processed", trigger.container, blob_name)
            return False

    def _take(self, receipt: Any) -> str | None:
        """Create the receipt if absent, then lease it; None when another instance holds it."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        try:
            receipt.upload_blob(b"", overwrite=False, metadata={_INCOMPLETE: _INCOMPLETE})  # If-None-Match: *
        except ResourceExistsError:
            pass  # made by an earlier scan or another instance: the lease decides who runs it
        except HttpResponseError as exc:
            if _error_code(exc) not in ("LeaseIdMissing", "ConditionNotMet"):
                raise
        try:
            return str(receipt.acquire_lease(lease_duration=int(self._lease_seconds)).id)
        except ResourceNotFoundError:
            return None  # the receipt was deleted meanwhile
        except HttpResponseError as exc:
            if _error_code(exc) == "LeaseAlreadyPresent":
                return None
            raise

    def _write(self, receipt: Any, lease_id: str, metadata: dict[str, str]) -> bool:
        """Replace the receipt's metadata under our lease; False when the lease was lost meanwhile."""
        try:
            receipt.set_blob_metadata(metadata, lease=lease_id)
            return True
        except Exception as exc:
            if not _lease_lost(exc):
                raise
            log.warning(
                "lost the lease on receipt %s (%s): another instance may run the blob again",
                receipt.blob_name,
                _error_code(exc) or exc,
            )
            return False

    def _run_leased(self, trigger: BlobTrigger, blob_name: str, etag: str, name: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.functions.blob import InputStream
        from azure.storage.blob import BlobLeaseClient

        service = self._clients[trigger.connection]
        receipt = service.get_blob_client(RECEIPTS_CONTAINER, name)
        lease_id = self._take(receipt)
        if lease_id is None:
            return False
        lease = BlobLeaseClient(receipt, lease_id=lease_id)
        self._renewer.keep(lease, self._lease_seconds)
        try:
            metadata = {k.lower(): v for k, v in receipt.get_blob_properties().metadata.items()}
            if _INCOMPLETE.lower() not in metadata:
                return False  # completed by another instance since the scan
            where = f"{trigger.container}/{blob_name}"
            threshold = self.options.poison_blob_threshold
            attempts = int(metadata.get("attempts") or 0)
            if attempts >= threshold:  # every attempt was started and none finished (the process died)
                self._write(receipt, lease_id, {"status": "poison", "attempts": str(attempts)})
                log.error("blob %s was started %d times: recorded as poison, not retried", where, attempts)
                return False
            attempts += 1  # counted before the run, as a queue message's dequeue count is
            started = {_INCOMPLETE: _INCOMPLETE, "attempts": str(attempts), "instance": self.instance_id}
            if not self._write(receipt, lease_id, started):
                return False
            source = service.get_blob_client(trigger.container, blob_name)
            try:
                data = source.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall()
            except (ResourceModifiedError, ResourceNotFoundError):
                # Changed or deleted since the scan: the new version has a receipt of its own, and the
                # host drops a trigger whose blob's ETag no longer matches.
                self._write(receipt, lease_id, {"status": "superseded", "attempts": str(attempts)})
                return False
            stream = InputStream(data=data, name=where, uri=source.url, length=len(data))
            reason = f"New blob detected(LogsAndContainerScan): {where}"
            ok, _ = invoke(trigger.name, reason, lambda: trigger.handler(**{trigger.arg: stream}))
            done = {"attempts": str(attempts), "instance": self.instance_id}
            if ok:
                self._write(receipt, lease_id, {"status": "succeeded", **done})
            elif attempts >= threshold:
                if self._write(receipt, lease_id, {"status": "poison", **done}):
                    log.error("blob %s failed %d times: recorded as poison, not retried", where, attempts)
            return True
        finally:
            self._renewer.drop(lease_id)
            try:
                lease.release()
            except Exception as exc:
                if not _lease_lost(exc):
                    log.warning("could not release the lease on %s: %s", name, exc)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.scan_once(wait=False)
                except Exception as exc:  # storage unreachable: keep polling, as the host does
                    log.warning("blob polling failed: %s", exc)
                stop.wait(self._poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        """Let running invocations finish (blobs not yet started are left for the next scan)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._renewer.close()
        if not self._closed:
            self._closed = True
            for client in self._clients.values():
                client.close()


class ListenerLock:
    """The host's singleton listener lock, as it takes for each timer trigger.

    A lease on ``azure-webjobs-hosts/locks/<hostId>/Host.Functions.<fn>.Listener`` (the blob is made
    if absent), held for ``ListenerLockPeriod`` (60 s) and renewed half-way; only the holder runs the
    function's listener, so a timer fires on one instance however many share the storage.
    """

    def __init__(self, service: Any, host_id: str, function: str, *, period: float = LISTENER_LOCK_SECONDS) -> None:
        if not 15 <= period <= 60:
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        self._container = service.get_container_client(RECEIPTS_CONTAINER)
        self.blob = self._container.get_blob_client(f"locks/{host_id}/Host.Functions.{function}.Listener")
        self.period = period
        self._lease: Any = None
        self._lost = threading.Event()

    @property
    def held(self) -> bool:
        return self._lease is not None and not self._lost.is_set()

    def try_acquire(self, renewer: LeaseRenewer) -> bool:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        if self.held:
            return True
        for _ in range(2):
            try:
                self.blob.upload_blob(b"", overwrite=False)
                break
            except ResourceExistsError:
                break
            except ResourceNotFoundError:  # no azure-webjobs-hosts container yet
                _ensure_container(self._container)
            except HttpResponseError as exc:
                if _error_code(exc) != "LeaseIdMissing":
                    raise
                break
        try:
            lease = self.blob.acquire_lease(lease_duration=int(self.period))
        except HttpResponseError as exc:
            if _error_code(exc) == "LeaseAlreadyPresent":
                return False
            raise
        self._lost.clear()
        self._lease = lease
        renewer.keep(lease, self.period, on_lost=self._lost.set)
        return True

    def release(self, renewer: LeaseRenewer) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        renewer.drop(lease.id)
        if self._lost.is_set():
            return
        try:
            lease.release()
        except Exception as exc:
            if not _lease_lost(exc):
                log.warning("could not release %s: %s", self.blob.blob_name, exc)


_TIMESPAN = re.compile(r"^\s*(-)?(?:(\d+)|(?:(\d+)\.)?(\d+):(\d+)(?::(\d+)(?:\.(\d{1,7}))?)?)\s*$")


def parse_timespan(value: str | int | float) -> float:
    """Seconds in a host.json TimeSpan, parsed as .NET's ``TimeSpan.Parse`` does.

    ``"00:00:02"`` is two seconds, ``"1.00:00:00"`` a day; a bare number is a number of *days*
    (``"2000"`` is 2000 days, as in the real host, not milliseconds).
    """
    match = _TIMESPAN.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a TimeSpan (expected [d.]hh:mm[:ss[.fffffff]])")
    sign, days_only, days, hours, minutes, seconds, fraction = match.groups()
    if days_only is not None:
        total = int(days_only) * 86400.0
    else:
        if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
            raise ValueError(f"{value!r} is not a TimeSpan (hours 0-23, minutes and seconds 0-59)")
        total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
        total += float(f"0.{fraction}") if fraction else 0.0
    return -total if sign else total


MIN_POLLING_INTERVAL = 0.1  # the host's QueuePollingIntervals.Minimum
IN_FLIGHT_VISIBILITY = 600.0  # the host hides a message for 10 minutes while it runs, renewed half-way
MAX_BATCH_SIZE = 32  # a Get Messages call returns at most 32


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` in host.json, with the storage queues extension's defaults."""

    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int | None = None  # None: batch_size // 2, the host's default on one core
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    def __post_init__(self) -> None:
        if self.max_polling_interval < MIN_POLLING_INTERVAL:
            raise ValueError(f"maxPollingInterval must not be less than {MIN_POLLING_INTERVAL} s")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batchSize must be between 1 and {MAX_BATCH_SIZE}")
        if self.new_batch_threshold is not None and self.new_batch_threshold < 0:
            raise ValueError("newBatchThreshold must not be negative")
        if self.max_dequeue_count < 1:
            raise ValueError("maxDequeueCount must not be less than 1")
        if self.visibility_timeout < 0:
            raise ValueError("visibilityTimeout must not be negative")
        if self.message_encoding not in ("base64", "none"):
            raise ValueError("messageEncoding must be base64 or none")

    @property
    def threshold(self) -> int:
        """Fetch another batch once no more than this many messages are in flight."""
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold

    @property
    def concurrency(self) -> int:
        """At most batchSize + newBatchThreshold messages run at once, per function (as per host instance)."""
        return self.batch_size + self.threshold

    @classmethod
    def from_host_json(cls, host: dict[str, Any]) -> QueueOptions:
        """Read ``extensions.queues`` (keys are case-insensitive, as in the host's configuration)."""
        section = {k.lower(): v for k, v in (host.get("extensions", {}).get("queues") or {}).items()}
        kwargs: dict[str, Any] = {}
        if "maxpollinginterval" in section:
            kwargs["max_polling_interval"] = parse_timespan(section["maxpollinginterval"])
        if "visibilitytimeout" in section:
            kwargs["visibility_timeout"] = parse_timespan(section["visibilitytimeout"])
        if "batchsize" in section:
            kwargs["batch_size"] = int(section["batchsize"])
        if "newbatchthreshold" in section:
            kwargs["new_batch_threshold"] = int(section["newbatchthreshold"])
        if "maxdequeuecount" in section:
            kwargs["max_dequeue_count"] = int(section["maxdequeuecount"])
        if "messageencoding" in section:
            kwargs["message_encoding"] = str(section["messageencoding"]).lower()
        return cls(**kwargs)


class Backoff:
    """The host's RandomizedExponentialBackoffStrategy for idle polls.

    After a poll that found messages the next wait is the minimum; each empty poll after that adds
    minimum * 2^(n-1) (randomised by +-20 %) until the maximum is reached.
    """

    def __init__(self, minimum: float, maximum: float) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._current = 0.0
        self._exponent = 0

    def next_delay(self, found_messages: bool) -> float:
        if found_messages:
            self._current, self._exponent = self._minimum, 1
        elif self._current != self._maximum:
            interval = self._minimum
            if self._exponent > 0:
                interval += random.uniform(0.8, 1.2) * 2 ** (self._exponent - 1) * self._minimum
            if interval < self._maximum:
                self._current, self._exponent = interval, self._exponent + 1
            else:
                self._current = self._maximum
        return self._current


def _poison_name(queue: str) -> str | None:
    """``<queue>-poison``; none for a poison queue itself or when the name would be too long."""
    if queue.endswith("-poison") or len(queue) + len("-poison") > 63:
        return None
    return f"{queue}-poison"


@dataclass(eq=False)
class _InFlight:
    """A received message while its function runs: the latest pop receipt and when to renew it."""

    message_id: str
    pop_receipt: str
    renew_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


class _Queue:
    """One queue trigger's clients, pool and polling state."""

    def __init__(self, trigger: QueueTrigger, options: QueueOptions) -> None:
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.queue import QueueClient
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.trigger = trigger
        # One HTTP connection per concurrent message (requests keeps 10 by default); retries are the SDK's.
        self._session = requests.Session()
        adapter = HTTPAdapter(
            pool_maxsize=options.concurrency + 2, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
        )
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, adapter)
        conn = connection_string(trigger.connection)

        def client(name: str) -> Any:
            transport = RequestsTransport(session=self._session, session_owner=False)
            return QueueClient.from_connection_string(conn, name, transport=transport)

        self.client = client(trigger.queue)
        poison = _poison_name(trigger.queue)
        self.poison = client(poison) if poison else None
        self.pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix=f"queue-{trigger.name}")
        self.in_flight: set[_InFlight] = set()
        self.backoff = Backoff(MIN_POLLING_INTERVAL, options.max_polling_interval)
        self.found_since_delay = False
        self.next_poll = 0.0
        self.created = False

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()
        if self.poison:
            self.poison.close()
        self._session.close()


class QueuePoller:
    """Runs queue-triggered functions as the storage queues extension does.

    Each function's queue is polled with Get Messages for up to ``batchSize`` messages, hidden for
    10 minutes while they run (renewed half-way, as the host does). A poll that finds messages is
    followed at once by the next; empty polls back off exponentially from 100 ms to
    ``maxPollingInterval``. Messages run concurrently on a pool of ``batchSize + newBatchThreshold``
    threads per function, and a new batch is fetched once no more than ``newBatchThreshold`` are in
    flight: the per-instance limits of the real host (``newBatchThreshold`` defaults to
    ``batchSize // 2``, its value on a one-core instance).

    A message that succeeds is deleted. One that fails is made visible again after
    ``visibilityTimeout``; once its dequeue count reaches ``maxDequeueCount`` it is copied to
    ``<queue>-poison`` (created if needed) and deleted. A message whose body is not valid base64
    (with ``messageEncoding`` base64) goes to the poison queue at once, without running.

    Unlike the host, a missing queue is created rather than waited for.
    """

    def __init__(
        self,
        triggers: list[QueueTrigger],
        options: QueueOptions | None = None,
        *,
        in_flight_visibility: float = IN_FLIGHT_VISIBILITY,
    ) -> None:
        self.options = options or QueueOptions()
        self._in_flight_visibility = max(1, math.ceil(in_flight_visibility))
        self._queues = [_Queue(t, self.options) for t in triggers]
        self._lock = threading.Lock()
        self._wake = threading.Event()

    # -- polling ---------------------------------------------------------------------------------

    def poll_once(self, wait: bool = True) -> int:
        """One Get Messages call per queue; returns how many invocations it started.

        With ``wait`` the invocations are waited for (renewing their visibility meanwhile).
        """
        futures: list[Future[None]] = []
        for queue in self._queues:
            futures += self._receive(queue)
        if wait:
            pending = set(futures)
            while pending:
                _, pending = wait_futures(pending, timeout=self._until_renewal())
                self._renew_due()
        return len(futures)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(q.in_flight) for q in self._queues)

    def run(self, stop: threading.Event) -> None:
        if not self._queues:
            return
        threading.Thread(target=lambda: (stop.wait(), self._wake.set()), name="queues-stop", daemon=True).start()
        try:
            while not stop.is_set():
                self._wake.clear()
                now = time.monotonic()
                for queue in self._queues:
                    if queue.next_poll > now or self._count(queue) > self.options.threshold:
                        continue
                    try:
                        started = len(self._receive(queue))
                    except Exception as exc:  # storage unreachable: back off and keep polling, as the host does
                        log.warning("queue polling failed for %s: %s", queue.trigger.queue, exc)
                        started = 0
                    if started:
                        queue.found_since_delay = True
                        queue.next_poll = now
                    else:
                        queue.next_poll = now + queue.backoff.next_delay(queue.found_since_delay)
                        queue.found_since_delay = False
                self._renew_due()
                now = time.monotonic()
                due = [q.next_poll for q in self._queues if self._count(q) <= self.options.threshold]
                timeout = min([*due, now + self._until_renewal()]) - now
                if timeout > 0:
                    self._wake.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        for queue in self._queues:
            queue.close()

    def _count(self, queue: _Queue) -> int:
        with self._lock:
            return len(queue.in_flight)

    def _receive(self, queue: _Queue) -> list[Future[None]]:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if not queue.created:
            try:
                queue.client.create_queue()
            except ResourceExistsError:
                pass
            queue.created = True
        try:
            pages = queue.client.receive_messages(
                messages_per_page=self.options.batch_size,
                max_messages=self.options.batch_size,
                visibility_timeout=self._in_flight_visibility,
            ).by_page()
            batch = list(next(pages, []))  # one Get Messages call, as the host makes
        except ResourceNotFoundError:
            queue.created = False  # deleted while we ran: create it again on the next poll
            raise
        futures = []
        for message in batch:
            try:
                if message.dequeue_count > self.options.max_dequeue_count:
                    self._to_poison(queue, message)  # the host's check before running (e.g. after a crash)
                    continue
                try:
                    body = self._decode(message.content)
                except ValueError:
                    log.error(
                        "message %s on '%s' is not valid base64 (messageEncoding is base64): not run",
                        message.id,
                        queue.trigger.queue,
                    )
                    self._to_poison(queue, message)
                    continue
            except Exception as exc:
                log.warning("could not move message %s to the poison queue: %s", message.id, exc)
                continue
            record = _InFlight(message.id, message.pop_receipt, time.monotonic() + self._in_flight_visibility / 2)
            with self._lock:
                queue.in_flight.add(record)
            future = queue.pool.submit(self._process, queue, record, message, body)
            future.add_done_callback(lambda _: self._wake.set())
            futures.append(future)
        return futures

    def _decode(self, content: Any) -> bytes:
        text = content.decode() if isinstance(content, bytes) else str(content or "")
        if self.options.message_encoding == "none":
            return text.encode("utf-8")
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(str(exc)) from exc

    # -- one message -----------------------------------------------------------------------------

    def _process(self, queue: _Queue, record: _InFlight, message: Any, body: bytes) -> None:
        from azure.functions.queue import QueueMessage  # the worker's subclass of func.QueueMessage

        trigger = queue.trigger
        try:
            argument = QueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )

            def call() -> Any:
                inserted = message.inserted_on.isoformat(timespec="milliseconds") if message.inserted_on else ""
                print(
                    f"[{_stamp()}] {_label['instance']}Trigger Details: MessageId: {message.id}, "
                    f"DequeueCount: {message.dequeue_count}, InsertedOn: {inserted}",
                    flush=True,
                )
                return trigger.handler(**{trigger.arg: argument})

            ok, _ = invoke(trigger.name, f"New queue message detected on '{trigger.queue}'.", call)
            with record.lock:
                record.done = True
                message.pop_receipt = record.pop_receipt  # renewals replace it
            self._complete(queue, message, ok)
        except Exception:
            log.exception("queue message %s on '%s' could not be completed", message.id, trigger.queue)
        finally:
            with self._lock:
                queue.in_flight.discard(record)

    def _complete(self, queue: _Queue, message: Any, ok: bool) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            if ok:
                queue.client.delete_message(message.id, message.pop_receipt)
            elif queue.poison is None:
                pass  # no poison queue: the host leaves the message hidden rather than loop on it
            elif message.dequeue_count >= self.options.max_dequeue_count:
                self._to_poison(queue, message)
            else:
                queue.client.update_message(
                    message.id, message.pop_receipt, visibility_timeout=math.ceil(self.options.visibility_timeout)
                )
        except ResourceNotFoundError:
            log.debug("message %s or queue '%s' is gone", message.id, queue.trigger.queue)
        except HttpResponseError as exc:
            if exc.status_code != 400 or "PopReceiptMismatch" not in str(exc.error_code):
                raise
            log.debug("message %s was taken over by another consumer", message.id)

    def _to_poison(self, queue: _Queue, message: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if queue.poison is None:
            return
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self.options.max_dequeue_count,
            queue.poison.queue_name,
        )
        try:
            queue.poison.send_message(message.content)
        except ResourceNotFoundError:
            try:
                queue.poison.create_queue()
            except ResourceExistsError:
                pass
            queue.poison.send_message(message.content)
        queue.client.delete_message(message.id, message.pop_receipt)

    # -- visibility renewal ----------------------------------------------------------------------

    def _until_renewal(self) -> float:
        with self._lock:
            due = [r.renew_at for q in self._queues for r in q.in_flight if not r.done]
        return max(0.0, min(due) - time.monotonic()) if due else self.options.max_polling_interval

    def _renew_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [(q, r) for q in self._queues for r in q.in_flight if not r.done and r.renew_at <= now]
        for queue, record in due:
            with record.lock:
                if record.done:
                    continue
                try:
                    renewed = queue.client.update_message(
                        record.message_id, record.pop_receipt, visibility_timeout=self._in_flight_visibility
                    )
                    record.pop_receipt = renewed.pop_receipt
                except Exception as exc:
                    log.warning("could not renew message %s on '%s': %s", record.message_id, queue.trigger.queue, exc)
                record.renew_at = time.monotonic() + self._in_flight_visibility / 2


class TimerRunner:
    """Runs timer-triggered functions on their NCRONTAB schedules.

    With ``locks`` (a :class:`ListenerLock` per timer) each timer runs as the host runs it, as a
    singleton: only on the instance holding its listener lock. An instance that cannot take a lock
    tries again every ``recovery_seconds`` (the host's ListenerLockRecoveryPollingInterval), and one
    that loses it stops that timer; ``run_on_startup`` fires when a lock is taken.
    """

    def __init__(
        self,
        timers: list[Timer],
        locks: dict[str, ListenerLock] | None = None,
        *,
        recovery_seconds: float = LISTENER_LOCK_RECOVERY_SECONDS,
    ) -> None:
        self._timers = timers
        self._locks = locks or {}
        self._recovery = recovery_seconds
        self._renewer = LeaseRenewer("timer-locks")

    def fire(self, timer: Timer, reason: str) -> None:
        from azure.functions.timer import TimerRequest

        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=False,
            schedule_status={"Last": now.isoformat(), "Next": timer.schedule.next_after(now).isoformat()},
        )
        invoke(timer.name, reason, lambda: timer.handler(**{timer.arg: request}))

    def _acquire(self, timer: Timer, retry_at: dict[str, float]) -> bool:
        lock = self._locks.get(timer.name)
        if lock is None:
            return True
        if time.monotonic() < retry_at.get(timer.name, 0.0):
            return False
        try:
            if lock.try_acquire(self._renewer):
                log.info("took the singleton lock %s: %s runs on this instance", lock.blob.blob_name, timer.name)
                return True
        except Exception as exc:
            log.warning("could not take the singleton lock for %s: %s", timer.name, exc)
        if timer.name not in retry_at:
            log.info(
                "%s runs on another instance (its singleton lock is held); retrying every %.0f s",
                timer.name,
                self._recovery,
            )
        retry_at[timer.name] = time.monotonic() + self._recovery
        return False

    def run(self, stop: threading.Event) -> None:
        due: dict[str, datetime] = {}  # the timers whose listener runs on this instance
        retry_at: dict[str, float] = {}
        try:
            while not stop.is_set():
                for timer in self._timers:
                    if stop.is_set():
                        break
                    if timer.name not in due:
                        if not self._acquire(timer, retry_at):
                            continue
                        due[timer.name] = timer.schedule.next_after(datetime.now(UTC))
                        if timer.run_on_startup:
                            self.fire(timer, "This function was programmatically called via the host APIs.")
                        continue
                    lock = self._locks.get(timer.name)
                    if lock is not None and not lock.held:
                        log.warning("lost the singleton lock for %s: it stops on this instance", timer.name)
                        del due[timer.name]
                        retry_at[timer.name] = time.monotonic() + self._recovery
                        continue
                    now = datetime.now(UTC)
                    if now >= due[timer.name]:
                        self.fire(timer, f"Timer fired at {now.isoformat()}")
                        due[timer.name] = timer.schedule.next_after(now)
                stop.wait(0.2)
        finally:
            for lock in self._locks.values():
                lock.release(self._renewer)
            self._renewer.close()


MAX_BODY_BYTES = 64 * 1024 * 1024  # a request body over this is refused before it is read
BODY_TIMEOUT_SECONDS = 10.0  # a body that stops arriving for this long is refused, so a short one cannot hang a thread
_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    414: "uri_too_long",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    505: "http_version_not_supported",
}


def make_http_server(
    routes: list[HttpRoute],
    port: int,
    prefix: str,
    function_key: str | None,
    *,
    max_body: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> ThreadingHTTPServer:
    """Serve ``routes`` under ``/<prefix>`` as the Functions host does, with function keys.

    Every answer of the host itself is JSON ``{"error", "message"}``: 404 for no route, 405 with an
    ``Allow`` header for a method the route does not take (HEAD and OPTIONS included), 401 for a
    missing or wrong key (compared in constant time), 400 at once for a ``Content-Length`` that is
    not a whole number, is over ``max_body`` or is longer than the body that arrives within
    ``body_timeout`` seconds, and 500 (never a stack trace) when a function raises.
    """
    import contextlib
    import hmac
    from urllib.parse import unquote

    import azure.functions as func

    key = function_key.encode("utf-8") if function_key else None

    def key_matches(given: str | None) -> bool:
        if key is None or given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key)

    def route_value(raw: str) -> str:
        """A route value as ASP.NET Core routing gives it: percent-decoded, except an encoded slash."""
        return "%2F".join(unquote(part) for part in re.split("%2[fF]", raw))

    class BadRequest(Exception):
        def __init__(self, status: int, message: str) -> None:
            super().__init__(message)
            self.status, self.message = status, message

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has the headers of the body, never the body
                self.wfile.write(body)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": _ERROR_CODES.get(status, "error"), "message": message}).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """The server's own refusals (a bad request line, headers too long, an unknown method) in JSON too."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # a garbled request line: answer with a status line all the same
                self.request_version = self.protocol_version
            text = message or self.responses.get(code, ("error",))[0]
            self.log_error("code %d, message %s", code, text)
            if code < 200 or code in (204, 205, 304):
                self.send_response(code)
                self.send_header("Connection", "close")
                self.end_headers()
                return
            self._error(code, text)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest(411, "send the body with a Content-Length: the local host reads no chunked body")
            declared = {value.strip() for value in self.headers.get_all("Content-Length") or []}
            if not declared:
                return b""
            if len(declared) > 1:
                raise BadRequest(400, "the request has more than one Content-Length")
            text = declared.pop()
            if not re.fullmatch(r"[0-9]{1,20}", text):
                raise BadRequest(400, "Content-Length must be a whole number of bytes")
            length = int(text)
            if length > max_body:
                raise BadRequest(400, f"the body is over {max_body:,} bytes")
            if not length:
                return b""
            self.connection.settimeout(body_timeout)
            try:
                body = self.rfile.read(length)
            except OSError:  # TimeoutError included: the body stopped arriving
                body = b""
            finally:
                self.connection.settimeout(self.timeout)
            if len(body) < length:
                raise BadRequest(400, f"the body ended before its Content-Length of {length} bytes")
            return body

        def _serve(self) -> None:
            try:
                self._route()
            except OSError:  # the client went away
                self.close_connection = True
            except Exception:
                log.exception("the local host failed on a %s request", self.command)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self._error(500, "the local host failed on this request; see its log")

        def _route(self) -> None:
            try:
                body = self._body()
            except BadRequest as exc:
                self.close_connection = True  # what is left of the body must not be read as the next request
                return self._error(exc.status, exc.message)
            url = urlsplit(self.path)
            path = url.path.strip("/")
            if not path.startswith(prefix + "/") and path != prefix:
                return self._error(404, "no such route")
            sub = path[len(prefix) + 1 :]
            candidates = [(r, m) for r in routes if (m := r.route.match(sub))]
            if not candidates:
                return self._error(404, "no such route")
            allowed = [(r, m) for r, m in candidates if self.command in r.methods]
            if not allowed:
                methods = ", ".join(sorted({method for r, _ in candidates for method in r.methods}))
                return self._error(405, f"{self.command} is not allowed here; use {methods}", {"Allow": methods})
            route, match = allowed[0]
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if route.auth_level != "anonymous":
                given = self.headers.get("x-functions-key") or params.get("code")
                if not key_matches(given):
                    return self._error(401, "a function key is needed: send it as x-functions-key or ?code=")
            request = func.HttpRequest(
                self.command,
                f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}",
                headers=dict(self.headers.items()),
                params=params,
                route_params={name: route_value(value) for name, value in match.groupdict().items()},
                body=body,
            )
            ok, result = invoke(
                route.name,
                "This function was programmatically called via the host APIs.",
                lambda: route.handler(**{route.arg: request}),
            )
            if not ok:
                return self._error(500, "the function failed; see the host's log")
            headers = dict(result.headers.items())
            headers.setdefault(
                "Content-Type", f"{result.mimetype}; charset={result.charset}" if result.mimetype else "text/plain"
            )
            self._send(result.status_code, result.get_body(), headers)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _serve

        def log_message(self, format: str, *args: object) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def _host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """An extra instance stops when the process that started it is gone."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("the first instance is gone: stopping")
            stop.set()


def _start_instances(count: int, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    extra = []
    for number in range(1, count):
        command = [sys.executable, "-m", "devhost", "--instance", str(number), "--poll-seconds", str(args.poll_seconds)]
        if args.settings:
            command += ["--settings", str(args.settings)]
        extra.append(subprocess.Popen(command, cwd=ROOT))
    return extra


def _stop_instances(extra: list[subprocess.Popen[bytes]]) -> None:
    for process in extra:
        if process.poll() is None:
            process.terminate()
    for process in extra:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, default=None, help="local.settings.json (default: the project's)")
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="host instances on the same storage, as when the app scales out (default 1); "
        "instance 0 serves HTTP, every instance runs the blob, queue and timer triggers",
    )
    parser.add_argument("--instance", type=int, default=0, help=argparse.SUPPRESS)  # set on the extra instances
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    worker = args.instance > 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if worker or args.instances > 1:
        _label["instance"] = f"[instance {args.instance}] "
        logging.getLogger().handlers[0].setFormatter(
            logging.Formatter(f"[%(asctime)s] [instance {args.instance}] %(message)s")
        )

    load_local_settings(args.settings)
    import function_app  # after the settings: the app reads them when indexed

    indexed = index_app(function_app.app)
    blobs, routes, timers, queues = indexed.blobs, indexed.routes, indexed.timers, indexed.queues
    host = _host_json()
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    function_key = os.environ.get("LOCAL_FUNCTION_KEY")
    host_id = os.environ.get("AzureFunctionsWebHost__hostid", "local-egress-host")
    instance_id = _instance_id()
    blob_options = BlobOptions.from_host_json(host)
    locks: dict[str, ListenerLock] = {}
    if timers:
        lock_service = _blob_service("AzureWebJobsStorage", 4)
        locks = {t.name: ListenerLock(lock_service, host_id, t.name) for t in timers}

    stop = threading.Event()
    server = None if worker else make_http_server(routes, args.port, prefix, function_key)
    runners = [
        threading.Thread(
            target=BlobPoller(blobs, host_id, blob_options, args.poll_seconds, instance_id=instance_id).run,
            args=(stop,),
            name="blobs",
            daemon=True,
        ),
        threading.Thread(target=TimerRunner(timers, locks).run, args=(stop,), name="timers", daemon=True),
        threading.Thread(
            target=QueuePoller(queues, QueueOptions.from_host_json(host)).run, args=(stop,), name="queues", daemon=True
        ),
    ]
    if worker:
        print(f"\nInstance {args.instance} ({instance_id}) started: blob, queue and timer triggers.\n", flush=True)
    else:
        print("\nFunctions:\n", flush=True)
        for r in routes:
            methods = ",".join(sorted(r.methods))
            print(f"        {r.name}: [{methods}] http://127.0.0.1:{args.port}/{prefix}/{r.template} ({r.auth_level})")
        for b in blobs:
            print(f"        {b.name}: blobTrigger {b.template} on {b.connection}")
        for t in timers:
            print(f"        {t.name}: timerTrigger")
        for q in queues:
            print(f"        {q.name}: queueTrigger {q.queue} on {q.connection}")
        print(
            f"\nBlob triggers run up to {blob_options.max_degree_of_parallelism} at once (maxDegreeOfParallelism)"
            + (f"; {args.instances} instances share the storage" if args.instances > 1 else "")
            + ".",
            flush=True,
        )
        print("\nHost started. Press Ctrl+C to stop.\n", flush=True)

    def shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    if server is not None:
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    for thread in runners:
        thread.start()
    if worker:
        threading.Thread(target=_watch_parent, args=(os.getppid(), stop), name="parent", daemon=True).start()
    extra = [] if worker else _start_instances(args.instances, args)
    reported: set[int] = set()
    while not stop.wait(1.0):
        for number, process in enumerate(extra, start=1):
            if process.poll() is not None and number not in reported:
                reported.add(number)
                log.warning("instance %d stopped (exit code %s); the others go on", number, process.returncode)
    if server is not None:
        server.shutdown()
        server.server_close()
    _stop_instances(extra)
    deadline = time.monotonic() + 10  # running invocations finish; then the process ends anyway
    for thread in runners:
        thread.join(max(0.0, deadline - time.monotonic()))
    print(f"{_label['instance']}Host stopped.", flush=True)
    return 0
