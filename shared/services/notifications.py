"""The emails the service sends, as plain text and HTML (DESIGN.md section 7).

Only the recipient's email carries links. System manager emails name grants by id and never
include a link or token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.domain.manifest import Manifest, Method
from shared.domain.records import GrantRecord, PackageRecord, SignoffRecord
from shared.domain.signoff import ROLE_TITLES
from shared.ports import Link, OutgoingEmail
from shared.rendering import _size, render

if TYPE_CHECKING:
    from shared.services.config import PipelineConfig

_NAMESPACE = uuid.UUID("6f1c1f0e-3c1a-4b8e-9a51-0d6a4f1e2b7c")


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _Section:
    heading: str
    lines: list[str]
    code: bool = False


def _render(to: str, subject: str, intro: str, sections: list[_Section], key: str) -> OutgoingEmail:
    text = [intro, ""]
    for section in sections:
        text += [section.heading, "-" * len(section.heading), *section.lines, ""]
    return OutgoingEmail(
        to=to,
        subject=subject,
        text="\n".join(text),
        html=render("email_sections.html", intro=intro, sections=sections),
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


def _encrypted_files(encrypted: dict[str, Any]) -> list[str]:
    return [
        f"{f['encrypted_path']}  {_size(f['encrypted_size'])}  sha256 {f['encrypted_sha256']}"
        for f in encrypted["files"]
    ]


def sftp_address(
    manifest: Manifest, name: str, to: str, host: str, folder: str, encrypted: dict[str, Any]
) -> OutgoingEmail:
    return _render(
        to,
        f"Data egress: {manifest.package_id} is ready on the SFTP server (1 of 2: address)",
        f"Dear {name}, the outputs of work package {manifest.package_id} ({manifest.title}) are ready, encrypted, "
        "on our SFTP server. The connection details come in a separate email; the decryption key comes in a "
        "third email once you tell the system manager that you have the files.",
        [
            _Section("Server", [f"Address: sftp://{host}", f"Folder: {folder}"]),
            _Section("Encrypted files and their SHA-256 (check them after download)", _encrypted_files(encrypted)),
            _Section(
                "Format",
                [
                    "Each file is encrypted with age (https://age-encryption.org), which is free and open source;",
                    "encrypted-manifest.json beside the files lists every file's SHA-256 before and after encryption.",
                ],
            ),
        ],
        key=f"sftp-address:{manifest.package_id}:{to}",
    )


def sftp_connection(package_id: str, name: str, to: str, username: str, manager: str) -> OutgoingEmail:
    return _render(
        to,
        f"Data egress: {package_id} SFTP connection details (2 of 2)",
        f"Dear {name}, these are the connection details for the SFTP server named in the previous email.",
        [
            _Section(
                "Connection",
                [
                    f"Username: {username}",
                    f"Password or SSH key: arranged with the system manager ({manager}); it is never sent by email.",
                ],
            ),
            _Section("Example", [f"sftp {username}@<the server address from the first email>"], code=True),
        ],
        key=f"sftp-connection:{package_id}:{to}",
    )


def physical_notice(manifest: Manifest, name: str, to: str, encrypted: dict[str, Any], manager: str) -> OutgoingEmail:
    return _render(
        to,
        f"Data egress: {manifest.package_id} will come on a physical disk",
        f"Dear {name}, the outputs of work package {manifest.package_id} ({manifest.title}) are being written, "
        f"encrypted, to a disk that the system manager ({manager}) will have delivered to you. When it arrives, "
        "check the files against the list below and tell the system manager: the decryption key comes in a "
        "separate email after that.",
        [_Section("Encrypted files and their SHA-256", _encrypted_files(encrypted))],
        key=f"physical:{manifest.package_id}:{to}",
    )


def key_release(package_id: str, name: str, to: str, identity: str, encrypted: dict[str, Any]) -> OutgoingEmail:
    age_lines = [f'age -d -i key.txt -o "{f["path"]}" "{f["encrypted_path"]}"' for f in encrypted["files"][:20]]
    if len(encrypted["files"]) > 20:
        age_lines.append(f"... and the same for the other {len(encrypted['files']) - 20} files")
    return _render(
        to,
        f"Data egress: {package_id} decryption key",
        f"Dear {name}, this is the key that decrypts work package {package_id}. Keep it private and delete this "
        "email once the files are decrypted.",
        [
            _Section("1. Save the key in a file named key.txt", [identity], code=True),
            _Section(
                "2a. Decrypt with age (https://age-encryption.org), in the folder with the files", age_lines, code=True
            ),
            _Section(
                "2b. Or with the egress command line, which also checks every SHA-256",
                ["egress decrypt <folder with the files> --key-file key.txt"],
                code=True,
            ),
            _Section(
                "3. Check", ["Compare each decrypted file's SHA-256 with plaintext sha256 in encrypted-manifest.json."]
            ),
        ],
        key=f"key:{package_id}:{to}",
    )


def manager_encrypted_ready(manifest: Manifest, location: str, manager: str) -> OutgoingEmail:
    steps = [f"Encrypted package: {location}"]
    if manifest.method.value == "physical":
        steps.append(f"Write it to the disk: egress write-disk {manifest.package_id} /path/to/mounted/disk")
    steps.append(
        f"When the recipients confirm they have the files: POST /api/packages/{manifest.package_id}/key-release"
    )
    return _render(
        manager,
        f"Data egress: {manifest.package_id} encrypted for {manifest.method.value}",
        f"Work package {manifest.package_id} ({manifest.title}, tier {manifest.classification.tier}) was verified "
        "and encrypted; its recipients were told. The key is in Key Vault and is not in this email.",
        [_Section("Next steps", steps)],
        key=f"encrypted-ready:{manifest.package_id}",
    )


def manager_key_released(package_id: str, actor: str, recipients: list[str], manager: str) -> OutgoingEmail:
    return _render(
        manager,
        f"Data egress: {package_id} key released",
        f"The decryption key of work package {package_id} was emailed to {', '.join(recipients)} at the request "
        f"of {actor}. The key is not in this email.",
        [],
        key=f"key-released:{package_id}",
    )


# -- sign-off (DESIGN.md section 3a) -------------------------------------------------------------

METHOD_TEXT = {
    Method.STORAGE_EXPLORER: "Read-only download links (Azure Storage Explorer), each working only from the "
    "addresses listed",
    Method.SFTP: "Encrypted files on the SFTP server; the key is emailed separately after receipt",
    Method.PHYSICAL: "Encrypted files on a physical disk; the key is emailed separately after receipt",
}


def signoff_request(manifest: Manifest, record: SignoffRecord, link: str, config: PipelineConfig) -> OutgoingEmail:
    """The classifier's personal link. The only place a sign-off token ever goes."""
    data = {
        "name": record.name,
        "role": ROLE_TITLES[record.role],
        "package_id": manifest.package_id,
        "title": manifest.title,
        "link": link,
        "link_expires_at": record.token_expires_at,
        "files": manifest.files,
        "total_bytes": manifest.total_bytes,
        "recipients": [f"{r.name} <{r.email}>" for r in manifest.recipients],
        "method_text": METHOD_TEXT[manifest.method],
        "expires_in_hours": manifest.expires_in_hours,
        "manager": config.system_manager_email,
    }
    return OutgoingEmail(
        to=record.email,
        subject=f"Sign-off needed: {manifest.package_id}",
        text=render("email_signoff_request.txt", **data),
        html=render("email_signoff_request.html", **data),
        idempotency_key=str(uuid.uuid5(_NAMESPACE, f"signoff:{manifest.package_id}:{record.role}:{record.token_hash}")),
    )


def _who(records: list[SignoffRecord]) -> list[str]:
    return [f"{ROLE_TITLES[r.role]}: {r.name} <{r.email}>" for r in records]


def manager_signoff_requested(manifest: Manifest, asked: list[SignoffRecord], manager: str) -> OutgoingEmail:
    return _render(
        manager,
        f"Data egress: sign-off requested for {manifest.package_id}",
        f"Work package {manifest.package_id} ({manifest.title}, {len(manifest.files):,} files, "
        f"{_size(manifest.total_bytes)}) passed every check. Each person below was emailed a personal sign-off "
        "link; nothing leaves until all of them approve. The links are not in this email.",
        [
            _Section("Asked to sign off", _who(asked)),
            _Section(
                "If someone did not get their email",
                [
                    f"egress resend-signoff {manifest.package_id}",
                    f"(or POST /api/packages/{manifest.package_id}/signoff/resend)",
                ],
                code=True,
            ),
        ],
        key=f"signoff-requested:{manifest.package_id}:{','.join(r.token_hash for r in asked)}",
    )


def manager_signoff_refused(package: PackageRecord, refusal: SignoffRecord, manager: str) -> OutgoingEmail:
    return _render(
        manager,
        f"Data egress: {package.package_id} was refused at sign-off",
        f"{refusal.name}, the {ROLE_TITLES[refusal.role].lower()}, refused work package {package.package_id} "
        f"({package.title}). Nothing was released and the staged files are kept. The package id cannot be used "
        "again: the outputs must be classified as a new work package.",
        [_Section("Their comment", (refusal.comment or "").splitlines() or [""])],
        key=f"signoff-refused:{package.package_id}:{package.manifest_sha256}",
    )


def manager_signoff_completed(signed: Manifest, signoffs: list[SignoffRecord], manager: str) -> OutgoingEmail:
    lines = [f"{ROLE_TITLES[s.role]}: {s.name} <{s.email}>, tier {s.tier}" for s in signoffs]
    return _render(
        manager,
        f"Data egress: {signed.package_id} signed off at tier {signed.classification.tier}",
        f"Every named person approved work package {signed.package_id} ({signed.title}). The highest tier signed, "
        f"{signed.classification.tier}, applies; the package passed the policy for that tier and is being sealed "
        "and released.",
        [_Section("Sign-offs", lines)],
        key=f"signoff-completed:{signed.package_id}",
    )
