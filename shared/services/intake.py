"""Intake: a staged manifest is checked against every rule and every staged file is verified.

Then the named classifiers are asked to sign off (``CLASSIFICATION_SIGNOFF=required``), or, where
the manifest's decisions are trusted (``manifest``), release is queued at once. Nothing is copied
to the delivery account here. A second delivery of the same manifest changes nothing (a rejected
package is checked again: its files may have been fixed); a retry after a fault completes what
the first attempt left undone.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from enum import StrEnum

from shared.domain import names
from shared.domain.manifest import (
    FileEntry,
    Manifest,
    Method,
    is_valid_package_id,
    path_problem,
    quoted,
    read_manifest,
)
from shared.domain.policy import policy_problems
from shared.domain.records import PackageRecord, PackageStatus
from shared.domain.signoff import SignoffMode
from shared.ports import AuditTrail, BlobStore, Clock, EmailSender, Registry, ReleaseQueue
from shared.services import notifications
from shared.services.concurrency import parallel_map
from shared.services.config import PipelineConfig
from shared.services.records_io import load_manifest, save_manifest
from shared.services.rejection import Rejecter
from shared.services.signoff_requests import request_signoffs

logger = logging.getLogger(__name__)

ACTOR = "egress-trigger"
_DONE = (PackageStatus.SEALED, PackageStatus.GRANTED, PackageStatus.CLOSED, PackageStatus.REFUSED)


class Outcome(StrEnum):
    AWAITING_SIGNOFF = "awaiting_signoff"  # the named people were asked
    QUEUED = "queued"  # release was queued (manifest mode, or a signed-off package seen again)
    REJECTED = "rejected"
    UNCHANGED = "unchanged"  # the same manifest again: nothing new happened


class IntakeService:
    """Turns a staged manifest into a verified package awaiting sign-off, or a rejection with reasons."""

    def __init__(
        self,
        *,
        staging: BlobStore,
        registry: Registry,
        audit: AuditTrail,
        email: EmailSender,
        queue: ReleaseQueue,
        clock: Clock,
        config: PipelineConfig,
        encrypted_enabled: bool = True,
    ) -> None:
        self._staging = staging
        self._registry = registry
        self._audit = audit
        self._email = email
        self._queue = queue
        self._clock = clock
        self._config = config
        self._reject = Rejecter(registry, audit, email, clock, config.system_manager_email, ACTOR)
        self._encrypted_enabled = encrypted_enabled

    def process(self, package_id: str, raw: bytes, *, size: int | None = None) -> Outcome:
        """Check the manifest ``raw`` staged under ``package_id``/; ``size`` is the blob's size when
        only its first bytes were read (a manifest over 16 MiB is rejected with its size)."""
        digest = hashlib.sha256(raw).hexdigest()
        if not is_valid_package_id(package_id):  # no record can be keyed by it: tell the manager
            reasons = [
                f"the staging folder {quoted(package_id, 200)} is not a valid package id (3 to 40 lowercase letters, "
                "digits and single hyphens); stage the package under its package_id"
            ]
            self._email.send(
                notifications.manager_rejected(package_id, reasons, self._config.system_manager_email, digest)
            )
            return Outcome.REJECTED
        record = self._registry.get_package(package_id)
        if record is not None and record.manifest_sha256 == digest:
            again = self._same_manifest_again(record)
            if again is not None:
                return again
        elif record is not None and (record.status in _DONE or self._signed_off(record)):
            return self._refuse_reuse(record, digest)

        manifest, files, reasons = self._validate(package_id, raw, size)
        record = self._claim(record, package_id, digest, manifest)
        if files is not None:  # the file list parsed: verify it now, so that one rejection lists everything
            reasons = reasons + self._verify_staged(package_id, files)
        if reasons or manifest is None:
            self._reject(
                record,
                reasons,
            )
            return Outcome.REJECTED
        save_manifest(self._staging, self._config.records_container, manifest)
        if self._config.signoff_mode == SignoffMode.MANIFEST:
            return self._trust_manifest(record)
        return self._ask_for_signoff(record, manifest)

    @staticmethod
    def _signed_off(record: PackageRecord) -> bool:
        return record.status == PackageStatus.PROCESSING and record.signoff_completed_at is not None

    def _same_manifest_again(self, record: PackageRecord) -> Outcome | None:
        """What a repeat delivery of a manifest already seen does; None: carry on (an earlier try broke off)."""
        if self._signed_off(record):
            self._queue.send(record.package_id, record.manifest_sha256)  # release is idempotent
            return Outcome.QUEUED
        if record.status == PackageStatus.AWAITING_SIGNOFF:
            # finish asking if an earlier attempt broke off part-way; people already emailed are not emailed again
            manifest = load_manifest(self._staging, self._config.records_container, record.package_id)
            self._request(manifest, record)
            return Outcome.UNCHANGED
        if record.status in (PackageStatus.PROCESSING, PackageStatus.REJECTED):
            return None  # an earlier try broke off, or files were fixed and the package staged again: check again
        logger.info("package %s: the same manifest again (%s); nothing to do", record.package_id, record.status)
        return Outcome.UNCHANGED

    # -- validation ---------------------------------------------------------------------

    def _validate(
        self, package_id: str, raw: bytes, size: int | None
    ) -> tuple[Manifest | None, Sequence[FileEntry] | None, list[str]]:
        """The manifest (when it has the schema's shape), its file list (when that parsed), every reason."""
        reading = read_manifest(raw, size=size)
        manifest, reasons = reading.manifest, list(reading.reasons)
        written = reading.package_id
        if written is not None and written != package_id:
            reasons.append(f"package_id in the manifest is {quoted(written)} but it was staged under {package_id!r}/")
        if manifest is not None:
            reasons += policy_problems(manifest, self._config.policy)
            if manifest.method != Method.STORAGE_EXPLORER and not self._encrypted_enabled:
                reasons.append(
                    f"method {manifest.method.value} is not enabled in this deployment yet; "
                    "use storage_explorer or ask the system manager"
                )
        return manifest, reading.files, reasons

    def _verify_staged(self, package_id: str, files: Sequence[FileEntry]) -> list[str]:
        """Missing, extra, truncated and altered staged files. A listed path that breaks the path rules
        is reported by the manifest's reasons; its blob is neither verified nor called extra."""
        prefix = names.staged_prefix(package_id)
        staged = {
            b.name[len(prefix) :]: b.size for b in self._staging.list_blobs(self._config.staging_container, prefix)
        }
        reasons: list[str] = []
        to_hash: list[FileEntry] = []
        listed: set[str] = set()
        for entry in files:
            if entry.path in listed:
                continue
            listed.add(entry.path)
            if path_problem(entry.path):
                continue
            if entry.path not in staged:
                reasons.append(f"file {quoted(entry.path, 1100)} is listed in the manifest but was not staged")
            elif staged[entry.path] != entry.size:
                reasons.append(
                    f"file {quoted(entry.path, 1100)} is {staged[entry.path]:,} bytes but the manifest says "
                    f"{entry.size:,} (truncated or replaced)"
                )
            else:
                to_hash.append(entry)
        for extra in sorted(set(staged) - listed):
            reasons.append(f"file {quoted(extra, 1100)} was staged but is not in the manifest")
        digests = parallel_map(
            lambda e: self._staging.digest(self._config.staging_container, prefix + e.path),
            to_hash,
            self._config.workers,
        )
        for entry, found in zip(to_hash, digests, strict=True):
            if found.sha256 != entry.sha256:
                shown = quoted(entry.path, 1100)
                reasons.append(f"file {shown} has SHA-256 {found.sha256}, not {entry.sha256} as the manifest says")
        return reasons

    # -- state changes ------------------------------------------------------------------

    def _claim(
        self, record: PackageRecord | None, package_id: str, digest: str, manifest: Manifest | None
    ) -> PackageRecord:
        now = self._clock.now()
        summary: dict[str, object] = {
            "manifest_sha256": digest,
            "updated_at": now,
            "rejection_reasons": [],
            "signoff_mode": None,
            "signoff_requested_at": None,
            "signoff_deadline": None,
            "signoff_completed_at": None,
        }
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
        elif record.status == PackageStatus.PROCESSING:  # an earlier attempt broke off before it finished
            claimed = self._registry.update_package(record.model_copy(update=summary))
        else:  # rejected, or awaiting sign-off of a manifest that has now been replaced
            claimed = self._registry.update_package(record.transition(PackageStatus.PROCESSING, **summary))
        self._audit.append(package_id, "manifest_received", ACTOR, {"manifest_sha256": digest})
        return claimed

    def _trust_manifest(self, record: PackageRecord) -> Outcome:
        now = self._clock.now()
        trusted = self._registry.update_package(
            record.model_copy(
                update={"signoff_mode": SignoffMode.MANIFEST.value, "signoff_completed_at": now, "updated_at": now}
            )
        )
        self._audit.append(
            record.package_id,
            "signoff_completed",
            ACTOR,
            {"mode": SignoffMode.MANIFEST.value, "tier": record.tier, "manifest_sha256": record.manifest_sha256},
        )
        self._queue.send(trusted.package_id, trusted.manifest_sha256)
        return Outcome.QUEUED

    def _ask_for_signoff(self, record: PackageRecord, manifest: Manifest) -> Outcome:
        # Awaiting first, then the emails: a person who clicks at once finds the package waiting for them.
        now = self._clock.now()
        waiting = self._registry.update_package(
            record.transition(
                PackageStatus.AWAITING_SIGNOFF,
                signoff_mode=SignoffMode.REQUIRED.value,
                signoff_requested_at=now,
                signoff_deadline=now + self._config.signoff_ttl,
                updated_at=now,
            )
        )
        self._request(manifest, waiting)
        return Outcome.AWAITING_SIGNOFF

    def _request(self, manifest: Manifest, record: PackageRecord) -> None:
        sent = request_signoffs(
            manifest=manifest,
            manifest_sha256=record.manifest_sha256,
            now=self._clock.now(),
            resend=False,
            registry=self._registry,
            audit=self._audit,
            email=self._email,
            config=self._config,
            actor=ACTOR,
        )
        if sent:
            self._email.send(notifications.manager_signoff_requested(manifest, sent, self._config.system_manager_email))
            logger.info("package %s: sign-off requested from %d people", record.package_id, len(sent))

    def _refuse_reuse(self, record: PackageRecord, digest: str) -> Outcome:
        """A different manifest for an id that has left, been signed off or refused: refuse, keep everything."""
        if record.status == PackageStatus.REFUSED:
            why = "was refused at sign-off"
        elif self._signed_off(record):
            why = "was signed off and is being released"
        else:
            why = f"was already egressed (status {record.status})"
        reasons = [
            f"package id {record.package_id} {why}, with a different manifest; a package id is used once: "
            "classify the outputs as a new work package with a new id"
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
        logger.info("package %s: refused a different manifest for a used id", record.package_id)
        return Outcome.REJECTED
