"""The emails the service sends (DESIGN.md section 7), each from one pair of templates.

Every email is rendered twice from the same data: ``email_<name>.txt`` (extending
``email_base.txt``) is the plain-text part and ``email_<name>.html`` (extending ``base.html``, the
layout of the sign-off pages) the HTML part, so the two carry the same facts.

Only the recipient's email carries download links, and only the classifier's email their sign-off
link. System manager emails name grants by id, give the ``egress`` command to run (with the HTTP
route beside it) and never include a link, token or key.

Untrusted strings (titles, names, addresses, paths, reasons, comments, package ids taken from a
blob name) pass through :func:`shown` before they reach a template: line breaks become a visible
``⏎`` and other control or text-direction characters a visible ``�``, so they cannot start a line
of their own in the text part or in a ``<pre>`` of the HTML part, and ``scheme://`` becomes
``scheme[:]//`` so that a mail client does not make a link of it. In the HTML part autoescaping
keeps them from making an element. Subjects are one line.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain import names
from shared.domain.manifest import FileEntry, Manifest, Method, is_valid_package_id
from shared.domain.records import GrantRecord, PackageRecord, SignoffRecord
from shared.domain.signoff import ROLE_TITLES
from shared.ports import Link, OutgoingEmail
from shared.rendering import render

if TYPE_CHECKING:
    from shared.services.config import PipelineConfig

_NAMESPACE = uuid.UUID("6f1c1f0e-3c1a-4b8e-9a51-0d6a4f1e2b7c")

NEWLINE_MARK = "\u23ce"  # ⏎ where an untrusted string had a line break
INVALID_MARK = "\ufffd"  # � where it had another control or a text-direction character
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?=//)")

TABLE_ROWS = 200  # files listed in the table; the SHA-256 list always has every file
AGE_COMMANDS = 20  # age commands written out in the key email; `egress decrypt` does any number


def one_line(value: str) -> str:
    """``value`` on one line: line breaks become `` ⏎ ``, tabs spaces, other controls ``�``."""
    value = _LINE_BREAKS.sub(f" {NEWLINE_MARK} ", value).replace("\t", " ")
    return _INVISIBLE.sub(INVALID_MARK, value)


def shown(value: str) -> str:
    """An untrusted string as an email shows it: one line, and no URL a mail client would link."""
    return _SCHEME.sub(r"\1[:]", one_line(value))


def _email(template: str, to: str, subject: str, key: str, /, **data: Any) -> OutgoingEmail:
    subject = shown(subject)
    return OutgoingEmail(
        to=to,
        subject=subject,
        text=render(f"email_{template}.txt", subject=subject, **data),
        html=render(f"email_{template}.html", subject=subject, **data),
        idempotency_key=str(uuid.uuid5(_NAMESPACE, key)),
    )


def _arg(value: str) -> str:
    """A command-line argument as shown, quoted for a POSIX shell where it needs it."""
    return shlex.quote(shown(value))


def _files(entries: Sequence[FileEntry]) -> dict[str, Any]:
    """The file table (first ``TABLE_ROWS``) and the ``sha256sum`` list (every file) of a package."""
    rows = [{"path": shown(f.path), "size": f.size} for f in entries]
    return {
        "table": rows[:TABLE_ROWS],
        "more": max(0, len(rows) - TABLE_ROWS),
        "file_count": len(rows),
        "total_bytes": sum(f.size for f in entries),
        "checksums": [f"{f.sha256}  {row['path']}" for f, row in zip(entries, rows, strict=True)],
    }


def _encrypted_files(encrypted: dict[str, Any]) -> dict[str, Any]:
    """The same for the encrypted copies (``<path>.age``) listed in encrypted-manifest.json."""
    entries = [
        FileEntry(path=f["encrypted_path"], size=f["encrypted_size"], sha256=f["encrypted_sha256"])
        for f in encrypted["files"]
    ]
    return _files(entries)


def _plain_files(encrypted: dict[str, Any]) -> dict[str, Any]:
    """The decrypted files as encrypted-manifest.json lists them (their SHA-256 before encryption)."""
    entries = [FileEntry(path=f["path"], size=f["size"], sha256=f["sha256"]) for f in encrypted["files"]]
    return _files(entries)


def _lines(values: Iterable[str]) -> list[str]:
    return [shown(v) for v in values]


def recipient_links(manifest: Manifest, grant: GrantRecord, links: list[Link], manager: str) -> OutgoingEmail:
    """The recipient's email: their links, how to use them, and what to do if one leaks."""
    package_id = shown(manifest.package_id)
    shown_links = [{"ip_range": shown(link.ip_range), "url": link.url} for link in links]
    first = shown_links[0] if shown_links else {"ip_range": "your address", "url": "<your link>"}
    return _email(
        "recipient_links",
        grant.recipient_email,
        f"Data egress: {manifest.package_id} is ready to download",
        f"link:{grant.grant_id}",
        name=shown(grant.recipient_name),
        package_id=package_id,
        title=shown(manifest.title),
        expires_at=grant.expires_at,
        links=shown_links,
        azcopy_url=first["url"],
        azcopy_ip=first["ip_range"],
        container=shown(names.egress_container(manifest.package_id)),
        manager=shown(manager),
        **_files(manifest.files),
    )


def _grant_actions(package_id: str) -> dict[str, str]:
    return {
        "status_cmd": f"egress status {_arg(package_id)}",
        "grants_cmd": f"egress grants --package {_arg(package_id)}",
        "revoke_all_cmd": f'egress revoke --package {_arg(package_id)} --reason "<why>"',
        "revoke_all_api": f"POST /api/packages/{shown(package_id)}/revoke",
    }


def manager_granted(manifest: Manifest, grants: list[GrantRecord], manager: str) -> OutgoingEmail:
    return _email(
        "manager_granted",
        manager,
        f"Data egress: grants issued for {manifest.package_id}",
        f"granted:{manifest.package_id}",
        package_id=shown(manifest.package_id),
        title=shown(manifest.title),
        tier=manifest.classification.tier,
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        grants=[
            {
                "grant_id": shown(g.grant_id),
                "name": shown(g.recipient_name),
                "email": shown(g.recipient_email),
                "ip_ranges": _lines(g.ip_ranges),
                "expires_at": g.expires_at,
                "revoke_cmd": f'egress revoke {_arg(g.grant_id)} --reason "<why>"',
                "revoke_api": f"POST /api/grants/{shown(g.grant_id)}/revoke",
            }
            for g in grants
        ],
        **_grant_actions(manifest.package_id),
    )


REASONS_SHOWN = 50  # reasons written out in the rejection email; the audit trail holds every one
REASON_CHARS = 2_000  # one reason as the email shows it (a rejected manifest may hold a path of any length)

# Reasons of one form, told as a count past the first REASONS_SHOWN: (is one of them, one, several).
_REASON_KINDS: tuple[tuple[Callable[[str], bool], str, str], ...] = (
    (
        lambda r: r.startswith("file ") and r.endswith(" is listed in the manifest but was not staged"),
        "more file is listed in the manifest but was not staged",
        "more files are listed in the manifest but were not staged",
    ),
    (
        lambda r: r.startswith("file ") and r.endswith(" was staged but is not in the manifest"),
        "more file was staged but is not in the manifest",
        "more files were staged but are not in the manifest",
    ),
    (
        lambda r: r.startswith("file ") and r.endswith(" (truncated or replaced)"),
        "more file has a size other than the manifest says (truncated or replaced)",
        "more files have a size other than the manifest says (truncated or replaced)",
    ),
    (
        lambda r: r.startswith("file ") and " has SHA-256 " in r and r.endswith(" as the manifest says"),
        "more file has a SHA-256 other than the manifest says",
        "more files have a SHA-256 other than the manifest says",
    ),
    (
        lambda r: r.startswith("files[") and r.endswith(" is listed twice"),
        "more path is listed twice in the manifest",
        "more paths are listed twice in the manifest",
    ),
    (
        lambda r: r.startswith("files[") and ".path " in r,
        "more file path in the manifest is not allowed",
        "more file paths in the manifest are not allowed",
    ),
)
_OTHER_REASONS = ("more reason of another kind", "more reasons of other kinds")


def _summarised(reasons: Sequence[str]) -> list[str]:
    """The reasons past the first ``REASONS_SHOWN`` as counts by kind, in the order the kinds first appear."""
    counts: dict[tuple[str, str], int] = {}
    for reason in reasons:
        kind = next(((one, many) for test, one, many in _REASON_KINDS if test(reason)), _OTHER_REASONS)
        counts[kind] = counts.get(kind, 0) + 1
    return [f"{n:,} {one if n == 1 else many}" for (one, many), n in counts.items()]


def _reason_shown(reason: str) -> str:
    if len(reason) <= REASON_CHARS:
        return shown(reason)
    return f"{shown(reason[:REASON_CHARS])}... ({len(reason) - REASON_CHARS:,} more characters)"


def _reasons_digest(reasons: Sequence[str]) -> str:
    """SHA-256 of the reasons joined by line feeds, without building the joined text."""
    digest = hashlib.sha256()
    for i, reason in enumerate(reasons):
        digest.update(b"\n" if i else b"")
        digest.update(reason.encode())
    return digest.hexdigest()


def manager_rejected(package_id: str, reasons: list[str], manager: str, digest: str) -> OutgoingEmail:
    """Every reason up to ``REASONS_SHOWN``; past that, the rest counted by kind and the audit command.

    Bounded whatever the manifest: 10,000 unstaged files of 1,024-character paths would otherwise
    make an email of over 20 MB (ACS takes at most 10 MB).
    """
    valid = is_valid_package_id(package_id)
    return _email(
        "manager_rejected",
        manager,
        f"Data egress: {package_id} was rejected",
        # The reasons are part of the event: the same manifest rejected again for other reasons (files
        # fixed or broken anew) is told again; for the same reasons, once (the outbox keys on this).
        f"rejected:{package_id}:{digest}:{_reasons_digest(reasons)[:16]}",
        package_id=shown(package_id),
        reasons=[_reason_shown(r) for r in reasons[:REASONS_SHOWN]],
        reason_count=len(reasons),
        more_reasons=_summarised(reasons[REASONS_SHOWN:]),
        status_cmd=f"egress status {_arg(package_id)}" if valid else None,
        audit_cmd=f"egress audit {_arg(package_id)}" if valid else None,
    )


def manager_grant_ended(grant: GrantRecord, what: str, manager: str) -> OutgoingEmail:
    return _email(
        "manager_grant_ended",
        manager,
        f"Data egress: grant {grant.grant_id} of {grant.package_id} {what}",
        f"{what}:{grant.grant_id}",
        what=shown(what),
        grant_id=shown(grant.grant_id),
        package_id=shown(grant.package_id),
        name=shown(grant.recipient_name),
        email=shown(grant.recipient_email),
        ip_ranges=_lines(grant.ip_ranges),
        expires_at=grant.expires_at,
        revoked_by=shown(grant.revoked_by) if grant.revoked_by else None,
        reason=shown(grant.revoke_reason) if grant.revoke_reason else None,
        **_grant_actions(grant.package_id),
    )


def manager_closed(package_id: str, manager: str) -> OutgoingEmail:
    return _email(
        "manager_closed",
        manager,
        f"Data egress: {package_id} closed",
        f"closed:{package_id}",
        package_id=shown(package_id),
        status_cmd=f"egress status {_arg(package_id)}",
        audit_cmd=f"egress audit {_arg(package_id)} --verify",
    )


def manager_stuck(
    package_id: str, status: str, since: datetime, limit: timedelta, what: str, manager: str
) -> OutgoingEmail:
    """A package that has not moved for longer than it should: once per package and state."""
    return _email(
        "manager_stuck",
        manager,
        f"Data egress: {package_id} is stuck ({status})",
        f"stuck:{package_id}:{status}:{since.isoformat()}",
        package_id=shown(package_id),
        status=status,
        since=since.strftime("%Y-%m-%d %H:%M UTC"),
        limit=f"{limit.total_seconds() / 60:g} minutes",
        what=what,
        status_cmd=f"egress status {_arg(package_id)}",
        audit_cmd=f"egress audit {_arg(package_id)} --verify",
    )


def manager_poisoned(queue: str, message_id: str, what: str, package_id: str | None, manager: str) -> OutgoingEmail:
    """A message the host gave up on: once per poisoned message."""
    return _email(
        "manager_poisoned",
        manager,
        f"Data egress: the host gave up on {shown(what)}",
        f"poisoned:{queue}:{message_id}",
        queue=queue,
        message_id=message_id,
        what=shown(what),
        status_cmd=f"egress status {_arg(package_id)}" if package_id else None,
    )


# -- sftp and physical (encrypted) --------------------------------------------------------------


def sftp_address(
    manifest: Manifest, grant: GrantRecord, host: str, port: int, encrypted: dict[str, Any]
) -> OutgoingEmail:
    """Email 1 of 3: where and as whom to connect, how with common clients, and what will arrive."""
    login = grant.sftp_login or ""
    port_flag = "" if port == 22 else f"-P {port} "
    return _email(
        "sftp_address",
        grant.recipient_email,
        f"Data egress: {manifest.package_id} is ready on the SFTP server (1 of 3: address)",
        f"sftp-address:{grant.grant_id}",
        name=shown(grant.recipient_name),
        package_id=shown(manifest.package_id),
        title=shown(manifest.title),
        host=shown(host),
        port=port,
        username=shown(login),
        key_login=grant.sftp_key_login,
        ip_ranges=[shown(r) for r in grant.ip_ranges],
        expires_at=grant.expires_at,
        openssh=f"sftp {port_flag}{_arg(login)}@{_arg(host)}",
        **_encrypted_files(encrypted),
    )


def sftp_password(package_id: str, grant: GrantRecord, password: str, manager: str) -> OutgoingEmail:
    """Email 2 of 3: the password alone. Each new password is a new email (its generation)."""
    return _email(
        "sftp_password",
        grant.recipient_email,
        f"Data egress: {package_id} SFTP password (2 of 3)",
        f"sftp-password:{grant.grant_id}:{grant.password_generation}",
        name=shown(grant.recipient_name),
        package_id=shown(package_id),
        password=password,
        expires_at=grant.expires_at,
        manager=shown(manager),
    )


def sftp_key_set(package_id: str, grant: GrantRecord, key: str, manager: str) -> OutgoingEmail:
    """Email 2 of 3 when the recipient gave an SSH public key: no password, their key is set."""
    parts = key.split()
    return _email(
        "sftp_key_set",
        grant.recipient_email,
        f"Data egress: {package_id} SFTP login with your SSH key (2 of 3)",
        f"sftp-key:{grant.grant_id}",
        name=shown(grant.recipient_name),
        package_id=shown(package_id),
        key_type=shown(parts[0]) if parts else "",
        key_end=shown(parts[1][-12:]) if len(parts) > 1 else "",
        expires_at=grant.expires_at,
        manager=shown(manager),
    )


def physical_notice(manifest: Manifest, name: str, to: str, encrypted: dict[str, Any], manager: str) -> OutgoingEmail:
    return _email(
        "physical_notice",
        to,
        f"Data egress: {manifest.package_id} will come on a physical disk",
        f"physical:{manifest.package_id}:{to}",
        name=shown(name),
        package_id=shown(manifest.package_id),
        title=shown(manifest.title),
        manager=shown(manager),
        **_encrypted_files(encrypted),
    )


def key_release(
    package_id: str,
    name: str,
    to: str,
    identity: str,
    encrypted: dict[str, Any],
    *,
    method: str | None = None,
) -> OutgoingEmail:
    """The decryption key. ``method="sftp"`` numbers it "3 of 3", after the address and connection emails."""
    files = encrypted["files"]
    age = [f"age -d -i key.txt -o {_arg(f['path'])} {_arg(f['encrypted_path'])}" for f in files[:AGE_COMMANDS]]
    part = " (3 of 3)" if method == Method.SFTP else ""
    return _email(
        "key_release",
        to,
        f"Data egress: {package_id} decryption key{part}",
        f"key:{package_id}:{to}",
        name=shown(name),
        package_id=shown(package_id),
        identity=identity,
        age_commands=age,
        age_more=max(0, len(files) - AGE_COMMANDS),
        sftp=method == Method.SFTP,
        **_plain_files(encrypted),
    )


_ENCRYPTED_FOR = {
    Method.SFTP: "the SFTP server",
    Method.PHYSICAL: "a physical disk",
    Method.STORAGE_EXPLORER: "download",
}


def manager_encrypted_ready(manifest: Manifest, location: str, manager: str) -> OutgoingEmail:
    package_id = manifest.package_id
    return _email(
        "manager_encrypted_ready",
        manager,
        f"Data egress: {package_id} encrypted for {manifest.method.value}",
        f"encrypted-ready:{package_id}",
        package_id=shown(package_id),
        title=shown(manifest.title),
        tier=manifest.classification.tier,
        method=manifest.method.value,
        method_text=_ENCRYPTED_FOR[manifest.method],
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        recipients=[f"{shown(r.name)} <{shown(r.email)}>" for r in manifest.recipients],
        location=shown(location),
        write_disk_cmd=f"egress write-disk {_arg(package_id)} /path/to/mounted/disk",
        key_release_cmd=f"egress key-release {_arg(package_id)}",
        key_release_api=f"POST /api/packages/{shown(package_id)}/key-release",
        status_cmd=f"egress status {_arg(package_id)}",
    )


def manager_key_released(package_id: str, actor: str, recipients: list[str], manager: str) -> OutgoingEmail:
    return _email(
        "manager_key_released",
        manager,
        f"Data egress: {package_id} key released",
        f"key-released:{package_id}",
        package_id=shown(package_id),
        actor=shown(actor),
        recipients=_lines(recipients),
        status_cmd=f"egress status {_arg(package_id)}",
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
    return _email(
        "signoff_request",
        record.email,
        f"Sign-off needed: {manifest.package_id}",
        f"signoff:{manifest.package_id}:{record.role}:{record.token_hash}",
        name=shown(record.name),
        role=ROLE_TITLES[record.role],
        package_id=shown(manifest.package_id),
        title=shown(manifest.title),
        link=link,
        link_expires_at=record.token_expires_at,
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        recipients=[f"{shown(r.name)} <{shown(r.email)}>" for r in manifest.recipients],
        method_text=METHOD_TEXT[manifest.method],
        expires_in_hours=manifest.expires_in_hours,
        manager=shown(config.system_manager_email),
    )


def _who(records: Sequence[SignoffRecord]) -> list[dict[str, Any]]:
    return [
        {"role": ROLE_TITLES[r.role], "name": shown(r.name), "email": shown(r.email), "tier": r.tier} for r in records
    ]


def manager_signoff_requested(manifest: Manifest, asked: list[SignoffRecord], manager: str) -> OutgoingEmail:
    package_id = manifest.package_id
    return _email(
        "manager_signoff_requested",
        manager,
        f"Data egress: sign-off requested for {package_id}",
        f"signoff-requested:{package_id}:{','.join(r.token_hash for r in asked)}",
        package_id=shown(package_id),
        title=shown(manifest.title),
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        asked=_who(asked),
        link_expires_at=min((r.token_expires_at for r in asked), default=None),
        resend_cmd=f"egress resend-signoff {_arg(package_id)}",
        resend_api=f"POST /api/packages/{shown(package_id)}/signoff/resend",
        status_cmd=f"egress status {_arg(package_id)}",
    )


def manager_signoff_refused(package: PackageRecord, refusal: SignoffRecord, manager: str) -> OutgoingEmail:
    return _email(
        "manager_signoff_refused",
        manager,
        f"Data egress: {package.package_id} was refused at sign-off",
        f"signoff-refused:{package.package_id}:{package.manifest_sha256}",
        package_id=shown(package.package_id),
        title=shown(package.title),
        who=_who([refusal])[0],
        comment=_lines((refusal.comment or "").splitlines()) or ["(no comment)"],
        decided_at=refusal.decided_at,
        status_cmd=f"egress status {_arg(package.package_id)}",
    )


def manager_signoff_completed(signed: Manifest, signoffs: list[SignoffRecord], manager: str) -> OutgoingEmail:
    return _email(
        "manager_signoff_completed",
        manager,
        f"Data egress: {signed.package_id} signed off at tier {signed.classification.tier}",
        f"signoff-completed:{signed.package_id}",
        package_id=shown(signed.package_id),
        title=shown(signed.title),
        tier=signed.classification.tier,
        signoffs=_who(signoffs),
        status_cmd=f"egress status {_arg(signed.package_id)}",
    )
