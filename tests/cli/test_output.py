"""What `egress` prints: no `None`, plurals, the status of a package whose links all ended, table headers,
and no progress bars unless a person watches a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from shared.bootstrap import Services
from tests.cli.support import make_manifest
from tests.support import flow
from tests.support.packages import new_package_id
from tests.support.servers import ROOT, SmtpSink

pytestmark = pytest.mark.integration


def _granted(egress, services: Services, outputs: Path, smtp: SmtpSink) -> str:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    assert egress("stage", str(outputs)).exit_code == 0
    raw = services.staging.read(services.settings.staging_container, f"{package_id}/manifest.json")
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    return package_id


def test_a_package_rejected_before_its_manifest_was_read_shows_no_none(egress, services: Services) -> None:
    package_id = new_package_id()
    services.intake.process(package_id, b"{ this is not json")
    result = egress("status", package_id)
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "REJECTED" in result.output and "(no title)" in result.output and "method unknown" in result.output
    assert "no tier" in result.output and "0 files, 0 bytes" in result.output


def test_one_file_is_one_file(egress, tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "table.csv").write_text("a,b\n")
    result = make_manifest(egress, single, new_package_id())
    assert result.exit_code == 0, result.output
    assert ": 1 file, 4 bytes;" in result.output


def test_grants_have_headers_and_status_says_when_every_link_was_revoked(
    egress, services: Services, outputs: Path, smtp: SmtpSink
) -> None:
    package_id = _granted(egress, services, outputs, smtp)
    as_json = json.loads(egress("--json", "grants", "--package", package_id).output)
    assert len(as_json) == 1 and set(as_json[0]) >= {"grant_id", "status", "recipient", "expires_at", "ip_ranges"}

    listed = egress("grants", "--package", package_id)
    header, row = listed.output.splitlines()
    assert header.split() == ["GRANT", "STATUS", "PACKAGE", "RECIPIENT", "EXPIRES", "FROM", "SFTP", "LOGIN"]
    assert row.startswith(as_json[0]["grant_id"]) and "ada@provider.example" in row

    live = egress("status", package_id)
    assert f"{package_id}  GRANTED  tier 2" in live.output and "every link" not in live.output
    assert "  links:" in live.output and "GRANT" in live.output

    revoked = egress("revoke", "--package", package_id)
    assert revoked.exit_code == 0, revoked.output
    status = egress("status", package_id)
    assert f"{package_id}  GRANTED (every link revoked)  tier 2" in status.output
    trail = egress("audit", package_id)
    assert "grant_revoked" in trail.output and "None" not in trail.output + revoked.output + status.output


def test_a_grant_revoked_without_a_reason_says_so(egress, services: Services, outputs: Path, smtp: SmtpSink) -> None:
    package_id = _granted(egress, services, outputs, smtp)
    grant_id = json.loads(egress("--json", "grants", "--package", package_id).output)[0]["grant_id"]
    result = egress("revoke", grant_id)
    assert result.exit_code == 0, result.output
    assert "Revoked (reason: none given):" in result.output and "None" not in result.output


def _manifest_on_a_terminal(settings_file: Path, folder: Path, *options: str) -> tuple[int, str]:
    """Run `egress manifest` with stderr on a pseudo-terminal; return its exit code and what the terminal showed."""
    controller, terminal = pty.openpty()
    command = [sys.executable, "-c", "from egress_cli.main import main; main()", "--settings", str(settings_file)]
    command += [*options, "manifest", str(folder), "--package-id", new_package_id(), "--title", "T", "--tier", "0"]
    command += ["--decision", "data_provider_representative:Ada:ada@provider.example"]
    command += ["--decision", "investigator:Alan:alan@institute.example"]
    command += ["--recipient", "Ada:ada@provider.example:203.0.113.7"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return process.wait(timeout=60), shown.decode(errors="replace")


def test_progress_bars_only_on_a_terminal_and_never_with_no_progress(
    egress, settings_file: Path, outputs: Path
) -> None:
    code, shown = _manifest_on_a_terminal(settings_file, outputs)
    assert code == 0 and "Hashing" in shown, "a person at a terminal sees the bar"
    code, shown = _manifest_on_a_terminal(settings_file, outputs, "--no-progress")
    assert code == 0 and shown == ""
    made = make_manifest(egress, outputs, new_package_id())
    assert made.exit_code == 0 and "Hashing" not in made.output, "no bar when stderr is not a terminal"
