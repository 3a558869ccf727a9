"""Encrypted egress for SFTP and physical disks, with the key released only after receipt.

Each file is encrypted with age to a per-package X25519 identity, streamed from staging into
the delivery location; ``encrypted-manifest.json`` beside the files lists every file's SHA-256
before and after encryption, so a recipient can check what arrived before asking for the key.
The identity lives in Key Vault (``PackageKeys``) and nowhere else; it is emailed on release
and destroyed when the package expires.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.manifest import FileEntry, Manifest, Method
from shared.domain.records import PackageRecord, PackageStatus
from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.ports import AuditTrail, BlobStore, Clock, Crypto, EmailSender, PackageKeys, Registry
from shared.services import notifications
from shared.services.concurrency import parallel_map
from shared.services.hashing_io import HashingReader, HashingWriter

logger = logging.getLogger(__name__)

ENCRYPTED_MANIFEST = "encrypted-manifest.json"
SUFFIX = ".age"
FORMAT = "age-encryption.org/v1"


@dataclass(frozen=True)
class EncryptedConfig:
    staging_container: str
    records_container: str
    sftp_container: str
    sftp_host: str
    sftp_username: str
    system_manager_email: str
    retention: timedelta
    workers: int = 4


class EncryptedDelivery:
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
        config: EncryptedConfig,
    ) -> None:
        self._staging = staging
        self._delivery = delivery
        self._keys = keys
        self._crypto = crypto
        self._registry = registry
        self._audit = audit
        self._email = email
        self._clock = clock
        self._config = config

    def location(self, package_id: str, method: str) -> tuple[str, str]:
        """(container, prefix) of an encrypted package: the SFTP container's folder, or its own container."""
        if method == Method.SFTP:
            return self._config.sftp_container, f"{package_id}/"
        return f"egress-{package_id}", ""

    # -- sealing --------------------------------------------------------------------------

    def _identity(self, package_id: str) -> str:
        """The package's key: made once; a retry reuses it so earlier ciphertexts stay readable."""
        try:
            return self._keys.get(package_id)
        except NotFound:
            identity, _ = self._crypto.new_identity()
            self._keys.put(package_id, identity)
            return identity

    def seal(self, package_id: str, manifest: Manifest) -> dict[str, Any]:
        container, prefix = self.location(package_id, manifest.method)
        self._delivery.ensure_container(container)
        recipient = self._crypto.public_of(self._identity(package_id))

        def encrypt(entry: FileEntry) -> dict[str, Any]:
            source = HashingReader(
                self._staging.open_read(self._config.staging_container, f"{package_id}/files/{entry.path}")
            )
            target = HashingWriter(self._delivery.open_write(container, prefix + entry.path + SUFFIX))
            try:
                self._crypto.encrypt(source, target, recipient)  # type: ignore[arg-type]
                if source.sha.hexdigest() != entry.sha256 or source.size != entry.size:
                    raise StorageUnavailable(f"{entry.path} changed while it was being encrypted; retrying")
            except BaseException:
                target.discard()  # a half-written or stale ciphertext is never committed
                raise
            finally:
                source.close()
            target.close()
            return {
                "path": entry.path,
                "size": entry.size,
                "sha256": entry.sha256,
                "encrypted_path": entry.path + SUFFIX,
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
        self._delivery.write(container, prefix + ENCRYPTED_MANIFEST, json.dumps(encrypted, indent=2).encode())
        stored = {b.name: b.size for b in self._delivery.list_blobs(container, prefix)}
        wrong = [f["encrypted_path"] for f in files if stored.get(prefix + f["encrypted_path"]) != f["encrypted_size"]]
        if wrong:
            raise StorageUnavailable(f"the encrypted copy of {wrong[0]!r} did not land whole; retrying")
        return encrypted

    def encrypted_manifest(self, package_id: str, method: str) -> dict[str, Any]:
        container, prefix = self.location(package_id, method)
        return dict(json.loads(self._delivery.read(container, prefix + ENCRYPTED_MANIFEST)))

    # -- telling people -------------------------------------------------------------------

    def notify(self, record: PackageRecord, manifest: Manifest) -> PackageRecord:
        if record.recipients_notified_at is not None:
            return record
        encrypted = self.encrypted_manifest(record.package_id, manifest.method)
        container, prefix = self.location(record.package_id, manifest.method)
        for person in manifest.recipients:
            if manifest.method == Method.SFTP:
                folder = f"/{container}/{prefix}"
                self._email.send(
                    notifications.sftp_address(
                        manifest, person.name, person.email, self._config.sftp_host, folder, encrypted
                    )
                )
                self._email.send(
                    notifications.sftp_connection(
                        manifest.package_id,
                        person.name,
                        person.email,
                        self._config.sftp_username,
                        self._config.system_manager_email,
                    )
                )
            else:
                self._email.send(
                    notifications.physical_notice(
                        manifest, person.name, person.email, encrypted, self._config.system_manager_email
                    )
                )
        self._email.send(
            notifications.manager_encrypted_ready(manifest, f"{container}/{prefix}", self._config.system_manager_email)
        )
        now = self._clock.now()
        updated = self._registry.update_package(
            record.model_copy(
                update={"recipients_notified_at": now, "expires_at": now + timedelta(hours=manifest.expires_in_hours)}
            )
        )
        self._audit.append(
            record.package_id,
            "recipients_notified",
            "egress-trigger",
            {
                "method": manifest.method.value,
                "recipients": [p.email for p in manifest.recipients],
                "location": f"{container}/{prefix}",
            },
        )
        return updated

    # -- key release ----------------------------------------------------------------------

    def release_key(self, package_id: str, actor: str) -> dict[str, Any]:
        record = self._registry.get_package(package_id)
        if record is None:
            raise NotFound(f"there is no package {package_id}")
        if record.method not in (Method.SFTP, Method.PHYSICAL):
            raise Conflict(f"{package_id} was delivered by download link ({record.method}); there is no key to release")
        if record.status != PackageStatus.GRANTED:
            raise Conflict(f"{package_id} is {record.status}; a key is released only for a delivered package")
        if record.key_released_at is not None:
            raise Conflict(
                f"the key of {package_id} was already released at {record.key_released_at.isoformat()} "
                f"by {record.key_released_by}"
            )
        now = self._clock.now()
        if record.key_destroyed_at is not None or (record.expires_at is not None and record.expires_at <= now):
            raise Conflict(
                f"{package_id} has expired; its key was or is being destroyed. Egress it again as a new package"
            )
        manifest = Manifest.model_validate_json(
            self._staging.read(self._config.records_container, f"manifests/{package_id}.json")
        )
        encrypted = self.encrypted_manifest(package_id, manifest.method)
        identity = self._keys.get(package_id)
        for person in manifest.recipients:
            self._email.send(notifications.key_release(package_id, person.name, person.email, identity, encrypted))
        released = self._registry.update_package(
            record.model_copy(update={"key_released_at": now, "key_released_by": actor, "updated_at": now})
        )
        recipients = [p.email for p in manifest.recipients]
        self._audit.append(package_id, "key_released", actor, {"recipients": recipients})
        self._email.send(
            notifications.manager_key_released(package_id, actor, recipients, self._config.system_manager_email)
        )
        logger.info("key of %s released by %s", package_id, actor)
        return {
            "package_id": package_id,
            "key_released_at": now.isoformat(),
            "key_released_by": actor,
            "recipients": recipients,
            "status": released.status.value,
        }

    # -- the timer's part -------------------------------------------------------------------

    def sweep(self, now: datetime) -> tuple[list[str], list[str]]:
        """Destroy keys of expired packages; close them once retention has passed. Returns (keys destroyed, closed)."""
        destroyed, closed = [], []
        for record in self._registry.list_packages(status=PackageStatus.GRANTED):
            if (
                record.method not in (Method.SFTP, Method.PHYSICAL)
                or record.expires_at is None
                or record.expires_at > now
            ):
                continue
            if record.key_destroyed_at is None:
                self._keys.delete(record.package_id)
                record = self._registry.update_package(
                    record.model_copy(update={"key_destroyed_at": now, "updated_at": now})
                )
                self._audit.append(record.package_id, "key_destroyed", "expiry-timer", {})
                destroyed.append(record.package_id)
            if record.expires_at is not None and record.expires_at + self._config.retention <= now:
                container, prefix = self.location(record.package_id, record.method or "")
                if prefix:
                    self._delivery.delete_blobs(
                        container, [b.name for b in self._delivery.list_blobs(container, prefix)]
                    )
                else:
                    self._delivery.delete_container(container)
                self._email.send(notifications.manager_closed(record.package_id, self._config.system_manager_email))
                done = self._registry.update_package(
                    record.transition(PackageStatus.CLOSED, closed_at=now, updated_at=now)
                )
                self._audit.append(done.package_id, "closed", "expiry-timer", {"deleted": f"{container}/{prefix}"})
                closed.append(done.package_id)
        return destroyed, closed
