"""The egress CLI, as the classification team and the system manager use it, on a real Azurite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from egress_cli.main import main
from shared.bootstrap import Services
from tests.cli.support import make_manifest
from tests.support import flow
from tests.support.packages import new_package_id
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration


def test_manifest_stage_status_revoke_audit_download(
    egress, services: Services, outputs: Path, smtp: SmtpSink, tmp_path: Path
) -> None:
    package_id = new_package_id()
    made = make_manifest(egress, outputs, package_id)
    assert made.exit_code == 0, made.output
    manifest = json.loads((outputs / "manifest.json").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == [
        "figures/figure1_odds_ratios.png",
        "reports/report.pdf",
        "tables/table1_odds_ratios.csv",
    ]
    assert "passes the policy checks" in made.output

    staged = egress("--json", "stage", str(outputs))
    assert staged.exit_code == 0, staged.output
    raw = services.staging.read(services.settings.staging_container, f"{package_id}/manifest.json")
    assert flow.egress(services, smtp, package_id, raw) == "granted"

    status = egress("status", package_id)
    assert status.exit_code == 0 and "GRANTED" in status.output and "ada@provider.example" in status.output
    listed = json.loads(egress("--json", "grants", "--active").output)
    grant_id = next(g["grant_id"] for g in listed if g["package_id"] == package_id)

    url = re.search(r"Link for \S+: (http\S+)", body_text(smtp.to("ada@provider.example")[0])).group(1)
    got = egress("download", url, str(tmp_path / "got"), "--checksums", str(outputs / "manifest.json"))
    assert got.exit_code == 0, got.output
    assert "all checks passed" in got.output
    assert (tmp_path / "got/reports/report.pdf").read_bytes() == (outputs / "reports/report.pdf").read_bytes()

    email_list = tmp_path / "from-email.txt"
    email_list.write_text(body_text(smtp.to("ada@provider.example")[0]))
    assert egress("download", url, str(tmp_path / "again"), "--checksums", str(email_list)).exit_code == 0

    revoked = egress("revoke", grant_id, "--reason", "leaked")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    refused = egress("download", url, str(tmp_path / "late"))
    assert refused.exit_code == 5 and "revoked, has expired, or is used from an address" in refused.output

    audit = egress("audit", package_id, "--verify")
    assert audit.exit_code == 0 and "Chain verified: intact." in audit.output and "grant_revoked" in audit.output


def test_a_manifest_that_breaks_policy_is_refused_before_upload(egress, outputs: Path) -> None:
    result = make_manifest(egress, outputs, new_package_id(), "--expires-in-hours", "500")
    assert result.exit_code == 2
    assert "would be rejected" in result.output and "must be 1 to 72" in result.output
    assert not (outputs / "manifest.json").exists()


def test_a_tampered_file_fails_the_download_check(
    egress, services: Services, outputs: Path, smtp: SmtpSink, tmp_path: Path
) -> None:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    assert egress("stage", str(outputs)).exit_code == 0
    raw = services.staging.read(services.settings.staging_container, f"{package_id}/manifest.json")
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    url = re.search(r"Link for \S+: (http\S+)", body_text(smtp.to("ada@provider.example")[0])).group(1)
    wrong = json.loads((outputs / "manifest.json").read_text())
    wrong["files"][0]["sha256"] = "0" * 64
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    result = egress("download", url, str(tmp_path / "got"), "--checksums", str(tmp_path / "wrong.json"))
    assert result.exit_code == 2 and "MISMATCH" in result.output and "SOME CHECKS FAILED" in result.output


def test_stage_refuses_a_folder_that_changed_after_its_manifest(egress, outputs: Path) -> None:
    assert make_manifest(egress, outputs, new_package_id()).exit_code == 0
    (outputs / "late-addition.csv").write_text("x\n")
    result = egress("stage", str(outputs))
    assert result.exit_code == 2 and "late-addition.csv" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("stage", "/no/such/folder"), 2, "does not exist: run `egress manifest"),
        (("status", "wp-unknown"), 3, "there is no package wp-unknown"),
        (("revoke", "nope"), 3, "there is no grant nope"),
        (("revoke",), 2, "give a GRANT_ID or --package"),
    ],
)
def test_user_errors_are_messages_with_exit_codes(egress, args, code: int, message: str) -> None:
    result = egress(*args)
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output


def test_storage_unreachable_is_a_clear_message(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    unreachable = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    settings.write_text(json.dumps({"Values": {"EGRESS_STORAGE": unreachable}}))
    result = CliRunner().invoke(main, ["--settings", str(settings), "status", "wp-x"], catch_exceptions=False)
    assert result.exit_code == 6 and "storage cannot be reached" in result.output


def test_api_mode_reports_an_unreachable_app(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--api", "http://127.0.0.1:9", "--key", "k", "status", "wp-x"], catch_exceptions=False
    )
    assert result.exit_code == 6 and "did not answer" in result.output
