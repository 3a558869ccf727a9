"""The local host: runs ``function_app.app`` as the Functions host would.

    python -m devhost [--port 7071] [--settings local.settings.json] [--poll-seconds 2]

Blob triggers poll their container and keep receipts in ``azure-webjobs-hosts`` (so a blob fires
once, even across restarts); HTTP triggers are served under ``/api`` with function keys; timers run
on their NCRONTAB schedule; queue triggers poll their queue as the storage queues extension does
(batches, back-off, retries, ``<queue>-poison``; settings from ``extensions.queues`` in host.json).
Each invocation is logged as ``func start`` logs it.
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


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def invoke(name: str, reason: str, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one invocation with the host's Executing/Executed log lines."""
    invocation = uuid.uuid4()
    print(f"[{_stamp()}] Executing 'Functions.{name}' (Reason='{reason}', Id={invocation})", flush=True)
    started = time.monotonic()
    try:
        result = call()
    except Exception as exc:
        ms = int((time.monotonic() - started) * 1000)
        print(f"[{_stamp()}] Executed 'Functions.{name}' (Failed, Id={invocation}, Duration={ms}ms)", flush=True)
        print(f"[{_stamp()}] System.Exception: {type(exc).__name__}: {exc}", flush=True)
        return False, exc
    ms = int((time.monotonic() - started) * 1000)
    print(f"[{_stamp()}] Executed 'Functions.{name}' (Succeeded, Id={invocation}, Duration={ms}ms)", flush=True)
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


class BlobPoller:
    """Polls like the host's LogsAndContainerScan source, with receipts in storage."""

    def __init__(self, triggers: list[BlobTrigger], host_id: str, max_attempts: int, poll_seconds: float) -> None:
        from azure.storage.blob import BlobServiceClient

        self._triggers = triggers
        self._host_id = host_id
        self._max_attempts = max_attempts
        self._poll_seconds = poll_seconds
        self._attempts: dict[str, int] = {}
        self._clients = {
            t.connection: BlobServiceClient.from_connection_string(connection_string(t.connection)) for t in triggers
        }

    def _receipt(self, trigger: BlobTrigger, etag: str, blob: str) -> str:
        etag = etag.strip('"')
        return f"blobreceipts/{self._host_id}/Host.Functions.{trigger.name}/{etag}/{trigger.container}/{blob}"

    def scan_once(self) -> int:
        """One pass over every trigger's container; returns how many invocations ran."""
        from azure.core.exceptions import ResourceExistsError
        from azure.functions.blob import InputStream

        fired = 0
        for trigger in self._triggers:
            service = self._clients[trigger.connection]
            container = service.get_container_client(trigger.container)
            receipts = service.get_container_client(RECEIPTS_CONTAINER)
            if not container.exists():
                continue
            try:
                receipts.create_container()
            except ResourceExistsError:
                pass
            for blob in container.list_blobs():
                if not trigger.pattern.match(blob.name):
                    continue
                receipt = receipts.get_blob_client(self._receipt(trigger, blob.etag, blob.name))
                if receipt.exists():
                    continue
                data = container.download_blob(blob.name).readall()
                stream = InputStream(
                    data=data,
                    name=f"{trigger.container}/{blob.name}",
                    uri=container.get_blob_client(blob.name).url,
                    length=len(data),
                )
                reason = f"New blob detected(LogsAndContainerScan): {trigger.container}/{blob.name}"
                ok, _ = invoke(trigger.name, reason, lambda t=trigger, s=stream: t.handler(**{t.arg: s}))
                fired += 1
                key = receipt.blob_name
                if ok:
                    receipt.upload_blob(b"", overwrite=True, metadata={"status": "succeeded"})
                    self._attempts.pop(key, None)
                    continue
                self._attempts[key] = self._attempts.get(key, 0) + 1
                if self._attempts[key] >= self._max_attempts:
                    receipt.upload_blob(b"", overwrite=True, metadata={"status": "poison"})
                    log.error(
                        "blob %s/%s failed %d times: recorded as poison, not retried",
                        trigger.container,
                        blob.name,
                        self._max_attempts,
                    )
        return fired

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scan_once()
            except Exception as exc:  # storage unreachable: keep polling, as the host does
                log.warning("blob polling failed: %s", exc)
            stop.wait(self._poll_seconds)


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
                    f"[{_stamp()}] Trigger Details: MessageId: {message.id}, "
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
    def __init__(self, timers: list[Timer]) -> None:
        self._timers = timers

    def fire(self, timer: Timer, reason: str) -> None:
        from azure.functions.timer import TimerRequest

        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=False,
            schedule_status={"Last": now.isoformat(), "Next": timer.schedule.next_after(now).isoformat()},
        )
        invoke(timer.name, reason, lambda: timer.handler(**{timer.arg: request}))

    def run(self, stop: threading.Event) -> None:
        for timer in self._timers:
            if timer.run_on_startup:
                self.fire(timer, "This function was programmatically called via the host APIs.")
        due = {t.name: t.schedule.next_after(datetime.now(UTC)) for t in self._timers}
        while not stop.is_set():
            now = datetime.now(UTC)
            for timer in self._timers:
                if now >= due[timer.name]:
                    self.fire(timer, f"Timer fired at {now.isoformat()}")
                    due[timer.name] = timer.schedule.next_after(now)
            stop.wait(0.2)


def make_http_server(routes: list[HttpRoute], port: int, prefix: str, function_key: str | None) -> ThreadingHTTPServer:
    import azure.functions as func

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            body = json.dumps(
                {
                    "error": {404: "not_found", 401: "unauthorized", 405: "method_not_allowed"}[status],
                    "message": message,
                }
            )
            self._send(status, body.encode(), {"Content-Type": "application/json"})

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = url.path.strip("/")
            if not path.startswith(prefix + "/") and path != prefix:
                return self._error(404, "no such route")
            sub = path[len(prefix) + 1 :]
            candidates = [(r, m) for r in routes if (m := r.route.match(sub))]
            if not candidates:
                return self._error(404, "no such route")
            allowed = [(r, m) for r, m in candidates if self.command in r.methods]
            if not allowed:
                return self._error(405, f"{self.command} is not allowed here")
            route, match = allowed[0]
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if route.auth_level != "anonymous":
                given = self.headers.get("x-functions-key") or params.get("code")
                if not function_key or given != function_key:
                    return self._error(401, "a function key is needed: send it as x-functions-key or ?code=")
            request = func.HttpRequest(
                self.command,
                f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}",
                headers=dict(self.headers.items()),
                params=params,
                route_params=match.groupdict(),
                body=body,
            )
            ok, result = invoke(
                route.name,
                "This function was programmatically called via the host APIs.",
                lambda: route.handler(**{route.arg: request}),
            )
            if not ok:
                return self._send(500, b"", {})
            headers = dict(result.headers.items())
            headers.setdefault(
                "Content-Type", f"{result.mimetype}; charset={result.charset}" if result.mimetype else "text/plain"
            )
            self._send(result.status_code, result.get_body(), headers)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: object) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def _host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, default=None, help="local.settings.json (default: the project's)")
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    load_local_settings(args.settings)
    import function_app  # after the settings: the app reads them when indexed

    indexed = index_app(function_app.app)
    blobs, routes, timers, queues = indexed.blobs, indexed.routes, indexed.timers, indexed.queues
    host = _host_json()
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    max_attempts = int(host.get("extensions", {}).get("blobs", {}).get("poisonBlobThreshold", 5))
    function_key = os.environ.get("LOCAL_FUNCTION_KEY")

    server = make_http_server(routes, args.port, prefix, function_key)
    stop = threading.Event()
    threads = [
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
        threading.Thread(
            target=BlobPoller(
                blobs,
                os.environ.get("AzureFunctionsWebHost__hostid", "local-egress-host"),
                max_attempts,
                args.poll_seconds,
            ).run,
            args=(stop,),
            name="blobs",
            daemon=True,
        ),
        threading.Thread(target=TimerRunner(timers).run, args=(stop,), name="timers", daemon=True),
        threading.Thread(
            target=QueuePoller(queues, QueueOptions.from_host_json(host)).run, args=(stop,), name="queues", daemon=True
        ),
    ]
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
    print("\nHost started. Press Ctrl+C to stop.\n", flush=True)

    def shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    for thread in threads:
        thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
    print("Host stopped.", flush=True)
    return 0
