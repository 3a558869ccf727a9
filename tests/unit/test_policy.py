"""Manifest parsing and classification policy: pure, no I/O."""

from __future__ import annotations

import json

import pytest

from shared.domain.manifest import ManifestRejected, parse_manifest, path_problem, read_manifest
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


# -- issue 11: hostile input is a reason, never an untyped error ---------------------------------


def reasons_for(raw: bytes, size: int | None = None) -> list[str]:
    with pytest.raises(ManifestRejected) as rejected:
        parse_manifest(raw, size=size)
    assert rejected.value.reasons
    return rejected.value.reasons


def raw_for(**overrides: object) -> bytes:
    data = manifest_for("wp-2026-0042", SAMPLE_FILES)
    data.update(overrides)
    return json.dumps(data).encode()


def with_files(*entries: dict[str, object]) -> bytes:
    return raw_for(files=[*manifest_for("wp-2026-0042", SAMPLE_FILES)["files"], *entries])


def entry(path: str, size: int = 1) -> dict[str, object]:
    return {"path": path, "size": size, "sha256": "0" * 64}


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tables/table 1.csv", None),
        ("données/résumé.csv", None),
        ("a..b.csv", None),
        (".hidden/.config", None),
        ("CONSOLE.txt", None),
        ("com10.txt", None),
        ("lpt.txt", None),
        ("x" * 255, None),
        ("é" * 127, None),
        ("\uff0e\uff0e/x.csv", "contains '..' (read as '../x.csv' after Unicode NFKC normalisation)"),
        ("a/\u2025/x.csv", "contains '..' (read as 'a/../x.csv'"),
        ("x.csv:hidden", "contains ':' (on Windows it names a hidden NTFS stream"),
        ("x.csv\uff1ahidden", "contains ':'"),
        ("CON", "uses the Windows device name CON"),
        ("tables/con.txt", "uses the Windows device name CON ('con.txt')"),
        ("Com1.tar.gz", "uses the Windows device name COM1"),
        ("COM\u00b9", "uses the Windows device name COM1 ('COM1'); Windows cannot create such a file (read as 'COM1'"),
        ("lpt9", "device name LPT9"),
        ("nul .txt", "device name NUL"),
        ("aux/x.csv", "device name AUX"),
        ("x.", "has a name ending in a dot or space ('x.')"),
        ("tables./x.csv", "ending in a dot or space ('tables.')"),
        ("x ", "ending in a dot or space ('x ')"),
        ("x\u00a0", "ending in a dot or space ('x '), which Windows drops when it writes the file (read as"),
        ("...", "has a name of only dots ('...')"),
        ("a/./b", "has a '.' folder name"),
        ("a/", "has an empty folder name"),
        ("report\u202egpj.exe", "contains a bidirectional control character (U+202E)"),
        ("a\u2066b", "bidirectional control character (U+2066)"),
        ("a\u200fb", "bidirectional control character (U+200F)"),
        ("a\x85b", "contains a control character (U+0085)"),
        ("a\x7fb", "contains a control character (U+007F)"),
        ("a\u2028b", "line or paragraph separator (U+2028)"),
        ("a\ud800b", "contains an unpaired surrogate (U+D800)"),
        ("a?b", "contains '?', which Windows does not allow"),
        ("a*b", "contains '*'"),
        ('a"b', "contains '\"'"),
        ("a<b>", "contains '<'"),
        ("a|b", "contains '|'"),
        ("a\uff3cb", "contains a backslash"),
        ("\uff0fetc/passwd", "starts with '/'"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
    ],
)
def test_paths_are_judged_as_windows_and_posix_would_write_them(path: str, problem: str | None) -> None:
    found = path_problem(path)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_a_bad_path_is_reported_with_the_path_as_written() -> None:
    reasons = reasons_for(with_files(entry("\uff0e\uff0e/x.csv")))
    assert reasons == [
        "files[3].path '\uff0e\uff0e/x.csv' contains '..' (read as '../x.csv' after Unicode NFKC normalisation)"
    ]


def test_paths_must_be_unique_ignoring_case_and_compatibility_forms() -> None:
    reasons = reasons_for(with_files(entry("Tables/TABLE1.csv"), entry("\uff32EADME.md"), entry("README.md")))
    assert reasons == [
        "files[3].path 'Tables/TABLE1.csv' is the same file as files[0].path 'tables/table1.csv' where case is "
        "ignored (Windows and macOS would keep only one)",
        "files[4].path '\uff32EADME.md' is the same file as files[2].path 'README.md' where case is ignored "
        "(Windows and macOS would keep only one)",
        "files[5].path 'README.md' is listed twice",
    ]


def test_a_file_cannot_also_be_a_folder() -> None:
    reasons = reasons_for(with_files(entry("readme.md/notes.txt")))
    assert reasons == [
        "files[3].path 'readme.md/notes.txt' puts a file inside 'README.md', which is itself listed as a file"
    ]


@pytest.mark.parametrize("opener", [b"[", b'{"a": '])
def test_deep_nesting_is_a_reason(opener: bytes) -> None:
    assert reasons_for(opener * 100_000) == ["manifest.json nests deeper than 32 levels (a manifest needs 4)"]


def test_nesting_is_counted_from_the_document() -> None:
    def nested(levels: int) -> bytes:  # the root object is level 1
        return b'{"schema_version": 1, "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    assert "nests deeper" not in " ".join(reasons_for(nested(32)))
    assert reasons_for(nested(33)) == ["manifest.json nests deeper than 32 levels (a manifest needs 4)"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"schema_version": True},
            "schema_version must be 1, the integer (found true); this service reads version 1 only",
        ),
        ({"schema_version": "1"}, "schema_version must be 1, the integer (found '1')"),
        ({"schema_version": 1.0}, "schema_version must be 1, the integer (found 1.0)"),
        ({"schema_version": 2}, "schema_version must be 1 (found 2); this service reads version 1 only"),
        ({"expires_in_hours": 2**70}, "expires_in_hours: must be a whole number of hours from 1 to 8,760; found"),
        ({"expires_in_hours": True}, "expires_in_hours: must be a whole number of hours from 1 to 8,760; found true"),
        ({"expires_in_hours": "48"}, "expires_in_hours: must be a whole number of hours from 1 to 8,760; found '48'"),
        ({"expires_in_hours": 0}, "expires_in_hours: must be a whole number of hours from 1 to 8,760; found 0"),
        ({"expires_in_hours": 48.0}, "expires_in_hours: must be a whole number of hours from 1 to 8,760; found 48.0"),
    ],
)
def test_integers_are_integers_in_their_range(overrides: dict[str, object], expected: str) -> None:
    assert any(r.startswith(expected) for r in reasons_for(raw_for(**overrides)))


@pytest.mark.parametrize(
    ("tier", "expected"),
    [(True, "found true"), (5, "found 5"), (-1, "found -1"), (2**70, "found 1,180,591,620,717,411,303,424")],
)
def test_tiers_are_whole_numbers_from_0_to_4(tier: object, expected: str) -> None:
    data = manifest_for("wp-2026-0042", SAMPLE_FILES)
    data["classification"]["tier"] = tier
    data["classification"]["decisions"][2]["tier"] = tier
    reasons = reasons_for(json.dumps(data).encode())
    assert reasons == [
        f"classification.tier: must be a whole number from 0 to 4; {expected}",
        f"classification.decisions[2].tier: must be a whole number from 0 to 4; {expected}",
    ]


def test_sizes_have_no_limit_of_their_own_below_int64() -> None:
    for size in (4 * 2**30 + 1, 5 * 2**40, 2**63 - 1):
        assert parse_manifest(raw_for(files=[entry("big.bin", size)])).total_bytes == size
    too_big = "files[3].size: must be a whole number of bytes from 0 to 9,223,372,036,854,775,807 (2^63 - 1); found"
    assert reasons_for(with_files(entry("big.bin", 2**63)))[0].startswith(too_big)
    assert reasons_for(with_files(entry("big.bin", 2**64)))[0].startswith(too_big)
    assert reasons_for(with_files(entry("big.bin", -1)))[0].startswith(too_big)
    assert reasons_for(with_files(entry("big.bin", True)))[0] == too_big.replace("found", "found true")  # type: ignore[arg-type]


def test_sizes_must_add_up_to_what_the_registry_records() -> None:
    reading = read_manifest(with_files(entry("a.bin", 2**63 - 1), entry("b.bin", 2**63 - 1)))
    assert reading.manifest is None and reading.files is not None and len(reading.files) == 5
    assert reading.reasons[-1].startswith("files add up to ")


def test_a_huge_integer_literal_is_a_reason() -> None:
    raw = raw_for().replace(b'"expires_in_hours": 48', b'"expires_in_hours": -' + b"9" * 5000)
    assert reasons_for(raw) == [
        "expires_in_hours: must be a whole number of hours from 1 to 8,760; found a number of more than 40 digits"
    ]


def test_duplicate_keys_are_reported_where_they_are() -> None:
    raw = raw_for().replace(b'"tier": 2, "decided_at"', b'"tier": 2, "tier": 0, "decided_at"', 1)
    raw = raw.replace(b'"schema_version": 1', b'"schema_version": 1, "schema_version": 1')
    assert reasons_for(raw)[:2] == [
        "manifest.json has the key 'schema_version' more than once; keys must be unique "
        "(a reader would silently keep only one of them)",
        "classification.decisions[0] has the key 'tier' more than once; keys must be unique "
        "(a reader would silently keep only one of them)",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xef\xbb\xbf{}", "manifest.json starts with a byte-order mark; save it as UTF-8 without BOM"),
        (
            "{}".encode("utf-16"),
            "manifest.json is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8",
        ),
        (b'{"title": "caf\xe9"}', "manifest.json is not UTF-8 text (byte 14 cannot be decoded)"),
        (b'{"schema_version": NaN}', "manifest.json contains NaN, which is not a JSON number"),
        (b'{"schema_version": -Infinity}', "manifest.json contains -Infinity, which is not a JSON number"),
        (b'{"schema_version": 1,}', "manifest.json is not valid JSON (line 1, column 22"),
        (b"", "manifest.json is not valid JSON (line 1, column 1"),
        (b"null", "manifest.json must hold a JSON object"),
    ],
)
def test_the_json_text_itself(raw: bytes, expected: str) -> None:
    assert reasons_for(raw)[0].startswith(expected)


def test_an_unpaired_surrogate_is_a_reason_and_replaced() -> None:
    reading = read_manifest(raw_for(title="Tables \ud800"))
    assert "title has an unpaired surrogate; it is not Unicode text" in reading.reasons
    assert reading.manifest is not None and reading.manifest.title == "Tables \ufffd"
    reading.manifest.title.encode("utf-8")  # safe to store and to email


def test_a_manifest_over_16_mib_is_rejected_with_its_size() -> None:
    expected = "manifest.json is 20,000,000 bytes; at most 16 MiB (16,777,216 bytes) is read"
    assert reasons_for(b"{" + b" " * 100, size=20_000_000)[0].startswith(expected)
    big = b" " * (16 * 2**20 + 1)
    assert reasons_for(big)[0].startswith("manifest.json is 16,777,217 bytes; at most 16 MiB")
    assert "16 MiB" not in " ".join(reasons_for(b" " * 16 * 2**20))


@pytest.mark.parametrize(
    ("person", "expected"),
    [
        ({"title": "Tables\r\nBcc: x@y.example"}, "title contains a control character (U+000D); write it on one line"),
        ({"title": "Tables\u2029more"}, "title contains a line or paragraph separator (U+2029)"),
        ({"title": "\u202eTables"}, "title contains a bidirectional control character (U+202E)"),
        ({"title": "   "}, "title is blank"),
    ],
)
def test_text_fields_are_one_line_of_plain_text(person: dict[str, object], expected: str) -> None:
    assert any(r.startswith(expected) for r in reasons_for(raw_for(**person)))


def test_names_and_emails_are_plain_text() -> None:
    data = manifest_for("wp-2026-0042", SAMPLE_FILES)
    data["classification"]["decisions"][1]["name"] = "Alan\tTuring"
    data["recipients"][0]["name"] = "Ada\nByron"
    data["recipients"][0]["email"] = "ada\x00@provider.example"
    reasons = reasons_for(json.dumps(data).encode())
    assert reasons == [
        "classification.decisions[1].name 'Alan\\tTuring' contains a control character (U+0009); "
        "write it on one line, as plain text",
        "recipients[0].name 'Ada\\nByron' contains a control character (U+000A); write it on one line, as plain text",
        "recipients[0].email 'ada\\x00@provider.example' is not a valid email address",
    ]


@pytest.mark.parametrize("value", ["wp-1\n", "wp-1\r\n", "\nwp-1", "wp\r\n1", "wp-1 ", "wp-1\u202e"])
def test_a_package_id_is_exactly_the_pattern(value: str) -> None:
    from shared.domain.manifest import is_valid_package_id

    assert not is_valid_package_id(value)
    reasons = reasons_for(raw_for(package_id=value))
    assert reasons == [
        "package_id must be 3 to 40 lowercase letters, digits and single hyphens, starting and ending with a "
        f"letter or digit (found {value!r})"
    ]


def test_an_unknown_field_hides_nothing() -> None:
    data = manifest_for("WP_1", SAMPLE_FILES, colour="blue", expires_in_hours=500)
    data["recipients"][0]["shoe_size"] = 9
    data["files"][0]["path"] = "x.csv:hidden"
    reading = read_manifest(json.dumps(data).encode())
    assert reading.reasons == [
        "recipients[0].shoe_size: unknown field (remove it; schema_version 1 does not have it)",
        "colour: unknown field (remove it; schema_version 1 does not have it)",
        "package_id must be 3 to 40 lowercase letters, digits and single hyphens, starting and ending with a "
        "letter or digit (found 'WP_1')",
        "files[0].path 'x.csv:hidden' contains ':' (on Windows it names a hidden NTFS stream of the file before it)",
    ]
    assert reading.manifest is not None and reading.files is not None and reading.package_id == "WP_1"
    assert policy_problems(reading.manifest, PolicyConfig()) == [
        "expires_in_hours is 500; at tier 2 it must be 1 to 72"
    ]


def test_the_file_list_is_read_even_when_another_part_is_malformed() -> None:
    data = manifest_for("wp-2026-0042", SAMPLE_FILES)
    data["recipients"] = "ada@provider.example"
    reading = read_manifest(json.dumps(data).encode())
    assert reading.manifest is None
    assert reading.reasons == ["recipients: must be a list (found 'ada@provider.example')"]
    assert reading.files is not None and [f.path for f in reading.files] == list(SAMPLE_FILES)


def test_unknown_field_names_are_shown_safely() -> None:
    reasons = reasons_for(raw_for(**{"a\r\nb" + "x" * 500: 1}))
    assert reasons[0].startswith("['a\\r\\nbxxx") and reasons[0].endswith(
        "…]: unknown field (remove it; schema_version 1 does not have it)"
    )
    assert len(reasons[0]) < 200


def test_policy_is_linear_in_the_recipients() -> None:
    import time

    recipients = [
        {"name": f"R{i}", "email": f"r{i}@provider.example", "ip_ranges": ["203.0.113.7"]} for i in range(20_000)
    ]
    manifest = parse_manifest_leniently(raw_for(recipients=recipients))
    started = time.monotonic()
    reasons = policy_problems(manifest, PolicyConfig())
    assert reasons == ["recipients: 20000 listed; 1 to 5 are allowed"]
    assert time.monotonic() - started < 1  # quadratic, as it was, this took several seconds


def test_a_tier_without_a_configured_limit_is_a_reason() -> None:
    config = PolicyConfig(tiers={0: TierLimit(336, False)})
    assert policy_problems(parse(), config) == [
        "tier 2 has no release policy configured in this deployment; ask the system manager"
    ]


def parse_manifest_leniently(raw: bytes):
    reading = read_manifest(raw)
    assert reading.manifest is not None, reading.reasons
    return reading.manifest


# -- sftp recipients: declared addresses for the firewall, and an optional SSH public key ---------


def _keygen(tmp_path, kind: str, bits: str | None = None) -> str:
    import subprocess

    path = tmp_path / f"key-{kind}-{bits}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *(["-b", bits] if bits else []), "-N", "", "-f", str(path)], check=True
    )
    return (tmp_path / f"key-{kind}-{bits}.pub").read_text()


def _sftp_recipient(**fields: object) -> dict[str, object]:
    return {"name": "Ada Byron", "email": "ada@provider.example", "ip_ranges": ["203.0.113.7"], **fields}


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("ecdsa", "256"), ("ecdsa", "384"), ("rsa", "3072")])
def test_an_sftp_recipient_may_give_an_ed25519_ecdsa_or_long_rsa_key(tmp_path, kind: str, bits: str | None) -> None:
    manifest = parse(method="sftp", recipients=[_sftp_recipient(ssh_public_key=_keygen(tmp_path, kind, bits))])
    assert policy_problems(manifest, PolicyConfig()) == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("rsa-2048", "RSA key of 2048 bits; RSA keys need 3072 bits or more"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "has type 'ssh-dss'"),
        ("ecdsa-521", "has type 'ecdsa-sha2-nistp521'"),
        ("ssh-ed25519 AAAAnotakey", "is not a valid ssh-ed25519 public key"),
        ("ssh-ed25519", "is not an OpenSSH public key line"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn", "looks like a PRIVATE key"),
        ("ssh-ed25519 AAAA x\nssh-ed25519 AAAA y", "must be one line"),
    ],
)
def test_a_bad_ssh_key_is_refused_with_why(tmp_path, key: str, problem: str) -> None:
    if key == "rsa-2048":
        key = _keygen(tmp_path, "rsa", "2048")
    elif key == "ecdsa-521":
        key = _keygen(tmp_path, "ecdsa", "521")
    manifest = parse(method="sftp", recipients=[_sftp_recipient(ssh_public_key=key)])
    (reason,) = policy_problems(manifest, PolicyConfig())
    assert reason.startswith("recipients[0].ssh_public_key ") and problem in reason


def test_an_ssh_key_is_only_for_sftp_and_sftp_needs_the_addresses(tmp_path) -> None:
    key = _keygen(tmp_path, "ed25519")
    links = parse(recipients=[_sftp_recipient(ssh_public_key=key)])
    assert policy_problems(links, PolicyConfig()) == [
        "recipients[0].ssh_public_key is only for method sftp (this package is storage_explorer)"
    ]
    nowhere = parse(method="sftp", recipients=[_sftp_recipient(ip_ranges=[])])
    (reason,) = policy_problems(nowhere, PolicyConfig())
    assert "ip_ranges is required for sftp" in reason and "firewall" in reason
