"""Encrypted egress (sftp, physical): age round trips with the real `age` tool, key release, expiry."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import azure.functions as func
import pytest
from click.testing import CliRunner

from egress_cli.main import main as egress_cli
from shared.adapters.age_crypto import AgeCrypto
from shared.adapters.package_keys import LocalPackageKeys
from shared.bootstrap import Services
from shared.domain import names
from shared.domain.audit import verify_chain
from shared.domain.records import PackageStatus
from shared.errors import Conflict, NotFound, StorageUnavailable
from tests.conftest import MANAGER
from tests.support import flow
from tests.support.flow import egress
from tests.support.packages import SAMPLE_FILES, stage_new
from tests.support.servers import SmtpSink, body_text
from tests.support.settings_file import write_local_settings

pytestmark = pytest.mark.integration
AGE = shutil.which("age")
RECIPIENT = "ada@provider.example"


@pytest.fixture(autouse=True)
def _needs_age() -> None:
    assert AGE, "the `age` tool is needed (make install puts Debian's age package on the machine)"


def encrypted_package(services: Services, blob_service, smtp: SmtpSink, method: str, files=SAMPLE_FILES) -> str:
    package_id, raw = stage_new(services, blob_service, files, method=method)
    assert egress(services, smtp, package_id, raw) == "granted"
    return package_id


def fetch(services: Services, package_id: str, method: str, into: Path) -> dict:
    """What an SFTP client or the disk would hand the recipient."""
    container = names.egress_container(package_id)
    store = services.sftp_store if method == "sftp" else services.delivery
    for blob in store.list_blobs(container, ""):
        target = into / blob.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"".join(store.chunks(container, blob.name)))
    return json.loads((into / "encrypted-manifest.json").read_text())


def key_from_email(smtp: SmtpSink) -> str:
    (mail,) = [m for m in smtp.to(RECIPIENT) if "decryption key" in m["Subject"]]
    return re.search(r"AGE-SECRET-KEY-1[0-9A-Z]+", body_text(mail)).group(0)


def release(services: Services, package_id: str) -> func.HttpResponse:
    from functions.http_api import key_release

    return key_release(func.HttpRequest("POST", "/x", route_params={"package_id": package_id}, body=b""))


def test_sftp_round_trip_with_the_real_age_tool(
    app_services: Services, blob_service, smtp: SmtpSink, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    services = app_services
    package_id = encrypted_package(services, blob_service, smtp, "sftp")

    mails = smtp.to(RECIPIENT)
    assert len(mails) == 2
    assert "1 of 3" in mails[0]["Subject"] and "2 of 3" in mails[1]["Subject"]
    (grant,) = services.registry.list_grants(package_id=package_id)
    assert grant.sftp_login == f"{services.sftp.account_name}.{grant.sftp_user}"
    address, secret = body_text(mails[0]), body_text(mails[1])
    assert re.search(rf"Username: +{re.escape(grant.sftp_login)}\s", address)
    assert re.search(rf"Server: +{re.escape(services.sftp.host)}\s", address)
    password = re.search(r"Password\r?\n-+\r?\n(\S+)\s", secret).group(1)
    assert services.sftp.verify_password(grant.sftp_user, password), "the emailed password logs in"
    assert password not in address and grant.sftp_login not in secret, "address and password travel apart"
    encrypted = fetch(services, package_id, "sftp", tmp_path / "arrived")
    assert encrypted["format"] == "age-encryption.org/v1"
    assert sorted(f["path"] for f in encrypted["files"]) == sorted(SAMPLE_FILES)
    assert not any("AGE-SECRET-KEY" in body_text(m) for m in smtp.to(RECIPIENT)), "no key before release"

    answer = release(services, package_id)
    assert answer.status_code == 200
    key = key_from_email(smtp)
    assert key not in answer.get_body().decode()
    (tmp_path / "key.txt").write_text(key + "\n")

    for entry in encrypted["files"]:
        out = tmp_path / "plain" / entry["path"]
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                AGE,
                "-d",
                "-i",
                str(tmp_path / "key.txt"),
                "-o",
                str(out),
                str(tmp_path / "arrived" / entry["encrypted_path"]),
            ],
            check=True,
        )
        assert out.read_bytes() == SAMPLE_FILES[entry["path"]]

    events = services.audit.read(package_id)
    assert verify_chain(events) == []
    (released,) = [e for e in events if e.action == "key_released"]
    assert released.actor == "system-manager (function key)"

    secret_places = {
        "logs": "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail")),
        "audit": "".join(e.model_dump_json() for e in events),
        "registry": repr(services.registry.get_package(package_id)),
        "status": json.dumps(services.overview.package_status(package_id)),
        "manager": "".join(m.as_string() for m in smtp.to(MANAGER)),
        "storage": "".join(
            b"".join(services.delivery.chunks(c, b.name)).decode("latin-1")
            for c in (
                names.egress_container(package_id),
                services.settings.records_container,
                services.settings.audit_container,
            )
            for b in services.delivery.list_blobs(c, "")
        ),
    }
    secret_places["grants"] = repr(services.registry.list_grants(package_id=package_id))
    secret_places["sftp users"] = repr(list(services.sftp._table.list_entities()))
    for where, text in secret_places.items():
        assert key not in text, f"the package key leaked into {where}"
        assert password not in text, f"the SFTP password leaked into {where}"


def test_release_twice_wrong_method_unknown_and_after_expiry_answer_409(
    app_services: Services, blob_service, smtp: SmtpSink
) -> None:
    services = app_services
    package_id = encrypted_package(services, blob_service, smtp, "sftp")
    assert release(services, package_id).status_code == 200
    sent = len(smtp.messages)
    twice = release(services, package_id)
    assert twice.status_code == 409 and "already released" in json.loads(twice.get_body())["message"]

    link_package = encrypted_package(services, blob_service, smtp, "storage_explorer")
    assert release(services, link_package).status_code == 409
    assert release(services, "wp-unknown").status_code == 404

    late = encrypted_package(services, blob_service, smtp, "physical")
    record = services.registry.get_package(late)
    services.registry.update_package(record.model_copy(update={"expires_at": record.expires_at - timedelta(hours=49)}))
    sent = len(smtp.messages)
    expired = release(services, late)
    assert expired.status_code == 409 and "expired" in json.loads(expired.get_body())["message"]
    assert len(smtp.messages) == sent, "a refused release emails nobody"


def test_physical_disk_and_cli_decrypt(services: Services, blob_service, smtp: SmtpSink, tmp_path: Path) -> None:
    package_id = encrypted_package(services, blob_service, smtp, "physical")
    assert "physical disk" in smtp.to(RECIPIENT)[0]["Subject"]
    assert "write-disk" in body_text(smtp.to(MANAGER)[0])
    settings_file = write_local_settings(services.settings, tmp_path / "local.settings.json")
    runner = CliRunner()
    disk = tmp_path / "disk"
    written = runner.invoke(
        egress_cli,
        ["--settings", str(settings_file), "write-disk", package_id, str(disk), "--create"],
        catch_exceptions=False,
    )
    assert written.exit_code == 0, written.output
    assert "read them back: all match" in written.output
    services.key_release.release(package_id, "sm@dsh.example")
    (tmp_path / "key.txt").write_text(key_from_email(smtp) + "\n")

    result = runner.invoke(
        egress_cli,
        ["decrypt", str(disk), "--key-file", str(tmp_path / "key.txt"), "--out", str(tmp_path / "plain")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    for path, data in SAMPLE_FILES.items():
        assert (tmp_path / "plain" / path).read_bytes() == data


def test_our_cli_decrypts_what_the_age_tool_encrypted(tmp_path: Path) -> None:
    from shared.adapters.age_crypto import AgeCrypto

    identity, recipient = AgeCrypto().new_identity()
    folder = tmp_path / "received"
    folder.mkdir()
    plain = b"cohort,n\nA,120\n" * 1000
    (tmp_path / "table.csv").write_bytes(plain)
    subprocess.run([AGE, "-r", recipient, "-o", str(folder / "table.csv.age"), str(tmp_path / "table.csv")], check=True)
    import hashlib

    cipher = (folder / "table.csv.age").read_bytes()
    (folder / "encrypted-manifest.json").write_text(
        json.dumps(
            {
                "files": [
                    {
                        "path": "table.csv",
                        "size": len(plain),
                        "sha256": hashlib.sha256(plain).hexdigest(),
                        "encrypted_path": "table.csv.age",
                        "encrypted_size": len(cipher),
                        "encrypted_sha256": hashlib.sha256(cipher).hexdigest(),
                    }
                ]
            }
        )
    )
    (tmp_path / "key.txt").write_text(identity)
    result = CliRunner().invoke(
        egress_cli, ["decrypt", str(folder), "--key-file", str(tmp_path / "key.txt")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert (folder / "table.csv").read_bytes() == plain


@pytest.fixture
def arrived(services: Services, blob_service, smtp: SmtpSink, tmp_path: Path) -> tuple[Path, Path]:
    package_id = encrypted_package(services, blob_service, smtp, "sftp")
    fetch(services, package_id, "sftp", tmp_path / "arrived")
    services.key_release.release(package_id, "sm@dsh.example")
    (tmp_path / "key.txt").write_text(key_from_email(smtp))
    return tmp_path / "arrived", tmp_path / "key.txt"


def _decrypt(folder: Path, key: Path):
    return CliRunner().invoke(
        egress_cli,
        ["decrypt", str(folder), "--key-file", str(key), "--out", str(folder.parent / "plain")],
        catch_exceptions=False,
    )


def test_a_wrong_key_is_a_clear_error_and_writes_nothing(arrived, tmp_path: Path) -> None:
    from shared.adapters.age_crypto import AgeCrypto

    folder, _ = arrived
    (tmp_path / "other.txt").write_text(AgeCrypto().new_identity()[0])
    result = _decrypt(folder, tmp_path / "other.txt")
    assert result.exit_code == 2 and "the key does not fit" in result.output
    assert not any((tmp_path / "plain").rglob("*.*")) if (tmp_path / "plain").exists() else True


def test_a_truncated_ciphertext_is_caught_before_decrypting(arrived) -> None:
    folder, key = arrived
    victim = folder / "README.md.age"
    victim.write_bytes(victim.read_bytes()[:-10])
    result = _decrypt(folder, key)
    assert result.exit_code == 2 and "README.md.age does not match its SHA-256" in result.output


def test_swapped_files_are_caught(arrived) -> None:
    folder, key = arrived
    a, b = folder / "README.md.age", folder / "tables/table1.csv.age"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    result = _decrypt(folder, key)
    assert result.exit_code == 2 and "altered, truncated or swapped" in result.output


def test_a_truncated_file_with_a_forged_manifest_still_gives_no_wrong_data(arrived) -> None:
    import hashlib

    folder, key = arrived
    victim = folder / "README.md.age"
    victim.write_bytes(victim.read_bytes()[:-10])
    manifest = json.loads((folder / "encrypted-manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["encrypted_path"] == "README.md.age":
            entry["encrypted_size"] = victim.stat().st_size
            entry["encrypted_sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    (folder / "encrypted-manifest.json").write_text(json.dumps(manifest))
    result = _decrypt(folder, key)
    assert result.exit_code == 2 and "damaged or truncated" in result.output
    assert not (folder.parent / "plain" / "README.md").exists()


def test_expiry_destroys_the_key_and_retention_closes(services: Services, blob_service, smtp: SmtpSink, clock) -> None:
    package_id = encrypted_package(services, blob_service, smtp, "sftp")
    clock.offset = timedelta(hours=49)
    report = services.sweep.sweep()
    assert report.keys_destroyed == [package_id]
    with pytest.raises(NotFound):
        LocalPackageKeys(Path(services.settings.local_secrets_dir)).get(package_id)
    # The local key file is unlinked: nothing to recover, so "key_destroyed" and no recovery date.
    destroyed = services.audit.read(package_id)[-1]
    assert (destroyed.action, destroyed.details) == ("key_destroyed", {"state": "purged"})
    expired = services.registry.get_package(package_id)
    assert expired is not None and expired.key_destroyed_at is not None and expired.key_recoverable_until is None
    with pytest.raises(Conflict):
        services.key_release.release(package_id, "sm")
    clock.offset = timedelta(hours=49 + 25)
    assert package_id in services.sweep.sweep().closed
    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.CLOSED
    assert not services.sftp_store.container_exists(names.egress_container(package_id))
    assert [e.action for e in services.audit.read(package_id)][-2:] == ["key_destroyed", "closed"]


class FailsPartWay:
    """Writes some ciphertext, then the connection drops (as a storage fault would)."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def encrypt(self, source, target, recipient: str) -> None:
        target.write(b"age-encryption.org/v1\n" + bytes(5 * 1024 * 1024))  # more than one block is staged
        raise StorageUnavailable("writing: the connection dropped")


def test_a_failure_part_way_leaves_no_partial_ciphertext_and_the_retry_completes(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    package_id, raw = stage_new(services, blob_service, SAMPLE_FILES, method="sftp")
    failing = flow.with_seal(services, clock, crypto=FailsPartWay(AgeCrypto()))
    with pytest.raises(StorageUnavailable):
        egress(failing, smtp, package_id, raw)  # sealing, in the queued release, fails part-way
    container, prefix = names.egress_container(package_id), ""
    store = services.sftp_store
    # nothing committed, not even in part
    assert not store.container_exists(container) or store.list_blobs(container, "") == []

    assert flow.release(services, package_id) == "granted"  # the host runs the release message again
    assert egress(services, smtp, package_id, raw) == "unchanged"
    landed = {b.name[len(prefix) :] for b in services.delivery.list_blobs(container, prefix)}
    assert landed == {f"{path}.age" for path in SAMPLE_FILES} | {"encrypted-manifest.json"}


def test_one_worker_at_a_time_encrypts_a_package_and_a_dead_workers_claim_lapses(
    services: Services, blob_service, smtp: SmtpSink, clock
) -> None:
    from shared.errors import InProgress
    from shared.services.intake import Outcome

    package_id, raw = stage_new(services, blob_service, SAMPLE_FILES, method="sftp")
    assert services.intake.process(package_id, raw) == Outcome.AWAITING_SIGNOFF
    flow.approve_all(services, smtp, package_id)
    record = services.registry.get_package(package_id)
    assert record is not None
    # Another worker is encrypting it (its own key, its own ciphertexts): this one hands back.
    services.registry.update_package(record.model_copy(update={"encryption_claimed_at": clock.now()}))
    with pytest.raises(InProgress, match="another worker is sealing"):
        services.seal.seal(package_id, record.manifest_sha256)
    assert not services.sftp_store.container_exists(names.egress_container(package_id))

    clock.offset = timedelta(minutes=16)  # that worker died: its claim is taken over
    assert flow.release(services, package_id) == "granted"
