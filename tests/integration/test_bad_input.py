"""Hostile and careless input (issue 11): each is a rejection with a reason, never an untyped error.

The package ends ``rejected`` with a reason a person can act on, the manager is emailed (once per
distinct set of reasons), nobody else is, and the staged files stay where they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.functions.blob import InputStream

from functions.staging_trigger import package_id_of, process_manifest
from shared.bootstrap import Services
from shared.domain.manifest import MAX_MANIFEST_BYTES
from shared.domain.records import PackageStatus
from tests.conftest import MANAGER
from tests.support.flow import egress
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage, staged
from tests.support.servers import SmtpSink, body_text

pytestmark = pytest.mark.integration

Build = Callable[[str], "tuple[dict[str, bytes], bytes]"]


def _json(package_id: str, files: dict[str, bytes] = SAMPLE_FILES, **overrides: Any) -> bytes:
    return json.dumps(manifest_for(package_id, files, **overrides), indent=2).encode()


def _changed(change: Callable[[dict[str, Any]], None], files: dict[str, bytes] = SAMPLE_FILES) -> Build:
    def build(package_id: str) -> tuple[dict[str, bytes], bytes]:
        manifest = manifest_for(package_id, files)
        change(manifest)
        return dict(files), json.dumps(manifest, indent=2).encode()

    return build


def _raw(make: Callable[[str], bytes]) -> Build:
    return lambda package_id: (dict(SAMPLE_FILES), make(package_id))


def _with_path(path: str) -> Build:
    """A file staged at ``path`` and listed under it: the path itself is the problem."""
    return _changed(lambda m: None, {**SAMPLE_FILES, path: b"an output\n"})


def _set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest.update(changes)


def _first_file(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest["files"][0].update(changes)


def _duplicate_key(package_id: str) -> bytes:
    text = _json(package_id).decode()
    return text.replace('"expires_in_hours": 48', '"expires_in_hours": 48, "expires_in_hours": 4800', 1).encode()


def _with_name(where: str) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        people = manifest["recipients"] if where == "recipients" else manifest["classification"]["decisions"]
        people[0]["name"] = "Ada\r\nBcc: eve@elsewhere.example"

    return change


CASES: dict[str, tuple[Build, str]] = {
    "deep JSON": (_raw(lambda _: b"[" * 100_000), "manifest.json nests deeper than 32 levels"),
    "deep objects": (_raw(lambda _: b'{"a": ' * 50_000), "manifest.json nests deeper than 32 levels"),
    "expiry of 2^70 hours": (
        _changed(_set(expires_in_hours=2**70)),
        "expires_in_hours: must be a whole number of hours from 1 to 8,760; found 1,180,591,620,717,411,303,424",
    ),
    "size of 2^64": (
        _changed(_first_file(size=2**64)),
        "files[0].size: must be a whole number of bytes from 0 to 9,223,372,036,854,775,807 (2^63 - 1)",
    ),
    "an integer of 5,000 digits": (
        _raw(lambda p: _json(p).replace(b'"expires_in_hours": 48', b'"expires_in_hours": ' + b"9" * 5000)),
        "expires_in_hours: must be a whole number of hours from 1 to 8,760; found a number of more than 40 digits",
    ),
    "tier 2^70": (
        _changed(lambda m: m["classification"].update(tier=2**70)),
        "classification.tier: must be a whole number from 0 to 4",
    ),
    "schema_version true": (_changed(_set(schema_version=True)), "schema_version must be 1, the integer (found true)"),
    "size true": (_changed(_first_file(size=True)), "files[0].size: must be a whole number of bytes"),
    "duplicate key": (_raw(_duplicate_key), "manifest.json has the key 'expires_in_hours' more than once"),
    "byte-order mark": (
        _raw(lambda p: b"\xef\xbb\xbf" + _json(p)),
        "manifest.json starts with a byte-order mark; save it as UTF-8 without BOM",
    ),
    "NaN": (_raw(lambda p: _json(p).replace(b'"expires_in_hours": 48', b'"expires_in_hours": NaN')), "contains NaN"),
    "CRLF in the title": (
        _changed(_set(title="Tables\r\nBcc: eve@elsewhere.example")),
        "title contains a control character (U+000D); write it on one line",
    ),
    "CRLF in a decision's name": (
        _changed(_with_name("decisions")),
        "classification.decisions[0].name 'Ada\\r\\nBcc: eve@elsewhere.example' contains a control character",
    ),
    "CRLF in a recipient's name": (_changed(_with_name("recipients")), "recipients[0].name"),
    "bidi override in the title": (_changed(_set(title="Tables \u202egpj.exe")), "bidirectional control character"),
    "full-width dots": (
        _with_path("\uff0e\uff0e/x.csv"),
        "contains '..' (read as '../x.csv' after Unicode NFKC normalisation)",
    ),
    "an NTFS stream": (_with_path("x.csv:hidden"), "'x.csv:hidden' contains ':' (on Windows it names a hidden NTFS"),
    "a device name": (_with_path("tables/CON"), "uses the Windows device name CON"),
    "a device name with an extension": (_with_path("con.txt"), "uses the Windows device name CON ('con.txt')"),
    "a trailing dot": (_with_path("tables/x."), "has a name ending in a dot or space ('x.')"),
    "a bidi override in a path": (
        _with_path("report\u202egpj.exe"),
        "'report\\u202egpj.exe' contains a bidirectional control character (U+202E)",
    ),
    "paths equal ignoring case": (
        _with_path("Tables/Table1.csv"),
        "is the same file as files[0].path 'tables/table1.csv' where case is ignored",
    ),
    "a file inside a file": (_with_path("README.md/notes.txt"), "puts a file inside 'README.md'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_with_its_reason_and_nothing_is_lost(
    case: str, services: Services, blob_service, smtp: SmtpSink
) -> None:
    build, expected = CASES[case]
    package_id = new_package_id()
    container = services.settings.staging_container
    files, raw = build(package_id)
    stage(blob_service, container, package_id, files, raw)
    before = staged(blob_service, container, package_id)
    assert len(before) == len(files) + 1, "every file was staged under the path it is listed as"

    assert egress(services, smtp, package_id, raw) == "rejected"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    assert any(expected in reason for reason in record.rejection_reasons), record.rejection_reasons
    assert not any("listed in the manifest but was not staged" in r for r in record.rejection_reasons)
    assert not any("was staged but is not in the manifest" in r for r in record.rejection_reasons)
    (told,) = smtp.to(MANAGER)
    assert expected in body_text(told)
    assert smtp.to("ada@provider.example") == [] and smtp.to("eve@elsewhere.example") == []
    assert services.registry.list_grants(package_id=package_id) == []
    assert not blob_service.get_container_client(f"egress-{package_id}").exists()
    assert staged(blob_service, container, package_id) == before

    # Staged again as it is: checked again, rejected again for the same reasons, the manager told once.
    assert egress(services, smtp, package_id, raw) == "rejected"
    again = services.registry.get_package(package_id)
    assert again is not None and again.rejection_reasons == record.rejection_reasons
    assert smtp.to(MANAGER) == [told]
    assert staged(blob_service, container, package_id) == before


def test_every_reason_comes_in_one_rejection(services: Services, blob_service, smtp: SmtpSink) -> None:
    """An unknown field, a bad package id, a bad path, policy and staged-file problems: all at once."""
    package_id = new_package_id()
    container = services.settings.staging_container
    manifest = manifest_for(package_id, SAMPLE_FILES, expires_in_hours=500, colour="blue")
    manifest["package_id"] = "WP_1"
    manifest["recipients"][0]["shoe_size"] = 9
    manifest["recipients"][0]["ip_ranges"] = ["10.0.0.1"]
    manifest["files"].append({"path": "x.csv:hidden", "size": 1, "sha256": "0" * 64})
    files = {**SAMPLE_FILES, "secret.csv": b"not listed\n"}
    files.pop("README.md")
    files["tables/table1.csv"] = b"altered" + files["tables/table1.csv"][7:]
    raw = stage(blob_service, container, package_id, files, manifest)
    before = staged(blob_service, container, package_id)

    assert egress(services, smtp, package_id, raw) == "rejected"

    record = services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.REJECTED
    expected = [
        "colour: unknown field",
        "recipients[0].shoe_size: unknown field",
        "package_id must be 3 to 40 lowercase letters, digits and single hyphens, starting and ending with a "
        "letter or digit (found 'WP_1')",
        "files[3].path 'x.csv:hidden' contains ':'",
        f"package_id in the manifest is 'WP_1' but it was staged under {package_id!r}/",
        "expires_in_hours is 500; at tier 2 it must be 1 to 72",
        "recipients[0].ip_ranges[0] '10.0.0.1' is a private (RFC 1918) address",
        "file 'README.md' is listed in the manifest but was not staged",
        "file 'secret.csv' was staged but is not in the manifest",
        "file 'tables/table1.csv' has SHA-256",
    ]
    for text in expected:
        assert sum(text in r for r in record.rejection_reasons) == 1, (text, record.rejection_reasons)
    assert len(record.rejection_reasons) == len(expected)
    (told,) = smtp.to(MANAGER)
    for text in expected:
        assert text in body_text(told)
    assert staged(blob_service, container, package_id) == before

    # The same manifest after the files were fixed: fewer reasons, so the manager is told again, once.
    stage(blob_service, container, package_id, SAMPLE_FILES, raw)
    blob_service.get_container_client(container).delete_blob(f"{package_id}/files/secret.csv")
    assert egress(services, smtp, package_id, raw) == "rejected"
    fixed = services.registry.get_package(package_id)
    assert fixed is not None and len(fixed.rejection_reasons) == len(expected) - 3
    assert len(smtp.to(MANAGER)) == 2
    assert egress(services, smtp, package_id, raw) == "rejected"
    assert len(smtp.to(MANAGER)) == 2


def test_files_are_verified_when_only_another_part_of_the_manifest_is_malformed(
    services: Services, blob_service, smtp: SmtpSink
) -> None:
    package_id = new_package_id()
    container = services.settings.staging_container
    manifest = manifest_for(package_id, SAMPLE_FILES)
    manifest["classification"]["decisions"][0]["tier"] = "two"
    raw = stage(blob_service, container, package_id, {**SAMPLE_FILES, "extra.csv": b"x"}, manifest)
    assert egress(services, smtp, package_id, raw) == "rejected"
    record = services.registry.get_package(package_id)
    assert record is not None and record.rejection_reasons == [
        "classification.decisions[0].tier: must be a whole number from 0 to 4; found 'two'",
        "file 'extra.csv' was staged but is not in the manifest",
    ]


@pytest.mark.parametrize("folder", ["wp-1\r\n", "wp-1\n", "wp\r\n1", "WP-1", "wp-1\u202e", "w" * 300])
def test_a_staging_folder_that_is_not_a_package_id_is_reported_safely(
    folder: str, services: Services, blob_service, smtp: SmtpSink
) -> None:
    container = services.settings.staging_container
    raw = _json("wp-1")
    stage(blob_service, container, folder, SAMPLE_FILES, raw)
    before = staged(blob_service, container, folder)
    assert len(before) == len(SAMPLE_FILES) + 1

    assert egress(services, smtp, folder, raw) == "rejected"  # returned, not raised

    (told,) = smtp.to(MANAGER)
    text = body_text(told)
    assert "is not a valid package id" in text
    assert repr(folder)[:150] in text  # shown escaped, never as raw control characters
    assert "\r" not in str(told["Subject"]) and "\n" not in str(told["Subject"])
    assert services.registry.get_package("wp-1") is None, "no record: a folder name cannot key one"
    assert staged(blob_service, container, folder) == before
    assert egress(services, smtp, folder, raw) == "rejected"
    assert smtp.to(MANAGER) == [told], "the same folder and manifest: the manager is told once"


def test_a_manifest_over_16_mib_is_rejected_with_its_size(app_services: Services, blob_service, smtp: SmtpSink) -> None:
    package_id = new_package_id()
    container = app_services.settings.staging_container
    stage(blob_service, container, package_id, SAMPLE_FILES, _json(package_id))
    before = staged(blob_service, container, package_id)
    text = _json(package_id)
    raw = text[:-1] + b" " * (MAX_MANIFEST_BYTES + 1000 - len(text)) + b"}"
    expected = f"manifest.json is {len(raw):,} bytes; at most 16 MiB (16,777,216 bytes) is read"

    for length in (len(raw), None):  # with the size the host gives, and without it
        process_manifest(InputStream(data=raw, name=f"{container}/{package_id}/manifest.json", length=length))
        record = app_services.registry.get_package(package_id)
        assert record is not None and record.status == PackageStatus.REJECTED
        assert record.rejection_reasons[0].startswith(expected), record.rejection_reasons
        assert staged(blob_service, container, package_id) == before
    (told,) = smtp.to(MANAGER)  # the same reasons twice: told once
    assert expected in body_text(told)


def test_only_a_manifest_directly_under_a_package_folder_starts_processing(
    app_services: Services, blob_service, smtp: SmtpSink
) -> None:
    """The names the host hands the trigger are ``<container>/<blob name>`` (its BlobTrigger metadata),
    with the polling source and with Event Grid; the path ``{package_id}/manifest.json`` matches across
    '/' in Azure, so nested outputs called manifest.json reach the handler and must be ignored."""
    container = app_services.settings.staging_container
    package_id = new_package_id()
    nested = b'{"an output": "that happens to be called manifest.json"}'
    files = {**SAMPLE_FILES, "tables/manifest.json": nested, "manifest.json": nested}
    raw = stage(blob_service, container, package_id, files, manifest_for(package_id, files))

    ignored = [
        f"{container}/{package_id}/files/tables/manifest.json",
        f"{container}/{package_id}/files/manifest.json",
        f"{container}/manifest.json",
        f"{container}/{package_id}/manifest.json/x",
        f"{container}/{package_id}/Manifest.json",
        f"other-{container}/{package_id}/manifest.json",
        f"{container}x/{package_id}/manifest.json",
        f"/blobServices/default/containers/{container}/blobs/{package_id}/manifest.json",  # an Event Grid subject
        f"https://account.blob.core.windows.net/{container}/{package_id}/manifest.json",  # a blob URL
        "",
    ]
    for name in ignored:
        assert package_id_of(name, container) is None, name
        process_manifest(InputStream(data=nested, name=name, length=len(nested)))
    process_manifest(InputStream(data=nested, name=None, length=len(nested)))
    assert app_services.registry.get_package(package_id) is None
    assert smtp.messages == []

    process_manifest(InputStream(data=raw, name=f"{container}/{package_id}/manifest.json", length=len(raw)))
    record = app_services.registry.get_package(package_id)
    assert record is not None and record.status == PackageStatus.AWAITING_SIGNOFF, record
    assert record.file_count == len(files)

    process_manifest(InputStream(data=raw, name=f"{container}/wp\r\n1/manifest.json", length=len(raw)))
    assert any("not a valid package id" in body_text(m) for m in smtp.to(MANAGER))
