"""Delivery: a sealed package's recipients are given access and told.

Download links: one stored access policy per recipient (read + list, start 15 minutes back, the
manifest's expiry) and an email with one SAS URL per declared address. Encrypted (sftp, physical):
the notices that say where the files are; the key follows only on key release. Each recipient is
emailed once; a retry finishes whoever was not yet told.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from shared.domain import names
from shared.domain.manifest import Manifest, Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.errors import ConcurrencyConflict
from shared.ports import AccessPolicy, AuditTrail, BlobStore, Clock, EmailSender, LinkMinter, Registry
from shared.services import notifications
from shared.services.config import PipelineConfig
from shared.services.records_io import load_encrypted_manifest, load_manifest

logger = logging.getLogger(__name__)

ACTOR = "egress-release"
CLOCK_SKEW = timedelta(minutes=15)


class DeliverService:
    def __init__(
        self,
        *,
        records: BlobStore,
        staging: BlobStore,
        delivery: BlobStore,
        registry: Registry,
        audit: AuditTrail,
        links: LinkMinter,
        email: EmailSender,
        clock: Clock,
        config: PipelineConfig,
    ) -> None:
        self._records = records
        self._staging = staging
        self._delivery = delivery
        self._registry = registry
        self._audit = audit
        self._links = links
        self._email = email
        self._clock = clock
        self._config = config

    def deliver(self, package_id: str) -> PackageRecord | None:
        """Grant and notify a sealed package; a package in any other state is left as it is."""
        record = self._registry.get_package(package_id)
        if record is not None and record.status == PackageStatus.GRANTED:  # an earlier try may have stopped short
            self._record_granted(record)
            self._staging.delete_blobs(self._config.staging_container, [names.manifest_blob(package_id)])
        if record is None or record.status != PackageStatus.SEALED:
            return record
        manifest = load_manifest(self._records, self._config.records_container, package_id)
        if manifest.method == Method.STORAGE_EXPLORER:
            self._grant(record, manifest)
        else:
            record = self._notify_encrypted(record, manifest)
        now = self._clock.now()
        try:
            done = self._registry.update_package(
                record.transition(PackageStatus.GRANTED, granted_at=now, updated_at=now)
            )
        except ConcurrencyConflict:
            return self._registry.get_package(package_id)  # finished by another worker
        self._record_granted(done)
        self._staging.delete_blobs(self._config.staging_container, [names.manifest_blob(package_id)])
        logger.info("package %s delivered (%s)", package_id, manifest.method.value)
        return done

    def _record_granted(self, record: PackageRecord) -> None:
        details: dict[str, object] = {"method": record.method, "signoff_mode": record.signoff_mode}
        if record.method == Method.STORAGE_EXPLORER:
            details["grants"] = [g.grant_id for g in self._registry.list_grants(package_id=record.package_id)]
        self._audit.append(record.package_id, "granted", ACTOR, details, event_id=f"granted:{record.manifest_sha256}")

    # -- download links ---------------------------------------------------------------------

    def _grant(self, record: PackageRecord, manifest: Manifest) -> list[GrantRecord]:
        package_id = record.package_id
        container = names.egress_container(package_id)
        existing = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
        now = self._clock.now().replace(microsecond=0)  # policies keep whole seconds; the record matches them
        for index, recipient in enumerate(manifest.recipients):
            if index in existing:
                continue
            try:  # insert-if-absent on (package, recipient): one grant whatever the number of workers
                grant = self._registry.create_grant(
                    GrantRecord(
                        grant_id=secrets.token_hex(16),
                        package_id=package_id,
                        recipient_index=index,
                        recipient_name=recipient.name,
                        recipient_email=recipient.email,
                        policy_id=f"p{secrets.token_hex(12)}",
                        ip_ranges=list(recipient.ip_ranges),
                        status=GrantStatus.ACTIVE,
                        created_at=now,
                        expires_at=now + timedelta(hours=manifest.expires_in_hours),
                    )
                )
            except ConcurrencyConflict:  # another worker made it first: use theirs
                existing = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
                continue
            existing[index] = grant
            self._audit.append(
                package_id,
                "grant_created",
                ACTOR,
                {
                    "grant_id": grant.grant_id,
                    "recipient": grant.recipient_email,
                    "ip_ranges": grant.ip_ranges,
                    "expires_at": grant.expires_at.isoformat(),
                    "signoff_mode": record.signoff_mode,
                },
                event_id=f"grant_created:{grant.grant_id}",
            )
        grants = [existing[i] for i in sorted(existing)]
        active = [g for g in grants if g.status == GrantStatus.ACTIVE]
        present = {p.policy_id for p in self._delivery.stored_policies(container)}
        missing = [
            AccessPolicy(g.policy_id, g.created_at - CLOCK_SKEW, g.expires_at)
            for g in active
            if g.policy_id not in present
        ]
        if missing:
            self._delivery.update_policies(container, add=missing, remove=[])
        for grant in active:
            if grant.notified_at is not None:
                continue
            links = self._links.links(container, grant.policy_id, grant.ip_ranges)
            # The outbox sends this once per grant, whoever gets here first.
            self._email.send(notifications.recipient_links(manifest, grant, links, self._config.system_manager_email))
            try:
                self._registry.update_grant(grant.model_copy(update={"notified_at": self._clock.now()}))
            except ConcurrencyConflict:
                pass  # another worker recorded it
            self._audit.append(
                package_id,
                "recipient_notified",
                ACTOR,
                {"grant_id": grant.grant_id, "recipient": grant.recipient_email, "links": len(links)},
                event_id=f"recipient_notified:{grant.grant_id}",
            )
        self._email.send(notifications.manager_granted(manifest, grants, self._config.system_manager_email))
        return grants

    # -- sftp and physical --------------------------------------------------------------------

    def _notify_encrypted(self, record: PackageRecord, manifest: Manifest) -> PackageRecord:
        if record.recipients_notified_at is not None:
            return record
        container, prefix = names.encrypted_location(record.package_id, manifest.method, self._config.sftp_container)
        encrypted = load_encrypted_manifest(self._delivery, container, prefix)
        manager = self._config.system_manager_email
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
                        manifest.package_id, person.name, person.email, self._config.sftp_username, manager
                    )
                )
            else:
                self._email.send(notifications.physical_notice(manifest, person.name, person.email, encrypted, manager))
        self._email.send(notifications.manager_encrypted_ready(manifest, f"{container}/{prefix}", manager))
        now = self._clock.now()
        updated = self._registry.update_package(
            record.model_copy(
                update={"recipients_notified_at": now, "expires_at": now + timedelta(hours=manifest.expires_in_hours)}
            )
        )
        self._audit.append(
            record.package_id,
            "recipients_notified",
            ACTOR,
            {
                "method": manifest.method.value,
                "recipients": [p.email for p in manifest.recipients],
                "location": f"{container}/{prefix}",
            },
        )
        return updated
