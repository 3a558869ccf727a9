"""What the system manager sees: a package with its sign-offs, grants and audit trail; the grants."""

from __future__ import annotations

from typing import Any

from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus
from shared.domain.signoff import SignoffStatus
from shared.errors import NotFound
from shared.ports import AuditTrail, BlobStore, Registry
from shared.services.config import PipelineConfig
from shared.services.records_io import load_archived_grants, load_manifest


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class OverviewService:
    def __init__(self, *, records: BlobStore, registry: Registry, audit: AuditTrail, config: PipelineConfig) -> None:
        self._records = records
        self._registry = registry
        self._audit = audit
        self._config = config

    def package_status(self, package_id: str) -> dict[str, Any]:
        record = self._registry.get_package(package_id)
        if record is None:
            raise NotFound(f"there is no package {package_id}")
        signoffs = [s for s in self._registry.list_signoffs(package_id) if s.manifest_sha256 == record.manifest_sha256]
        # Tiers stay blind until every person has decided (or the package stopped waiting for them).
        reveal = all(s.status != SignoffStatus.PENDING for s in signoffs) or record.status not in (
            PackageStatus.AWAITING_SIGNOFF,
            PackageStatus.PROCESSING,
        )
        return {
            "package_id": record.package_id,
            "status": record.status.value,
            "title": record.title,
            "tier": record.tier if reveal or record.signoff_mode == "manifest" else None,
            "method": record.method,
            "file_count": record.file_count,
            "bytes": record.total_bytes,
            "files": self._files(record),
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "signoff_mode": record.signoff_mode,
            "signoff_requested_at": _iso(record.signoff_requested_at),
            "signoff_deadline": _iso(record.signoff_deadline),
            "signoff_completed_at": _iso(record.signoff_completed_at),
            "signoffs": [s.public_view(reveal) for s in signoffs],
            "sealed_at": _iso(record.sealed_at),
            "granted_at": _iso(record.granted_at),
            "closed_at": _iso(record.closed_at),
            "rejection_reasons": list(record.rejection_reasons),
            "expires_at": _iso(record.expires_at),
            "key_released_at": _iso(record.key_released_at),
            "key_released_by": record.key_released_by,
            "key_destroyed_at": _iso(record.key_destroyed_at),
            "key_recoverable_until": _iso(record.key_recoverable_until),
            "grants": [g.public_view() for g in self._grants(record)],
            "audit": [e.model_dump(mode="json") for e in self._audit.read(package_id)],
            "audit_anchor": anchor.model_dump() if (anchor := self._audit.anchor(package_id)) else None,
        }

    def _grants(self, record: PackageRecord) -> list[GrantRecord]:
        grants = self._registry.list_grants(package_id=record.package_id)
        if not grants and record.status == PackageStatus.CLOSED:
            return load_archived_grants(self._records, self._config.records_container, record.package_id)
        return grants

    def _files(self, record: PackageRecord) -> list[dict[str, Any]]:
        try:
            manifest = load_manifest(self._records, self._config.records_container, record.package_id)
        except NotFound:
            return []  # rejected before verification: the files are described by the staged manifest
        return [f.model_dump() for f in manifest.files]

    def list_grants(self, package_id: str | None = None, status: GrantStatus | None = None) -> list[dict[str, Any]]:
        return [g.public_view() for g in self._registry.list_grants(package_id=package_id, status=status)]
