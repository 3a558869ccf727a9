"""Each stage's service on in-memory fakes of the ports: no Azurite, no SMTP, milliseconds each."""

from __future__ import annotations

import json
import re

import pytest

from shared.domain.records import GrantStatus, PackageStatus
from shared.errors import Gone, StorageUnavailable
from shared.services.config import PipelineConfig
from shared.services.intake import Outcome
from tests.support.fakes import (
    FakeAudit,
    FakeBlobStore,
    FakeClock,
    FakeEmail,
    FakeQueue,
    FakeRegistry,
    Faults,
)
from tests.support.packages import INVESTIGATOR, PROVIDER, REFEREE, SAMPLE_FILES, manifest_for
from tests.support.stages import fake_stages

CONFIG = PipelineConfig()
TOKEN_RE = re.compile(r"/api/signoff/([A-Za-z0-9_-]{43})")


class World:
    def __init__(self, email_faults: Faults | None = None, registry_faults: Faults | None = None) -> None:
        self.clock = FakeClock()
        self.staging = FakeBlobStore()
        self.delivery = FakeBlobStore()
        self.registry = FakeRegistry(registry_faults)
        self.audit = FakeAudit(self.clock)
        self.email = FakeEmail(email_faults)
        self.queue = FakeQueue()
        common = {"registry": self.registry, "audit": self.audit, "email": self.email, "clock": self.clock}
        stages = fake_stages(staging=self.staging, delivery=self.delivery, queue=self.queue, config=CONFIG, **common)
        self.intake, self.signoff, self.seal = stages.intake, stages.signoff, stages.seal
        self.deliver, self.end_grant, self.sftp = stages.deliver, stages.end_grant, stages.sftp

    def stage(self, package_id: str = "wp-unit", **overrides: object) -> bytes:
        for path, data in SAMPLE_FILES.items():
            self.staging.write(CONFIG.staging_container, f"{package_id}/files/{path}", data)
        raw = json.dumps(manifest_for(package_id, SAMPLE_FILES, **overrides)).encode()
        self.staging.write(CONFIG.staging_container, f"{package_id}/manifest.json", raw)
        return raw

    def tokens(self, package_id: str) -> dict[str, str]:
        found = {}
        for message in self.email.sent:
            if message.subject == f"Sign-off needed: {package_id}":
                match = TOKEN_RE.search(message.text)
                assert match
                found[message.to] = match.group(1)
        return found

    def release(self) -> None:
        while self.queue.messages:
            package_id, digest = self.queue.messages.pop(0)
            if self.seal.seal(package_id, digest) is not None:
                self.deliver.deliver(package_id)


def test_intake_asks_each_person_once_and_a_second_delivery_sends_nothing() -> None:
    world = World()
    raw = world.stage()
    assert world.intake.process("wp-unit", raw) == Outcome.AWAITING_SIGNOFF
    sent = len(world.email.sent)
    assert set(world.tokens("wp-unit")) == {PROVIDER["email"], INVESTIGATOR["email"], REFEREE["email"]}

    assert world.intake.process("wp-unit", raw) == Outcome.UNCHANGED
    assert len(world.email.sent) == sent and world.queue.messages == []


def test_a_retry_after_an_email_fault_emails_only_those_not_reached() -> None:
    world = World(email_faults=Faults(fail_at=[2]))  # the second person's email fails
    raw = world.stage()
    with pytest.raises(StorageUnavailable):
        world.intake.process("wp-unit", raw)
    assert world.intake.process("wp-unit", raw) == Outcome.UNCHANGED
    per_person = {p["email"]: len(world.email.to(p["email"])) for p in (PROVIDER, INVESTIGATOR, REFEREE)}
    assert per_person == {PROVIDER["email"]: 1, INVESTIGATOR["email"]: 1, REFEREE["email"]: 1}


def test_all_approve_then_one_release_and_one_link_email() -> None:
    world = World()
    world.intake.process("wp-unit", world.stage())
    for token in world.tokens("wp-unit").values():
        world.signoff.decide(token, "approve", 2, None, None)
    assert len(world.queue.messages) == 1
    world.queue.messages.append(world.queue.messages[0])  # delivered twice
    world.release()
    record = world.registry.get_package("wp-unit")
    assert record is not None and record.status == PackageStatus.GRANTED
    assert len(world.registry.list_grants("wp-unit")) == 1
    assert len([m for m in world.email.sent if "ready to download" in m.subject]) == 1


def test_refusal_is_final_and_kills_the_other_links() -> None:
    world = World()
    world.intake.process("wp-unit", world.stage())
    tokens = world.tokens("wp-unit")
    world.signoff.decide(tokens[INVESTIGATOR["email"]], "refuse", None, "not yet", None)
    with pytest.raises(Gone):
        world.signoff.decide(tokens[PROVIDER["email"]], "approve", 2, None, None)
    record = world.registry.get_package("wp-unit")
    assert record is not None and record.status == PackageStatus.REFUSED
    assert world.queue.messages == []
    assert world.audit.actions("wp-unit")[-2:] == ["signoff_refused", "refused"]


def test_a_lost_race_on_the_decision_answers_410_and_records_one_decision() -> None:
    world = World()
    world.intake.process("wp-unit", world.stage())
    token = world.tokens("wp-unit")[PROVIDER["email"]]
    original = world.registry.update_signoff
    raced = []

    def other_tab_first(record):  # type: ignore[no-untyped-def]
        if not raced:  # the same link submitted from another tab lands between our read and our write
            raced.append(True)
            world.signoff.decide(token, "approve", 3, None, None)
        return original(record)

    world.registry.update_signoff = other_tab_first  # type: ignore[method-assign]
    with pytest.raises(Gone, match="just been used"):
        world.signoff.decide(token, "approve", 1, None, None)
    assert world.audit.actions("wp-unit").count("signoff_approved") == 1
    (mine,) = [s for s in world.registry.list_signoffs("wp-unit") if s.email == PROVIDER["email"]]
    assert mine.tier == 3


def test_a_file_changed_after_signoff_is_named_and_nothing_is_delivered() -> None:
    world = World()
    world.intake.process("wp-unit", world.stage())
    world.staging.write(CONFIG.staging_container, "wp-unit/files/README.md", b"changed")
    for token in world.tokens("wp-unit").values():
        world.signoff.decide(token, "approve", 2, None, None)
    world.release()
    record = world.registry.get_package("wp-unit")
    assert record is not None and record.status == PackageStatus.REJECTED
    assert "'README.md' changed after sign-off" in record.rejection_reasons[0]
    assert not world.delivery.container_exists("egress-wp-unit") and world.registry.list_grants("wp-unit") == []


def test_revoke_and_expiry_take_one_path_and_repeat_harmlessly() -> None:
    world = World()
    world.intake.process("wp-unit", world.stage())
    for token in world.tokens("wp-unit").values():
        world.signoff.decide(token, "approve", 2, None, None)
    world.release()
    (grant,) = world.registry.list_grants("wp-unit")
    revoked = world.end_grant.revoke_grant(grant.grant_id, "manager", "leaked")
    again = world.end_grant.revoke_grant(grant.grant_id, "manager", "leaked")
    assert revoked == again and revoked["status"] == "revoked"
    assert world.delivery.stored_policies("egress-wp-unit") == []
    (fresh,) = world.registry.list_grants("wp-unit")
    assert world.end_grant.end(fresh, GrantStatus.EXPIRED, "timer").status == GrantStatus.REVOKED
    assert world.audit.actions("wp-unit").count("grant_revoked") == 1
