"""`egress key-release` (directly and over the API) and `egress write-disk`'s refusal of a missing target."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from egress_cli.main import main
from shared.bootstrap import Services
from tests.support import flow
from tests.support.packages import stage_new
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration
RECIPIENT = "ada@provider.example"


@pytest.fixture
def physical(services: Services, blob_service, smtp: SmtpSink) -> str:
    package_id, raw = stage_new(services, blob_service, method="physical")
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    smtp.clear()
    return package_id


def test_key_release_emails_the_key_once(egress, physical: str, smtp: SmtpSink) -> None:
    result = egress("key-release", physical)
    assert result.exit_code == 0, result.output
    assert f"Released the key of {physical}: 1 recipient ({RECIPIENT})" in result.output
    assert "AGE-SECRET-KEY" not in result.output, "the key goes by email only"
    (mail,) = [m for m in smtp.to(RECIPIENT) if "decryption key" in m["Subject"]]
    assert re.search(r"AGE-SECRET-KEY-1[0-9A-Z]+", body_text(mail))

    again = egress("key-release", physical)
    assert again.exit_code == 4 and "already released" in again.output
    status = egress("status", physical)
    assert "key released" in status.output


def test_key_release_of_a_link_package_is_a_conflict(egress, services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    result = egress("key-release", package_id)
    assert result.exit_code == 4 and "there is no key to release" in result.output
    assert egress("key-release", "wp-unknown").exit_code == 3


class KeyReleaseRoute(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_POST(self) -> None:
        KeyReleaseRoute.seen.append((self.command, self.path, self.headers.get("x-functions-key")))
        body = json.dumps(
            {
                "package_id": "wp-disk",
                "key_released_at": "2026-11-21T10:00:00+00:00",
                "key_released_by": "sm@dsh.example",
                "recipients": [RECIPIENT, "bob@provider.example"],
                "status": "granted",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    KeyReleaseRoute.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyReleaseRoute)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_key_release_over_the_api(api_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--api", api_url, "--key", "k", "key-release", "wp-disk"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert KeyReleaseRoute.seen == [("POST", "/api/packages/wp-disk/key-release", "k")]
    assert "2 recipients" in result.output and "by sm@dsh.example" in result.output


def test_write_disk_refuses_a_target_that_does_not_exist(egress, physical: str, tmp_path: Path) -> None:
    typo = tmp_path / "mnt" / "typo"
    result = egress("write-disk", physical, str(typo))
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output and "--create" in result.output
    assert not typo.exists() and not typo.parent.exists()

    made = egress("write-disk", physical, str(typo), "--create")
    assert made.exit_code == 0, made.output
    assert "read them back: all match" in made.output and "3 encrypted files" in made.output
    assert (typo / "encrypted-manifest.json").exists()


def test_write_disk_refuses_a_file_and_api_mode(egress, physical: str, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-disk"
    a_file.write_text("x")
    result = egress("write-disk", physical, str(a_file))
    assert result.exit_code == 2 and "is a file" in result.output
    disk = tmp_path / "disk"
    disk.mkdir()
    api = egress("--api", "http://127.0.0.1:9", "write-disk", physical, str(disk))
    assert api.exit_code == 2 and "no HTTP API route" in api.output
    assert list(disk.iterdir()) == []


def test_write_disk_creates_nothing_for_a_package_it_cannot_write(egress, tmp_path: Path) -> None:
    target = tmp_path / "new-disk"
    result = egress("write-disk", "wp-unknown", str(target), "--create")
    assert result.exit_code == 3 and "there is no package wp-unknown" in result.output
    assert not target.exists()
