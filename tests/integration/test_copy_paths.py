"""Sealing by copy, on Azurite: small files are read once, checked and written; large files are
copied and the copy is read back. Either way the bytes that leave are the bytes signed off, a
fault part-way is completed by the retry, and the staged files are removed in batches.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient

from shared.adapters.blob_store import AzureBlobStore, client_options
from shared.bootstrap import Services, build_services
from shared.domain.audit import verify_chain
from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import StorageUnavailable, TransientError
from shared.services.seal import WHOLE_FILE_BYTES
from tests.support.flow import approve_all, drain, egress, release, with_deliver, with_seal
from tests.support.packages import SAMPLE_FILES, stage_new, staged
from tests.support.servers import DELIVERY_ACCOUNT, DELIVERY_KEY, DEV_KEY, Azurite, SmtpSink

pytestmark = pytest.mark.integration

LARGE = b"0123456789abcdef" * (WHOLE_FILE_BYTES // 16) + b"one chunk more"  # just over the limit
SMALL = {**SAMPLE_FILES, "empty.txt": b""}
MIXED = {**SMALL, "data/large.bin": LARGE}


class Recorder:
    """Wraps a real store: counts each method's calls and can fail the ``at``-th call of one."""

    def __init__(self, inner: Any, fail: str | None = None, at: int = 1) -> None:
        self._inner = inner
        self._fail = fail
        self._at = at
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == self._fail and self.calls[name] == self._at:
                raise StorageUnavailable("503 from the fault injector")
            return attr(*args, **kwargs)

        return wrapped


def _sealed(blob_service: BlobServiceClient, package_id: str) -> dict[str, bytes]:
    client = blob_service.get_container_client(f"egress-{package_id}")
    return {b.name: client.download_blob(b.name).readall() for b in client.list_blobs()}


def _assert_granted_once(services: Services, smtp: SmtpSink, blob_service, package_id: str) -> None:
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED
    (grant,) = services.registry.list_grants(package_id=package_id)
    assert grant.status == GrantStatus.ACTIVE
    assert len(smtp.to("ada@provider.example")) == 1
    assert staged(blob_service, services.settings.staging_container, package_id) == {}, "staging emptied"
    assert verify_chain(services.audit.read(package_id)) == []


def test_small_files_are_read_once_and_written_large_ones_copied_and_read_back(
    services: Services, clock, blob_service, smtp: SmtpSink
) -> None:
    delivery = Recorder(services.delivery)
    services = with_seal(services, clock, delivery=delivery)
    package_id, raw = stage_new(services, blob_service, files=MIXED)

    assert egress(services, smtp, package_id, raw) == "granted"

    assert _sealed(blob_service, package_id) == MIXED, "byte for byte as signed"
    assert delivery.calls["write"] == len(SMALL)  # one write per small file, nothing read back
    assert delivery.calls["copy_into"] == 1 and delivery.calls["digest"] == 1  # the large file's copy
    _assert_granted_once(services, smtp, blob_service, package_id)


def test_across_accounts_small_files_are_read_once_and_written(
    settings, clock, azurite: Azurite, blob_service, smtp: SmtpSink
) -> None:
    delivery_cs = azurite.connection_string(DELIVERY_ACCOUNT, DELIVERY_KEY)
    services = build_services(settings.model_copy(update={"delivery_storage": delivery_cs}), clock=clock)
    delivery = Recorder(services.delivery)
    services = with_seal(services, clock, delivery=delivery)
    package_id, raw = stage_new(services, blob_service, files=MIXED)

    assert egress(services, smtp, package_id, raw) == "granted"

    sealed = _sealed(BlobServiceClient.from_connection_string(delivery_cs), package_id)
    assert sealed == MIXED
    assert delivery.calls["write"] == len(SMALL) and delivery.calls["copy_into"] == 1
    assert not blob_service.get_container_client(f"egress-{package_id}").exists(), "sealed in the delivery account"


def test_a_small_file_swapped_for_a_large_one_after_signoff_is_rejected_with_its_new_size(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    grown = b"x" * (3 * WHOLE_FILE_BYTES)
    staging = blob_service.get_container_client(services.settings.staging_container)
    staging.upload_blob(f"{package_id}/files/tables/table1.csv", grown, overwrite=True)
    approve_all(services, smtp, package_id)
    smtp.clear()

    drain(services)

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert any(
        f"'tables/table1.csv' changed after sign-off: it is now {len(grown):,} bytes" in r
        for r in record.rejection_reasons
    )
    assert not blob_service.get_container_client(f"egress-{package_id}").exists(), "nothing of it is left"
    assert (
        staged(blob_service, services.settings.staging_container, package_id)[f"{package_id}/files/tables/table1.csv"]
        == grown
    )
    assert smtp.to("ada@provider.example") == []


def test_a_small_file_changed_in_place_after_signoff_is_rejected_by_its_hash(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    same_size = bytes(reversed(SAMPLE_FILES["README.md"]))
    staging = blob_service.get_container_client(services.settings.staging_container)
    staging.upload_blob(f"{package_id}/files/README.md", same_size, overwrite=True)
    approve_all(services, smtp, package_id)

    drain(services)

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    expected = f"'README.md' changed after sign-off: its SHA-256 is now {hashlib.sha256(same_size).hexdigest()}"
    assert any(expected in r for r in record.rejection_reasons)
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()


@pytest.mark.parametrize(
    ("side", "method", "at"),
    [
        ("delivery", "write", 2),  # a small file's write into the sealed container, part-way
        ("staging", "chunks", 2),  # a small file's read from staging, part-way
        ("delivery", "copy_into", 1),  # the large file's copy
        ("delivery", "digest", 1),  # reading the large file's copy back
    ],
)
def test_a_storage_fault_mid_way_then_the_retry_completes_once(
    side: str, method: str, at: int, services: Services, clock, blob_service, smtp: SmtpSink
) -> None:
    faulty = Recorder(getattr(services, side), fail=method, at=at)
    services = with_seal(services, clock, **{side: faulty})
    package_id, raw = stage_new(services, blob_service, files=MIXED)

    with pytest.raises(TransientError):
        egress(services, smtp, package_id, raw)
    assert faulty.calls[method] >= at, "the fault was injected"
    record = services.registry.get_package(package_id)
    assert record is not None and record.status in (PackageStatus.PROCESSING, PackageStatus.SEALED)
    assert smtp.to("ada@provider.example") == []

    assert release(services, package_id) == "granted"
    assert egress(services, smtp, package_id, raw) == "unchanged"
    assert _sealed(blob_service, package_id) == MIXED
    _assert_granted_once(services, smtp, blob_service, package_id)


@pytest.mark.parametrize("at", [1, 2], ids=["staged files", "staged manifest"])
def test_staging_is_emptied_after_the_recipients_are_told_and_a_fault_there_is_finished_by_the_retry(
    at: int, services: Services, clock, blob_service, smtp: SmtpSink
) -> None:
    faulty = Recorder(services.staging, fail="delete_blobs", at=at)
    services = with_deliver(services, clock, DEV_KEY, staging=faulty)
    package_id, raw = stage_new(services, blob_service, files=MIXED)

    with pytest.raises(TransientError):
        egress(services, smtp, package_id, raw)
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED, "told first, cleaned up after"
    assert len(smtp.to("ada@provider.example")) == 1
    left = staged(blob_service, services.settings.staging_container, package_id)
    assert f"{package_id}/manifest.json" in left, "the manifest goes last"

    assert release(services, package_id) == "granted"
    assert egress(services, smtp, package_id, raw) == "unchanged"
    assert _sealed(blob_service, package_id) == MIXED
    _assert_granted_once(services, smtp, blob_service, package_id)


def test_one_worker_at_a_time_seals_a_link_package_so_a_late_copier_cannot_overwrite_a_checked_copy(
    services: Services, clock, blob_service, smtp: SmtpSink
) -> None:
    from datetime import timedelta

    from shared.errors import InProgress

    package_id, raw = stage_new(services, blob_service, files=MIXED)
    services.intake.process(package_id, raw)
    approve_all(services, smtp, package_id)
    smtp.clear()  # Ada also signed off: count only what release sends her
    record = services.registry.get_package(package_id)
    assert record is not None
    # Another worker holds the claim and is copying: this one hands its message back, writing nothing.
    services.registry.update_package(record.model_copy(update={"encryption_claimed_at": clock.now()}))
    with pytest.raises(InProgress, match="another worker is sealing"):
        services.seal.seal(package_id, record.manifest_sha256)
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()

    clock.offset = timedelta(minutes=16)  # that worker died: its claim is taken over
    assert release(services, package_id) == "granted"
    assert _sealed(blob_service, package_id) == MIXED
    _assert_granted_once(services, smtp, blob_service, package_id)


# -- deleting many blobs ------------------------------------------------------------------


ODD_NAMES = ["a b.csv", "ünï/cödé.txt", "per%cent.txt", "hash#tag.txt", "what?.txt", "deep/er/still/x.csv"]


def _fill(store: AzureBlobStore, container: str, count: int) -> list[str]:
    store.ensure_container(container)
    names = [f"pkg/files/{i:04d}-{ODD_NAMES[i % len(ODD_NAMES)]}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: store.write(container, name, name.encode()), names))
    return names


def test_delete_blobs_removes_hundreds_with_awkward_names_and_ignores_those_gone(azurite: Azurite) -> None:
    store = AzureBlobStore(BlobServiceClient.from_connection_string(azurite.connection_string(), **client_options()))
    names = _fill(store, "deletes-many", 600)  # three batches
    store.write("deletes-many", "other/kept.txt", b"not in the list")

    store.delete_blobs("deletes-many", [*names, "pkg/files/never-there.txt"])

    assert [b.name for b in store.list_blobs("deletes-many", "")] == ["other/kept.txt"]
    store.delete_blobs("deletes-many", names)  # again: all already gone, no error
    store.delete_blobs("deletes-many", [])
    store.delete_container("deletes-many")


class RefusingBatches(RequestsTransport):
    """A transport to an account that refuses Blob Batch requests as a whole (as some accounts may)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refused = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        if "comp=batch" in request.url:
            self.refused += 1
            request.url = request.url.replace("comp=batch", "comp=nobatch")  # Azurite answers 400
        return super().send(request, **kwargs)


def test_delete_blobs_goes_one_by_one_where_batches_are_refused(azurite: Azurite) -> None:
    transport = RefusingBatches()
    service = BlobServiceClient.from_connection_string(azurite.connection_string(), transport=transport)
    store = AzureBlobStore(service)
    names = _fill(store, "deletes-refused", 300)

    store.delete_blobs("deletes-refused", names)

    assert transport.refused == 2
    assert store.list_blobs("deletes-refused", "") == []
    store.delete_container("deletes-refused")


# -- the storage clients' HTTP session ----------------------------------------------------


def _store(azurite: Azurite, **extra: Any) -> AzureBlobStore:
    options = {**client_options(), "retry_total": 0, **extra}
    return AzureBlobStore(BlobServiceClient.from_connection_string(azurite.connection_string(), **options))


def test_a_netrc_entry_for_the_storage_host_does_not_replace_the_signed_authorization(
    azurite: Azurite, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    store = _store(azurite)
    store.ensure_container("netrc-check")

    store.write("netrc-check", "x.txt", b"signed with the account key")

    assert store.read("netrc-check", "x.txt") == b"signed with the account key"
    store.delete_container("netrc-check")


def test_proxy_settings_from_the_environment_are_still_honoured(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(StorageUnavailable):
        _store(azurite).list_blobs("anything", "")

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    store = _store(azurite)
    for _ in range(3):  # read once per origin, then reused
        store.ensure_container("proxy-check")
    assert store.container_exists("proxy-check")
    store.delete_container("proxy-check")


def test_sixty_four_workers_share_the_connection_pool_without_discarding(
    azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(azurite)
    store.ensure_container("pool-check")
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"), ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda i: store.write("pool-check", f"f{i}", b"x"), range(640)))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    store.delete_container("pool-check")
