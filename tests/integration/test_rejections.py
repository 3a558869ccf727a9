"""Bad input: the package is rejected with every reason, the manager is told, nothing is lost."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from shared.bootstrap import Services
from shared.domain.records import PackageStatus
from tests.conftest import MANAGER
from tests.support.flow import egress
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage, staged
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

Mutation = Callable[[dict[str, Any], dict[str, bytes]], "dict[str, Any] | bytes"]


def _set(**changes: Any) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        manifest.update(copy.deepcopy(changes))
        return manifest

    return mutate


def _recipient(**changes: Any) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        manifest["recipients"][0].update(changes)
        return manifest

    return mutate


def _decisions(change: Callable[[list[dict[str, Any]]], None]) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        change(manifest["classification"]["decisions"])
        return manifest

    return mutate


def _file(index: int, **changes: Any) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        manifest["files"][index].update(changes)
        return manifest

    return mutate


def _staged_files(change: Callable[[dict[str, bytes]], None]) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        change(files)
        return manifest

    return mutate


def _all_tier(tier: int) -> Mutation:
    def mutate(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        manifest["classification"]["tier"] = tier
        for d in manifest["classification"]["decisions"]:
            d["tier"] = tier
        return manifest

    return mutate


def _six_recipients(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    manifest["recipients"] = [
        {"name": f"R{i}", "email": f"r{i}@provider.example", "ip_ranges": ["203.0.113.7"]} for i in range(6)
    ]
    return manifest


CASES: dict[str, tuple[Mutation, str]] = {
    "malformed JSON": (lambda m, f: b'{"schema_version": 1, "package_id": ', "not valid JSON"),
    "unknown field": (_set(colour="blue"), "colour: unknown field"),
    "wrong schema version": (_set(schema_version=2), "schema_version must be 1"),
    "missing role": (_decisions(lambda d: d.pop(1)), "no decision from the investigator"),
    "duplicated person": (_decisions(lambda d: d[1].update(email="ada@provider.example")), "must be distinct"),
    "tier not the highest decision": (_decisions(lambda d: d[2].update(tier=3)), "highest decision is tier 3"),
    "tier 4": (_all_tier(4), "tier 4 outputs never leave"),
    "recipient outside the provider's domain": (
        _recipient(email="eve@elsewhere.example"),
        "outside the data provider's domain",
    ),
    "more than five recipients": (_six_recipients, "1 to 5 are allowed"),
    "IPv6": (_recipient(ip_ranges=["2001:db8::1"]), "is IPv6"),
    "private range": (_recipient(ip_ranges=["10.1.2.3"]), "private (RFC 1918)"),
    "loopback": (_recipient(ip_ranges=["127.0.0.1"]), "loopback"),
    "0.0.0.0/0": (_recipient(ip_ranges=["0.0.0.0/0"]), "unspecified"),
    "wider than /24": (_recipient(ip_ranges=["198.51.0.0/16"]), "wider than /24"),
    "expiry above the tier's maximum": (_set(expires_in_hours=73), "must be 1 to 72"),
    "path traversal": (_file(0, path="../x"), "contains '..'"),
    "absolute path": (_file(0, path="/etc/passwd"), "starts with '/'"),
    "backslash": (_file(0, path="tables\\table1.csv"), "backslash"),
    "control character": (_file(0, path="tables/ta\x07ble.csv"), "control character"),
    "duplicate path": (lambda m, f: {**m, "files": m["files"] + [m["files"][0]]}, "is listed twice"),
    "missing file": (
        _staged_files(lambda f: f.pop("README.md")),
        "'README.md' is listed in the manifest but was not staged",
    ),
    "extra file": (
        _staged_files(lambda f: f.update({"secret.csv": b"x"})),
        "'secret.csv' was staged but is not in the manifest",
    ),
    "truncated file": (_staged_files(lambda f: f.update({"README.md": f["README.md"][:-5]})), "truncated or replaced"),
    "altered file": (
        _staged_files(lambda f: f.update({"README.md": f["README.md"].upper()})),
        "'README.md' has SHA-256",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_and_nothing_is_lost(case: str, services: Services, blob_service, smtp: SmtpSink) -> None:
    mutate, expected = CASES[case]
    package_id = new_package_id()
    files = dict(SAMPLE_FILES)
    manifest = mutate(manifest_for(package_id, SAMPLE_FILES), files)
    raw = stage(blob_service, services.settings.staging_container, package_id, files, manifest)
    before = staged(blob_service, services.settings.staging_container, package_id)

    assert egress(services, smtp, package_id, raw) == "rejected"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert any(expected in reason for reason in record.rejection_reasons), record.rejection_reasons
    (told,) = smtp.to(MANAGER)
    assert expected in body_text(told)
    assert smtp.to("ada@provider.example") == []
    assert services.registry.list_grants(package_id=package_id) == []
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert staged(blob_service, services.settings.staging_container, package_id) == before

    # Staged again unchanged: a rejected package is checked again even with the same manifest (its
    # files may have been fixed, DESIGN.md section 3); still wrong, it is rejected again, for the same reasons.
    reasons = record.rejection_reasons
    assert egress(services, smtp, package_id, raw) == "rejected"
    again = services.registry.get_package(package_id)
    assert again is not None and again.status == PackageStatus.REJECTED and again.rejection_reasons == reasons
    # The manager was told these very reasons already: the outbox sends that email once.
    assert smtp.to(MANAGER) == [told]
    assert [e.action for e in services.audit.read(package_id)].count("rejected") == 2
    assert smtp.to("ada@provider.example") == []
    assert services.registry.list_grants(package_id=package_id) == []
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert staged(blob_service, services.settings.staging_container, package_id) == before


def test_several_reasons_are_reported_together(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id = new_package_id()
    manifest = manifest_for(package_id, SAMPLE_FILES, expires_in_hours=500)
    manifest["recipients"][0]["ip_ranges"] = ["10.0.0.1", "2001:db8::1"]
    raw = stage(blob_service, services.settings.staging_container, package_id, SAMPLE_FILES, manifest)
    egress(services, smtp, package_id, raw)
    record = services.registry.get_package(package_id)
    assert record is not None and len(record.rejection_reasons) == 3


def test_a_corrected_manifest_after_a_rejection_goes_through(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id = new_package_id()
    container = services.settings.staging_container
    bad = stage(
        blob_service, container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES, expires_in_hours=100)
    )
    assert egress(services, smtp, package_id, bad) == "rejected"
    good = stage(blob_service, container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))
    assert egress(services, smtp, package_id, good) == "granted"
    record = services.registry.get_package(package_id)
    assert record is not None and record.rejection_reasons == []


def test_a_different_manifest_for_an_egressed_package_is_refused(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id = new_package_id()
    container = services.settings.staging_container
    first = stage(blob_service, container, package_id, SAMPLE_FILES, manifest_for(package_id, SAMPLE_FILES))
    assert egress(services, smtp, package_id, first) == "granted"
    (grant,) = services.registry.list_grants(package_id=package_id)
    smtp.clear()
    files = {"new.csv": b"different outputs\n"}
    second = manifest_for(package_id, files, title="Something else")
    raw = stage(blob_service, container, package_id, files, second)
    before = staged(blob_service, container, package_id)

    assert egress(services, smtp, package_id, raw) == "rejected"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED, "the egressed package is untouched"
    assert "already egressed" in record.rejection_reasons[0]
    assert services.registry.list_grants(package_id=package_id) == [grant]
    assert smtp.to("ada@provider.example") == []
    assert "already egressed" in body_text(smtp.to(MANAGER)[0])
    assert staged(blob_service, container, package_id) == before
    assert json.loads(raw)["title"] == "Something else"


def test_a_staging_folder_that_is_not_a_package_id_is_reported(services: Services, smtp: SmtpSink) -> None:
    assert egress(services, smtp, "Not_An_Id", b"{}") == "rejected"
    assert "not a valid package id" in body_text(smtp.to(MANAGER)[0])
