"""Processing a staged manifest: validate, verify, seal, grant, notify.

Each step checks the state the previous attempt left, so a second delivery of the same
manifest changes nothing and a retry after a fault completes the work instead of tripping
over it. Staged files are removed only after the sealed copy is verified and recorded.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from shared.domain.manifest import Manifest, ManifestRejected, Method, is_valid_package_id, parse_manifest
from shared.domain.policy import PolicyConfig, policy_problems
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.errors import StorageUnavailable
from shared.ports import AccessPolicy, AuditTrail, BlobStore, Clock, EmailSender, LinkMinter, Registry
from shared.services import notifications
from shared.services.concurrency import parallel_map
from shared.services.encrypted import EncryptedDelivery

logger = logging.getLogger(__name__)

ACTOR = "egress-trigger"
CLOCK_SKEW = timedelta(minutes=15)


class Outcome(StrEnum):
    GRANTED = "granted"
    REJECTED = "rejected"
    UNCHANGED = "unchanged"  # the same manifest again: nothing new happened


@dataclass(frozen=True)
class EgressConfig:
    staging_container: str
    records_container: str
    system_manager_email: str
    policy: PolicyConfig
    workers: int = 8


def egress_container(package_id: str) -> str:
    return f"egress-{package_id}"


def staged_prefix(package_id: str) -> str:
    return f"{package_id}/files/"


def manifest_blob(package_id: str) -> str:
    return f"{package_id}/manifest.json"


class EgressService:
    """Turns a staged, classified work package into sealed data and emailed grants."""

    def __init__(
        self,
        *,
        staging: BlobStore,
        delivery: BlobStore,
        registry: Registry,
        audit: AuditTrail,
        links: LinkMinter,
        email: EmailSender,
        clock: Clock,
        config: EgressConfig,
        encrypted: EncryptedDelivery | None = None,
    ) -> None:
        self._staging = staging
        self._delivery = delivery
        self._registry = registry
        self._audit = audit
        self._links = links
        self._email = email
        self._clock = clock
        self._config = config
        self._encrypted = encrypted

    def process(self, package_id: str, raw: bytes) -> Outcome:
        digest = hashlib.sha256(raw).hexdigest()
        if not is_valid_package_id(package_id):  # no record can be keyed by it: tell the manager
            reasons = [
                f"the staging folder {package_id!r} is not a valid package id (3 to 40 lowercase letters, digits "
                "and single hyphens); stage the package under its package_id"
            ]
            self._email.send(
                notifications.manager_rejected(package_id, reasons, self._config.system_manager_email, digest)
            )
            return Outcome.REJECTED
        record = self._registry.get_package(package_id)
        if record is not None and record.manifest_sha256 == digest:
            if record.status in (PackageStatus.REJECTED, PackageStatus.GRANTED, PackageStatus.CLOSED):
                logger.info("package %s: the same manifest again (%s); nothing to do", package_id, record.status)
                return Outcome.UNCHANGED
        elif record is not None and record.status in (
            PackageStatus.SEALED,
            PackageStatus.GRANTED,
            PackageStatus.CLOSED,
        ):
            return self._refuse_reuse(record, digest)

        manifest, reasons = self._validate(package_id, raw)
        if record is None or record.status != PackageStatus.SEALED:
            record = self._claim(record, package_id, digest, manifest)
            if manifest is not None and not reasons:
                reasons = self._verify_staged(package_id, manifest)
            if reasons or manifest is None:
                return self._reject(record, reasons)
            record = self._seal(record, manifest)
        assert manifest is not None  # a sealed record was made from this very manifest
        self._staging.delete_blobs(
            self._config.staging_container, [f"{staged_prefix(package_id)}{f.path}" for f in manifest.files]
        )
        if manifest.method == Method.STORAGE_EXPLORER:
            self._grant(record, manifest)
        else:
            self._deliver_encrypted(record, manifest)
        return Outcome.GRANTED

    # -- validation ---------------------------------------------------------------------

    def _validate(self, package_id: str, raw: bytes) -> tuple[Manifest | None, list[str]]:
        try:
            manifest = parse_manifest(raw)
        except ManifestRejected as exc:
            return None, exc.reasons
        reasons: list[str] = []
        if manifest.package_id != package_id:
            reasons.append(
                f"package_id in the manifest is {manifest.package_id!r} but it was staged under {package_id!r}/"
            )
        reasons += policy_problems(manifest, self._config.policy)
        if manifest.method != Method.STORAGE_EXPLORER and self._encrypted is None:
            reasons.append(
                f"method {manifest.method.value} is not enabled in this deployment yet; "
                "use storage_explorer or ask the system manager"
            )
        return manifest, reasons

    def _verify_staged(self, package_id: str, manifest: Manifest) -> list[str]:
        prefix = staged_prefix(package_id)
        staged = {
            b.name[len(prefix) :]: b.size for b in self._staging.list_blobs(self._config.staging_container, prefix)
        }
        reasons: list[str] = []
        to_hash = []
        for entry in manifest.files:
            if entry.path not in staged:
                reasons.append(f"file {entry.path!r} is listed in the manifest but was not staged")
            elif staged[entry.path] != entry.size:
                reasons.append(
                    f"file {entry.path!r} is {staged[entry.path]:,} bytes but the manifest says {entry.size:,} "
                    "(truncated or replaced)"
                )
            else:
                to_hash.append(entry)
        for extra in sorted(set(staged) - set(manifest.file_map())):
            reasons.append(f"file {extra!r} was staged but is not in the manifest")
        digests = parallel_map(
            lambda e: self._staging.digest(self._config.staging_container, prefix + e.path),
            to_hash,
            self._config.workers,
        )
        for entry, found in zip(to_hash, digests, strict=True):
            if found.sha256 != entry.sha256:
                reasons.append(
                    f"file {entry.path!r} has SHA-256 {found.sha256}, not {entry.sha256} as the manifest says"
                )
        return reasons

    # -- state changes ------------------------------------------------------------------

    def _claim(
        self, record: PackageRecord | None, package_id: str, digest: str, manifest: Manifest | None
    ) -> PackageRecord:
        now = self._clock.now()
        summary: dict[str, object] = {"manifest_sha256": digest, "updated_at": now, "rejection_reasons": []}
        if manifest is not None:
            summary |= {
                "title": manifest.title,
                "tier": manifest.classification.tier,
                "method": manifest.method.value,
                "file_count": len(manifest.files),
                "total_bytes": manifest.total_bytes,
                "recipient_count": len(manifest.recipients),
                "expires_in_hours": manifest.expires_in_hours,
            }
        if record is None:
            claimed = self._registry.create_package(
                PackageRecord.model_validate(
                    {"package_id": package_id, "status": PackageStatus.PROCESSING, "created_at": now, **summary}
                )
            )
        elif record.status == PackageStatus.PROCESSING:  # an earlier attempt broke off before sealing
            claimed = self._registry.update_package(record.model_copy(update=summary))
        else:
            claimed = self._registry.update_package(record.transition(PackageStatus.PROCESSING, **summary))
        self._audit.append(package_id, "manifest_received", ACTOR, {"manifest_sha256": digest})
        return claimed

    def _reject(self, record: PackageRecord, reasons: list[str]) -> Outcome:
        # Tell the manager before recording: if the email fails, the record stays `processing`
        # and the host's retry tells them; recording first would turn the retry into a no-op.
        self._email.send(
            notifications.manager_rejected(
                record.package_id, reasons, self._config.system_manager_email, record.manifest_sha256
            )
        )
        updated = self._registry.update_package(
            record.transition(PackageStatus.REJECTED, rejection_reasons=reasons, updated_at=self._clock.now())
        )
        self._audit.append(updated.package_id, "rejected", ACTOR, {"reasons": reasons})
        logger.info("package %s rejected: %d reason(s)", updated.package_id, len(reasons))
        return Outcome.REJECTED

    def _refuse_reuse(self, record: PackageRecord, digest: str) -> Outcome:
        """A different manifest for an id that has already left: refuse, keep everything as it is."""
        reasons = [
            f"package id {record.package_id} was already egressed (status {record.status}) with a different manifest; "
            "a package id is used once: classify the outputs as a new work package with a new id"
        ]
        refused = self._audit.read(record.package_id)
        if any(e.action == "manifest_refused" and e.details.get("manifest_sha256") == digest for e in refused):
            return Outcome.UNCHANGED  # this very manifest was refused already and the manager told
        self._email.send(
            notifications.manager_rejected(record.package_id, reasons, self._config.system_manager_email, digest)
        )
        self._registry.update_package(
            record.model_copy(update={"rejection_reasons": reasons, "updated_at": self._clock.now()})
        )
        self._audit.append(
            record.package_id, "manifest_refused", ACTOR, {"manifest_sha256": digest, "reasons": reasons}
        )
        logger.info("package %s: refused a different manifest for an egressed id", record.package_id)
        return Outcome.REJECTED

    def _seal(self, record: PackageRecord, manifest: Manifest) -> PackageRecord:
        package_id = record.package_id
        self._staging.write(
            self._config.records_container, f"manifests/{package_id}.json", manifest.model_dump_json(indent=2).encode()
        )
        if manifest.method != Method.STORAGE_EXPLORER:
            assert self._encrypted is not None
            encrypted = self._encrypted.seal(package_id, manifest)
            return self._mark_sealed(
                record,
                {
                    "location": "/".join(self._encrypted.location(package_id, manifest.method)),
                    "files": len(encrypted["files"]),
                    "bytes": manifest.total_bytes,
                    "encrypted": True,
                },
            )
        container = egress_container(package_id)
        self._delivery.ensure_container(container)
        prefix = staged_prefix(package_id)
        wanted = manifest.file_map()

        def copy_and_check(path: str) -> str | None:
            self._delivery.copy_into(self._staging, self._config.staging_container, prefix + path, container, path)
            found = self._delivery.digest(container, path)
            return None if found.sha256 == wanted[path].sha256 and found.size == wanted[path].size else path

        bad = [p for p in parallel_map(copy_and_check, list(wanted), self._config.workers) if p]
        if bad:  # the staged files verified, so a wrong copy is a storage fault: let the host retry
            raise StorageUnavailable(f"the sealed copy of {len(bad)} file(s) did not verify, e.g. {bad[0]!r}")
        stale = [b.name for b in self._delivery.list_blobs(container, "") if b.name not in wanted]
        self._delivery.delete_blobs(container, stale)
        return self._mark_sealed(record, {"container": container, "files": len(wanted), "bytes": manifest.total_bytes})

    def _mark_sealed(self, record: PackageRecord, details: dict[str, object]) -> PackageRecord:
        now = self._clock.now()
        sealed = self._registry.update_package(record.transition(PackageStatus.SEALED, sealed_at=now, updated_at=now))
        self._audit.append(record.package_id, "sealed", ACTOR, {**details, "manifest_sha256": record.manifest_sha256})
        return sealed

    def _deliver_encrypted(self, record: PackageRecord, manifest: Manifest) -> None:
        assert self._encrypted is not None
        record = self._encrypted.notify(record, manifest)
        now = self._clock.now()
        self._registry.update_package(record.transition(PackageStatus.GRANTED, granted_at=now, updated_at=now))
        self._audit.append(record.package_id, "granted", ACTOR, {"method": manifest.method.value})
        self._staging.delete_blobs(self._config.staging_container, [manifest_blob(record.package_id)])
        logger.info("package %s encrypted for %s", record.package_id, manifest.method.value)

    def _grant(self, record: PackageRecord, manifest: Manifest) -> None:
        package_id = record.package_id
        container = egress_container(package_id)
        existing = {g.recipient_index: g for g in self._registry.list_grants(package_id=package_id)}
        now = self._clock.now().replace(microsecond=0)  # policies keep whole seconds; the record matches them
        for index, recipient in enumerate(manifest.recipients):
            if index in existing:
                continue
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
                },
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
            self._email.send(notifications.recipient_links(manifest, grant, links, self._config.system_manager_email))
            self._registry.update_grant(grant.model_copy(update={"notified_at": self._clock.now()}))
            self._audit.append(
                package_id,
                "recipient_notified",
                ACTOR,
                {"grant_id": grant.grant_id, "recipient": grant.recipient_email, "links": len(links)},
            )
        self._email.send(notifications.manager_granted(manifest, grants, self._config.system_manager_email))
        done = self._registry.update_package(
            record.transition(PackageStatus.GRANTED, granted_at=self._clock.now(), updated_at=self._clock.now())
        )
        self._audit.append(package_id, "granted", ACTOR, {"grants": [g.grant_id for g in grants]})
        self._staging.delete_blobs(self._config.staging_container, [manifest_blob(package_id)])
        logger.info("package %s granted to %d recipient(s)", done.package_id, len(grants))
