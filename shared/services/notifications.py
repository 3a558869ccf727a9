"""The emails the service sends, as plain text and HTML (DESIGN.md section 7).

Only the recipient's email carries links. System manager emails name grants by id and never
include a link or token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from html import escape

from shared.domain.manifest import Manifest
from shared.domain.records import GrantRecord
from shared.ports import Link, OutgoingEmail

_NAMESPACE = uuid.UUID("6f1c1f0e-3c1a-4b8e-9a51-0d6a4f1e2b7c")


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n:,} bytes"


@dataclass(frozen=True)
class _Section:
    heading: str
    lines: list[str]
    code: bool = False


def _render(to: str, subject: str, intro: str, sections: list[_Section], key: str) -> OutgoingEmail:
    text = [intro, ""]
    html = [f"<p>{escape(intro)}</p>"]
    for section in sections:
        text += [section.heading, "-" * len(section.heading), *section.lines, ""]
        html.append(f"<h3>{escape(section.heading)}</h3>")
        if section.code:
            html.append("<pre>" + escape("\n".join(section.lines)) + "</pre>")
        else:
            html.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in section.lines) + "</ul>")
    return OutgoingEmail(
        to=to,
        subject=subject,
        text="\n".join(text),
        html="<html><body>" + "".join(html) + "</body></html>",
        idempotency_key=str(uuid.uuid5(_NAMESPACE, key)),
    )


def recipient_links(manifest: Manifest, grant: GrantRecord, links: list[Link], manager: str) -> OutgoingEmail:
    """The recipient's email: their links, how to use them, and what to do if one leaks."""
    files = [f"{f.path}  {_size(f.size)}  sha256 {f.sha256}" for f in manifest.files]
    link_lines = [f"Link for {link.ip_range}: {link.url}" for link in links]
    first = links[0].url if links else "<link>"
    sections = [
        _Section(
            "Package",
            [
                f"Package id: {manifest.package_id}",
                f"Title: {manifest.title}",
                f"Links expire: {_utc(grant.expires_at)}",
                f"Files: {len(manifest.files):,} ({_size(manifest.total_bytes)})",
            ],
        ),
        _Section("Your links (one for each address you declared; each works only from that address)", link_lines),
        _Section(
            "Azure Storage Explorer",
            [
                "1. Open Azure Storage Explorer and click the plug (Connect) icon on the left.",
                "2. Select Resource: choose 'Blob container'.",
                "3. Connection method: choose 'Shared access signature URL (SAS)', then Next.",
                "4. Paste the link for the address you are working from into 'Blob container SAS URL', then Next.",
                "5. On the Summary page check that the permissions are Read and List (nothing more), then Connect.",
                "6. Select all files and click Download.",
            ],
        ),
        _Section("azcopy (command line)", [f'azcopy copy "{first}" ./{manifest.package_id} --recursive'], code=True),
        _Section("Files and their SHA-256 (check them after download)", files),
        _Section(
            "If something goes wrong",
            [
                "An 'AuthorizationFailure' or 'not authorized' error means the request came from an address you did "
                f"not declare. Ask the system manager ({manager}) to change the address ranges.",
                f"If a link leaks or is sent to the wrong person, tell the system manager ({manager}) at once: "
                "they revoke it and it stops working immediately.",
                "The link lets you read and list these files only; it cannot upload or delete.",
            ],
        ),
    ]
    return _render(
        grant.recipient_email,
        f"Data egress: {manifest.package_id} is ready to download",
        f"Dear {grant.recipient_name}, the outputs of work package {manifest.package_id} have been classified "
        "and are ready for you to download. Keep this email private: anyone with the link, working from your "
        "declared addresses, can download the files.",
        sections,
        key=f"link:{grant.grant_id}",
    )


def manager_granted(manifest: Manifest, grants: list[GrantRecord], manager: str) -> OutgoingEmail:
    lines = [
        f"{g.grant_id}: {g.recipient_name} <{g.recipient_email}> "
        f"from {', '.join(g.ip_ranges)}; expires {_utc(g.expires_at)}"
        for g in grants
    ]
    return _render(
        manager,
        f"Data egress: grants issued for {manifest.package_id}",
        f"Work package {manifest.package_id} ({manifest.title}, tier {manifest.classification.tier}, "
        f"{len(manifest.files):,} files, {_size(manifest.total_bytes)}) was verified, sealed and its recipients "
        "were sent their links. The links themselves are not in this email.",
        [
            _Section("Grants", lines),
            _Section(
                "Revoke", [f"POST /api/grants/<grant_id>/revoke or POST /api/packages/{manifest.package_id}/revoke"]
            ),
        ],
        key=f"granted:{manifest.package_id}",
    )


def manager_rejected(package_id: str, reasons: list[str], manager: str, digest: str) -> OutgoingEmail:
    return _render(
        manager,
        f"Data egress: {package_id} was rejected",
        f"The manifest staged for work package {package_id} was rejected. Nothing was sent to anyone and the "
        "staged files are still in the staging container. Correct the points below and stage the manifest again.",
        [_Section("Reasons", reasons)],
        key=f"rejected:{package_id}:{digest}",
    )


def manager_grant_ended(grant: GrantRecord, what: str, manager: str) -> OutgoingEmail:
    detail = [
        f"Grant: {grant.grant_id}",
        f"Package: {grant.package_id}",
        f"Recipient: {grant.recipient_name} <{grant.recipient_email}>",
    ]
    if grant.revoked_by:
        detail.append(f"Revoked by: {grant.revoked_by}")
    if grant.revoke_reason:
        detail.append(f"Reason: {grant.revoke_reason}")
    return _render(
        manager,
        f"Data egress: grant {grant.grant_id} of {grant.package_id} {what}",
        f"The link of {grant.recipient_email} for work package {grant.package_id} {what}; it no longer works.",
        [_Section("Grant", detail)],
        key=f"{what}:{grant.grant_id}",
    )


def manager_closed(package_id: str, manager: str) -> OutgoingEmail:
    return _render(
        manager,
        f"Data egress: {package_id} closed",
        f"Every grant of work package {package_id} has ended and its retention period has passed: the egressed "
        "copy was deleted. The registry record and the audit trail remain.",
        [],
        key=f"closed:{package_id}",
    )
