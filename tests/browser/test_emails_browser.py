"""Every email's HTML part in a real browser (Debian's chromium, through Playwright), on a phone and
on a desktop: nothing runs off the right edge, every link and SHA-256 can be read and copied, and the
steps are a numbered list. Screenshots go to ``test-artifacts/browser/email-<name>-<width>.png``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.ports import OutgoingEmail
from tests.unit.test_emails import LINKS, SIGNOFF_LINK, sample_emails

pytestmark = pytest.mark.integration

WIDTHS = [375, 1280]
EMAILS = sample_emails()
# Emails whose reader follows steps in order: those steps are an <ol>, with at least this many.
STEPS = {
    "recipient-links": 6,
    "sftp-address": 2,
    "physical-notice": 3,
    "key-release": 4,
    "manager-encrypted-ready": 3,
}
URL_RE = re.compile(r"(?:https?|sftp)://[^\s\"']+")
SHA_RE = re.compile(r"\b[0-9a-f]{64}\b")
OpenPage = Callable[[int, int], Any]

LAYOUT = """() => {
  const wide = Array.from(document.querySelectorAll('body *'))
    .filter((el) => el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
    .map((el) => el.tagName);
  const small = Array.from(document.querySelectorAll('body *'))
    .filter((el) => Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim()))
    .filter((el) => parseFloat(getComputedStyle(el).fontSize) < 12)
    .map((el) => el.tagName + ': ' + el.textContent.slice(0, 40));
  const numberedBullets = Array.from(document.querySelectorAll('li'))
    .filter((li) => /^\\s*\\d+\\.\\s/.test(li.textContent))
    .map((li) => li.textContent.slice(0, 60));
  return {
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    inner: window.innerWidth,
    clipped: wide,
    small: small,
    numberedBullets: numberedBullets,
    steps: document.querySelectorAll('ol > li').length,
    title: document.title,
  };
}"""


def facts_to_copy(mail: OutgoingEmail) -> list[str]:
    """Every URL and SHA-256 the text part gives: each must be readable, whole, in the HTML part too."""
    return sorted(set(URL_RE.findall(mail.text)) | set(SHA_RE.findall(mail.text)))


def test_the_sample_emails_have_links_and_checksums_to_check() -> None:
    """A guard for the test below: it checks something in every email that carries links or files."""
    assert {link.url for link in LINKS} <= set(facts_to_copy(EMAILS["recipient-links"]))
    assert SIGNOFF_LINK in facts_to_copy(EMAILS["signoff-request"])
    for name in ("recipient-links", "sftp-address", "physical-notice", "key-release"):
        assert len(SHA_RE.findall(EMAILS[name].text)) >= 5, name


@pytest.mark.parametrize("width", WIDTHS, ids=[str(w) for w in WIDTHS])
@pytest.mark.parametrize("name", list(EMAILS))
def test_the_email_fits_the_screen_and_shows_every_link_and_checksum(
    name: str, width: int, open_page: OpenPage, artifacts: Path
) -> None:
    mail = EMAILS[name]
    page = open_page(width, 800)
    page.set_content(mail.html)
    page.screenshot(path=str(artifacts / f"email-{name}-{width}.png"), full_page=True)
    layout = page.evaluate(LAYOUT)

    assert layout["doc"] <= layout["inner"] and layout["body"] <= layout["inner"], layout
    assert layout["clipped"] == [], f"content cut off inside {layout['clipped']}"
    assert layout["small"] == [], f"text smaller than 12px: {layout['small']}"
    assert layout["numberedBullets"] == [], "numbers typed inside list items"
    assert layout["title"] == mail.subject

    shown = page.inner_text("body")
    missing = [fact for fact in facts_to_copy(mail) if fact not in shown]
    assert missing == [], f"{name} at {width}px does not show {missing}"
    if name in STEPS:
        assert layout["steps"] >= STEPS[name], f"{name}: the steps are not an ordered list"
    if name == "recipient-links":
        for link in LINKS:
            box = page.locator(f"div:has(> div:text-is('Link for {link.ip_range}'))")
            assert box.count() == 1
            said = box.inner_text()
            assert link.url in said and f"Works only from {link.ip_range}" in said
            assert "paste this into storage explorer; a browser cannot open it" in said.lower()
        (azcopy,) = [line for line in page.inner_text("body").splitlines() if line.startswith("azcopy copy")]
        assert azcopy == f'azcopy copy "{LINKS[0].url}" . --recursive', "the command reads whole, on one line"


def test_the_sign_off_button_opens_the_personal_link(open_page: OpenPage) -> None:
    page = open_page(375, 800)
    page.set_content(EMAILS["signoff-request"].html)
    assert page.get_by_role("link", name="Review and sign off").get_attribute("href") == SIGNOFF_LINK
    assert page.locator("a").count() == 1, "the sign-off request has one link: the person's own"
    for name, mail in EMAILS.items():
        if name != "signoff-request":
            page.set_content(mail.html)
            assert page.locator("a").count() == 0, f"{name} has a clickable link"
