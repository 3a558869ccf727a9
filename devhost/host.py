"""The local host: runs ``function_app.app`` as the Functions host would.

    python -m devhost [--port 7071] [--settings local.settings.json] [--poll-seconds 2]

Blob triggers poll their container and keep receipts in ``azure-webjobs-hosts`` (so a blob fires
once, even across restarts); HTTP triggers are served under ``/api`` with function keys; timers run
on their NCRONTAB schedule. Each invocation is logged as ``func start`` logs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def index_app(app: Any) -> tuple[list[BlobTrigger], list[HttpRoute], list[Timer]]:
    """Read the app's own bindings (``get_functions`` may be called once per app)."""
    blobs, routes, timers = [], [], []
    for function in app.get_functions():
        trigger = function.get_bindings_dict()["bindings"][0]
        kind, name, handler = trigger["type"], function.get_function_name(), function.get_user_function()
        if kind == "blobTrigger":
            container, _, rest = resolve(trigger["path"]).partition("/")
            blobs.append(
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
            routes.append(HttpRoute(name, route, trigger["name"], _pattern(route), methods, level, handler))
        elif kind == "timerTrigger":
            schedule = Schedule.parse(resolve(trigger["schedule"]))
            timers.append(Timer(name, trigger["name"], schedule, bool(trigger.get("runOnStartup")), handler))
        else:
            raise ValueError(f"{name}: the local host does not run {kind} triggers")
    return blobs, routes, timers


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

    blobs, routes, timers = index_app(function_app.app)
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
    ]
    print("\nFunctions:\n", flush=True)
    for r in routes:
        methods = ",".join(sorted(r.methods))
        print(f"        {r.name}: [{methods}] http://127.0.0.1:{args.port}/{prefix}/{r.template} ({r.auth_level})")
    for b in blobs:
        print(f"        {b.name}: blobTrigger {b.template} on {b.connection}")
    for t in timers:
        print(f"        {t.name}: timerTrigger")
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
