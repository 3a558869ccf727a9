"""The local host's HTTP edges over real sockets: keys, Content-Length, methods, and malformed principals.

The app's routes are served in this process by ``devhost.host.make_http_server`` (as
``python -m devhost`` serves them), with a function key. Handlers call ``get_services()``, which the
``app_services`` fixture rebuilds from each test's own settings.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hmac
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devhost.host import MAX_BODY_BYTES, HttpRoute, _pattern
from shared.bootstrap import Services, reset_services
from shared.settings import Settings, get_settings
from tests.support.servers import ROOT, free_port

KEY = "edge-test-function-key"
# Binding expressions the app's triggers name; the host resolves them when it indexes the app.
_INDEX_SETTINGS = {
    "STAGING_CONTAINER": "staging_container",
    "RELEASE_QUEUE": "release_queue",
    "EXPIRY_SCHEDULE": "expiry_schedule",
}
TOKEN = "A" * 43  # the shape of a sign-off token; no such link exists
MANAGER_ROUTES = [
    ("GET", "/api/packages/wp-edge"),
    ("POST", "/api/packages/wp-edge/revoke"),
    ("POST", "/api/packages/wp-edge/key-release"),
    ("POST", "/api/packages/wp-edge/signoff/resend"),
    ("GET", "/api/grants"),
    ("POST", "/api/grants/0123456789abcdef0123456789abcdef/revoke"),
]


def app_routes() -> list[HttpRoute]:
    """The HTTP routes of ``function_app.app``, indexed as the local host indexes them."""
    import function_app
    from devhost.host import index_app

    # ``get_functions()`` may run once per FunctionApp object, and tests/functions/test_indexing.py
    # indexes ``function_app.app`` itself: index a shallow copy (same functions, its own name check).
    app = copy.copy(function_app.app)
    app.functions_bindings = None
    with pytest.MonkeyPatch.context() as env:
        for name, field in _INDEX_SETTINGS.items():
            if name not in os.environ:
                env.setenv(name, str(Settings.model_fields[field].default))
        return index_app(app).routes


@contextlib.contextmanager
def serve(routes: list[HttpRoute], function_key: str | None = KEY, **options: Any) -> Iterator[int]:
    """``routes`` under /api on a free port, in a thread of this process; yields the port."""
    from devhost.host import make_http_server

    host = json.loads((ROOT / "host.json").read_text())
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    port = free_port()
    server = make_http_server(routes, port, prefix, function_key, **options)
    thread = threading.Thread(target=server.serve_forever, name=f"edge-host-{port}", daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serve(app_routes()) as bound:
        yield bound


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw(port: int, request: bytes, *, half_close: bool = False, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send bytes as they are; return everything the server sent until it closed, and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def assert_json_error(body: bytes, code: str) -> dict[str, Any]:
    text = body.decode()
    assert "Traceback" not in text and 'File "' not in text
    found = json.loads(text)
    assert set(found) == {"error", "message"} and found["error"] == code, found
    return found


# -- function keys ----------------------------------------------------------------------------


def test_function_keys_are_compared_in_constant_time(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert call(port, "GET", "/api/grants?status=dancing", headers={"x-functions-key": "wrong"})[0] == 401
    assert call(port, "GET", "/api/grants?status=dancing", headers={"x-functions-key": KEY})[0] == 400
    assert call(port, "GET", f"/api/grants?status=dancing&code={KEY}")[0] == 400
    assert compared == [(b"wrong", KEY.encode()), (KEY.encode(), KEY.encode()), (KEY.encode(), KEY.encode())]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-functions-key": ""},
        {"x-functions-key": KEY[:-1]},
        {"x-functions-key": KEY + "x"},
        {"x-functions-key": "cl\u00e9"},  # not ASCII: compare_digest on str would raise TypeError
    ],
    ids=["none", "empty", "short", "long", "latin-1"],
)
def test_a_missing_or_wrong_key_is_401_json(port: int, headers: dict[str, str]) -> None:
    status, _, body = call(port, "GET", "/api/packages/wp-edge", headers=headers)
    assert status == 401
    assert_json_error(body, "unauthorized")


def test_a_non_ascii_key_in_the_query_is_401(port: int) -> None:
    status, _, body = call(port, "GET", "/api/packages/wp-edge?code=%C3%A9%FF")
    assert status == 401
    assert_json_error(body, "unauthorized")


def test_no_key_configured_refuses_every_keyed_route() -> None:
    with serve(app_routes(), function_key=None) as bound:
        status, _, body = call(bound, "GET", "/api/packages/wp-edge", headers={"x-functions-key": ""})
        assert status == 401
        assert_json_error(body, "unauthorized")


# -- Content-Length ---------------------------------------------------------------------------


def _post(length: str, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"POST /api/grants/abc/revoke HTTP/1.1\r\nHost: x\r\nx-functions-key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("length", "why"),
    [
        ("ten", "whole number"),
        ("-1", "whole number"),
        ("1.5", "whole number"),
        ("0x10", "whole number"),
        ("+5", "whole number"),
        ("", "whole number"),
        ("1" * 40, "whole number"),
        (str(MAX_BODY_BYTES + 1), "over"),
        (str(2**63), "over"),
    ],
)
def test_a_bad_content_length_is_400_at_once(port: int, length: str, why: str) -> None:
    answer, took = raw(port, _post(length))  # no body follows, and the socket stays open for writing
    status, headers, body = parse(answer)
    assert status == 400 and body["error"] == "invalid_request" and why in body["message"], body
    assert headers["connection"] == "close"
    assert took < 2


def test_two_different_content_lengths_are_400(port: int) -> None:
    answer, _ = raw(port, _post("2", b"{}", extra="Content-Length: 3\r\n"))
    status, _, body = parse(answer)
    assert status == 400 and "more than one Content-Length" in body["message"]


def test_a_body_shorter_than_declared_is_400_once_the_client_stops(port: int) -> None:
    answer, took = raw(port, _post("100", b'{"reason": "x"}'), half_close=True)
    status, _, body = parse(answer)
    assert status == 400 and "ended before its Content-Length" in body["message"], body
    assert took < 2


def test_a_body_that_stops_arriving_is_400_after_the_body_timeout() -> None:
    with serve(app_routes(), body_timeout=0.5) as bound:
        answer, took = raw(bound, _post("100", b'{"reason": "x"}'))  # the client keeps the socket open
    status, _, body = parse(answer)
    assert status == 400 and "ended before its Content-Length" in body["message"], body
    assert 0.4 < took < 3


def test_a_chunked_body_is_refused_not_misread(port: int) -> None:
    request = (
        f"POST /api/grants/abc/revoke HTTP/1.1\r\nHost: x\r\nx-functions-key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    answer, _ = raw(port, request)
    status, headers, body = parse(answer)
    assert status == 411 and body["error"] == "length_required" and headers["connection"] == "close"


@pytest.mark.integration
def test_a_body_within_the_limit_is_read_and_the_connection_kept(port: int, app_services: Services) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(2):  # twice on one connection: the body was read exactly
            connection.request(
                "POST",
                "/api/grants/0123456789abcdef0123456789abcdef/revoke",
                body=b'{"reason": "a test"}',
                headers={"x-functions-key": KEY, "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.status == 404
            assert_json_error(response.read(), "not_found")
    finally:
        connection.close()


# -- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/health", "GET"),
        ("/api/openapi.json", "GET"),
        (f"/api/signoff/{TOKEN}", "GET, POST"),
        ("/api/packages/wp-edge", "GET"),
        ("/api/packages/wp-edge/revoke", "POST"),
        ("/api/grants", "GET"),
    ],
)
@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"])
def test_a_method_the_route_does_not_take_is_405_json_with_allow(port: int, method: str, path: str, allow: str) -> None:
    status, headers, body = call(port, method, path, headers={"x-functions-key": KEY})
    assert status == 405 and headers["allow"] == allow
    assert headers["content-type"] == "application/json"
    found = assert_json_error(body, "method_not_allowed")
    assert method in found["message"]


@pytest.mark.parametrize(
    ("path", "allow"), [("/api/health", "GET"), (f"/api/signoff/{TOKEN}", "GET, POST"), ("/api/grants", "GET")]
)
def test_head_is_405_with_allow_and_no_body(port: int, path: str, allow: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("HEAD", path)
        response = connection.getresponse()
        assert response.status == 405 and response.getheader("Allow") == allow
        assert response.getheader("Content-Type") == "application/json"
        assert response.read() == b""
        connection.request("GET", "/api/health")  # the connection is still in step
        after = connection.getresponse()
        assert after.status == 200 and json.loads(after.read()) == {"status": "ok"}
    finally:
        connection.close()


def test_an_unknown_method_and_a_garbled_request_line_answer_json(port: int) -> None:
    answer, _ = raw(port, b"BREW /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = parse(answer)
    assert status == 501 and set(body) == {"error", "message"}
    answer, _ = raw(port, b"this is not http\r\n\r\n")
    status, _, body = parse(answer)
    assert status == 400 and body["error"] == "invalid_request"


def test_an_unknown_route_is_404_json(port: int) -> None:
    for path in ("/", "/api", "/api/nothing", "/elsewhere/health", "/api/packages/a/b/c"):
        status, _, body = call(port, "GET", path, headers={"x-functions-key": KEY})
        assert status == 404, path
        assert_json_error(body, "not_found")


# -- what reaches the function ----------------------------------------------------------------


def _route(template: str, handler: Callable[[Any], Any], methods: frozenset[str] = frozenset({"GET"})) -> HttpRoute:
    return HttpRoute("probe", template, "req", _pattern(template), set(methods), "anonymous", handler)


def test_route_values_are_percent_decoded_except_a_slash() -> None:
    import azure.functions as func

    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")

    with serve([_route("echo/{value}", echo)]) as bound:
        status, _, body = call(bound, "GET", "/api/echo/a%20b%C3%A9%2Fc%25")
    assert status == 200 and json.loads(body) == {"value": "a b\u00e9%2Fc%"}


def test_a_function_that_raises_is_500_json_without_a_trace(capsys: pytest.CaptureFixture[str]) -> None:
    def boom(req: Any) -> Any:
        raise RuntimeError("internal detail")

    with serve([_route("boom", boom)]) as bound:
        status, _, body = call(bound, "GET", "/api/boom")
    assert status == 500
    found = assert_json_error(body, "internal_error")
    assert "internal detail" not in found["message"]
    assert "Executed 'Functions.probe' (Failed" in capsys.readouterr().out


# -- malformed X-MS-CLIENT-PRINCIPAL ----------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MALFORMED_PRINCIPALS = {
    "not base64": "not base64 at all!",
    "base64 of garbage": _b64(b"\xff\xfe\x00garbage"),
    "base64 of text": _b64(b"hello"),
    "a JSON array": _b64(b"[1, 2, 3]"),
    "a JSON string": _b64(b'"claims"'),
    "no claims": _b64(b'{"userId": "x"}'),
    "claims not a list": _b64(b'{"claims": {"typ": "roles", "val": "EgressManager"}}'),
    "claims not objects": _b64(b'{"claims": ["roles", "EgressManager"]}'),
    "nested too deep": _b64(b"[" * 5000 + b"]" * 5000),  # past json's recursion limit
    "latin-1 bytes": "caf\u00e9",
    "base64 without padding": _b64(b'{"claims": []}').rstrip("="),
}


@pytest.mark.integration
@pytest.mark.parametrize("require", [False, True], ids=["local", "azure"])
@pytest.mark.parametrize(("method", "path"), MANAGER_ROUTES)
def test_a_malformed_principal_is_401_on_every_manager_route(
    port: int, app_services: Services, monkeypatch: pytest.MonkeyPatch, method: str, path: str, require: bool
) -> None:
    monkeypatch.setenv("REQUIRE_MANAGER_PRINCIPAL", str(require).lower())
    get_settings.cache_clear()
    reset_services()
    for name, value in MALFORMED_PRINCIPALS.items():
        body = b'{"reason": "x"}' if method == "POST" else None
        headers = {"x-functions-key": KEY, "X-MS-CLIENT-PRINCIPAL": value, "Content-Type": "application/json"}
        status, _, answer = call(port, method, path, body=body, headers=headers)
        assert status == 401, (name, status, answer[:300])
        assert_json_error(answer, "unauthorized")


@pytest.mark.integration
def test_a_malformed_principal_is_401_on_the_signoff_routes(port: int, app_services: Services) -> None:
    for name, value in MALFORMED_PRINCIPALS.items():
        status, headers, page = call(port, "GET", f"/api/signoff/{TOKEN}", headers={"X-MS-CLIENT-PRINCIPAL": value})
        assert status == 401 and headers["content-type"].startswith("text/html"), name
        assert b"Traceback" not in page and b'File "' not in page
        status, _, answer = call(
            port,
            "POST",
            f"/api/signoff/{TOKEN}",
            body=b'{"decision": "approve", "tier": 2}',
            headers={"X-MS-CLIENT-PRINCIPAL": value, "Content-Type": "application/json"},
        )
        assert status == 401, name
        assert_json_error(answer, "unauthorized")
        status, _, page = call(
            port,
            "POST",
            f"/api/signoff/{TOKEN}",
            body=b"decision=approve&tier=2",
            headers={"X-MS-CLIENT-PRINCIPAL": value, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 401 and b"Traceback" not in page, name


# -- what the functions make of odd input -------------------------------------------------------


@pytest.mark.integration
def test_odd_input_gets_the_answer_a_person_can_act_on(port: int, app_services: Services) -> None:
    key = {"x-functions-key": KEY, "Content-Type": "application/json"}
    deep = b"[" * 5000 + b"]" * 5000  # past the JSON parser's recursion limit
    status, _, body = call(port, "POST", "/api/packages/wp-edge/revoke", body=deep, headers=key)
    assert status == 400
    assert assert_json_error(body, "invalid_request")["message"] == "the request body is not valid JSON"
    status, _, body = call(port, "POST", f"/api/signoff/{TOKEN}", body=deep, headers=key)
    assert status == 400
    assert_json_error(body, "invalid_request")
    for tier in ('"\u00b2"', '"\u0663"'):  # digits to str.isdigit, yet not 0-4
        answer = f'{{"decision": "approve", "tier": {tier}}}'.encode()
        status, _, body = call(port, "POST", f"/api/signoff/{TOKEN}", body=answer, headers=key)
        assert status == 422
        assert_json_error(body, "unprocessable")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, page = call(port, "POST", f"/api/signoff/{TOKEN}", body=b"decision=approve&tier=%C2%B2", headers=form)
    assert status == 422 and b"Traceback" not in page
    for odd in ("WP-UPPER", "wp%0A", "a%2Fb", "%00", "x" * 300):  # no manifest could carry these ids
        status, _, body = call(port, "GET", f"/api/packages/{odd}", headers=key)
        assert status == 404, odd
        assert assert_json_error(body, "not_found")["message"].startswith("there is no package")
    status, _, body = call(port, "GET", "/api/grants?package_id=wp%0A", headers=key)
    assert status == 400
    assert "package_id" in assert_json_error(body, "invalid_request")["message"]
    status, _, body = call(port, "POST", "/api/grants/not%20a%20grant/revoke", headers=key)
    assert status == 404
    assert_json_error(body, "not_found")
