"""The local host, started as a process against Azurite, driven over real HTTP and blob uploads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.settings import Settings
from tests.conftest import MANAGER
from tests.support.flow import signoff_tokens
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage
from tests.support.servers import ROOT, SmtpSink, free_port, wait_for_port
from tests.support.settings_file import write_local_settings

pytestmark = pytest.mark.integration
KEY = "test-function-key"


class Host:
    def __init__(self, settings_file: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._settings_file = settings_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Host:
        env = {k: v for k, v in os.environ.items() if k not in _APP_SETTINGS}  # the file is the only source
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devhost",
                    "--port",
                    str(self.port),
                    "--settings",
                    str(self._settings_file),
                    "--poll-seconds",
                    "0.3",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/{path}"

    def text(self) -> str:
        return self.log.read_text()


_APP_SETTINGS = {f.alias for f in Settings.model_fields.values() if f.alias} | {
    "LOCAL_FUNCTION_KEY",
    "BLOB_TRIGGER_SOURCE",
}


def eventually(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def host_factory(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Host]]:
    hosts: list[Host] = []

    def make(**overrides: str) -> Host:
        values = {"LOCAL_FUNCTION_KEY": KEY, "EXPIRY_SCHEDULE": "*/2 * * * * *", **overrides}
        settings_file = write_local_settings(settings, tmp_path / f"local.settings.{len(hosts)}.json", **values)
        host = Host(settings_file, tmp_path / f"host{len(hosts)}.log")
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()


def executions(host: Host, function: str) -> int:
    return host.text().count(f"Executed 'Functions.{function}'")


def subjects(smtp: SmtpSink, address: str) -> list[str]:
    return [str(m["Subject"]) for m in smtp.to(address)]


def test_blob_trigger_http_and_function_keys(
    host_factory, settings: Settings, blob_service: BlobServiceClient, smtp: SmtpSink
) -> None:
    host = host_factory().start()
    package_id = new_package_id()
    stage(blob_service, settings.staging_container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))

    eventually(lambda: "Executed 'Functions.process_manifest' (Succeeded" in host.text(), what="the trigger")
    assert subjects(smtp, "ada@provider.example") == [f"Sign-off needed: {package_id}"]

    tokens = signoff_tokens(smtp, package_id)
    assert len(tokens) == 3
    for token in tokens.values():  # no function key: the token in the link is the credential
        decided = requests.post(host.url(f"signoff/{token}"), json={"decision": "approve", "tier": 2}, timeout=10)
        assert decided.status_code == 200, decided.text
    ready = f"Data egress: {package_id} is ready to download"
    eventually(lambda: ready in subjects(smtp, "ada@provider.example"), what="the queued release")
    eventually(lambda: "Executed 'Functions.release_package' (Succeeded" in host.text(), what="the release to finish")
    assert subjects(smtp, "ada@provider.example") == [f"Sign-off needed: {package_id}", ready]

    assert requests.get(host.url("health"), timeout=10).status_code == 200
    assert requests.get(host.url(f"packages/{package_id}"), timeout=10).status_code == 401
    assert (
        requests.get(host.url(f"packages/{package_id}"), headers={"x-functions-key": "wrong"}, timeout=10).status_code
        == 401
    )
    answer = requests.get(host.url(f"packages/{package_id}"), headers={"x-functions-key": KEY}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "granted"
    assert answer.headers["Content-Type"].startswith("application/json")
    grant_id = answer.json()["grants"][0]["grant_id"]
    assert requests.get(host.url(f"grants/{grant_id}/revoke") + f"?code={KEY}", timeout=10).status_code == 405
    revoked = requests.post(host.url(f"grants/{grant_id}/revoke") + f"?code={KEY}", json={"reason": "test"}, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    missing = requests.get(host.url("packages/wp-none"), headers={"x-functions-key": KEY}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert requests.get(host.url("no/such/route"), timeout=10).status_code == 404


def test_receipts_fire_a_blob_once_even_across_a_restart(
    host_factory, settings: Settings, blob_service: BlobServiceClient, smtp: SmtpSink
) -> None:
    host = host_factory().start()
    package_id = new_package_id()
    rejected = manifest_for(package_id, SAMPLE_FILES, expires_in_hours=500)  # stays staged: a rejection
    stage(blob_service, settings.staging_container, package_id, SAMPLE_FILES, rejected)
    eventually(lambda: len(smtp.to(MANAGER)) == 1, what="the rejection email")
    time.sleep(1.5)
    host.stop()
    again = host_factory().start()
    time.sleep(2)
    assert executions(again, "process_manifest") == 0, "a restarted host does not fire the same blob again"
    assert len(smtp.to(MANAGER)) == 1

    stage(blob_service, settings.staging_container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))
    eventually(lambda: executions(again, "process_manifest") == 1, what="the corrected manifest to fire")
    assert subjects(smtp, "ada@provider.example") == [f"Sign-off needed: {package_id}"]


def test_a_failing_blob_is_retried_then_recorded_as_poison(
    host_factory, settings: Settings, blob_service: BlobServiceClient
) -> None:
    host = host_factory(SMTP_PORT=str(free_port())).start()  # nothing listens: every email fails
    package_id = new_package_id()
    stage(
        blob_service,
        settings.staging_container,
        package_id,
        SAMPLE_FILES,
        manifest_for(package_id, SAMPLE_FILES, tier=4),
    )
    eventually(lambda: "recorded as poison" in host.text(), what="the poison record")
    assert host.text().count("Executed 'Functions.process_manifest' (Failed") == 5
    receipts = blob_service.get_container_client("azure-webjobs-hosts")
    poison = [
        b for b in receipts.list_blobs(name_starts_with="blobreceipts/", include=["metadata"]) if package_id in b.name
    ]
    assert [b.metadata["status"] for b in poison] == ["poison"]
    time.sleep(1)
    assert host.text().count("Executed 'Functions.process_manifest' (Failed") == 5, "poison is not retried"


def test_timer_runs_on_its_schedule(host_factory) -> None:
    host = host_factory().start()
    eventually(lambda: executions(host, "expire_grants") >= 2, timeout=10, what="two timer runs")
    assert "Executed 'Functions.expire_grants' (Succeeded" in host.text()
