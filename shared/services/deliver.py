"""Delivery: a sealed package's recipients are given access and told.

Download links: one stored access policy per recipient (read + list, start 15 minutes back, the
manifest's expiry) and an email with one SAS URL per declared address. SFTP: one local user per
recipient on the SFTP account (read + list on the package's own container), the firewall opened for
their addresses, then "1 of 3" (where and how to connect) and "2 of 3" (the password, made by the
store and never kept, or a note that their SSH key is set). Physical: the notice of the disk. For
both, the key follows only on key release. Each recipient is emailed once; a retry finishes whoever
was not yet told.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from shared.domain import names
from shared.domain.manifest import Manifest, Method
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.domain.ssh_keys import normalised_key
from shared.errors import ConcurrencyConflict, InProgress, TransientError
from shared.ports import (
    AccessPolicy,
    AuditTrail,
    BlobStore,
    Clock,
    EmailSender,
    LinkMinter,
    Registry,
    SftpAccess,
    SftpUser,
)
from shared.services import notifications, sftp_grants
from shared.services.config import PipelineConfig
from shared.services.records_io import load_encrypted_manifest, load_manifest
from shared.services.staging import empty_staging

logger = logging.getLogger(__name__)

ACTOR = "egress-release"
CLOCK_SKEW = timedelta(minutes=15)
PASSWORD_LEASE = timedelta(minutes=5)  # a password claim older than this (its worker died) is taken over


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
        sftp: SftpAccess,
        sftp_store: BlobStore,
    ) -> None:
        self._records = records
        self._staging = staging
        self._delivery = delivery
        self._sftp = sftp
        self._sftp_store = sftp_store
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
            empty_staging(self._staging, self._config.staging_container, package_id)
        if record is None or record.status != PackageStatus.SEALED:
            return record
        manifest = load_manifest(self._records, self._config.records_container, package_id)
        if manifest.method == Method.STORAGE_EXPLORER:
            self._grant(record, manifest)
        elif manifest.method == Method.SFTP:
            grants = self._grant_sftp(record, manifest)
            if any(g.sftp_login_open and g.notified_at is None for g in grants):
                # Another worker holds a password claim. Read again: it may have finished meanwhile;
                # if not, the queue retries this message shortly and finds it done.
                grants = self._registry.list_grants(package_id=package_id)
                if any(g.sftp_login_open and g.notified_at is None for g in grants):
                    raise InProgress(f"another worker is emailing an SFTP password of {package_id}; retrying")
            record = self._record_notified(record, manifest, max(g.expires_at for g in grants))
        else:
            record = self._notify_physical(record, manifest)
        now = self._clock.now()
        try:
            done = self._registry.update_package(
                record.transition(PackageStatus.GRANTED, granted_at=now, updated_at=now)
            )
        except ConcurrencyConflict:  # finished by another worker; empty staging too, in case it died just after
            fresh = self._registry.get_package(package_id)
            if fresh is not None and fresh.status == PackageStatus.GRANTED:
                empty_staging(self._staging, self._config.staging_container, package_id)
            return fresh
        self._record_granted(done)
        # Cleanup comes after the emails, not before them (deleting a thousand blobs takes seconds
        # on Azurite); a retry of a granted package redoes it.
        empty_staging(self._staging, self._config.staging_container, package_id)
        logger.info("package %s delivered (%s)", package_id, manifest.method.value)
        return done

    def _record_granted(self, record: PackageRecord) -> None:
        details: dict[str, object] = {"method": record.method, "signoff_mode": record.signoff_mode}
        if record.method in (Method.STORAGE_EXPLORER, Method.SFTP):
            details["grants"] = [g.grant_id for g in self._registry.list_grants(package_id=record.package_id)]
        self._audit.append(record.package_id, "granted", ACTOR, details, event_id=f"granted:{record.manifest_sha256}")

    # -- download links ---------------------------------------------------------------------

    def _grants(self, record: PackageRecord, manifest: Manifest) -> list[GrantRecord]:
        """One grant per recipient, made once whatever the number of workers (insert-if-absent)."""
        package_id = record.package_id
        sftp = manifest.method == Method.SFTP
        existing = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
        now = self._clock.now().replace(microsecond=0)  # policies keep whole seconds; the record matches them
        for index, recipient in enumerate(manifest.recipients):
            if index in existing:
                continue
            grant_id = secrets.token_hex(16)
            user = names.sftp_user(grant_id) if sftp else None
            try:
                grant = self._registry.create_grant(
                    GrantRecord(
                        grant_id=grant_id,
                        package_id=package_id,
                        recipient_index=index,
                        recipient_name=recipient.name,
                        recipient_email=recipient.email,
                        policy_id="" if sftp else f"p{secrets.token_hex(12)}",
                        ip_ranges=list(recipient.ip_ranges),
                        status=GrantStatus.ACTIVE,
                        created_at=now,
                        expires_at=now + timedelta(hours=manifest.expires_in_hours),
                        sftp_user=user,
                        sftp_login=names.sftp_login(self._sftp.account_name, user) if user else None,
                        sftp_key_login=sftp and recipient.ssh_public_key is not None,
                    )
                )
            except ConcurrencyConflict:  # another worker made it first: use theirs
                existing = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
                continue
            existing[index] = grant
            details: dict[str, object] = {
                "grant_id": grant.grant_id,
                "recipient": grant.recipient_email,
                "ip_ranges": grant.ip_ranges,
                "expires_at": grant.expires_at.isoformat(),
                "signoff_mode": record.signoff_mode,
            }
            if grant.sftp_user:
                details["sftp_username"] = grant.sftp_login
                details["sftp_login"] = "ssh key" if grant.sftp_key_login else "password"
            self._audit.append(package_id, "grant_created", ACTOR, details, event_id=f"grant_created:{grant.grant_id}")
        return [existing[i] for i in sorted(existing)]

    def _grant(self, record: PackageRecord, manifest: Manifest) -> list[GrantRecord]:
        package_id = record.package_id
        container = names.egress_container(package_id)
        grants = self._grants(record, manifest)
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

    # -- sftp ----------------------------------------------------------------------------------

    def _grant_sftp(self, record: PackageRecord, manifest: Manifest) -> list[GrantRecord]:
        """Each recipient's local user, the firewall opened for them, and their two emails."""
        package_id = record.package_id
        container = names.egress_container(package_id)
        encrypted = load_encrypted_manifest(self._sftp_store, container, "")
        grants = self._grants(record, manifest)
        for grant in grants:
            if grant.sftp_login_open and grant.sftp_user:
                key = manifest.recipients[grant.recipient_index].ssh_public_key
                self._sftp.ensure_user(SftpUser(grant.sftp_user, container, normalised_key(key) if key else None))
        # A revocation may have deleted a user between our reading its grant and making it again:
        # read the grants again, and delete the user of any whose ending began meanwhile (if this
        # worker dies first, the sweep deletes users without an open grant).
        grants = self._registry.list_grants(package_id=package_id)
        for grant in grants:
            if grant.sftp_user and not grant.sftp_login_open:
                self._sftp.delete_user(grant.sftp_user)
        sftp_grants.open_firewall(self._sftp, grants)
        done: list[GrantRecord] = []
        for grant in grants:
            if grant.sftp_login_open and grant.notified_at is None:
                grant = self._notify_sftp(manifest, grant, encrypted)
            done.append(grant)
        return done

    def _notify_sftp(self, manifest: Manifest, grant: GrantRecord, encrypted: dict[str, object]) -> GrantRecord:
        """Emails 1 and 2 of 3; the grant comes back notified, or as it was while another worker
        is making and emailing its password."""
        package_id = manifest.package_id
        manager = self._config.system_manager_email
        self._email.send(notifications.sftp_address(manifest, grant, self._sftp.host, self._sftp.port, encrypted))
        key = manifest.recipients[grant.recipient_index].ssh_public_key
        if grant.sftp_key_login and key:
            self._email.send(notifications.sftp_key_set(package_id, grant, normalised_key(key), manager))
        else:
            claimed = self._claim_password(grant)
            if claimed is None:
                return grant
            grant = claimed
            assert grant.sftp_user
            fresh = next(
                (g for g in self._registry.list_grants(package_id=package_id) if g.grant_id == grant.grant_id), None
            )
            if fresh is None or not fresh.sftp_login_open:  # revoked meanwhile: no password for it
                return fresh or grant
            try:
                # The password exists only here and in the email: never stored, logged or audited.
                self._email.send(
                    notifications.sftp_password(package_id, grant, self._sftp.new_password(grant.sftp_user), manager)
                )
            except TransientError:
                self._release_password(grant)
                raise
        try:
            grant = self._registry.update_grant(grant.model_copy(update={"notified_at": self._clock.now()}))
        except ConcurrencyConflict:
            grant = self._registry.get_grant(grant.grant_id) or grant
        self._audit.append(
            package_id,
            "recipient_notified",
            ACTOR,
            {
                "grant_id": grant.grant_id,
                "recipient": grant.recipient_email,
                "sftp_username": grant.sftp_login,
                "sftp_login": "ssh key" if grant.sftp_key_login else "password",
            },
            event_id=f"recipient_notified:{grant.grant_id}",
        )
        return grant

    def _claim_password(self, grant: GrantRecord) -> GrantRecord | None:
        """The right to make this grant's password and email it: one worker at a time (ETag), and a
        new generation each time, so that a password made after an abandoned try is a new email."""
        now = self._clock.now()
        claimed = grant.password_claimed_at
        if claimed is not None and claimed + PASSWORD_LEASE > now:
            return None
        try:
            return self._registry.update_grant(
                grant.model_copy(
                    update={"password_claimed_at": now, "password_generation": grant.password_generation + 1}
                )
            )
        except ConcurrencyConflict:
            return None

    def _release_password(self, grant: GrantRecord) -> None:
        try:
            self._registry.update_grant(grant.model_copy(update={"password_claimed_at": None}))
        except Exception:  # the lease lets a retry take it over anyway
            logger.warning("could not release the password claim of grant %s; a retry takes it over", grant.grant_id)

    def _record_notified(self, record: PackageRecord, manifest: Manifest, expires_at: datetime) -> PackageRecord:
        """Every recipient told (sftp): the package's key can be released until its grants expire."""
        if record.recipients_notified_at is not None:
            return record
        return self._told_everyone(record, manifest, expires_at)

    def _told_everyone(self, record: PackageRecord, manifest: Manifest, expires_at: datetime) -> PackageRecord:
        """The manager is told the encrypted package is out; the key can be released until ``expires_at``."""
        container = names.egress_container(record.package_id)
        self._email.send(
            notifications.manager_encrypted_ready(manifest, container + "/", self._config.system_manager_email)
        )
        updated = self._registry.update_package(
            record.model_copy(update={"recipients_notified_at": self._clock.now(), "expires_at": expires_at})
        )
        self._audit.append(
            record.package_id,
            "recipients_notified",
            ACTOR,
            {
                "method": manifest.method.value,
                "recipients": [p.email for p in manifest.recipients],
                "location": container,
            },
        )
        return updated

    # -- physical ----------------------------------------------------------------------------

    def _notify_physical(self, record: PackageRecord, manifest: Manifest) -> PackageRecord:
        if record.recipients_notified_at is not None:
            return record
        container = names.egress_container(record.package_id)
        encrypted = load_encrypted_manifest(self._delivery, container, "")
        manager = self._config.system_manager_email
        for person in manifest.recipients:
            self._email.send(notifications.physical_notice(manifest, person.name, person.email, encrypted, manager))
        return self._told_everyone(record, manifest, self._clock.now() + timedelta(hours=manifest.expires_in_hours))
