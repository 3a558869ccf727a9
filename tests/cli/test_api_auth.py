"""`egress --api` against an app behind App Service authentication (a local stand-in)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from click.testing import CliRunner

from egress_cli.main import main


class SignedInOnly(BaseHTTPRequestHandler):
    """Answers like Easy Auth in front of the API: 401 without a bearer token, else the package."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        SignedInOnly.seen.append({k.lower(): v for k, v in self.headers.items()})
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"You do not have permission to view this directory or page.")
            return
        body = json.dumps({"package_id": "wp-x", "status": "granted", "grants": [], "files": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_url() -> Iterator[str]:
    SignedInOnly.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SignedInOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_and_key_are_sent_and_never_printed(app_url: str) -> None:
    result = CliRunner().invoke(
        main,
        ["--json", "--api", app_url, "status", "wp-x"],
        env={"EGRESS_FUNCTION_KEY": "fn-key-123", "EGRESS_API_TOKEN": "entra-token-456"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "granted"
    headers = SignedInOnly.seen[-1]
    assert headers["authorization"] == "Bearer entra-token-456"
    assert headers["x-functions-key"] == "fn-key-123"
    assert "entra-token-456" not in result.output and "fn-key-123" not in result.output


def test_without_a_token_the_refusal_is_a_clear_message(app_url: str) -> None:
    result = CliRunner().invoke(main, ["--api", app_url, "--key", "k", "status", "wp-x"], catch_exceptions=False)
    assert result.exit_code != 0
    assert "HTTP 401" in result.output and "Traceback" not in result.output


class KeyedOnly(BaseHTTPRequestHandler):
    """Answers like the local host and Azure Functions: 401 for a missing and for a wrong key alike."""

    def do_GET(self) -> None:
        if self.headers.get("x-functions-key") != "right-key":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"package_id": "wp-x", "status": "granted", "grants": [], "files": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keyed_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyedOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_wrong_key_and_a_missing_key_get_different_messages(keyed_url: str) -> None:
    runner = CliRunner()
    wrong = runner.invoke(main, ["--api", keyed_url, "--key", "wrong-key", "status", "wp-x"], catch_exceptions=False)
    assert wrong.exit_code == 5 and "the function key was refused" in wrong.output and "HTTP 401" in wrong.output
    assert "wrong-key" not in wrong.output
    missing = runner.invoke(main, ["--api", keyed_url, "status", "wp-x"], env={"EGRESS_FUNCTION_KEY": ""})
    assert missing.exit_code == 5
    assert "no function key given: --key or EGRESS_FUNCTION_KEY" in missing.output
    right = runner.invoke(
        main, ["--json", "--api", keyed_url, "--key", "right-key", "status", "wp-x"], catch_exceptions=False
    )
    assert right.exit_code == 0, right.output
