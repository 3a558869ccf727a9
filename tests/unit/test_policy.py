"""Manifest parsing and classification policy: pure, no I/O."""

from __future__ import annotations

import json

import pytest

from shared.domain.manifest import ManifestRejected, parse_manifest, path_problem
from shared.domain.policy import PolicyConfig, TierLimit, ip_range_problem, policy_problems, sas_ip
from tests.support.packages import SAMPLE_FILES, manifest_for


def parse(**overrides: object):
    return parse_manifest(json.dumps(manifest_for("wp-2026-0042", SAMPLE_FILES, **overrides)).encode())


def test_the_design_cards_sample_passes() -> None:
    manifest = parse()
    assert policy_problems(manifest, PolicyConfig()) == []
    assert manifest.total_bytes == sum(len(d) for d in SAMPLE_FILES.values())


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("203.0.113.7", None),
        ("198.51.100.0/28", None),
        ("198.51.100.0/24", None),
        ("198.51.100.0/23", "wider than /24"),
        ("198.51.100.1/28", "host bits"),
        ("2001:db8::/64", "IPv6"),
        ("0.0.0.0", "unspecified"),
        ("0.0.0.0/0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("172.16.5.4", "RFC 1918"),
        ("192.168.1.0/24", "RFC 1918"),
        ("not an address", "not an IPv4"),
    ],
)
def test_ip_ranges(value: str, problem: str | None) -> None:
    found = ip_range_problem(value, max_prefix=24)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_widest_block_is_configurable() -> None:
    assert ip_range_problem("198.51.0.0/16", max_prefix=16) is None


def test_sas_ip_form() -> None:
    assert sas_ip("203.0.113.7") == "203.0.113.7"
    assert sas_ip("203.0.113.7/32") == "203.0.113.7"
    assert sas_ip("198.51.100.0/28") == "198.51.100.0-198.51.100.15"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tables/t1.csv", None),
        ("../x", ".."),
        ("a/../../x", ".."),
        ("/etc/passwd", "starts with '/'"),
        ("a\\b", "backslash"),
        ("a\nb", "control"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("x" * 1025, "longer than 1024"),
    ],
)
def test_paths(path: str, problem: str | None) -> None:
    found = path_problem(path)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_tier_0_needs_no_referee_and_allows_two_weeks_anywhere() -> None:
    manifest = parse(
        tier=0,
        expires_in_hours=336,
        recipients=[{"name": "X", "email": "x@elsewhere.example", "ip_ranges": ["203.0.113.9"]}],
    )
    assert policy_problems(manifest, PolicyConfig()) == []


def test_tier_limits_are_configurable() -> None:
    config = PolicyConfig(tiers={**PolicyConfig().tiers, 2: TierLimit(max_expiry_hours=24, same_domain=True)})
    assert any("1 to 24" in r for r in policy_problems(parse(expires_in_hours=48), config))


def test_recipient_listed_twice() -> None:
    recipient = {"name": "Ada", "email": "ada@provider.example", "ip_ranges": ["203.0.113.7"]}
    reasons = policy_problems(parse(recipients=[recipient, recipient]), PolicyConfig())
    assert reasons == ["recipients[1]: ada@provider.example is listed twice"]


def test_storage_explorer_needs_ip_ranges() -> None:
    reasons = policy_problems(parse(recipients=[{"name": "Ada", "email": "ada@provider.example"}]), PolicyConfig())
    assert any("ip_ranges is required" in r for r in reasons)


def test_bad_emails_and_ids_and_hashes_are_all_reported() -> None:
    data = manifest_for("WP_1", SAMPLE_FILES)
    data["recipients"][0]["email"] = "not-an-email"
    data["files"][0]["sha256"] = "ABC"
    with pytest.raises(ManifestRejected) as rejected:
        parse_manifest(json.dumps(data).encode())
    assert any("64 lowercase hexadecimal" in r for r in rejected.value.reasons)
    data["files"][0]["sha256"] = "0" * 64
    with pytest.raises(ManifestRejected) as rejected:
        parse_manifest(json.dumps(data).encode())
    reasons = " | ".join(rejected.value.reasons)
    assert "package_id must be" in reasons and "'not-an-email' is not a valid email" in reasons


def test_not_utf8_and_not_an_object() -> None:
    with pytest.raises(ManifestRejected, match="UTF-8"):
        parse_manifest(b"\xff\xfe")
    with pytest.raises(ManifestRejected, match="JSON object"):
        parse_manifest(b"[1, 2]")


def test_unknown_method() -> None:
    with pytest.raises(ManifestRejected, match="method"):
        parse(method="email")


def test_no_files() -> None:
    data = manifest_for("wp-2026-0042", {})
    with pytest.raises(ManifestRejected, match="1 to 10,000 files"):
        parse_manifest(json.dumps(data).encode())
