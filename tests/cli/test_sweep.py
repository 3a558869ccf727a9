"""`egress sweep`: the timer's work on demand, for the system manager (after a redeployment, or to
backfill the due indexes with --full)."""

from __future__ import annotations

import json

import pytest

from shared.bootstrap import Services
from tests.support import flow
from tests.support.packages import stage_new
from tests.support.servers import SmtpSink

pytestmark = pytest.mark.integration


def test_sweep_puts_back_the_sftp_firewall_that_a_redeployment_emptied(
    egress, services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service, method="sftp")
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    services.sftp.allow_ranges([])  # what `azd provision` leaves

    result = egress("sweep")

    assert result.exit_code == 0, result.output
    assert "SFTP firewall ranges put right: 198.51.100.0/28, 203.0.113.7" in result.output
    assert sorted(services.sftp.allowed_ranges()) == ["198.51.100.0/28", "203.0.113.7"]


def test_a_full_sweep_reads_every_active_record_and_says_when_nothing_was_due(
    egress, services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    assert flow.egress(services, smtp, package_id, raw) == "granted"

    result = egress("--json", "sweep", "--full")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["looked_at"] >= 2 and report["expired"] == [] and report["failed"] == []
    human = egress("sweep", "--full")
    assert "Swept (every active record;" in human.output and "Nothing was due." in human.output


def test_sweep_has_no_api_route(egress) -> None:
    result = egress("--api", "http://127.0.0.1:9", "sweep")
    assert result.exit_code == 2 and "`egress sweep` has no HTTP API route" in result.output
