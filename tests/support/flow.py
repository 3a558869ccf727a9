"""Driving a package through the pipeline as the real parts do: intake, sign-off through the links
in the emails the SMTP sink caught, and the release queue on Azurite drained like the queue trigger.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.adapters.age_crypto import AgeCrypto
from shared.adapters.email import SmtpEmailSender
from shared.adapters.package_keys import LocalPackageKeys
from shared.adapters.sas import SasLinkMinter
from shared.adapters.secrets import LocalSigningKeys
from shared.bootstrap import Services
from shared.domain.records import PackageStatus
from shared.ports import Clock
from shared.services.deliver import DeliverService
from shared.services.intake import Outcome
from shared.services.seal import SealService
from tests.support.servers import SmtpSink, body_text

TOKEN_RE = re.compile(r"/api/signoff/([A-Za-z0-9_-]{43})")


def signoff_tokens(smtp: SmtpSink, package_id: str) -> dict[str, str]:
    """{email: token} from the newest "Sign-off needed" email each person received."""
    found: dict[str, str] = {}
    with smtp.lock:
        messages = list(smtp.messages)
    for message in messages:
        if message["Subject"] == f"Sign-off needed: {package_id}":
            match = TOKEN_RE.search(body_text(message))
            assert match, "a sign-off email without its link"
            found[str(message["To"])] = match.group(1)
    return found


def approve_all(services: Services, smtp: SmtpSink, package_id: str, tiers: dict[str, int] | None = None) -> None:
    """Each named person approves through their own link, with their tier in the manifest unless told."""
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.AWAITING_SIGNOFF, record
    page_tiers = {s.email: s for s in services.registry.list_signoffs(package_id)}
    manifest_tiers = _manifest_tiers(services, package_id)
    for email, token in signoff_tokens(smtp, package_id).items():
        if email not in page_tiers:
            continue
        tier = (tiers or {}).get(email, manifest_tiers[email])
        services.signoff.decide(token, "approve", tier, None, None)


def _manifest_tiers(services: Services, package_id: str) -> dict[str, int]:
    from shared.services.records_io import load_manifest

    manifest = load_manifest(services.staging, services.settings.records_container, package_id)
    return {d.email: d.tier for d in manifest.classification.decisions}


def queue_client(services: Services) -> QueueClient:
    return QueueClient.from_connection_string(
        services.settings.egress_storage,
        services.settings.release_queue,
        message_decode_policy=TextBase64DecodePolicy(),
    )


def drain(services: Services) -> list[dict[str, Any]]:
    """Run every queued release as the queue trigger would (seal, then deliver); return the messages."""
    client = queue_client(services)
    handled = []
    while True:
        batch = list(client.receive_messages(max_messages=16, visibility_timeout=30))
        if not batch:
            return handled
        for message in batch:
            body = json.loads(message.content)
            if services.seal.seal(body["package_id"], body["manifest_sha256"]) is not None:
                services.deliver.deliver(body["package_id"])
            client.delete_message(message)
            handled.append(body)


def egress(services: Services, smtp: SmtpSink, package_id: str, raw: bytes, *, clear_signoff_mail: bool = True) -> str:
    """Stage-to-release as the people and the host would do it: intake, everyone approves, release.

    Returns the package's final status (or the intake outcome when intake stopped it). With
    ``clear_signoff_mail`` the sign-off emails are dropped from the sink once used, so a test can
    count what release sent.
    """
    outcome = services.intake.process(package_id, raw)
    if outcome == Outcome.AWAITING_SIGNOFF:
        approve_all(services, smtp, package_id)
        if clear_signoff_mail:
            smtp.clear()
    elif outcome not in (Outcome.QUEUED,):
        return outcome.value
    drain(services)
    record = services.registry.get_package(package_id)
    assert record is not None
    return record.status.value


def release(services: Services, package_id: str) -> str:
    """What the queue trigger runs for ``package_id`` (seal, then deliver), called directly: the
    host's retry of a release message whose handler raised. Returns the package's status."""
    record = services.registry.get_package(package_id)
    assert record is not None
    if services.seal.seal(package_id, record.manifest_sha256) is not None:
        services.deliver.deliver(package_id)
    final = services.registry.get_package(package_id)
    assert final is not None
    return final.status.value


def _email(services: Services) -> SmtpEmailSender:
    s = services.settings
    return SmtpEmailSender(s.smtp_host, s.smtp_port, s.email_sender)


def with_seal(services: Services, clock: Clock, **ports: Any) -> Services:
    """``services`` whose sealing uses ``ports`` (a flaky store, a failing cipher) in place of the real ones."""
    real: dict[str, Any] = {
        "staging": services.staging,
        "delivery": services.delivery,
        "sftp_store": services.sftp_store,
        "keys": LocalPackageKeys(Path(services.settings.local_secrets_dir)),
        "crypto": AgeCrypto(),
        "registry": services.registry,
        "audit": services.audit,
        "email": _email(services),
        "clock": clock,
        "config": services.config,
    }
    return dataclasses.replace(services, seal=SealService(**(real | ports)))


def with_deliver(services: Services, clock: Clock, signing_key: str, **ports: Any) -> Services:
    """``services`` whose delivery uses ``ports`` in place of the real ones; links signed with ``signing_key``."""
    links = SasLinkMinter(services.delivery, LocalSigningKeys(signing_key), allow_http=services.settings.sas_allow_http)
    real: dict[str, Any] = {
        "records": services.staging,
        "staging": services.staging,
        "delivery": services.delivery,
        "registry": services.registry,
        "audit": services.audit,
        "links": links,
        "sftp": services.sftp,
        "sftp_store": services.sftp_store,
        "email": _email(services),
        "clock": clock,
        "config": services.config,
    }
    return dataclasses.replace(services, deliver=DeliverService(**(real | ports)))
