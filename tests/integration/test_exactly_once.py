"""Exactly once, whatever the host does: concurrent workers, repeated triggers, and a tampered trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.bootstrap import Services, build_services
from shared.domain.audit import AuditEntry, make_entry, verify_chain
from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import AuditCorrupt
from tests.conftest import MANAGER
from tests.support.packages import stage_new
from tests.support.rounds import run_round, together
from tests.support.servers import SmtpSink

pytestmark = pytest.mark.integration

ROUNDS = 6  # per worker count here; benchmarks/bench_concurrency.py runs 50 and more


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_concurrent_workers_on_one_manifest_give_one_grant_and_one_email_each(
    settings, clock, blob_service: BlobServiceClient, smtp: SmtpSink, workers: int
) -> None:
    instances = [build_services(settings, clock=clock) for _ in range(workers)]  # one per worker, as on Azure
    for _ in range(ROUNDS):
        result = run_round(instances, blob_service, smtp)
        assert result.exact, result


def test_eight_concurrent_revokes_send_one_notice(services: Services, blob_service, smtp: SmtpSink, settings, clock):
    from tests.support.flow import egress

    package_id, raw = stage_new(services, blob_service)
    assert egress(services, smtp, package_id, raw) == "granted"
    (grant,) = services.registry.list_grants(package_id=package_id)
    smtp.clear()
    instances = [build_services(settings, clock=clock) for _ in range(8)]

    together(8, lambda i: instances[i].end_grant.revoke_grant(grant.grant_id, f"manager-{i}", "leaked"))

    notices = [m for m in smtp.to(MANAGER) if "was revoked" in str(m["Subject"])]
    assert len(notices) == 1
    assert [e.action for e in services.audit.read(package_id)].count("grant_revoked") == 1
    saved = services.registry.get_grant(grant.grant_id)
    assert saved is not None and saved.status == GrantStatus.REVOKED


def test_four_concurrent_key_releases_send_the_key_once(settings, clock, blob_service, smtp: SmtpSink) -> None:
    from tests.support.flow import egress

    services = build_services(settings, clock=clock)
    package_id, raw = stage_new(services, blob_service, method="sftp")
    assert egress(services, smtp, package_id, raw) == "granted"
    smtp.clear()
    instances = [build_services(settings, clock=clock) for _ in range(4)]

    together(4, lambda i: instances[i].key_release.release(package_id, f"manager-{i}"))

    keys = [m for m in smtp.messages if "decryption key" in str(m["Subject"])]
    assert len(keys) == 1
    assert [e.action for e in services.audit.read(package_id)].count("key_released") == 1


def test_a_repeated_append_with_the_same_event_id_is_recorded_once(services: Services) -> None:
    first = services.audit.append("wp-once", "sealed", "t", {"n": 1}, event_id="sealed:x")
    again = services.audit.append("wp-once", "sealed", "t", {"n": 1}, event_id="sealed:x")
    assert first == again and len(services.audit.read("wp-once")) == 1


# -- the anchored chain -----------------------------------------------------------------------


def _trail(services: Services, package_id: str, n: int = 5) -> BlobServiceClient:
    for i in range(n):
        services.audit.append(package_id, f"step{i}", "t", {"i": i})
    return services.staging  # type: ignore[return-value]


def _rewrite(blob_service: BlobServiceClient, services: Services, package_id: str, entries: list[AuditEntry]) -> None:
    client = blob_service.get_blob_client(services.settings.audit_container, f"{package_id}.jsonl")
    client.delete_blob()
    client.create_append_blob()
    if entries:
        client.append_block("".join(e.model_dump_json() + "\n" for e in entries).encode())


def _problems(services: Services, package_id: str) -> list[str]:
    return verify_chain(services.audit.read(package_id), package_id, services.audit.anchor(package_id))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("drop_last", "the last 1 were removed"),
        ("truncate_to_2", "the last 3 were removed"),
        ("rehash_all", "rewritten and re-hashed"),
        ("forged_append", "appended outside the service"),
        ("other_package", "belongs to package"),
    ],
)
def test_each_tampering_is_detected_with_its_reason(
    services: Services, blob_service: BlobServiceClient, tamper: str, reason: str
) -> None:
    package_id = "wp-anchored"
    _trail(services, package_id)
    entries = services.audit.read(package_id)
    assert _problems(services, package_id) == []
    if tamper == "drop_last":
        forged = entries[:-1]
    elif tamper == "truncate_to_2":
        forged = entries[:2]
    elif tamper == "rehash_all":
        forged, previous = [], None
        for e in entries:
            previous = make_entry(
                previous, at=e.at, package_id=package_id, action=e.action, actor="mallory", details=e.details
            )
            forged.append(previous)
    elif tamper == "forged_append":
        forged = [
            *entries,
            make_entry(entries[-1], at=entries[-1].at, package_id=package_id, action="x", actor="m", details={}),
        ]
    else:
        _trail(services, "wp-other")
        forged = services.audit.read("wp-other")
    _rewrite(blob_service, services, package_id, forged)

    assert any(reason in p for p in _problems(services, package_id)), _problems(services, package_id)


def test_a_corrupt_line_is_a_typed_error_that_says_where(services: Services, blob_service: BlobServiceClient) -> None:
    _trail(services, "wp-corrupt", 3)
    client = blob_service.get_blob_client(services.settings.audit_container, "wp-corrupt.jsonl")
    client.append_block(b'{"seq": 3, "not": "an entry"}\n')
    with pytest.raises(AuditCorrupt, match="line 4 is not a valid entry"):
        services.audit.read("wp-corrupt")
    with pytest.raises(AuditCorrupt):
        services.audit.append("wp-corrupt", "more", "t", {})


# -- nothing stuck ------------------------------------------------------------------------------


def test_a_lost_release_message_is_queued_again_and_a_long_stuck_package_reported_once(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    from tests.support.flow import approve_all, drain, queue_client

    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    approve_all(services, smtp, package_id)
    queue_client(services).clear_messages()  # the message is lost (a crash after the state write)
    smtp.clear()

    assert services.sweep.sweep().requeued == []  # not yet: within stuck_after
    clock.offset = services.config.stuck_after + timedelta(seconds=1)
    assert services.sweep.sweep().requeued == [package_id]
    drain(services)
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED

    other, raw2 = stage_new(services, blob_service)
    services.intake.process(other, raw2)
    approve_all(services, smtp, other)
    queue_client(services).clear_messages()
    clock.offset += services.config.stuck_after * 7
    services.sweep.sweep()
    services.sweep.sweep()
    stuck = [m for m in smtp.to(MANAGER) if f"{other} is stuck" in str(m["Subject"])]
    assert len(stuck) == 1


def test_every_poisoned_message_is_reported_once(services: Services, smtp: SmtpSink) -> None:
    poison = QueueClient.from_connection_string(
        services.settings.egress_storage,
        f"{services.settings.release_queue}-poison",
        message_encode_policy=TextBase64EncodePolicy(),
    )
    poison.create_queue()
    poison.send_message('{"package_id": "wp-poisoned", "manifest_sha256": "00"}')

    services.sweep.sweep()
    report = services.sweep.sweep()

    assert len(report.poisoned) == 1
    notices = [m for m in smtp.to(MANAGER) if "gave up on the release of package wp-poisoned" in str(m["Subject"])]
    assert len(notices) == 1
