"""Key release: once the recipients confirm receipt, the decryption key goes to them in its own email."""

from __future__ import annotations

import logging
from typing import Any

from shared.domain import names
from shared.domain.manifest import Method
from shared.domain.records import PackageStatus
from shared.errors import Conflict, NotFound
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, PackageKeys, Registry
from shared.services import notifications
from shared.services.config import PipelineConfig
from shared.services.records_io import load_encrypted_manifest, load_manifest

logger = logging.getLogger(__name__)


class KeyReleaseService:
    def __init__(
        self,
        *,
        records: BlobStore,
        delivery: BlobStore,
        keys: PackageKeys,
        registry: Registry,
        audit: AuditTrail,
        email: EmailSender,
        clock: Clock,
        config: PipelineConfig,
        sftp_store: BlobStore,
    ) -> None:
        self._records = records
        self._delivery = delivery
        self._sftp_store = sftp_store
        self._keys = keys
        self._registry = registry
        self._audit = audit
        self._email = email
        self._clock = clock
        self._config = config

    def release(self, package_id: str, actor: str) -> dict[str, Any]:
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
        manifest = load_manifest(self._records, self._config.records_container, package_id)
        store = self._sftp_store if manifest.method == Method.SFTP else self._delivery
        encrypted = load_encrypted_manifest(store, names.egress_container(package_id), "")
        identity = self._keys.get(package_id)
        # A recipient whose SFTP login was revoked (or is being revoked) does not get the key.
        cut = {
            g.recipient_index
            for g in self._registry.list_grants(package_id=package_id)
            if g.sftp_user and not g.sftp_login_open
        }
        people = [p for i, p in enumerate(manifest.recipients) if i not in cut]
        if not people:
            raise Conflict(f"every recipient's access to {package_id} was revoked; there is nobody to send the key to")
        for person in people:
            self._email.send(
                notifications.key_release(
                    package_id, person.name, person.email, identity, encrypted, method=manifest.method.value
                )
            )
        released = self._registry.update_package(
            record.model_copy(update={"key_released_at": now, "key_released_by": actor, "updated_at": now})
        )
        recipients = [p.email for p in people]
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
