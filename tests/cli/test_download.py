"""`egress download`: checksum lists with spaces in paths, "not checked", and links cut short by a shell."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path

import pytest

from shared.bootstrap import Services
from tests.cli.support import link_from_email, make_manifest
from tests.support import flow
from tests.support.packages import new_package_id
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

SPACED = "tables/table 2 (final).csv"


@pytest.fixture
def granted(egress, services: Services, outputs: Path, smtp: SmtpSink) -> tuple[str, Path]:
    """A granted package with a file whose name has spaces: (its link, the outputs folder)."""
    (outputs / SPACED).write_text("cohort,n\nA,120\n")
    package_id = new_package_id()
    assert make_manifest(egress, outputs, package_id).exit_code == 0
    assert egress("stage", str(outputs)).exit_code == 0
    raw = services.staging.read(services.settings.staging_container, f"{package_id}/manifest.json")
    assert flow.egress(services, smtp, package_id, raw) == "granted"
    return link_from_email(smtp), outputs


def _sha256sum_list(outputs: Path) -> str:
    files = sorted(p for p in outputs.rglob("*") if p.is_file() and p.name != "manifest.json")
    return "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(outputs).as_posix()}\n" for p in files
    )


def test_a_sha256sum_list_checks_a_file_with_spaces(egress, granted, tmp_path: Path) -> None:
    link, outputs = granted
    listing = tmp_path / "SHA256SUMS"
    listing.write_text(_sha256sum_list(outputs))
    result = egress("download", link, str(tmp_path / "got"), "--checksums", str(listing))
    assert result.exit_code == 0, result.output
    assert f"ok        {SPACED}" in result.output and "MISSING" not in result.output
    assert "4 files in" in result.output and "all checks passed" in result.output
    assert (tmp_path / "got" / SPACED).read_bytes() == (outputs / SPACED).read_bytes()


def test_the_recipient_email_list_checks_the_download(egress, granted, smtp: SmtpSink, tmp_path: Path) -> None:
    link, _ = granted
    email = tmp_path / "email.txt"
    email.write_text(body_text(smtp.to("ada@provider.example")[0]))
    result = egress("download", link, str(tmp_path / "got"), "--checksums", str(email))
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output and "MISSING" not in result.output


def test_without_checksums_nothing_claims_to_be_checked(egress, granted, tmp_path: Path) -> None:
    link, _ = granted
    result = egress("download", link, str(tmp_path / "got"))
    assert result.exit_code == 0, result.output
    assert "SHA-256 not checked" in result.output
    assert "all checks passed" not in result.output


def test_a_file_the_list_does_not_name_fails_the_check(egress, granted, tmp_path: Path) -> None:
    link, outputs = granted
    listing = tmp_path / "SHA256SUMS"
    listing.write_text("".join(line + "\n" for line in _sha256sum_list(outputs).splitlines() if SPACED not in line))
    result = egress("download", link, str(tmp_path / "got"), "--checksums", str(listing))
    assert result.exit_code == 2, result.output
    assert f"UNLISTED  {SPACED}" in result.output and "1 file not in the checksum list" in result.output


def test_a_link_cut_at_its_first_ampersand_gets_the_hint_to_quote_it(egress, granted, tmp_path: Path) -> None:
    link, _ = granted
    cut = link.split("&")[0]  # what a shell passes on from an unquoted link
    for args in ((cut,), (cut, str(tmp_path / "got"))):
        result = egress("download", *args)
        assert result.exit_code == 2, result.output
        assert "put it in single quotes" in result.output
        assert urllib.parse.urlsplit(link).query not in result.output, "the link is never echoed back"
    assert not (tmp_path / "got").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hello", "that is not a package link"),
        ("https://account.blob.core.windows.net/egress-wp-1", "has no '?...' part"),
        ("https://account.blob.core.windows.net/egress-wp-1?si=p", "put it in single quotes"),
    ],
)
def test_what_cannot_be_a_link_is_bad_input(egress, url: str, message: str, tmp_path: Path) -> None:
    result = egress("download", url, str(tmp_path / "got"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
