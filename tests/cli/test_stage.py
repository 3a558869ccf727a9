"""`egress stage`: what it checks before anything is uploaded, and how fast it gives up on dead storage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from egress_cli.main import main
from shared.bootstrap import Services
from tests.cli.support import make_manifest
from tests.support.packages import new_package_id

pytestmark = pytest.mark.integration


def _staged(services: Services, package_id: str) -> list[str]:
    if not services.staging.container_exists(services.settings.staging_container):
        return []
    return [b.name for b in services.staging.list_blobs(services.settings.staging_container, f"{package_id}/")]


def test_a_file_that_grew_after_its_manifest_is_refused_before_upload(
    egress, services: Services, outputs: Path
) -> None:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    with (outputs / "tables/table1_odds_ratios.csv").open("a") as grown:
        grown.write("late,row\n")
    result = egress("stage", str(outputs))
    assert result.exit_code == 2, result.output
    assert "changed after the manifest was made" in result.output
    assert "tables/table1_odds_ratios.csv" in result.output and "bytes now" in result.output
    assert _staged(services, package_id) == []


def test_a_file_changed_in_place_is_refused_by_its_sha256(egress, services: Services, outputs: Path) -> None:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    target = outputs / "tables/table1_odds_ratios.csv"
    data = bytearray(target.read_bytes())
    data[0] ^= 1  # same size, other content
    target.write_bytes(bytes(data))
    result = egress("stage", str(outputs))
    assert result.exit_code == 2, result.output
    assert "tables/table1_odds_ratios.csv: its SHA-256 is not the one in the manifest" in result.output
    assert "figure1" not in result.output, "only the changed file is named"
    assert _staged(services, package_id) == []


def test_an_unchanged_folder_stages_its_files_then_the_manifest(egress, services: Services, outputs: Path) -> None:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    result = egress("stage", str(outputs))
    assert result.exit_code == 0, result.output
    assert "Staged 3 files (" in result.output
    assert sorted(_staged(services, package_id)) == [
        f"{package_id}/files/figures/figure1_odds_ratios.png",
        f"{package_id}/files/reports/report.pdf",
        f"{package_id}/files/tables/table1_odds_ratios.csv",
        f"{package_id}/manifest.json",
    ]
    staged = services.staging.read(services.settings.staging_container, f"{package_id}/files/reports/report.pdf")
    assert staged == (outputs / "reports/report.pdf").read_bytes()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_stage_refuses_api_mode_instead_of_ignoring_it(egress, services: Services, outputs: Path, how: str) -> None:
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    if how == "option":
        result = egress("--api", "http://127.0.0.1:9", "stage", str(outputs))
    else:
        result = egress("stage", str(outputs), env={"EGRESS_API": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert "`egress stage` has no HTTP API route" in result.output and "drop --api" in result.output
    assert _staged(services, package_id) == []


def test_stage_gives_up_on_unreachable_storage_within_seconds(egress, outputs: Path, tmp_path: Path) -> None:
    assert make_manifest(egress, outputs, new_package_id()).exit_code == 0
    down = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    settings = tmp_path / "down.settings.json"
    settings.write_text(json.dumps({"Values": {"EGRESS_STORAGE": down}}))
    started = time.monotonic()
    result = CliRunner().invoke(main, ["--settings", str(settings), "stage", str(outputs)], catch_exceptions=False)
    elapsed = time.monotonic() - started
    assert result.exit_code == 6, result.output
    assert "storage cannot be reached" in result.output and "127.0.0.1:9" in result.output
    assert elapsed < 10, f"stage took {elapsed:.1f} s to report dead storage"


def test_stage_refuses_a_package_that_was_already_released(egress, services: Services, outputs: Path, smtp) -> None:
    from tests.support.flow import egress as release

    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    assert egress("stage", str(outputs)).exit_code == 0
    raw = (outputs / "manifest.json").read_bytes()
    assert release(services, smtp, package_id, raw) == "granted"

    again = egress("stage", str(outputs))

    assert again.exit_code == 4, again.output
    assert f"package {package_id} was already released" in again.output and "new id" in again.output
    assert _staged(services, package_id) == [], "nothing was uploaded again"
