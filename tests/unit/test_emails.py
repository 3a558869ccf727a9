"""Every email the service sends, rendered from realistic data: both parts carry the same facts,
untrusted strings cannot forge a line, a link, an element or a header, and the SHA-256 list is
exactly what ``sha256sum -c`` reads (DESIGN.md section 7).

``sample_emails()`` is also what tests/browser/test_emails_browser.py renders in Chromium.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shared.domain.manifest import Manifest, Role
from shared.domain.records import GrantRecord, GrantStatus, PackageRecord, PackageStatus, SignoffRecord
from shared.domain.signoff import SignoffStatus
from shared.ports import Link, OutgoingEmail
from shared.services import notifications
from shared.services.config import PipelineConfig
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, manifest_for

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
MANAGER = "system-manager@dsh.example"
CONFIG = PipelineConfig(system_manager_email=MANAGER)
PACKAGE_ID = "wp-7f3a9c21"
TITLE = "Regression tables for the cohort paper"
FILES = {
    "tables/table1.csv": b"cohort,n,mean\nA,120,3.4\nB,98,2.9\n",
    "tables/table 2 (adjusted).csv": b"cohort,n,adjusted\nA,120,3.1\n",
    "figures/figure1.png": b"\x89PNG a figure stand-in\n" * 40,
    "reports/Final report, version 3.pdf": b"%PDF-1.7 a report stand-in\n" * 300,
    "README.md": b"# Outputs\nRegression tables for the cohort paper.\n",
}
LINKS = [
    Link(
        "203.0.113.7",
        "https://dshegress.blob.core.windows.net/egress-wp-7f3a9c21?sv=2025-05-05&si=g-5b1e0c9d2a7f4e31"
        "&sr=c&sip=203.0.113.7&spr=https&sig=FAKE-signature-for-layout-tests-only-1%3D",
    ),
    Link(
        "198.51.100.0/28",
        "https://dshegress.blob.core.windows.net/egress-wp-7f3a9c21?sv=2025-05-05&si=g-5b1e0c9d2a7f4e31"
        "&sr=c&sip=198.51.100.0-198.51.100.15&spr=https&sig=FAKE-signature-for-layout-tests-only-2%3D",
    ),
]
IDENTITY = "AGE-SECRET-KEY-1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE6MU"
SIGNOFF_LINK = "https://egress.dsh.example/api/signoff/Jd8Kq2LmN5pR7sT9vW1xY3zA4bC6dE8fG0hI2jK4lM6"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(title: str = TITLE, method: str = "storage_explorer", files: dict[str, bytes] = FILES) -> Manifest:
    return Manifest.model_validate(
        manifest_for(PACKAGE_ID, files, tier=2, title=title, method=method, expires_in_hours=48)
    )


def grant(name: str = "Ada Byron", **changes: Any) -> GrantRecord:
    record = GrantRecord(
        grant_id="g-5b1e0c9d2a7f4e31",
        package_id=PACKAGE_ID,
        recipient_index=0,
        recipient_name=name,
        recipient_email="ada@provider.example",
        policy_id="g-5b1e0c9d2a7f4e31",
        ip_ranges=["203.0.113.7", "198.51.100.0/28"],
        status=GrantStatus.ACTIVE,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=48),
    )
    return record.model_copy(update=changes)


SFTP_HOST = "dshsftp.blob.core.windows.net"
SFTP_LOGIN = "dshsftp.u5b1e0c9d2a7f4e31"
SFTP_PASSWORD = "Fz3pQ9vWm2LxT8rKc4YhN7sB1dGa6EuJ"  # a made-up password, shaped like Azure's
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3Y0n0tRealKeyJustTheShapeOfOneAbc ada@laptop"


def sftp_grant(name: str = "Ada Byron", **changes: Any) -> GrantRecord:
    return grant(
        name,
        policy_id="",
        sftp_user="u5b1e0c9d2a7f4e31",
        sftp_login=SFTP_LOGIN,
        password_generation=1,
        **changes,
    )


def signoff(person: dict[str, str], **changes: Any) -> SignoffRecord:
    return SignoffRecord(
        package_id=PACKAGE_ID,
        manifest_sha256="a" * 64,
        role=Role(person["role"]),
        name=person["name"],
        email=person["email"],
        token_hash=sha(person["email"].encode()),
        token_expires_at=NOW + timedelta(hours=168),
        requested_at=NOW,
        **changes,
    )


def encrypted(files: dict[str, bytes] = FILES) -> dict[str, Any]:
    return {
        "package_id": PACKAGE_ID,
        "title": TITLE,
        "format": "age-encryption.org/v1",
        "recipient": "age1qqpzry9x8gf2tvdw0s3jn54khce6mua7lqpzry9x8gf2tvdw0s3jn54khce6",
        "files": [
            {
                "path": path,
                "size": len(data),
                "sha256": sha(data),
                "encrypted_path": f"{path}.age",
                "encrypted_size": len(data) + 218,
                "encrypted_sha256": sha(b"age" + data),
            }
            for path, data in files.items()
        ],
    }


def rejection_reasons(title: str) -> list[str]:
    return [
        "recipients[0].ip_ranges[0] '10.1.2.3' is a private (RFC 1918) address; give the public address "
        "your organisation uses",
        f"signed off at tier 2: title {title!r} names a recipient outside the provider's domain",
    ]


def sample_emails(title: str = TITLE, name: str = "Ada Byron", comment: str | None = None) -> dict[str, OutgoingEmail]:
    """Every email, named, built by the functions the services call, with ``title`` and ``name`` as given."""
    plain = manifest(title)
    sftp = manifest(title, "sftp")
    physical = manifest(title, "physical")
    revoked = grant(name, status=GrantStatus.REVOKED, revoked_at=NOW, revoked_by=MANAGER, revoke_reason="leaked")
    package = PackageRecord(
        package_id=PACKAGE_ID,
        status=PackageStatus.REFUSED,
        manifest_sha256="a" * 64,
        title=title,
        created_at=NOW,
        updated_at=NOW,
    )
    asked = [signoff(p) for p in (PROVIDER, INVESTIGATOR, REFEREE)]
    refusal = signoff(
        {**INVESTIGATOR, "name": name},
        status=SignoffStatus.REFUSED,
        comment=comment or "Table 3 has cells under 10.\nMerge the age bands and stage it again.",
        decided_at=NOW,
    )
    approved = [s.model_copy(update={"status": SignoffStatus.APPROVED, "tier": 2, "decided_at": NOW}) for s in asked]
    enc = encrypted()
    return {
        "recipient-links": notifications.recipient_links(plain, grant(name), LINKS, MANAGER),
        "signoff-request": notifications.signoff_request(
            plain, signoff({**PROVIDER, "name": name}), SIGNOFF_LINK, CONFIG
        ),
        "manager-signoff-requested": notifications.manager_signoff_requested(plain, asked, MANAGER),
        "manager-signoff-refused": notifications.manager_signoff_refused(package, refusal, MANAGER),
        "manager-signoff-completed": notifications.manager_signoff_completed(plain, approved, MANAGER),
        "manager-granted": notifications.manager_granted(plain, [grant(name)], MANAGER),
        "manager-rejected": notifications.manager_rejected(PACKAGE_ID, rejection_reasons(title), MANAGER, "b" * 64),
        "manager-grant-revoked": notifications.manager_grant_ended(revoked, "was revoked", MANAGER),
        "manager-grant-expired": notifications.manager_grant_ended(
            grant(name, status=GrantStatus.EXPIRED), "expired", MANAGER
        ),
        "manager-closed": notifications.manager_closed(PACKAGE_ID, MANAGER),
        "sftp-address": notifications.sftp_address(sftp, sftp_grant(name), SFTP_HOST, 22, enc),
        "sftp-password": notifications.sftp_password(PACKAGE_ID, sftp_grant(name), SFTP_PASSWORD, MANAGER),
        "sftp-key-set": notifications.sftp_key_set(PACKAGE_ID, sftp_grant(name, sftp_key_login=True), SSH_KEY, MANAGER),
        "physical-notice": notifications.physical_notice(physical, name, "ada@provider.example", enc, MANAGER),
        "key-release": notifications.key_release(
            PACKAGE_ID, name, "ada@provider.example", IDENTITY, enc, method="sftp"
        ),
        "manager-encrypted-ready": notifications.manager_encrypted_ready(physical, f"egress-{PACKAGE_ID}/", MANAGER),
        "manager-key-released": notifications.manager_key_released(
            PACKAGE_ID, MANAGER, ["ada@provider.example"], MANAGER
        ),
    }


# -- reading the two parts ------------------------------------------------------------------------

_BLOCKS = {"div", "p", "li", "tr", "td", "th", "h1", "h2", "pre", "br", "table", "blockquote", "ul", "ol"}


class _Page(HTMLParser):
    """The text a reader sees in an HTML part (blocks on their own lines), and every element in it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [value or "" for name, value in attrs if name == "href"]
        if tag in ("head", "title", "style", "script"):
            self._skip += 1
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "title", "style", "script"):
            self._skip -= 1
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def page(html: str) -> _Page:
    parsed = _Page()
    parsed.feed(html)
    parsed.close()
    return parsed


FACT_PATTERNS = {
    "url": r"(?:https?|sftp)://[^\s\"'<>]+",
    "sha256": r"\b[0-9a-f]{64}\b",
    "time": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC",
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "grant": r"\bg-[0-9a-f]{16}\b",
    "route": r"(?:POST|GET) /api/[\w/{}.-]+",
    "command": r"(?m)^[ \t]*((?:egress|azcopy|age|sftp) [^\n]*?)[ \t]*$",
    "key": r"AGE-SECRET-KEY-1[0-9A-Z]+",
    "password": re.escape(SFTP_PASSWORD),
    "ssh key": r"\bssh-ed25519\b|\bssh-rsa\b|\becdsa-sha2-nistp\d+\b",
    "address": r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b",
    "size": r"\b\d[\d,.]* (?:bytes|KiB|MiB|GiB)\b",
    "tier": r"\btier \d\b",
}


def facts(text: str) -> dict[str, set[str]]:
    return {kind: set(re.findall(pattern, text)) for kind, pattern in FACT_PATTERNS.items()}


EMAILS = sample_emails()
SUBJECTS = {
    "recipient-links": f"Data egress: {PACKAGE_ID} is ready to download",
    "signoff-request": f"Sign-off needed: {PACKAGE_ID}",
    "manager-signoff-requested": f"Data egress: sign-off requested for {PACKAGE_ID}",
    "manager-signoff-refused": f"Data egress: {PACKAGE_ID} was refused at sign-off",
    "manager-signoff-completed": f"Data egress: {PACKAGE_ID} signed off at tier 2",
    "manager-granted": f"Data egress: grants issued for {PACKAGE_ID}",
    "manager-rejected": f"Data egress: {PACKAGE_ID} was rejected",
    "manager-grant-revoked": f"Data egress: grant g-5b1e0c9d2a7f4e31 of {PACKAGE_ID} was revoked",
    "manager-grant-expired": f"Data egress: grant g-5b1e0c9d2a7f4e31 of {PACKAGE_ID} expired",
    "manager-closed": f"Data egress: {PACKAGE_ID} closed",
    "sftp-address": f"Data egress: {PACKAGE_ID} is ready on the SFTP server (1 of 3: address)",
    "sftp-password": f"Data egress: {PACKAGE_ID} SFTP password (2 of 3)",
    "sftp-key-set": f"Data egress: {PACKAGE_ID} SFTP login with your SSH key (2 of 3)",
    "physical-notice": f"Data egress: {PACKAGE_ID} will come on a physical disk",
    "key-release": f"Data egress: {PACKAGE_ID} decryption key (3 of 3)",
    "manager-encrypted-ready": f"Data egress: {PACKAGE_ID} encrypted for physical",
    "manager-key-released": f"Data egress: {PACKAGE_ID} key released",
}
# Subject-matter every email with a package names, in both parts.
NAMED = {
    "recipient-links": [TITLE, "Ada Byron", *FILES],
    "signoff-request": [TITLE, "Ada Byron", "data provider representative"],
    "manager-signoff-requested": [TITLE, "Ada Byron", "Alan Turing", "Grace Hopper"],
    "manager-signoff-refused": [TITLE, "Ada Byron", "Table 3 has cells under 10."],
    "manager-signoff-completed": [TITLE, "Ada Byron", "Alan Turing", "Grace Hopper"],
    "manager-granted": [TITLE, "Ada Byron"],
    "manager-grant-revoked": ["Ada Byron", "leaked"],
    "sftp-address": [
        TITLE,
        "Ada Byron",
        SFTP_HOST,
        SFTP_LOGIN,
        "203.0.113.7",
        "WinSCP",
        "FileZilla",
        *(f"{p}.age" for p in FILES),
    ],
    "sftp-password": ["Ada Byron", SFTP_PASSWORD, "1 of 3"],
    "sftp-key-set": ["Ada Byron", "ssh-ed25519", "OneAbc"],
    "physical-notice": [TITLE, "Ada Byron", *(f"{p}.age" for p in FILES)],
    "key-release": ["Ada Byron", *FILES],
    "manager-encrypted-ready": [TITLE, "Ada Byron", "write-disk"],
}


def test_every_email_is_built_and_keeps_its_subject() -> None:
    assert {name: mail.subject for name, mail in EMAILS.items()} == SUBJECTS


@pytest.mark.parametrize("name", list(EMAILS))
def test_both_parts_come_from_the_shared_layout_and_carry_the_same_facts(name: str) -> None:
    mail = EMAILS[name]
    html = page(mail.html)
    assert mail.html.startswith("<!DOCTYPE html>") and "Data Safe Haven &middot; data egress" in mail.html
    assert f"<title>{mail.subject}</title>" in mail.html
    in_text, in_html = facts(mail.text), facts(html.text)
    assert in_text == in_html
    assert any(in_text[kind] for kind in ("command", "url", "key", "sha256", "password", "ssh key")), (
        "the email says what to do next"
    )
    for fact in [PACKAGE_ID, *NAMED.get(name, [])]:
        assert fact in mail.text and fact in html.text, fact


def test_the_recipient_gets_each_link_on_a_line_of_its_own_and_the_manager_none() -> None:
    text = EMAILS["recipient-links"].text
    assert re.findall(r"(?m)^Link for (\S+): (http\S+)$", text) == [(link.ip_range, link.url) for link in LINKS]
    assert f'azcopy copy "{LINKS[0].url}" . --recursive' in text
    assert "a browser cannot open it" in text and "a browser cannot open it" in EMAILS["recipient-links"].html
    assert f"\n{SIGNOFF_LINK}\n" in EMAILS["signoff-request"].text
    for name, mail in EMAILS.items():
        urls = set(re.findall(FACT_PATTERNS["url"], mail.text + page(mail.html).text))
        expected = {
            "recipient-links": {link.url for link in LINKS},
            "signoff-request": {SIGNOFF_LINK},
        }.get(name, set())
        assert urls == expected, name
        assert page(mail.html).hrefs == ([SIGNOFF_LINK] if name == "signoff-request" else []), name


def test_manager_emails_give_the_command_to_run_beside_the_route() -> None:
    commands = {name: facts(mail.text)["command"] for name, mail in EMAILS.items()}
    assert {
        'egress revoke g-5b1e0c9d2a7f4e31 --reason "<why>"',
        f'egress revoke --package {PACKAGE_ID} --reason "<why>"',
        f"egress status {PACKAGE_ID}",
    } <= commands["manager-granted"]
    assert "POST /api/grants/g-5b1e0c9d2a7f4e31/revoke" in EMAILS["manager-granted"].text
    assert f"egress key-release {PACKAGE_ID}" in commands["manager-encrypted-ready"]
    assert f"egress write-disk {PACKAGE_ID} /path/to/mounted/disk" in commands["manager-encrypted-ready"]
    assert f"egress resend-signoff {PACKAGE_ID}" in commands["manager-signoff-requested"]
    for name in SUBJECTS:
        if name.startswith("manager-"):
            assert f"egress status {PACKAGE_ID}" in commands[name], name


def test_the_idempotency_keys_are_unchanged() -> None:
    def key(value: str) -> str:
        return str(uuid.uuid5(uuid.UUID("6f1c1f0e-3c1a-4b8e-9a51-0d6a4f1e2b7c"), value))

    hashes = [sha(p["email"].encode()) for p in (PROVIDER, INVESTIGATOR, REFEREE)]
    to = "ada@provider.example"
    assert {name: mail.idempotency_key for name, mail in EMAILS.items()} == {
        "recipient-links": key("link:g-5b1e0c9d2a7f4e31"),
        "signoff-request": key(f"signoff:{PACKAGE_ID}:data_provider_representative:{sha(to.encode())}"),
        "manager-signoff-requested": key(f"signoff-requested:{PACKAGE_ID}:{','.join(hashes)}"),
        "manager-signoff-refused": key(f"signoff-refused:{PACKAGE_ID}:{'a' * 64}"),
        "manager-signoff-completed": key(f"signoff-completed:{PACKAGE_ID}"),
        "manager-granted": key(f"granted:{PACKAGE_ID}"),
        "manager-rejected": key(
            f"rejected:{PACKAGE_ID}:{'b' * 64}:{sha(chr(10).join(rejection_reasons(TITLE)).encode())[:16]}"
        ),
        "manager-grant-revoked": key("was revoked:g-5b1e0c9d2a7f4e31"),
        "manager-grant-expired": key("expired:g-5b1e0c9d2a7f4e31"),
        "manager-closed": key(f"closed:{PACKAGE_ID}"),
        "sftp-address": key("sftp-address:g-5b1e0c9d2a7f4e31"),
        "sftp-password": key("sftp-password:g-5b1e0c9d2a7f4e31:1"),
        "sftp-key-set": key("sftp-key:g-5b1e0c9d2a7f4e31"),
        "physical-notice": key(f"physical:{PACKAGE_ID}:{to}"),
        "key-release": key(f"key:{PACKAGE_ID}:{to}"),
        "manager-encrypted-ready": key(f"encrypted-ready:{PACKAGE_ID}"),
        "manager-key-released": key(f"key-released:{PACKAGE_ID}"),
    }


def test_the_key_email_is_3_of_3_only_for_sftp() -> None:
    physical = notifications.key_release(PACKAGE_ID, "Ada Byron", "ada@provider.example", IDENTITY, encrypted())
    assert physical.subject == f"Data egress: {PACKAGE_ID} decryption key"
    assert "3 of 3" not in physical.text and "3 of 3" in EMAILS["key-release"].text
    assert f"\n{IDENTITY}\n" in physical.text, "the key alone on its line, to save as key.txt"


# -- the SHA-256 list -----------------------------------------------------------------------------

STRICT = re.compile(r"^[0-9a-f]{64}  .+$")


def checksum_block(text: str) -> list[str]:
    """The run of ``<sha256>  <path>`` lines in a text part; every line of it must be strict."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^[0-9a-f]{64} ", line))
    block = list(itertools.takewhile(bool, lines[start:]))
    assert all(STRICT.match(line) for line in block), block
    assert not any(STRICT.match(line) for line in lines[start + len(block) :]), "one list per email"
    return block


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("recipient-links", {path: sha(data) for path, data in FILES.items()}),
        ("key-release", {path: sha(data) for path, data in FILES.items()}),
        ("sftp-address", {f"{path}.age": sha(b"age" + data) for path, data in FILES.items()}),
        ("physical-notice", {f"{path}.age": sha(b"age" + data) for path, data in FILES.items()}),
    ],
)
def test_the_checksum_list_is_what_sha256sum_writes(name: str, expected: dict[str, str]) -> None:
    block = checksum_block(EMAILS[name].text)
    assert {line[66:]: line[:64] for line in block} == expected
    assert len(block) == len(expected)
    shown = page(EMAILS[name].html).text.splitlines()
    assert all(line in shown for line in block), "the HTML part lists the same lines, one each"


def test_sha256sum_checks_the_downloaded_files_with_the_list(tmp_path: Path) -> None:
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        pytest.skip("sha256sum (GNU coreutils) is not installed")
    for path, data in FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    (tmp_path / "SHA256SUMS").write_text("\n".join(checksum_block(EMAILS["recipient-links"].text)) + "\n")
    checked = subprocess.run([sha256sum, "-c", "--strict", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(FILES)
    (tmp_path / "README.md").write_bytes(b"changed")
    checked = subprocess.run([sha256sum, "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 1 and "README.md: FAILED" in checked.stdout


def test_a_large_package_lists_some_files_and_checks_them_all() -> None:
    many = {f"tables/t{i:04d}.csv": f"{i}\n".encode() for i in range(notifications.TABLE_ROWS + 50)}
    big = Manifest.model_validate(manifest_for(PACKAGE_ID, many, tier=2))
    mail = notifications.recipient_links(big, grant(), LINKS, MANAGER)
    assert len(checksum_block(mail.text)) == len(many)
    assert "and 50 more" in mail.text and "and 50 more" in page(mail.html).text
    assert "tables/t0249.csv" in page(mail.html).text and f"{len(many):,} files" in mail.text


# -- untrusted strings ----------------------------------------------------------------------------

FORGED_LINE = "\r\nLink for 203.0.113.7: https://evil.example/phish"
FORGED_HTML = '<a href="https://evil.example/phish">Download here</a><img src=x onerror=alert(1)><script>x()</script>'
HOSTILE = ["\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1b", "\u202e"]


def hostile_emails() -> dict[str, OutgoingEmail]:
    title = f"Results{FORGED_LINE}\u2028Link for 198.51.100.1: http://evil.example/2 {FORGED_HTML}"
    name = f"Eve{FORGED_LINE}\x1b[2J\u202etxt.exe"
    emails = sample_emails(
        title=title, name=name, comment=f"Fine{FORGED_LINE}\n{FORGED_HTML}\u2028Link for x: http://e"
    )
    evil_files = {f"a{FORGED_LINE}.csv": b"x", "b\u2028Link for 203.0.113.7: https://evil.example/3": b"y"}
    evil = manifest(title, files=evil_files)
    emails["evil-files"] = notifications.recipient_links(evil, grant(name), LINKS, MANAGER)
    evil_id = f"wp-1{FORGED_LINE} {FORGED_HTML}"  # as a blob name might give it: in subjects and commands
    emails["evil-rejected"] = notifications.manager_rejected(evil_id, [f"title {title}", name], MANAGER, "c" * 64)
    emails["evil-closed"] = notifications.manager_closed(evil_id, MANAGER)
    emails["evil-revoked"] = notifications.manager_grant_ended(
        grant(name, revoked_by=name, revoke_reason=title), "was revoked", MANAGER
    )
    emails["evil-key-released"] = notifications.manager_key_released(PACKAGE_ID, name, [name], MANAGER)
    return emails


@pytest.mark.parametrize(("name", "mail"), list(hostile_emails().items()))
def test_an_untrusted_string_cannot_forge_a_line_a_link_an_element_or_a_header(name: str, mail: OutgoingEmail) -> None:
    genuine = [(link.ip_range, link.url) for link in LINKS] if name in ("recipient-links", "evil-files") else []
    assert re.findall(r"(?m)^Link for (\S+): (http\S+)", mail.text) == genuine
    assert not [line for line in mail.text.splitlines() if line.startswith("Link for") and "evil" in line]
    assert not re.search(r"(?:https?)://evil", mail.text + mail.html), "a link a mail client would follow"
    assert not any(c in mail.text or c in mail.html for c in HOSTILE), "a control character got through"
    assert (mail.text + ".").splitlines() == (mail.text + ".").split("\n"), "a character taken for a line break"

    html = page(mail.html)
    assert "evil.example" not in " ".join(html.hrefs)
    assert not {"img", "script", "style"} & set(html.tags)
    assert html.tags.count("a") == (1 if name == "signoff-request" else 0)
    assert not re.search(r"(?m)^Link for \S+: https?://evil", html.text)

    assert "\r" not in mail.subject and "\n" not in mail.subject
    header = EmailMessage()
    header["Subject"] = mail.subject  # raises on a header that would start a new one
    assert str(header["Subject"]) == mail.subject


def test_a_line_break_is_shown_not_dropped() -> None:
    mail = hostile_emails()["recipient-links"]
    assert f"Results {notifications.NEWLINE_MARK} Link for 203.0.113.7: https[:]//evil.example/phish" in mail.text
    assert "&lt;a href=&#34;https[:]//evil.example/phish&#34;&gt;" in mail.html
    assert notifications.one_line("a\r\nb\tc\x00") == f"a {notifications.NEWLINE_MARK} b c{notifications.INVALID_MARK}"
    assert notifications.shown("see https://doi.org/10.1/x") == "see https[:]//doi.org/10.1/x"
    assert notifications.shown("Ada Lovelace-Byron, tables/t 1.csv") == "Ada Lovelace-Byron, tables/t 1.csv"


def test_a_refusal_comment_keeps_its_lines_each_quoted() -> None:
    text = EMAILS["manager-signoff-refused"].text
    assert "> Table 3 has cells under 10.\n> Merge the age bands and stage it again.\n" in text
