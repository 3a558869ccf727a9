"""Sign-off by the classifiers a manifest names (DESIGN.md section 3a): tokens, tiers, consensus.

Pure: no storage, no clock of its own. A token is the credential of one person for one package;
only its SHA-256 is ever stored, so the registry cannot leak a working link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.domain.manifest import Manifest, Role

TOKEN_BYTES = 32  # 256 random bits; the contract asks for at least 128


class SignoffMode(StrEnum):
    REQUIRED = "required"  # the named people must each sign off (the default, and always in Azure)
    MANIFEST = "manifest"  # trust the manifest's decisions: only when staging is written by an approval system


class SignoffStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"


class Choice(StrEnum):
    APPROVE = "approve"
    REFUSE = "refuse"


# One line per tier, from the Data Safe Haven classification, shown beside each choice on the page.
TIER_MEANINGS: dict[int, str] = {
    0: "Open: could be published; no harm if anyone sees it.",
    1: "Not for publication yet, but holds nothing personal or sensitive; little harm if disclosed.",
    2: "Sensitive: pseudonymised or confidential; disclosure could cause some harm. Goes back only to the data owner.",
    3: "Highly sensitive: personal or commercially confidential; disclosure could cause serious harm. "
    "Goes back only to the data owner.",
    4: "Very highly sensitive: could attract targeted attack. Never leaves the Safe Haven.",
}

ROLE_TITLES: dict[Role, str] = {
    Role.DATA_PROVIDER_REPRESENTATIVE: "Data provider representative",
    Role.INVESTIGATOR: "Investigator",
    Role.REFEREE: "Referee",
}


def new_token() -> str:
    """A fresh personal sign-off token (URL-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the registry keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def looks_like_token(value: str) -> bool:
    """Cheap shape check before any lookup: URL-safe base64 of TOKEN_BYTES bytes."""
    return len(value) == 43 and all(c.isalnum() or c in "-_" for c in value)


@dataclass(frozen=True)
class Signed:
    """One person's recorded decision, as consensus sees it."""

    role: Role
    status: SignoffStatus
    tier: int | None
    decided_at: datetime | None


@dataclass(frozen=True)
class Consensus:
    complete: bool  # everyone has approved
    refused: bool  # someone refused: the package stops
    tier: int | None  # the highest signed tier, once complete


def consensus(decisions: list[Signed]) -> Consensus:
    """Everyone must approve; one refusal stops the package; without agreement the highest tier wins."""
    if any(d.status == SignoffStatus.REFUSED for d in decisions):
        return Consensus(complete=False, refused=True, tier=None)
    if decisions and all(d.status == SignoffStatus.APPROVED for d in decisions):
        return Consensus(complete=True, refused=False, tier=max(d.tier or 0 for d in decisions))
    return Consensus(complete=False, refused=False, tier=None)


def signed_manifest(manifest: Manifest, decisions: list[Signed]) -> Manifest:
    """The manifest as the people signed it: their own tiers and times, the highest as the package tier.

    Policy is applied to this, so a tier raised at sign-off brings that tier's limits (and its
    referee requirement) with it.
    """
    by_role = {d.role: d for d in decisions}
    updated = []
    for named in manifest.classification.decisions:
        signed = by_role[named.role]
        updated.append(
            named.model_copy(update={"tier": signed.tier, "decided_at": signed.decided_at or named.decided_at})
        )
    tier = max(d.tier or 0 for d in decisions)
    classification = manifest.classification.model_copy(update={"tier": tier, "decisions": updated})
    return manifest.model_copy(update={"classification": classification})
