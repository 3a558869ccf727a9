"""``egress``: stage classified outputs, watch and revoke grants, download with a link.

Human output by default, ``--json`` for scripts. Exit codes: 0 ok, 2 bad input, 3 not found,
4 conflict, 5 not allowed, 6 storage or service unreachable, 1 anything else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from egress_cli import folder
from egress_cli.backend import ApiBackend, Backend, DirectBackend, audit_problems
from shared.errors import Conflict, EgressError, InvalidRequest, NotFound, StorageUnavailable
from shared.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(
        self,
        as_json: bool,
        settings_file: Path | None,
        api: str | None,
        key: str | None,
        token: str | None = None,
        progress: bool = True,
    ) -> None:
        self.as_json = as_json
        self._settings_file = settings_file
        self.api = api
        self.key = key
        self.token = token
        # Bars only for a person watching a terminal: never in --json, --no-progress or a pipe.
        self.progress = progress and not as_json and sys.stderr.isatty()

    def settings(self) -> Settings:
        path = self._settings_file or (Path("local.settings.json") if Path("local.settings.json").exists() else None)
        if path is None:
            return Settings()
        try:
            values = json.loads(path.read_text())["Values"]
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidRequest(f"{path} is not a readable local.settings.json ({exc})") from exc
        return Settings(**{k: v for k, v in values.items() if k in _ALIASES})

    def backend(self) -> Backend:
        return ApiBackend(self.api, self.key, self.token) if self.api else DirectBackend(self.settings())

    def emit(self, data: Any, human: Callable[[Any], None]) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            human(data)

    def refuse_api(self, command: str, why: str) -> None:
        """Commands with no API route say so, rather than quietly using storage instead."""
        if self.api:
            raise InvalidRequest(
                f"`egress {command}` has no HTTP API route ({why}); drop --api (or unset EGRESS_API) and give "
                "--settings for the storage account"
            )


_ALIASES = {f.alias for f in Settings.model_fields.values() if f.alias}


@contextmanager
def _bar(total: int, label: str, obj: Context) -> Iterator[Callable[[int], None]]:
    if not obj.progress:
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False, show_percent=True) as bar:
        yield bar.update


def _n(count: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``1,000 files``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _text(value: Any, missing: str = "-") -> str:
    return missing if value is None or value == "" else str(value)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        click.echo((indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip())


class EgressGroup(click.Group):
    """Typed errors become a one-line message and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EgressError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc} {getattr(exc, 'filename', '') or ''}".rstrip(), err=True)
            ctx.exit(2)


@click.group(cls=EgressGroup)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="local.settings.json to read (default: ./local.settings.json, else the environment).",
)
@click.option(
    "--api",
    envvar="EGRESS_API",
    help="Use a deployed app's HTTP API (e.g. https://app.azurewebsites.net) instead of storage.",
)
@click.option("--key", envvar="EGRESS_FUNCTION_KEY", help="Function key for --api (or EGRESS_FUNCTION_KEY).")
@click.option(
    "--token",
    envvar="EGRESS_API_TOKEN",
    help="Entra ID access token for --api in Azure (or EGRESS_API_TOKEN); see the README, Deploy.",
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bars (they are drawn only when stderr is a terminal anyway).",
)
@click.pass_context
def main(
    ctx: click.Context,
    as_json: bool,
    settings_file: Path | None,
    api: str | None,
    key: str | None,
    token: str | None,
    no_progress: bool,
) -> None:
    """Data Safe Haven egress: stage classified outputs, manage their download links."""
    ctx.obj = Context(as_json, settings_file, api, key, token, progress=not no_progress)


def _team(
    team_file: Path | None, decisions: tuple[str, ...], recipients: tuple[str, ...], tier: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    team: dict[str, Any] = {}
    if team_file:
        try:
            team = json.loads(team_file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"{team_file} is not a readable JSON file ({exc})") from exc
    chosen = list(team.get("decisions", []))
    for text in decisions:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise InvalidRequest(f"--decision {text!r}: write ROLE:NAME:EMAIL[:TIER]")
        chosen.append(
            {"role": parts[0], "name": parts[1], "email": parts[2], "tier": int(parts[3]) if len(parts) == 4 else tier}
        )
    people = list(team.get("recipients", []))
    for text in recipients:
        parts = text.split(":")
        if len(parts) != 3:
            raise InvalidRequest(f"--recipient {text!r}: write NAME:EMAIL:IP[,IP...]")
        people.append({"name": parts[0], "email": parts[1], "ip_ranges": [p for p in parts[2].split(",") if p]})
    return chosen, people


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--package-id", required=True, help="The work package id (3-40 lowercase letters, digits, hyphens).")
@click.option("--title", required=True)
@click.option("--tier", type=int, required=True, help="The classification tier agreed (the highest decision).")
@click.option(
    "--method",
    type=click.Choice(["storage_explorer", "sftp", "physical"]),
    default="storage_explorer",
    show_default=True,
)
@click.option("--expires-in-hours", type=int, default=48, show_default=True)
@click.option(
    "--team",
    "team_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON file with "decisions" and "recipients".',
)
@click.option("--decision", "decisions", multiple=True, help="ROLE:NAME:EMAIL[:TIER] (repeat per person).")
@click.option("--recipient", "recipients", multiple=True, help="NAME:EMAIL:IP[,IP...] (repeat per recipient).")
@click.option("--decided-at", default=None, help="When the team decided (ISO 8601; default now).")
@click.pass_obj
def manifest(
    obj: Context,
    directory: Path,
    package_id: str,
    title: str,
    tier: int,
    method: str,
    expires_in_hours: int,
    team_file: Path | None,
    decisions: tuple[str, ...],
    recipients: tuple[str, ...],
    decided_at: str | None,
) -> None:
    """Write DIRECTORY/manifest.json for a folder of outputs and check it against policy."""
    from datetime import UTC, datetime

    chosen, people = _team(team_file, decisions, recipients, tier)
    when = decided_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for decision in chosen:
        decision.setdefault("tier", tier)
        decision.setdefault("decided_at", when)
    details = {
        "package_id": package_id,
        "title": title,
        "classification": {"tier": tier, "decisions": chosen},
        "method": method,
        "recipients": people,
        "expires_in_hours": expires_in_hours,
    }
    files = folder.output_files(directory)
    with _bar(sum(p.stat().st_size for p in files), "Hashing", obj) as progress:
        data = folder.build_manifest(directory, details, progress)
    raw = json.dumps(data, indent=2).encode()
    _, reasons = folder.check_manifest(raw, obj.settings().policy())
    if reasons:
        raise InvalidRequest("the manifest would be rejected:\n  - " + "\n  - ".join(reasons))
    (directory / folder.MANIFEST_NAME).write_bytes(raw)
    summary = {
        "manifest": str(directory / folder.MANIFEST_NAME),
        "package_id": package_id,
        "files": len(data["files"]),
        "bytes": sum(f["size"] for f in data["files"]),
    }
    obj.emit(
        summary,
        lambda s: click.echo(
            f"Wrote {s['manifest']}: {_n(s['files'], 'file')}, {_n(s['bytes'], 'byte')}; it passes the policy checks."
        ),
    )


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.pass_obj
def stage(obj: Context, directory: Path) -> None:
    """Check DIRECTORY's files against its manifest, upload them, then the manifest last, to the staging container."""
    from egress_cli.reach import ensure_reachable
    from shared.bootstrap import build_staging_store

    obj.refuse_api("stage", "staging writes to the staging container from inside the Safe Haven")
    raw, _ = folder.read_manifest(directory)
    settings = obj.settings()
    manifest, reasons = folder.check_manifest(raw, settings.policy())
    if manifest is None or reasons:
        raise InvalidRequest("the manifest would be rejected:\n  - " + "\n  - ".join(reasons))
    listed = {f.path for f in manifest.files}
    present = {p.relative_to(directory).as_posix() for p in folder.output_files(directory)}
    if listed != present:
        missing, extra = sorted(listed - present), sorted(present - listed)
        raise InvalidRequest(
            f"the folder and its manifest differ (missing: {missing}, not listed: {extra}); run `egress manifest` again"
        )
    with _bar(manifest.total_bytes, "Checking", obj) as progress:
        changed = folder.changed_since_manifest(
            directory, [(f.path, f.size, f.sha256) for f in manifest.files], progress
        )
    if changed:
        raise InvalidRequest(
            "these files changed after the manifest was made, so the service would reject the package; "
            "run `egress manifest` again:\n  - " + "\n  - ".join(changed)
        )
    store = build_staging_store(settings, interactive=True)
    ensure_reachable(store.endpoint)
    _refuse_a_used_id(settings, manifest.package_id)
    store.ensure_container(settings.staging_container)
    with _bar(manifest.total_bytes, "Uploading", obj) as progress:
        for entry in manifest.files:
            chunks = folder.HashingChunks(directory / entry.path, progress)
            store.write(settings.staging_container, f"{manifest.package_id}/files/{entry.path}", chunks)
            if chunks.size != entry.size or chunks.sha.hexdigest() != entry.sha256:
                raise InvalidRequest(
                    f"{entry.path} changed while it was being uploaded; the manifest was not uploaded, so nothing "
                    "is processed: run `egress manifest` and `egress stage` again"
                )
    store.write(settings.staging_container, f"{manifest.package_id}/manifest.json", raw)
    result = {
        "package_id": manifest.package_id,
        "container": settings.staging_container,
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
    }
    obj.emit(
        result,
        lambda r: click.echo(
            f"Staged {_n(r['files'], 'file')} ({_n(r['bytes'], 'byte')}) and the manifest of {r['package_id']} "
            f"in {r['container']}."
        ),
    )


_USED = {
    "sealed": "was already released",
    "granted": "was already released",
    "closed": "was already released and has closed",
    "refused": "was refused at sign-off",
}


def _refuse_a_used_id(settings: Settings, package_id: str) -> None:
    """A package id is used once: staging a released or refused package again would only be refused later."""
    from shared.bootstrap import package_status_of

    try:
        status = package_status_of(settings, package_id)
    except StorageUnavailable as exc:  # the registry may not be readable from where the team stages
        click.echo(f"note: could not check whether {package_id} was used before ({exc.message})", err=True)
        return
    if status in _USED:
        raise Conflict(
            f"package {package_id} {_USED[status]} (status {status}); a package id is used once: "
            "classify the outputs as a new work package with a new id (egress manifest --package-id NEW ...)"
        )


_WAITING = ("processing", "awaiting_signoff")
_GRANT_HEADERS = ("GRANT", "STATUS", "PACKAGE", "RECIPIENT", "EXPIRES", "FROM", "SFTP LOGIN")


def _status_word(s: dict[str, Any]) -> str:
    """The package's status, and, once every link of a granted package has ended, that they have."""
    word = str(s["status"]).upper()
    grants = s.get("grants") or []
    if s["status"] == "granted" and grants and all(g["status"] != "active" for g in grants):
        ended = {g["status"] for g in grants}
        word += f" (every link {ended.pop() if len(ended) == 1 else 'revoked or expired'})"
    return word


def _print_status(s: dict[str, Any]) -> None:
    if s.get("tier") is not None:
        tier = f"tier {s['tier']}"
    else:
        tier = "tier not yet known" if s["status"] in _WAITING else "no tier"
    method = _text(s.get("method"), "method unknown")
    size = f"{_n(s['file_count'], 'file')}, {_n(s['bytes'], 'byte')}"
    click.echo(f"{s['package_id']}  {_status_word(s)}  {tier}  {method}  {size}")
    click.echo(f"  {_text(s.get('title'), '(no title)')}")
    for reason in s["rejection_reasons"]:
        click.echo(f"  rejected: {reason}")
    if s.get("signoffs"):
        click.echo(f"  sign-off ({s.get('signoff_mode') or 'required'}):")
    for so in s.get("signoffs", []):
        when = f" {so['decided_at']}" if so["decided_at"] else f" (asked {so['requested_at']})"
        tier_text = f" tier {so['tier']}" if so.get("tier") is not None else ""
        comment = f'  "{so["comment"]}"' if so.get("comment") else ""
        click.echo(f"    {so['role']:<29} {so['name']} <{so['email']}>  {so['status']}{tier_text}{when}{comment}")
    if s.get("key_released_at"):
        click.echo(f"  key released {s['key_released_at']} by {_text(s.get('key_released_by'))}")
    if s["grants"]:
        click.echo("  sftp logins:" if s.get("method") == "sftp" else "  links:")
        _print_grants(s["grants"], indent="    ")


def _grant_row(g: dict[str, Any]) -> tuple[str, ...]:
    return (
        g["grant_id"],
        g["status"],
        g["package_id"],
        f"{g['recipient']['name']} <{g['recipient']['email']}>",
        g["expires_at"],
        ", ".join(g["ip_ranges"]),
        _sftp_text(g.get("sftp")),
    )


def _sftp_text(sftp: dict[str, Any] | None) -> str:
    """An sftp grant's login: its username, how it logs in, and whether the user still exists."""
    if not sftp:
        return "-"
    return f"{sftp['username']} ({sftp['login']}, {sftp['state']})"


def _print_grants(found: list[dict[str, Any]], indent: str = "") -> None:
    _table(_GRANT_HEADERS, [_grant_row(g) for g in found], indent)


@main.command()
@click.argument("package_id")
@click.pass_obj
def status(obj: Context, package_id: str) -> None:
    """Show a package: status, files, sign-offs, links, rejection reasons."""
    obj.emit(obj.backend().status(package_id), _print_status)


@main.command("resend-signoff")
@click.argument("package_id")
@click.pass_obj
def resend_signoff(obj: Context, package_id: str) -> None:
    """Send new sign-off links to everyone who has not decided (their old links stop working)."""
    result = obj.backend().resend_signoff(package_id)

    def human(r: dict[str, Any]) -> None:
        if not r["resent_to"]:
            click.echo(f"Nobody is still to decide on {r['package_id']}; nothing was sent.")
        for person in r["resent_to"]:
            click.echo(f"Sent a new link to {person['name']} <{person['email']}> ({person['role']})")
        if r.get("links_expire_at"):
            click.echo(f"The new links work until {r['links_expire_at']}.")

    obj.emit(result, human)


@main.command("key-release")
@click.argument("package_id")
@click.pass_obj
def key_release(obj: Context, package_id: str) -> None:
    """Email the decryption key of a delivered sftp or physical package to its recipients (once they have it)."""
    result = obj.backend().key_release(package_id)

    def human(r: dict[str, Any]) -> None:
        click.echo(
            f"Released the key of {r['package_id']}: {_n(len(r['recipients']), 'recipient')} "
            f"({', '.join(r['recipients'])}) each get it in an email of its own."
        )
        click.echo(f"Recorded at {r['key_released_at']} by {_text(r.get('key_released_by'))}.")

    obj.emit(result, human)


@main.command()
@click.option("--active", is_flag=True, help="Only active grants.")
@click.option("--package", "package_id", default=None)
@click.pass_obj
def grants(obj: Context, active: bool, package_id: str | None) -> None:
    """List grants (one per recipient of a package; each with its links)."""
    found = obj.backend().grants("active" if active else None, package_id)
    obj.emit(found, lambda gs: _print_grants(gs) if gs else click.echo("No grants."))


def _print_revoked(g: dict[str, Any]) -> None:
    click.echo(f"Revoked (reason: {_text(g.get('revoke_reason'), 'none given')}):")
    _print_grants([g], indent="  ")


@main.command()
@click.argument("grant_id", required=False)
@click.option("--package", "package_id", default=None, help="Revoke every active grant of this package.")
@click.option("--reason", default=None)
@click.pass_obj
def revoke(obj: Context, grant_id: str | None, package_id: str | None, reason: str | None) -> None:
    """Revoke a grant (GRANT_ID) or a whole package (--package): the links stop working at once."""
    if bool(grant_id) == bool(package_id):
        raise InvalidRequest("give a GRANT_ID or --package PACKAGE_ID (one of them)")
    backend = obj.backend()
    if grant_id:
        obj.emit(backend.revoke_grant(grant_id, reason), _print_revoked)
        return
    assert package_id
    result = backend.revoke_package(package_id, reason)

    def human(r: dict[str, Any]) -> None:
        if not r["grants"]:
            click.echo(f"{r['package_id']} has no grants; nothing to revoke.")
            return
        click.echo(f"Every grant of {r['package_id']} is now ended:")
        _print_grants(r["grants"], indent="  ")

    obj.emit(result, human)


@main.command()
@click.argument("package_id")
@click.option("--verify", is_flag=True, help="Check the hash chain; exit 4 if it is broken.")
@click.pass_obj
def audit(obj: Context, package_id: str, verify: bool) -> None:
    """Print a package's audit trail."""
    status = obj.backend().status(package_id)
    events = status["audit"]
    problems = audit_problems(package_id, events, status.get("audit_anchor")) if verify else []

    def human(_: Any) -> None:
        for e in events:
            details = ", ".join(f"{k}={_text(v)}" for k, v in e["details"].items())
            click.echo(f"{e['seq']:>3}  {e['at']}  {e['action']:<20} {e['actor']:<28} {details}")
        if verify:
            click.echo("Chain verified: intact." if not problems else "Chain BROKEN:\n  " + "\n  ".join(problems))

    obj.emit({"package_id": package_id, "events": events, "chain_problems": problems if verify else None}, human)
    if problems:
        sys.exit(4)


_QUOTE_IT = (
    "a link pasted without quotes loses everything after its first '&' in the shell: put it in single quotes, "
    "egress download 'https://...' DIRECTORY"
)


def _check_link(sas_url: str) -> None:
    """Bad input (exit 2) for what cannot be a package link; the link itself is never repeated back."""
    parts = urllib.parse.urlsplit(sas_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.strip("/"):
        raise InvalidRequest(
            "that is not a package link: give the whole link from your email (https://...?...&sig=...), in quotes"
        )
    if "?" not in sas_url or not parts.query:
        raise InvalidRequest(
            "the link has no '?...' part, which carries its signature: copy the whole link from the email, in quotes"
        )
    query = urllib.parse.parse_qs(parts.query)
    if "sig" not in query or "sv" not in query:
        raise InvalidRequest(f"the link is cut short (its query has no sig= or no sv=): {_QUOTE_IT}")


@main.command()
@click.argument("sas_url")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--checksums",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="manifest.json, or a checksum list: the email's file list or `sha256sum` output (<sha256>  <path>).",
)
@click.pass_obj
def download(obj: Context, sas_url: str, directory: Path | None, checksums: Path | None) -> None:
    """Download every file a link gives into DIRECTORY, and check each SHA-256 against --checksums."""
    import hashlib

    from shared.bootstrap import open_link
    from shared.domain.manifest import path_problem

    _check_link(sas_url)
    if directory is None:
        raise InvalidRequest(f"give the DIRECTORY to download into (if you did, {_QUOTE_IT})")
    expected = folder.expected_hashes(checksums) if checksums else {}
    link = open_link(sas_url)
    blobs = link.list_blobs()
    results, bad = [], []
    with _bar(sum(b.size for b in blobs), "Downloading", obj) as progress:
        for blob in blobs:
            if path_problem(blob.name):
                raise InvalidRequest(f"refusing to write {blob.name!r}: it is not a safe relative path")
            target = directory / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            with target.open("wb") as out:
                for chunk in link.chunks(blob.name):
                    sha.update(chunk)
                    out.write(chunk)
                    progress(len(chunk))
            digest = sha.hexdigest()
            if checksums is None:
                verdict = "unchecked"
            elif blob.name not in expected:
                verdict = "UNLISTED"
            else:
                verdict = "ok" if expected[blob.name] == digest else "MISMATCH"
            if verdict in ("MISMATCH", "UNLISTED"):
                bad.append(blob.name)
            results.append({"path": blob.name, "size": blob.size, "sha256": digest, "check": verdict})
    missing = sorted(set(expected) - {b.name for b in blobs})
    report = {
        "directory": str(directory),
        "files": results,
        "missing": missing,
        "checked": checksums is not None,
        "ok": not bad and not missing,
    }

    def human(r: dict[str, Any]) -> None:
        for f in r["files"]:
            click.echo(f"{f['check']:<9} {f['path']}  {_n(f['size'], 'byte')}  sha256 {f['sha256']}")
        for m in r["missing"]:
            click.echo(f"MISSING   {m}")
        head = f"{_n(len(r['files']), 'file')} in {r['directory']}: "
        if not r["checked"]:
            click.echo(head + "SHA-256 not checked (give --checksums with manifest.json or the email's file list).")
        elif r["ok"]:
            click.echo(head + "all checks passed (every SHA-256 matches the list).")
        else:
            unlisted = [f["path"] for f in r["files"] if f["check"] == "UNLISTED"]
            note = f" ({_n(len(unlisted), 'file')} not in the checksum list)" if unlisted else ""
            click.echo(head + f"SOME CHECKS FAILED{note}.")

    obj.emit(report, human)
    if bad or missing:
        sys.exit(2)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="key.txt with the AGE-SECRET-KEY-1... line from the key email.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the plain files go (default: DIRECTORY).",
)
@click.pass_obj
def decrypt(obj: Context, directory: Path, key_file: Path, out: Path | None) -> None:
    """Check an encrypted package as it arrived, decrypt it, and check every plain file's SHA-256."""
    from egress_cli.encrypted import decrypt_folder, load_encrypted_manifest

    lines = [line.strip() for line in key_file.read_text().splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
    if not lines:
        raise InvalidRequest(f"{key_file} holds no AGE-SECRET-KEY-1... line")
    total = sum(f["size"] for f in load_encrypted_manifest(directory)["files"])
    with _bar(total, "Decrypting", obj) as progress:
        results = decrypt_folder(directory, out or directory, lines[0], progress)
    obj.emit(
        {"directory": str(out or directory), "files": results, "ok": True},
        lambda r: click.echo(f"Decrypted {_n(len(r['files']), 'file')} into {r['directory']}; every SHA-256 matches."),
    )


def _refuse_missing_target(path: Path, create: bool) -> None:
    """The disk must be there: a mistyped mount point would otherwise fill the machine's own disk.
    (A file at ``path`` is refused by the argument's type.)"""
    if not path.exists() and not create:
        raise InvalidRequest(
            f"{path} does not exist: is the disk mounted there (see `findmnt` or `lsblk`)? "
            "Give the mount point, or add --create to make the folder"
        )


def _on_its_own_disk(path: Path) -> bool:
    """Whether ``path`` lies on another filesystem than the machine's root (a mounted disk)."""
    return path.resolve().stat().st_dev != Path("/").stat().st_dev


@main.command("write-disk")
@click.argument("package_id")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("--create", is_flag=True, help="Create PATH if it does not exist (otherwise a missing PATH is refused).")
@click.pass_obj
def write_disk(obj: Context, package_id: str, path: Path, create: bool) -> None:
    """System manager: write a physical package, encrypted, to the disk mounted at PATH, then verify it."""
    from egress_cli.encrypted import check_arrived, load_encrypted_manifest
    from shared.bootstrap import build_services
    from shared.domain.names import ENCRYPTED_MANIFEST, egress_container
    from shared.services.records_io import load_encrypted_manifest as read_encrypted

    obj.refuse_api("write-disk", "it reads the delivery storage and writes to a disk on this machine")
    _refuse_missing_target(path, create)
    services = build_services(obj.settings())
    record = services.registry.get_package(package_id)
    if record is None:
        raise NotFound(f"there is no package {package_id}")
    if record.method != "physical" or record.status != "granted":
        raise Conflict(
            f"{package_id} is a {_text(record.method, 'not yet known')} package in status {record.status}; "
            "only a delivered physical package goes to disk"
        )
    path.mkdir(parents=True, exist_ok=True)  # only with --create (or already there)
    if not _on_its_own_disk(path) and not obj.as_json:
        click.echo(f"note: {path} is on this machine's own disk, not on a separately mounted one", err=True)
    container, prefix = egress_container(package_id), ""
    encrypted = read_encrypted(services.delivery, container, prefix)
    (path / ENCRYPTED_MANIFEST).write_text(json.dumps(encrypted, indent=2))
    with _bar(sum(f["encrypted_size"] for f in encrypted["files"]), "Writing", obj) as progress:
        for entry in load_encrypted_manifest(path)["files"]:
            target = path / entry["encrypted_path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for chunk in services.delivery.chunks(container, prefix + entry["encrypted_path"]):
                    out.write(chunk)
                    progress(len(chunk))
    os.sync()  # the disk is about to be unplugged and couriered
    problems = check_arrived(path, encrypted)
    if problems:
        raise Conflict("what was written does not read back as sent:\n  - " + "\n  - ".join(problems))
    obj.emit(
        {"package_id": package_id, "path": str(path), "files": len(encrypted["files"]), "verified": True},
        lambda r: click.echo(
            f"Wrote {_n(r['files'], 'encrypted file')} of {r['package_id']} to {r['path']} and read them back: "
            "all match."
        ),
    )


@main.command()
@click.option(
    "--full",
    is_flag=True,
    help="Read every active grant and package instead of the due indexes, and write their index rows "
    "(after an upgrade, or if an index table was lost).",
)
@click.pass_obj
def sweep(obj: Context, full: bool) -> None:
    """System manager: do now what the timer does every few minutes (expiry, closing, sign-off deadlines,
    stuck releases, poison queues, the SFTP firewall)."""
    from shared.bootstrap import build_services

    obj.refuse_api("sweep", "the timer runs it in Azure; run it here against the storage account")
    report = build_services(obj.settings()).sweep.sweep(full=full)
    data = dataclasses.asdict(report)

    def human(r: dict[str, Any]) -> None:
        done = [(what, r[what]) for what in _SWEPT if r[what]]
        click.echo(f"Swept ({'every active record' if full else 'what was due'}; {_n(r['looked_at'], 'record')} read).")
        for what, items in done:
            click.echo(f"  {_SWEPT[what]}: {', '.join(items)}")
        if not done:
            click.echo("  Nothing was due.")

    obj.emit(data, human)
    if report.failed:
        raise StorageUnavailable(f"the sweep could not finish {', '.join(report.failed)}; run it again")


_SWEPT = {
    "expired": "grants expired",
    "closed": "packages closed",
    "keys_destroyed": "keys destroyed",
    "signoff_timed_out": "sign-offs timed out",
    "requeued": "releases queued again",
    "stuck": "stuck packages reported",
    "poisoned": "poisoned messages reported",
    "firewall_fixed": "SFTP firewall ranges put right",
    "sftp_users_removed": "SFTP users without an open grant removed",
    "failed": "not done (try again)",
}
