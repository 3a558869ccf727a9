"""Any size and bounded records on Azurite (issue 11, items 2 and 3).

Counts and sizes are written as Edm.Int64, so a package past 2 GiB is recorded, not lost to
poison; a rejection with thousands of reasons is stored cut short, with a last line that says
where the full list is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient
from azure.functions.blob import InputStream

from functions.staging_trigger import process_manifest
from shared.adapters.table_registry import MAX_LIST_JSON
from shared.bootstrap import Services
from shared.domain.audit import verify_chain
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from tests.conftest import MANAGER
from tests.support.flow import egress, queue_client
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage, staged
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

GIB = 2**30
TIB = 2**40
NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def _raw_row(services: Services, package_id: str) -> dict[str, object]:
    """The package's row as the table holds it, typed values and all."""
    tables = TableServiceClient.from_connection_string(services.settings.egress_storage)
    table = tables.get_table_client(f"{services.settings.registry_table_prefix}packages")
    return dict(table.get_entity(package_id, "package"))


def _stage_3_gib(services: Services, blob_service) -> tuple[str, bytes, dict[str, object], int]:
    """A package whose manifest declares a 3 GiB file while the staged blob is small: the size check
    rejects it and the typed path (record, email, audit) is taken without 3 GiB of data."""
    package_id = new_package_id()
    manifest = manifest_for(package_id, SAMPLE_FILES)
    big = manifest["files"][0]
    big["size"] = 3 * GIB
    declared = sum(f["size"] for f in manifest["files"])
    raw = stage(blob_service, services.settings.staging_container, package_id, SAMPLE_FILES, manifest)
    return package_id, raw, big, declared


def test_a_3_gib_file_goes_through_the_typed_path_and_is_rejected_for_its_size(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    container = services.settings.staging_container
    package_id, raw, big, declared = _stage_3_gib(services, blob_service)
    before = staged(blob_service, container, package_id)

    assert egress(services, smtp, package_id, raw) == "rejected"  # returned, not raised: no retry, no poison

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert record.total_bytes == declared and record.total_bytes > 3 * GIB
    assert type(record.total_bytes) is int and type(record.file_count) is int
    (reason,) = record.rejection_reasons
    assert f"{big['path']!r} is {len(SAMPLE_FILES[big['path']]):,} bytes" in reason
    assert "the manifest says 3,221,225,472 (truncated or replaced)" in reason
    row = _raw_row(services, package_id)
    assert row["total_bytes"] == EntityProperty(declared, EdmType.INT64)
    assert row["file_count"] == EntityProperty(len(SAMPLE_FILES), EdmType.INT64)

    (told,) = smtp.to(MANAGER)
    assert "3,221,225,472" in body_text(told)
    assert queue_client(services).peek_messages(max_messages=1) == []
    actions = [e.action for e in services.audit.read(package_id)]
    assert actions == ["manifest_received", "rejected"]
    assert verify_chain(services.audit.read(package_id), package_id, services.audit.anchor(package_id)) == []
    assert staged(blob_service, container, package_id) == before


def test_the_blob_trigger_completes_for_a_3_gib_manifest(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    """The host retries a handler that raises and then marks the blob poison; this one returns."""
    container = app_services.settings.staging_container
    package_id, raw, _, declared = _stage_3_gib(app_services, blob_service)
    process_manifest(InputStream(data=raw, name=f"{container}/{package_id}/manifest.json", length=len(raw)))
    record = app_services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED and record.total_bytes == declared
    assert len(smtp.to(MANAGER)) == 1


def _package(package_id: str, **changes: object) -> PackageRecord:
    return PackageRecord.model_validate(
        {
            "package_id": package_id,
            "status": PackageStatus.PROCESSING,
            "manifest_sha256": "a" * 64,
            "title": "Whole-genome outputs",
            "tier": 2,
            "method": "storage_explorer",
            "file_count": 10_000,
            "total_bytes": 5 * TIB,
            "recipient_count": 5,
            "expires_in_hours": 72,
            "created_at": NOW,
            "updated_at": NOW,
            **changes,
        }
    )


def test_a_5_tib_package_and_a_grant_round_trip_through_the_registry(services: Services) -> None:
    registry = services.registry
    package_id = new_package_id()
    record = _package(package_id)
    registry.create_package(record)
    back = registry.get_package(package_id)
    assert back is not None
    assert back.model_dump() == record.model_dump()
    assert back.total_bytes == 5 * TIB and type(back.total_bytes) is int
    assert registry.list_packages(PackageStatus.PROCESSING) == [back]

    moved = registry.update_package(back.transition(PackageStatus.REJECTED, total_bytes=2**63 - 1))
    again = registry.get_package(package_id)
    assert again is not None and again.total_bytes == 2**63 - 1 and again.etag == moved.etag

    grant = GrantRecord(
        grant_id="g-5b1e0c9d2a7f4e31",
        package_id=package_id,
        recipient_index=4,
        recipient_name="Ada Byron",
        recipient_email="ada@provider.example",
        policy_id="g-5b1e0c9d2a7f4e31",
        ip_ranges=["203.0.113.7", "198.51.100.0/28"],
        status=GrantStatus.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=72),
    )
    registry.create_grant(grant)
    found = registry.get_grant(grant.grant_id)
    assert found is not None and found.model_dump() == grant.model_dump()
    assert type(found.recipient_index) is int
    assert registry.list_grants(package_id=package_id) == [found]


def test_thousands_of_long_reasons_are_stored_cut_short_with_a_summary(services: Services) -> None:
    registry = services.registry
    package_id = new_package_id()
    reasons = [
        f"file {'d/' + 'x' * 1_016 + f'{i:06d}'!r} is listed in the manifest but was not staged" for i in range(10_000)
    ]
    assert len(reasons[0]) > 1_000
    created = registry.create_package(_package(package_id))
    rejected = registry.update_package(created.transition(PackageStatus.REJECTED, rejection_reasons=reasons))

    back = registry.get_package(package_id)
    assert back is not None and back.status == PackageStatus.REJECTED and back.etag == rejected.etag
    *kept, summary = back.rejection_reasons
    assert 20 < len(kept) < 40 and kept == reasons[: len(kept)]
    assert summary == (
        f"... {10_000 - len(kept):,} more reasons; the full list is in the audit trail (egress audit {package_id})"
    )
    stored = _raw_row(services, package_id)["rejection_reasons"]
    assert isinstance(stored, str) and len(stored) <= MAX_LIST_JSON
    assert json.loads(stored) == back.rejection_reasons

    # A list that fits is kept whole, and an update with it replaces the summary.
    fixed = registry.update_package(back.model_copy(update={"rejection_reasons": reasons[:3]}))
    assert fixed.rejection_reasons == reasons[:3]
    final = registry.get_package(package_id)
    assert final is not None and final.rejection_reasons == reasons[:3]


def test_one_reason_longer_than_a_property_leaves_only_the_summary(services: Services) -> None:
    registry = services.registry
    package_id = new_package_id()
    huge = f"files[0].path {'y' * 100_000!r} is longer than 1024 characters"
    created = registry.create_package(_package(package_id))
    registry.update_package(created.transition(PackageStatus.REJECTED, rejection_reasons=[huge]))
    back = registry.get_package(package_id)
    assert back is not None
    assert back.rejection_reasons == [
        f"... 1 more reason; the full list is in the audit trail (egress audit {package_id})"
    ]


def _long_path(i: int) -> str:
    """A valid 1,024-character path (folder names of 200: a name may have 255 bytes at most)."""
    head = f"outputs/run-{i:05d}/"
    body = "/".join("p" * 200 for _ in range(6))[: 1_024 - len(head) - 4].rstrip("/")
    return head + body + "q" * (1_024 - len(head) - len(body) - 4) + ".csv"


def test_10000_unstaged_long_paths_are_rejected_end_to_end(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id = new_package_id()
    manifest = manifest_for(package_id, {"placeholder": b""})
    manifest["files"] = [{"path": _long_path(i), "size": 1, "sha256": "0" * 64} for i in range(10_000)]
    raw = stage(blob_service, services.settings.staging_container, package_id, {}, manifest)

    assert egress(services, smtp, package_id, raw) == "rejected"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert record.rejection_reasons[-1].startswith("... ") and "egress audit" in record.rejection_reasons[-1]
    (told,) = smtp.to(MANAGER)
    assert len(told.as_bytes()) < 1_000_000
    assert "9,950 more files are listed in the manifest but were not staged" in body_text(told)
    (rejected,) = [e for e in services.audit.read(package_id) if e.action == "rejected"]
    assert len(rejected.details["reasons"]) == 10_000
