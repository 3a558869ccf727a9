"""The sign-off page in a real browser, opened through the link in the classifier's email.

Served over HTTP by the local Functions host (see conftest.py); screenshots go to
``test-artifacts/browser/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from shared.bootstrap import Services
from shared.domain.records import PackageStatus
from shared.domain.signoff import SignoffStatus
from shared.rendering import environment
from shared.services.intake import Outcome
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, SAMPLE_FILES, manifest_for, stage_new
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

PHONE = (375, 740)
DESKTOP = (1280, 800)
HEADING = "Sign-off needed"
DONE = "Thank you: your decision is recorded"
OpenPage = Callable[[int, int], Any]


def link_in_email(smtp: SmtpSink, package_id: str, email: str) -> str:
    """The personal link in the one "Sign-off needed" email this person received."""
    mails = [m for m in smtp.to(email) if m["Subject"] == f"Sign-off needed: {package_id}"]
    assert len(mails) == 1, f"{email} got {len(mails)} sign-off emails"
    links = re.findall(r"https?://\S+/api/signoff/[A-Za-z0-9_-]{43}", body_text(mails[0]))
    assert len(set(links)) == 1, links
    return str(links[0])


def staged(services: Services, blob_service: Any, smtp: SmtpSink, function_host: str) -> tuple[str, str]:
    """A package awaiting sign-off; returns its id and the data provider's link from their email."""
    package_id, raw = stage_new(services, blob_service)
    assert services.intake.process(package_id, raw) == Outcome.AWAITING_SIGNOFF
    link = link_in_email(smtp, package_id, PROVIDER["email"])
    assert link.startswith(f"{function_host}/api/signoff/"), link
    return package_id, link


def my_signoff(services: Services, package_id: str, email: str = PROVIDER["email"]) -> Any:
    return next(s for s in services.registry.list_signoffs(package_id) if s.email == email)


def overflow(page: Any) -> dict[str, int]:
    """Widths in CSS pixels: the document's and the body's scroll width, and the viewport's."""
    widths: dict[str, int] = page.evaluate(
        "() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, inner: window.innerWidth})"
    )
    return widths


UNLABELLED = """() => {
  const controls = Array.from(document.querySelectorAll('input, textarea, select'))
    .filter((el) => el.type !== 'hidden');
  return {
    count: controls.length,
    unlabelled: controls.filter((el) => el.labels.length === 0).map((el) => el.outerHTML),
    noLabelFor: controls.filter((el) => el.id && !document.querySelector(`label[for="${CSS.escape(el.id)}"]`))
      .map((el) => el.id),
  };
}"""


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375", "1280"])
def test_the_page_shows_what_would_leave_and_to_whom_and_nothing_of_the_others(
    app_services: Services,
    blob_service: Any,
    smtp: SmtpSink,
    function_host: str,
    open_page: OpenPage,
    artifacts: Path,
    viewport: tuple[int, int],
) -> None:
    package_id, link = staged(app_services, blob_service, smtp, function_host)
    manifest = manifest_for(package_id, SAMPLE_FILES)
    # another classifier has already decided: nothing of it may show on this person's page
    app_services.signoff.decide(link_in_email(smtp, package_id, INVESTIGATOR["email"])[-43:], "approve", 3, None, None)

    page = open_page(*viewport)
    response = page.goto(link)
    assert response is not None and response.status == 200
    expect(page.locator("h1")).to_have_text(f"{HEADING}: {package_id}")
    text = page.locator("body").inner_text()

    assert manifest["title"] in text and package_id in text
    for f in manifest["files"]:
        row = page.locator("tbody tr", has_text=f["path"])
        expect(row).to_have_count(1)
        expect(row).to_contain_text(f["sha256"])
    total = sum(f["size"] for f in manifest["files"])
    expect(page.locator("tfoot")).to_contain_text(environment().filters["size"](total))
    for r in manifest["recipients"]:
        item = page.locator("li", has_text=r["email"])
        expect(item).to_have_count(1)
        for ip_range in r["ip_ranges"]:
            expect(item).to_contain_text(ip_range)
    assert "48 hours" in text
    assert PROVIDER["name"] in text and "data provider representative" in text

    # nobody else's decision or tier: no other classifier, no decision words, no tier preselected
    html = page.content()
    for other in (INVESTIGATOR, REFEREE):
        assert other["name"] not in html and other["email"] not in html
    assert not re.search(r"\b(approved|refused)\b", text, re.IGNORECASE), text
    assert page.locator("input[name=tier]").count() == 5
    assert page.locator("input[name=tier]:checked").count() == 0
    assert page.locator("#comment").input_value() == ""

    labels = page.evaluate(UNLABELLED)
    assert labels["count"] == 6, labels  # five tier radios and the comment
    assert labels["unlabelled"] == [] and labels["noLabelFor"] == [], labels
    for control in ["#comment"] + [f"#tier-{tier}" for tier in range(5)]:
        expect(page.locator(control)).to_be_visible()
    expect(page.get_by_role("radio", name=re.compile(r"^Tier 2\b"))).to_have_count(1)
    expect(page.get_by_role("textbox", name=re.compile(r"^Refuse: say why"))).to_have_count(1)
    expect(page.get_by_role("button", name="Approve at this tier")).to_be_visible()
    expect(page.get_by_role("button", name="Refuse", exact=True)).to_be_visible()

    width = overflow(page)
    assert width["doc"] <= width["inner"] and width["body"] <= width["inner"], width
    page.screenshot(path=str(artifacts / f"signoff-{viewport[0]}.png"), full_page=True)


def test_approve_at_a_tier_then_the_link_is_spent(
    app_services: Services, blob_service: Any, smtp: SmtpSink, function_host: str, open_page: OpenPage, artifacts: Path
) -> None:
    package_id, link = staged(app_services, blob_service, smtp, function_host)
    page = open_page(*PHONE)
    page.goto(link)

    page.locator("label[for=tier-2]").click()
    expect(page.locator("#tier-2")).to_be_checked()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Approve at this tier").click()
    assert posted.value.status == 200
    expect(page.locator("h1")).to_have_text(DONE)
    expect(page.locator("body")).to_contain_text("tier 2")
    assert overflow(page)["doc"] <= PHONE[0]
    page.screenshot(path=str(artifacts / "signoff-done-375.png"), full_page=True)
    mine = my_signoff(app_services, package_id)
    assert mine.status == SignoffStatus.APPROVED and mine.tier == 2

    again = page.goto(link)
    assert again is not None and again.status == 410
    expect(page.locator("h1")).to_have_text("This sign-off link no longer works")
    page.screenshot(path=str(artifacts / "signoff-410-375.png"), full_page=True)


def test_a_refusal_needs_a_comment_in_the_browser(
    app_services: Services, blob_service: Any, smtp: SmtpSink, function_host: str, open_page: OpenPage, artifacts: Path
) -> None:
    package_id, link = staged(app_services, blob_service, smtp, function_host)
    page = open_page(*PHONE)
    page.goto(link)
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)

    page.get_by_role("button", name="Refuse", exact=True).click()
    page.wait_for_timeout(300)  # long enough for a submission to start, had the browser let it
    assert posts == [] and page.url == link
    expect(page.locator("h1")).to_have_text(f"{HEADING}: {package_id}")
    assert page.locator("#comment").evaluate("el => el.validity.valueMissing") is True
    assert my_signoff(app_services, package_id).status == SignoffStatus.PENDING

    page.locator("#comment").fill("Table 1 has a cell of fewer than ten people.")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Refuse", exact=True).click()
    assert posted.value.status == 200
    expect(page.locator("h1")).to_have_text(DONE)
    expect(page.locator("body")).to_contain_text("You refused")
    page.screenshot(path=str(artifacts / "signoff-refused-375.png"), full_page=True)
    record = app_services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REFUSED
    assert my_signoff(app_services, package_id).comment == "Table 1 has a cell of fewer than ten people."


def test_a_refusal_without_a_comment_is_answered_422_with_the_form_and_the_reason(
    app_services: Services, blob_service: Any, smtp: SmtpSink, function_host: str, open_page: OpenPage, artifacts: Path
) -> None:
    package_id, link = staged(app_services, blob_service, smtp, function_host)
    page = open_page(*PHONE)
    page.goto(link)
    page.locator("#comment").evaluate("el => el.removeAttribute('required')")

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Refuse", exact=True).click()
    assert posted.value.status == 422
    alert = page.get_by_role("alert")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("say why")
    expect(page.locator("h1")).to_have_text(f"{HEADING}: {package_id}")
    expect(page.locator("#comment")).to_be_visible()
    expect(page.get_by_role("button", name="Refuse", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Approve at this tier")).to_be_visible()
    assert overflow(page)["doc"] <= PHONE[0]
    page.screenshot(path=str(artifacts / "signoff-422.png"), full_page=True)
    assert my_signoff(app_services, package_id).status == SignoffStatus.PENDING
    record = app_services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.AWAITING_SIGNOFF


def test_an_unknown_link_shows_a_page_for_a_person(
    app_services: Services, function_host: str, open_page: OpenPage, artifacts: Path
) -> None:
    page = open_page(*PHONE)
    response = page.goto(f"{function_host}/api/signoff/{'A' * 43}")
    assert response is not None and response.status == 404
    assert (response.headers.get("content-type") or "").startswith("text/html")
    expect(page.locator("h1")).to_have_text("This sign-off link is not known")
    expect(page.get_by_role("alert")).not_to_be_empty()
    page.screenshot(path=str(artifacts / "signoff-404-375.png"), full_page=True)
