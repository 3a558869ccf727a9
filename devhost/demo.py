"""Plays a whole egress on the running local stack (``make run``), as its users would.

    python -m devhost.demo        (make demo)

classification team stages outputs -> each named classifier gets a sign-off email, opens their
link and approves with their own tier -> the recipient's email arrives -> the link downloads every
file and their SHA-256 match -> an upload with the same link is refused -> the system manager
revokes -> the same link is refused -> the audit trail prints and its chain verifies. Then the same
outputs leave by SFTP: signed off -> the recipient gets "1 of 3" (server, username, how to connect)
and "2 of 3" (the password) -> logs in with OpenSSH's sftp and downloads the encrypted files -> the
system manager releases the key ("3 of 3") -> `egress decrypt` checks every SHA-256 -> the manager
revokes -> the same login is refused.
Ends with PASS or FAIL and exits non-zero on failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from devhost.settings_file import ROOT
from devhost.sftp_client import sftp_batch
from devhost.stack import function_key

SAMPLE = ROOT / "samples" / "wp-demo"
# Where `make run` serves them (the environment may point elsewhere, as the tests do).
API = os.environ.get("EGRESS_DEMO_API", "http://127.0.0.1:7071")
MAIL = os.environ.get("EGRESS_DEMO_MAIL", "http://127.0.0.1:1080")
RECIPIENT = "ada@provider.example"


class DemoFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def egress(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; the function key goes by environment, never on the screen.

    The command is echoed quoted, so it can be pasted into a shell; no progress bars (the output is
    captured and printed after each command, where a bar would only leave its label behind).
    """
    settings = ROOT / (
        "local.settings.json" if (ROOT / "local.settings.json").exists() else "local.settings.example.json"
    )
    command = [str(Path(sys.executable).with_name("egress")), "--settings", str(settings), "--no-progress", *args]
    print("$ " + shlex.join(["egress", *args]), flush=True)
    env = {**os.environ, **({"EGRESS_FUNCTION_KEY": key} if key else {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if result.stdout:
        print(result.stdout.rstrip(), flush=True)
    if result.stderr.strip():
        print(result.stderr.rstrip(), file=sys.stderr, flush=True)
    return result


def must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise DemoFailed(f"{what} failed (exit {result.returncode})")
    return result.stdout


def http_status(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0  # nothing listens there


def wait_for_email(to: str, subject: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{MAIL}/api/email", timeout=10) as response:
            for mail in json.loads(response.read()):
                addresses = [a.get("address") for a in mail.get("to", [])]
                if to in addresses and subject in mail.get("subject", ""):
                    return dict(mail)
        time.sleep(0.5)
    raise DemoFailed(f"no email for {to} with {subject!r} within {timeout:.0f} s")


def sign_off(package_id: str) -> None:
    """Each named classifier opens the link in their email, reads the page and approves with their tier."""
    team = json.loads((SAMPLE / "team.json").read_text())
    for person in team["decisions"]:
        mail = wait_for_email(person["email"], f"Sign-off needed: {package_id}")
        match = re.search(r"(http\S+/api/signoff/[A-Za-z0-9_-]+)", mail.get("text", ""))
        if not match:
            raise DemoFailed(f"the sign-off email to {person['email']} carries no link")
        link = match.group(1)
        print(f"{person['name']} ({person['role']}) got a personal link (open it at {MAIL} to see the page)")
        if http_status(link) != 200:
            raise DemoFailed(f"the sign-off page of {person['name']} did not open")
        body = json.dumps({"decision": "approve", "tier": 2}).encode()
        answer = http_status(link, "POST", body, {"Content-Type": "application/json"})
        print(f"  approves at tier 2: HTTP {answer}", flush=True)
        if answer != 200:
            raise DemoFailed(f"{person['name']}'s approval answered {answer}, not 200")


def team_member(index: int) -> str:
    return str(json.loads((SAMPLE / "team.json").read_text())["decisions"][index]["email"])


def fact(text: str, label: str) -> str:
    """A ``Label: value`` line of an email's text part."""
    match = re.search(rf"(?m)^{re.escape(label)}:\s+(\S+)\s*$", text)
    if not match:
        raise DemoFailed(f"the email has no {label!r} line")
    return match.group(1)


def stage_package(outputs: Path, package_id: str, method: str) -> None:
    must(
        egress(
            "manifest",
            str(outputs),
            "--package-id",
            package_id,
            "--title",
            "Regression results for the cohort paper",
            "--tier",
            "2",
            "--method",
            method,
            "--expires-in-hours",
            "24",
            "--team",
            str(SAMPLE / "team.json"),
        ),
        "egress manifest",
    )
    must(egress("stage", str(outputs)), "egress stage")


def play_sftp(key: str, work: Path) -> None:
    package_id = f"demo-sftp-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    outputs = work / "sftp-outputs"
    shutil.copytree(SAMPLE / "outputs", outputs)

    step(f"Classification team: the same outputs as {package_id}, by SFTP (encrypted), signed off")
    stage_package(outputs, package_id, "sftp")
    sign_off(package_id)

    step("Recipient: email 1 of 3 says where and how to connect; email 2 of 3 holds the password alone")
    address = wait_for_email(RECIPIENT, f"{package_id} is ready on the SFTP server (1 of 3")
    secret = wait_for_email(RECIPIENT, f"{package_id} SFTP password (2 of 3)")
    text = address.get("text", "")
    host, port, username = fact(text, "Server"), int(fact(text, "Port")), fact(text, "Username")
    password = re.search(r"Password\r?\n-+\r?\n(\S+)", secret.get("text", ""))
    if not password:
        raise DemoFailed("email 2 of 3 has no password")
    print(f"Server {host}, port {port}, username {username}; the password is in email 2 of 3 ({MAIL})")

    step(f"Recipient: logs in with OpenSSH's sftp as {username} and downloads everything")
    arrived = work / "sftp-arrived"
    arrived.mkdir()
    print(f"$ sftp -P {port} {username}@{host}    (password from email 2 of 3)\nsftp> get -r .", flush=True)
    got = sftp_batch(host, port, username, ["get -r ."], cwd=arrived, password=password.group(1))
    if got.returncode != 0:
        raise DemoFailed(f"the SFTP login or download failed (exit {got.returncode}): {got.stderr.strip()}")
    files = sorted(str(p.relative_to(arrived)) for p in arrived.rglob("*") if p.is_file())
    print("downloaded: " + ", ".join(files), flush=True)

    step("System manager: the recipient confirms receipt; the key goes out as email 3 of 3")
    must(egress("--api", API, "key-release", package_id, key=key), "egress key-release")
    key_mail = wait_for_email(RECIPIENT, f"{package_id} decryption key (3 of 3)")
    identity = re.search(r"AGE-SECRET-KEY-1[0-9A-Z]+", key_mail.get("text", ""))
    if not identity:
        raise DemoFailed("email 3 of 3 has no key")
    (work / "key.txt").write_text(identity.group(0) + "\n")
    (work / "key.txt").chmod(0o600)

    step("Recipient: decrypts; every file's SHA-256 is checked against the manifest")
    must(
        egress("decrypt", str(arrived), "--key-file", str(work / "key.txt"), "--out", str(work / "sftp-plain")),
        "egress decrypt",
    )
    for original in (outputs).rglob("*"):
        if original.is_file() and original.name != "manifest.json":
            plain = work / "sftp-plain" / original.relative_to(outputs)
            if plain.read_bytes() != original.read_bytes():
                raise DemoFailed(f"{plain} does not match the staged output")

    step("System manager: shows the SFTP login in the grants, then revokes it")
    must(egress("--api", API, "grants", "--package", package_id, key=key), "egress grants")
    must(
        egress("--api", API, "revoke", "--package", package_id, "--reason", "demo: files received", key=key),
        "egress revoke",
    )

    step("Recipient: the same login is now refused")
    again = sftp_batch(host, port, username, ["ls"], cwd=arrived, password=password.group(1))
    said = "; ".join(line for line in again.stderr.strip().splitlines() if line)
    print(f"sftp answered exit {again.returncode}: {said or 'no message'}", flush=True)
    if again.returncode == 0:
        raise DemoFailed("the revoked SFTP login still works")


def play() -> None:
    step("Checking the local stack (make run)")
    if http_status(f"{API}/api/health") != 200:
        raise DemoFailed(f"the Functions host does not answer at {API}: start the stack with `make run`")
    if http_status(f"{MAIL}/api/email") != 200:
        raise DemoFailed(f"the mail catcher does not answer at {MAIL}: start the stack with `make run`")
    key = function_key()
    package_id = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    work = Path(tempfile.mkdtemp(prefix="egress-demo-"))
    try:
        outputs = work / "outputs"
        shutil.copytree(SAMPLE / "outputs", outputs)

        step(f"Classification team: writes the manifest of {package_id} (tier 2) and stages it")
        stage_package(outputs, package_id, "storage_explorer")

        step("Classifiers: each named person signs off through their own link (nothing leaves before)")
        wait_for_email(team_member(0), f"Sign-off needed: {package_id}")
        must(egress("--api", API, "status", package_id, key=key), "egress status")
        sign_off(package_id)

        step(f"Recipient: waits for the email ({MAIL} shows it too)")
        mail = wait_for_email(RECIPIENT, f"{package_id} is ready to download")
        print(mail.get("text", ""), flush=True)
        links = re.findall(r"Link for (\S+): (http\S+)", mail.get("text", ""))
        if not links:
            raise DemoFailed("the email carries no link")
        link = links[0][1]

        step("Recipient: downloads every file with the link and checks each SHA-256")
        must(
            egress("download", link, str(work / "downloaded"), "--checksums", str(outputs / "manifest.json")),
            "egress download",
        )

        step("Recipient: tries to upload with the same link (must be refused)")
        base, _, query = link.partition("?")
        upload = http_status(f"{base}/intruder.txt?{query}", "PUT", b"not allowed", {"x-ms-blob-type": "BlockBlob"})
        print(f"upload answered HTTP {upload}", flush=True)
        if upload != 403:
            raise DemoFailed(f"an upload with the link answered {upload}, not 403")

        step("System manager: lists the package's grants and revokes them over the HTTP API")
        listed = json.loads(
            must(egress("--json", "--api", API, "grants", "--package", package_id, key=key), "egress grants")
        )
        grant_id = listed[0]["grant_id"]
        must(
            egress("--api", API, "revoke", grant_id, "--reason", "demo: link no longer needed", key=key),
            "egress revoke",
        )

        step("Recipient: the same link is now refused")
        after = http_status(f"{link}&restype=container&comp=list")
        print(f"listing with the revoked link answered HTTP {after}", flush=True)
        if after != 403:
            raise DemoFailed(f"the revoked link answered {after}, not 403")

        step("System manager: the package's status shows each sign-off")
        must(egress("--api", API, "status", package_id, key=key), "egress status")

        step("System manager: prints the audit trail and verifies its chain")
        must(egress("--api", API, "audit", package_id, "--verify", key=key), "egress audit --verify")

        play_sftp(key, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    try:
        play()
    except DemoFailed as exc:
        print(f"\nFAIL: {exc}", flush=True)
        return 1
    except (OSError, subprocess.TimeoutExpired) as exc:  # the stack went away mid-way (URLError is an OSError)
        print(f"\nFAIL: the local stack stopped answering ({exc}); is `make run` still running?", flush=True)
        return 1
    print(
        "\nPASS: staged, signed off by each classifier, emailed, downloaded and verified, upload refused, "
        "revoked, refused, audit chain intact; by SFTP: logged in with the emailed password, downloaded, "
        "key released, decrypted and verified, revoked, login refused.",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
