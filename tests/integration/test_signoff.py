"""Sign-off by the named classifiers (DESIGN.md section 3a) on Azurite and the SMTP sink."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.bootstrap import Services, build_services
from shared.domain.records import PackageStatus
from shared.domain.signoff import SignoffStatus, token_hash
from shared.errors import Forbidden, Gone, NotFound, Unauthorized, Unprocessable
from shared.services.intake import Outcome
from tests.conftest import MANAGER
from tests.support.flow import approve_all, drain, queue_client, signoff_tokens
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, SAMPLE_FILES, stage_new, staged
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

PEOPLE = [PROVIDER["email"], INVESTIGATOR["email"], REFEREE["email"]]
RECIPIENT = "ada@provider.example"


def _link_emails(smtp: SmtpSink, package_id: str) -> list[object]:
    return [m for m in smtp.messages if "ready to download" in str(m["Subject"]) and package_id in str(m["Subject"])]


def test_nothing_leaves_until_every_named_person_signs_off(services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id, raw = stage_new(services, blob_service)

    assert services.intake.process(package_id, raw) == Outcome.AWAITING_SIGNOFF

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.AWAITING_SIGNOFF
    tokens = signoff_tokens(smtp, package_id)
    assert set(tokens) == set(PEOPLE), "each named person gets one email with a personal link"
    for person in PEOPLE:
        assert [str(m["Subject"]) for m in smtp.to(person)] == [f"Sign-off needed: {package_id}"]
    assert not blob_service.get_container_client(f"egress-{package_id}").exists(), "nothing copied yet"
    assert services.registry.list_grants(package_id=package_id) == []
    assert drain(services) == [], "nothing queued before sign-off"

    first, second, third = (tokens[p] for p in PEOPLE)
    services.signoff.decide(first, "approve", 2, None, None)
    services.signoff.decide(second, "approve", 2, None, None)
    assert drain(services) == [] and _link_emails(smtp, package_id) == []
    decided = services.signoff.decide(third, "approve", 2, None, None)
    assert decided.package_status == "processing"

    assert [m["package_id"] for m in drain(services)] == [package_id]
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED and record.tier == 2
    assert len(_link_emails(smtp, package_id)) == 1
    actions = [e.action for e in services.audit.read(package_id)]
    assert actions[:4] == ["manifest_received", "signoff_requested", "signoff_requested", "signoff_requested"]
    assert actions[4:8] == ["signoff_approved", "signoff_approved", "signoff_approved", "signoff_completed"]
    assert actions[8:] == ["sealed", "grant_created", "recipient_notified", "granted"]
    granted = services.audit.read(package_id)[-1]
    assert granted.details["signoff_mode"] == "required"
    manager = [str(m["Subject"]) for m in smtp.to(MANAGER)]
    assert f"Data egress: sign-off requested for {package_id}" in manager
    assert f"Data egress: {package_id} signed off at tier 2" in manager


def test_the_token_is_stored_only_as_a_hash_and_never_in_the_audit_or_the_manager_email(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    records = {s.email: s for s in services.registry.list_signoffs(package_id)}
    everything = json.dumps(
        [s.model_dump(mode="json") for s in records.values()]
        + [e.model_dump(mode="json") for e in services.audit.read(package_id)]
        + [services.overview.package_status(package_id)]
    )
    everything += "".join(m.as_string() for m in smtp.to(MANAGER))
    for email, token in tokens.items():
        assert len(token) >= 22  # at least 128 random bits, URL-safe
        assert records[email].token_hash == token_hash(token)
        assert token not in everything


def test_a_signed_tier_above_the_manifests_brings_that_tiers_rules(services: Services, blob_service, smtp) -> None:
    # A tier 1 package needs no referee and may go anywhere for 336 hours; signed at tier 2 it may not.
    package_id, raw = stage_new(services, blob_service, tier=1, expires_in_hours=200)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    services.signoff.decide(tokens[PROVIDER["email"]], "approve", 1, None, None)
    services.signoff.decide(tokens[INVESTIGATOR["email"]], "approve", 2, None, None)

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    reasons = " ".join(record.rejection_reasons)
    assert "signed off at tier 2" in reasons and "referee" in reasons and "expires_in_hours is 200" in reasons
    assert drain(services) == [] and services.registry.list_grants(package_id=package_id) == []
    assert set(staged(blob_service, services.settings.staging_container, package_id)) >= {
        f"{package_id}/files/{p}" for p in SAMPLE_FILES
    }, "rejected packages stay staged"
    (rejection,) = [m for m in smtp.to(MANAGER) if "rejected" in str(m["Subject"])]
    assert "referee" in body_text(rejection)


def test_tier_4_signed_never_leaves(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    approve_all(services, smtp, package_id, tiers={REFEREE["email"]: 4})
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert any("tier 4 outputs never leave" in r for r in record.rejection_reasons)


def test_one_refusal_stops_the_package_and_the_other_links_die(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    services.signoff.decide(tokens[PROVIDER["email"]], "approve", 2, None, None)

    decided = services.signoff.decide(tokens[REFEREE["email"]], "refuse", None, "Table 3 has cells under 10.", None)

    assert decided.package_status == "refused"
    with pytest.raises(Gone, match="no longer awaits sign-off"):
        services.signoff.page(tokens[INVESTIGATOR["email"]], None)
    with pytest.raises(Gone):
        services.signoff.decide(tokens[INVESTIGATOR["email"]], "approve", 2, None, None)
    assert drain(services) == [] and services.registry.list_grants(package_id=package_id) == []
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert set(staged(blob_service, services.settings.staging_container, package_id)) >= {
        f"{package_id}/files/{p}" for p in SAMPLE_FILES
    }
    (notice,) = [m for m in smtp.to(MANAGER) if "refused at sign-off" in str(m["Subject"])]
    assert "Table 3 has cells under 10." in body_text(notice)
    refused = [e for e in services.audit.read(package_id) if e.action == "signoff_refused"]
    assert refused[0].details["comment"] == "Table 3 has cells under 10."
    # a refused id cannot be staged again with another manifest
    again = json.loads(raw)
    again["title"] = "Same outputs, new title"
    blob_service.get_container_client(services.settings.staging_container).upload_blob(
        f"{package_id}/manifest.json", json.dumps(again).encode(), overwrite=True
    )
    assert services.intake.process(package_id, json.dumps(again).encode()) == Outcome.REJECTED
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REFUSED


def test_answers_for_reused_unknown_and_incomplete_decisions(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    mine = tokens[PROVIDER["email"]]

    with pytest.raises(NotFound):
        services.signoff.page("x" * 43, None)
    with pytest.raises(NotFound):
        services.signoff.page("not-even-a-token", None)
    with pytest.raises(Unprocessable, match="tier"):
        services.signoff.decide(mine, "approve", None, None, None)
    with pytest.raises(Unprocessable, match="tier"):
        services.signoff.decide(mine, "approve", 5, None, None)
    with pytest.raises(Unprocessable, match="comment"):
        services.signoff.decide(mine, "refuse", None, "   ", None)
    with pytest.raises(Unprocessable, match="decision"):
        services.signoff.decide(mine, "maybe", 2, None, None)
    assert services.registry.get_signoff(package_id, services.registry.list_signoffs(package_id)[0].role).status == (
        SignoffStatus.PENDING
    ), "a refused request records nothing"

    services.signoff.page(mine, None)  # viewing changes nothing
    services.signoff.page(mine, None)
    services.signoff.decide(mine, "approve", 2, None, None)
    with pytest.raises(Gone, match="already approved"):
        services.signoff.decide(mine, "approve", 2, None, None)
    with pytest.raises(Gone):
        services.signoff.page(mine, None)


def test_the_page_is_blind_to_other_decisions_and_to_the_manifests_tiers(
    services: Services, blob_service, smtp
) -> None:
    package_id, raw = stage_new(services, blob_service, tier=3)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    services.signoff.decide(tokens[PROVIDER["email"]], "approve", 3, None, None)
    page = services.signoff.page(tokens[INVESTIGATOR["email"]], None)
    context = page.context()
    assert context["role"] == "Investigator" and context["name"] == INVESTIGATOR["name"]
    shown = json.dumps(context, default=str)
    assert PROVIDER["name"] not in shown.replace(context["recipients"][0]["name"], "")
    assert '"tier"' not in shown and "decisions" not in shown and "approved" not in shown
    status = services.overview.package_status(package_id)
    assert status["tier"] is None and all(s["tier"] is None for s in status["signoffs"]), "blind until all decide"
    assert {s["status"] for s in status["signoffs"]} == {"approved", "pending"}


def test_a_file_changed_after_signoff_never_leaves(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    staging = blob_service.get_container_client(services.settings.staging_container)
    staging.upload_blob(f"{package_id}/files/tables/table1.csv", b"cohort,n\nA,3\n", overwrite=True)
    approve_all(services, smtp, package_id)
    smtp.clear()

    drain(services)

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert any("'tables/table1.csv' changed after sign-off" in r for r in record.rejection_reasons)
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert services.registry.list_grants(package_id=package_id) == []
    assert _link_emails(smtp, package_id) == []


def test_signoff_times_out(services: Services, blob_service, smtp, clock) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    services.signoff.decide(tokens[PROVIDER["email"]], "approve", 2, None, None)

    clock.offset = timedelta(hours=services.settings.signoff_ttl_hours, minutes=1)
    with pytest.raises(Gone, match="expired"):
        services.signoff.page(tokens[INVESTIGATOR["email"]], None)
    report = services.sweep.sweep()

    assert report.signoff_timed_out == [package_id]
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert "not complete within 168 hours" in record.rejection_reasons[0]
    assert "Alan Turing (investigator)" in record.rejection_reasons[0]


def test_the_release_message_delivered_twice_releases_once(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    approve_all(services, smtp, package_id)
    record = services.registry.get_package(package_id)
    assert record is not None
    services.queue.send(package_id, record.manifest_sha256)  # a duplicate, as at-least-once delivery gives

    assert len(drain(services)) == 2
    assert len(services.registry.list_grants(package_id=package_id)) == 1
    assert len(_link_emails(smtp, package_id)) == 1


def test_resend_gives_new_links_and_the_old_ones_die(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    old = signoff_tokens(smtp, package_id)
    services.signoff.decide(old[PROVIDER["email"]], "approve", 2, None, None)

    result = services.signoff.resend(package_id, "manager")

    assert {p["email"] for p in result["resent_to"]} == {INVESTIGATOR["email"], REFEREE["email"]}
    new = signoff_tokens(smtp, package_id)
    assert new[INVESTIGATOR["email"]] != old[INVESTIGATOR["email"]]
    with pytest.raises(Gone, match="replaced"):
        services.signoff.page(old[INVESTIGATOR["email"]], None)
    services.signoff.decide(new[INVESTIGATOR["email"]], "approve", 2, None, None)
    services.signoff.decide(new[REFEREE["email"]], "approve", 2, None, None)
    drain(services)
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED


def test_with_a_required_principal_the_signed_in_email_must_match(settings, clock, blob_service, smtp) -> None:
    services = build_services(settings.model_copy(update={"signoff_require_principal": True}), clock=clock)
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    token = signoff_tokens(smtp, package_id)[PROVIDER["email"]]

    with pytest.raises(Unauthorized):
        services.signoff.page(token, None)
    with pytest.raises(Forbidden):
        services.signoff.decide(token, "approve", 2, None, "mallory@provider.example")
    services.signoff.decide(token, "approve", 2, None, "ADA@Provider.Example")
    (approved,) = [e for e in services.audit.read(package_id) if e.action == "signoff_approved"]
    assert approved.details["principal"] == "ADA@Provider.Example"


def test_manifest_mode_trusts_the_decisions_and_says_so(settings, clock, blob_service, smtp) -> None:
    services = build_services(settings.model_copy(update={"classification_signoff": "manifest"}), clock=clock)
    package_id, raw = stage_new(services, blob_service)

    assert services.intake.process(package_id, raw) == Outcome.QUEUED
    assert signoff_tokens(smtp, package_id) == {}
    drain(services)

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.GRANTED and record.signoff_mode == "manifest"
    created = [e for e in services.audit.read(package_id) if e.action == "grant_created"]
    assert created and all(e.details["signoff_mode"] == "manifest" for e in created)


def test_queue_messages_hold_no_secret(services: Services, blob_service, smtp) -> None:
    package_id, raw = stage_new(services, blob_service)
    services.intake.process(package_id, raw)
    tokens = signoff_tokens(smtp, package_id)
    approve_all(services, smtp, package_id)
    (message,) = list(queue_client(services).peek_messages(max_messages=32))
    assert set(json.loads(message.content)) == {"package_id", "manifest_sha256"}
    assert not any(t in message.content for t in tokens.values())
