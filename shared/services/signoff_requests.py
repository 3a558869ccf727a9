"""Asking the named classifiers to sign off: shared by intake (first request) and sign-off (resend).

Each person's record holds only the hash of their current token. A new token replaces the old
one, which then answers 410. ``emailed_at`` is set once the email went out, so a retry of a
half-done request emails only the people who were not reached.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.domain.manifest import Manifest
from shared.domain.records import SignoffRecord
from shared.domain.signoff import SignoffStatus, new_token, token_hash
from shared.errors import ConcurrencyConflict
from shared.ports import AuditTrail, EmailSender, Registry
from shared.services import notifications
from shared.services.config import PipelineConfig

logger = logging.getLogger(__name__)


def request_signoffs(
    *,
    manifest: Manifest,
    manifest_sha256: str,
    now: datetime,
    resend: bool,
    registry: Registry,
    audit: AuditTrail,
    email: EmailSender,
    config: PipelineConfig,
    actor: str,
) -> list[SignoffRecord]:
    """Email every named person who still needs a link; return the records of those emailed.

    ``resend``: also people who were emailed already but have not decided (their old link dies).
    """
    sent: list[SignoffRecord] = []
    for decision in manifest.classification.decisions:
        current = registry.get_signoff(manifest.package_id, decision.role)
        stale = current is not None and current.manifest_sha256 != manifest_sha256  # a new manifest: ask afresh
        if current is not None and not stale:
            if current.status != SignoffStatus.PENDING:
                continue
            if current.emailed_at is not None and not resend:
                continue
        token = new_token()
        fields = {
            "package_id": manifest.package_id,
            "manifest_sha256": manifest_sha256,
            "role": decision.role,
            "name": decision.name,
            "email": decision.email,
            "status": SignoffStatus.PENDING,
            "token_hash": token_hash(token),
            "token_expires_at": now + config.signoff_ttl,
            "requested_at": now,
            "tier": None,
            "comment": None,
            "decided_at": None,
            "principal": None,
            "emailed_at": None,
        }
        try:
            if current is None:
                record = registry.create_signoff(SignoffRecord.model_validate(fields))
            else:
                record = registry.update_signoff(current.model_copy(update=fields))
        except ConcurrencyConflict:
            logger.info("sign-off of %s by the %s: asked by another worker", manifest.package_id, decision.role)
            continue
        email.send(notifications.signoff_request(manifest, record, config.signoff_link(token), config))
        record = registry.update_signoff(record.model_copy(update={"emailed_at": now}))
        audit.append(
            manifest.package_id,
            "signoff_resent" if resend else "signoff_requested",
            actor,
            {
                "role": decision.role.value,
                "name": decision.name,
                "email": decision.email,
                "link_expires_at": record.token_expires_at.isoformat(),
            },
            event_id=f"signoff_requested:{decision.role.value}:{record.token_hash}",
        )
        sent.append(record)
    return sent
