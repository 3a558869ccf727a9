"""Classification policy: which classified packages may leave, to whom, from where, how long.

Pure functions over a parsed manifest. Every broken rule becomes one reason a person can act
on; all of them are returned together so the classification team can fix them in one pass.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from shared.domain.manifest import Manifest, Method, Role, email_domain, quoted
from shared.domain.ssh_keys import ssh_key_problem

MAX_RECIPIENTS = 5  # a container holds at most five stored access policies
NEVER_LEAVES_TIER = 4


@dataclass(frozen=True)
class TierLimit:
    max_expiry_hours: int
    same_domain: bool  # recipients must share the data provider representative's email domain


@dataclass(frozen=True)
class PolicyConfig:
    tiers: dict[int, TierLimit] = field(
        default_factory=lambda: {
            0: TierLimit(336, False),
            1: TierLimit(336, False),
            2: TierLimit(72, True),
            3: TierLimit(72, True),
        }
    )
    max_ip_prefix: int = 24  # blocks wider than this (a smaller prefix length) are refused


def ip_range_problem(value: str, max_prefix: int) -> str | None:
    """Why ``value`` cannot be a SAS ``sip``, or None when it can."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return "is not an IPv4 address or CIDR block"
        return "has host bits set (write the block's first address, e.g. 198.51.100.0/28)"
    if network.version != 4:
        return "is IPv6; Azure SAS tokens accept IPv4 addresses only"
    checks = (
        (network.network_address.is_unspecified, "is unspecified (0.0.0.0 means any address)"),
        (network.is_loopback, "is a loopback address"),
        (network.is_link_local, "is link-local"),
        (network.is_multicast, "is multicast"),
        (
            any(network.overlaps(block) for block in _RFC1918),
            "is a private (RFC 1918) address; give the public address your organisation uses",
        ),
    )
    for failed, reason in checks:
        if failed:
            return reason
    if network.prefixlen < max_prefix:
        return f"is wider than /{max_prefix}; list narrower blocks"
    return None


_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


# IANA's special-purpose IPv4 blocks that no internet client comes from: an IP rule of the SFTP
# account's firewall for one would admit nobody (or, for a block that only overlaps one, hide a
# mistake). The documentation blocks (TEST-NET) stay allowed, as for links, so that samples work;
# Azure documents refusing private (RFC 1918) ranges only.
_NOT_PUBLIC = tuple(
    (ipaddress.IPv4Network(block), what)
    for block, what in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("100.64.0.0/10", "carrier-grade NAT space (100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
        ("192.88.99.0/24", "6to4 relay anycast (192.88.99.0/24)"),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)


def firewall_problem(value: str) -> str | None:
    """Why ``value`` cannot be an IP rule of the SFTP account's firewall, or None when it can."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            return "is not an IPv4 address or CIDR block"
        return "has host bits set (write the block's first address)"
    if not isinstance(network, ipaddress.IPv4Network):
        return "is IPv6; a storage account's IP rules take IPv4 only"
    if any(network.overlaps(block) for block in _RFC1918):
        return "is a private (RFC 1918) range, which Azure refuses in IP rules; give the public address"
    for block, what in _NOT_PUBLIC:
        if network.overlaps(block):
            return f"is or overlaps {what}, not a public internet address"
    if network.network_address == ipaddress.IPv4Address("255.255.255.255"):
        return "is the limited broadcast address"
    return None


def sas_ip(value: str) -> str:
    """The ``sip`` form of a declared range: one address, or 'first-last' for a block."""
    network = ipaddress.ip_network(value)
    if network.num_addresses == 1:
        return str(network.network_address)
    return f"{network.network_address}-{network.broadcast_address}"


def _shown(value: str) -> str:
    """``value`` as written when it is plain printable text, else quoted with its invisible characters escaped."""
    return value if value.isprintable() else quoted(value)


def policy_problems(manifest: Manifest, config: PolicyConfig) -> list[str]:
    """Every classification-policy rule ``manifest`` breaks (empty when it may leave).

    Never raises, and takes time linear in the manifest's size (recipients are not bounded by the
    schema: that they are at most five is one of the rules).
    """
    reasons: list[str] = []
    cls = manifest.classification
    by_role = Counter(decision.role for decision in cls.decisions)
    required = [Role.DATA_PROVIDER_REPRESENTATIVE, Role.INVESTIGATOR]
    highest = max(d.tier for d in cls.decisions)
    if max(highest, cls.tier) >= 2:
        required.append(Role.REFEREE)
    for role in required:
        if role not in by_role:
            reasons.append(
                f"classification: no decision from the {role.value} (required at tier {max(highest, cls.tier)})"
            )
    for role, count in by_role.items():
        if count > 1:
            reasons.append(f"classification: the {role.value} decided {count} times; each role decides once")
    emails = Counter(d.email.lower() for d in cls.decisions)
    for email in sorted(e for e, n in emails.items() if n > 1):
        reasons.append(f"classification: {_shown(email)} decided in more than one role; the people must be distinct")
    if cls.tier != highest:
        reasons.append(
            f"classification.tier is {cls.tier} but the highest decision is tier {highest}; "
            "without agreement the highest tier wins"
        )
    tier = max(cls.tier, highest)
    if tier >= NEVER_LEAVES_TIER:
        reasons.append("tier 4 outputs never leave the Safe Haven")
        return reasons

    limit = config.tiers.get(tier)
    if limit is None:
        reasons.append(f"tier {tier} has no release policy configured in this deployment; ask the system manager")
        return reasons
    if not 1 <= manifest.expires_in_hours <= limit.max_expiry_hours:
        reasons.append(
            f"expires_in_hours is {manifest.expires_in_hours}; at tier {tier} it must be 1 to {limit.max_expiry_hours}"
        )
    if not 1 <= len(manifest.recipients) <= MAX_RECIPIENTS:
        reasons.append(f"recipients: {len(manifest.recipients)} listed; 1 to {MAX_RECIPIENTS} are allowed")
    provider = next((d for d in cls.decisions if d.role == Role.DATA_PROVIDER_REPRESENTATIVE), None)
    seen: set[str] = set()
    ip_problems: dict[str, str | None] = {}
    for i, recipient in enumerate(manifest.recipients):
        email = recipient.email.lower()
        if email in seen:
            reasons.append(f"recipients[{i}]: {_shown(recipient.email)} is listed twice")
        seen.add(email)
        if limit.same_domain and provider is not None and email_domain(recipient.email) != email_domain(provider.email):
            reasons.append(
                f"recipients[{i}]: {_shown(recipient.email)} is outside the data provider's domain "
                f"@{_shown(email_domain(provider.email))}; tier {tier} outputs go back only to the data owner"
            )
        if manifest.method == Method.STORAGE_EXPLORER and not recipient.ip_ranges:
            reasons.append(
                f"recipients[{i}]: ip_ranges is required for storage_explorer "
                "(the public IPv4 addresses the recipient downloads from)"
            )
        if manifest.method == Method.SFTP and not recipient.ip_ranges:
            reasons.append(
                f"recipients[{i}]: ip_ranges is required for sftp "
                "(the SFTP server's firewall admits only the public IPv4 addresses the recipient connects from)"
            )
        if recipient.ssh_public_key is not None:
            if manifest.method != Method.SFTP:
                reasons.append(
                    f"recipients[{i}].ssh_public_key is only for method sftp (this package is {manifest.method.value})"
                )
            else:
                key_problem = ssh_key_problem(recipient.ssh_public_key)
                if key_problem:
                    reasons.append(f"recipients[{i}].ssh_public_key {key_problem}")
        for j, value in enumerate(recipient.ip_ranges):
            if value not in ip_problems:
                ip_problems[value] = ip_range_problem(value, config.max_ip_prefix)
            problem = ip_problems[value]
            if problem is None and manifest.method == Method.SFTP:
                problem = firewall_problem(value)
                if problem:
                    problem += " (the SFTP server's firewall cannot admit it)"
            if problem:
                reasons.append(f"recipients[{i}].ip_ranges[{j}] {quoted(value)} {problem}")
    return reasons
