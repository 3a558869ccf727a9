"""Sealing: a signed-off package is copied (or encrypted) into its delivery location, byte for byte
as signed. Every file's SHA-256 is checked again against the signed manifest: a file changed since
sign-off rejects the package with a reason that names it, and nothing of it is left to deliver.

Runs in the queue-triggered release function, never in an HTTP request. A stale or repeated
message changes nothing.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from shared.domain import names
from shared.domain.manifest import FileEntry, Manifest, Method
from shared.domain.records import PackageRecord, PackageStatus
from shared.errors import ConcurrencyConflict, EgressError, InProgress, NotFound, StorageUnavailable
from shared.ports import AuditTrail, BlobStore, Clock, Crypto, EmailSender, PackageKeys, Registry
from shared.services.concurrency import parallel_map
from shared.services.config import PipelineConfig
from shared.services.hashing_io import HashingReader, HashingWriter, gather
from shared.services.records_io import load_manifest
from shared.services.rejection import Rejecter

logger = logging.getLogger(__name__)

ACTOR = "egress-release"
SEAL_LEASE = timedelta(minutes=15)  # a sealing claim older than this is taken over (its worker died)
# Files up to this size are sealed by one read and one write; larger ones by a copy and a streamed
# read of the copy, so that memory stays at a few chunks per worker whatever a file's size.
WHOLE_FILE_BYTES = 1024 * 1024
FORMAT = "age-encryption.org/v1"


class _Changed(Exception):
    """A staged file no longer matches the signed manifest."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _changed(entry: FileEntry, size: int, sha256: str) -> str | None:
    if size != entry.size:
        return (
            f"file {entry.path!r} changed after sign-off: it is now {size:,} bytes, "
            f"the signed manifest says {entry.size:,}"
        )
    if sha256 != entry.sha256:
        return (
            f"file {entry.path!r} changed after sign-off: its SHA-256 is now {sha256}, "
            f"the signed manifest says {entry.sha256}"
        )
    return None


class SealService:
    def __init__(
        self,
        *,
        staging: BlobStore,
        delivery: BlobStore,
        keys: PackageKeys,
        crypto: Crypto,
        registry: Registry,
        audit: AuditTrail,
        email: EmailSender,
        clock: Clock,
        config: PipelineConfig,
        sftp_store: BlobStore,
    ) -> None:
        self._staging = staging
        self._delivery = delivery
        self._sftp_store = sftp_store  # the SFTP-enabled account: sftp packages are sealed there
        self._keys = keys
        self._crypto = crypto
        self._registry = registry
        self._audit = audit
        self._email = email
        self._clock = clock
        self._config = config
        self._reject = Rejecter(registry, audit, email, clock, config.system_manager_email, ACTOR)

    def seal(self, package_id: str, manifest_sha256: str) -> PackageRecord | None:
        """Seal a signed-off package; returns its record once sealed (or later), None when it must not leave."""
        record = self._registry.get_package(package_id)
        if record is None or record.manifest_sha256 != manifest_sha256:
            logger.info("release of %s: no such package or a replaced manifest; nothing to do", package_id)
            return None
        if record.status in (PackageStatus.GRANTED, PackageStatus.CLOSED):
            return record
        if record.status not in (PackageStatus.PROCESSING, PackageStatus.SEALED) or record.signoff_completed_at is None:
            logger.info("release of %s: it is %s and not signed off; nothing to do", package_id, record.status)
            return None
        manifest = load_manifest(self._staging, self._config.records_container, package_id)
        if record.status == PackageStatus.SEALED:  # an earlier try sealed it; finish what it left
            self._record_sealed(record, manifest, {"files": len(manifest.files), "bytes": manifest.total_bytes})
            return record
        record = self._claim(record)
        try:
            details = self._encrypt(manifest) if manifest.method != Method.STORAGE_EXPLORER else self._copy(manifest)
        except _Changed as exc:
            fresh = self._registry.get_package(package_id)
            if fresh is not None and fresh.status in (
                PackageStatus.SEALED,
                PackageStatus.GRANTED,
                PackageStatus.CLOSED,
            ):
                return fresh  # sealed by a worker that took over the claim after its lease (we were too slow)
            self._discard(manifest)  # nothing that was not signed off stays deliverable
            self._reject_changed(record, manifest, exc.reasons)
            return None
        except Exception:
            self._release_claim(record)  # the host's retry may start at once
            raise
        now = self._clock.now()
        try:
            sealed = self._registry.update_package(
                record.transition(PackageStatus.SEALED, sealed_at=now, updated_at=now)
            )
        except ConcurrencyConflict:
            return self._registry.get_package(package_id)  # sealed by another worker
        self._record_sealed(record, manifest, details)
        return sealed  # the staged files stay until delivery has told the recipients (DeliverService)

    def _record_sealed(self, record: PackageRecord, manifest: Manifest, details: dict[str, Any]) -> None:
        """Idempotent: a retry after a crash between the state write and this append adds it once."""
        self._audit.append(
            record.package_id,
            "sealed",
            ACTOR,
            {**details, "manifest_sha256": record.manifest_sha256},
            event_id=f"sealed:{record.manifest_sha256}",
        )

    # -- download links: a verified server-side copy ----------------------------------------

    def _copy(self, manifest: Manifest) -> dict[str, Any]:
        package_id = manifest.package_id
        container = names.egress_container(package_id)
        self._delivery.ensure_container(container)

        def copy_and_check(entry: FileEntry) -> str | None:
            if entry.size <= WHOLE_FILE_BYTES:
                return self._copy_small(package_id, entry, container)
            try:
                self._delivery.copy_into(
                    self._staging,
                    self._config.staging_container,
                    names.staged_file(package_id, entry.path),
                    container,
                    entry.path,
                )
            except NotFound:
                return f"file {entry.path!r} was removed from staging after sign-off"
            found = self._delivery.digest(container, entry.path)
            return _changed(entry, found.size, found.sha256)

        problems = [p for p in parallel_map(copy_and_check, list(manifest.files), self._config.workers) if p]
        if problems:
            raise _Changed(problems)
        wanted = manifest.file_map()
        stale = [b.name for b in self._delivery.list_blobs(container, "") if b.name not in wanted]
        self._delivery.delete_blobs(container, stale)
        return {"container": container, "files": len(wanted), "bytes": manifest.total_bytes}

    def _copy_small(self, package_id: str, entry: FileEntry, container: str) -> str | None:
        """Read the staged file once, check it, and write exactly the bytes checked: two requests
        where a copy and a read of the copy take two or three. Only a file that is, per the signed
        manifest, small is read whole; one that has grown since is hashed as it streams, not kept."""
        try:
            found = gather(
                self._staging.chunks(self._config.staging_container, names.staged_file(package_id, entry.path)),
                keep=entry.size,
            )
        except NotFound:
            return f"file {entry.path!r} was removed from staging after sign-off"
        problem = _changed(entry, found.size, found.sha256)
        if problem is not None or found.data is None:
            return problem
        self._delivery.write(container, entry.path, found.data)
        return None

    # -- one sealer at a time -----------------------------------------------------------------

    def _claim(self, record: PackageRecord) -> PackageRecord:
        """One worker at a time seals a package (ETag-conditional, with a lease). Two at once could
        each be right alone and wrong together: a large file is copied over the sealed blob before
        its copy is read back, so a second copier could overwrite a checked copy with a file changed
        in staging after the first one's check; and each encrypting worker would make its own key,
        so the files that land could need two keys. Another worker finding a fresh claim hands its
        message back; after the lease (its worker died) the claim is taken over, and a key already
        stored is used again."""
        now = self._clock.now()
        claimed = record.encryption_claimed_at
        if claimed is not None and claimed + SEAL_LEASE > now:
            raise InProgress(f"another worker is sealing {record.package_id}; retrying")
        try:
            return self._registry.update_package(record.model_copy(update={"encryption_claimed_at": now}))
        except ConcurrencyConflict:
            raise InProgress(f"another worker is sealing {record.package_id}; retrying") from None

    def _release_claim(self, record: PackageRecord) -> None:
        try:
            self._registry.update_package(record.model_copy(update={"encryption_claimed_at": None}))
        except EgressError as exc:  # the lease lets a retry take it over anyway
            logger.warning("the sealing claim of %s stays until its lease ends: %s", record.package_id, exc.message)

    # -- sftp and physical: streamed age encryption ----------------------------------------

    def _identity(self, package_id: str) -> str:
        """The package's key: made once; a retry reuses it so earlier ciphertexts stay readable.
        Read back after storing, so that the key used is the one kept, whoever stored last."""
        try:
            return self._keys.get(package_id)
        except NotFound:
            identity, _ = self._crypto.new_identity()
            self._keys.put(package_id, identity)
            return self._keys.get(package_id)

    def _sealed_store(self, manifest: Manifest) -> BlobStore:
        return self._sftp_store if manifest.method == Method.SFTP else self._delivery

    def _encrypt(self, manifest: Manifest) -> dict[str, Any]:
        package_id = manifest.package_id
        container, prefix = names.egress_container(package_id), ""
        store = self._sealed_store(manifest)
        store.ensure_container(container)
        recipient = self._crypto.public_of(self._identity(package_id))

        def encrypt(entry: FileEntry) -> dict[str, Any]:
            try:
                reader = self._staging.open_read(
                    self._config.staging_container, names.staged_file(package_id, entry.path)
                )
            except NotFound:
                raise _Changed([f"file {entry.path!r} was removed from staging after sign-off"]) from None
            source = HashingReader(reader)
            target = HashingWriter(store.open_write(container, prefix + names.encrypted_file(entry.path)))
            try:
                self._crypto.encrypt(source, target, recipient)  # type: ignore[arg-type]
                problem = _changed(entry, source.size, source.sha.hexdigest())
                if problem:
                    raise _Changed([problem])
            except BaseException:
                target.discard()  # a half-written or unsigned ciphertext is never committed
                raise
            finally:
                source.close()
            target.close()
            return {
                "path": entry.path,
                "size": entry.size,
                "sha256": entry.sha256,
                "encrypted_path": names.encrypted_file(entry.path),
                "encrypted_size": target.size,
                "encrypted_sha256": target.sha.hexdigest(),
            }

        files = parallel_map(encrypt, list(manifest.files), self._config.workers)
        encrypted = {
            "package_id": package_id,
            "title": manifest.title,
            "format": FORMAT,
            "recipient": recipient,
            "files": files,
        }
        store.write(container, prefix + names.ENCRYPTED_MANIFEST, json.dumps(encrypted, indent=2).encode())
        stored = {b.name: b.size for b in store.list_blobs(container, prefix)}
        wrong = [f["encrypted_path"] for f in files if stored.get(prefix + f["encrypted_path"]) != f["encrypted_size"]]
        if wrong:
            raise StorageUnavailable(f"the encrypted copy of {wrong[0]!r} did not land whole; retrying")
        return {
            "location": f"{container}/{prefix}",
            "files": len(files),
            "bytes": manifest.total_bytes,
            "encrypted": True,
        }

    def _discard(self, manifest: Manifest) -> None:
        self._sealed_store(manifest).delete_container(names.egress_container(manifest.package_id))

    def _reject_changed(self, record: PackageRecord, manifest: Manifest, reasons: list[str]) -> None:
        try:
            self._reject(
                record,
                [
                    *reasons,
                    "nothing was released and the staged files are kept; fix the files and stage the package again",
                ],
            )
        except ConcurrencyConflict:
            pass  # another worker rejected it first
        logger.info("package %s: a file changed after sign-off; rejected", manifest.package_id)
