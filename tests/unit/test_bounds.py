"""Bounds whatever the manifest (issue 11, items 2 and 3), without storage.

Every int of a record goes to the table as Edm.Int64 and comes back a plain int; a rejection list
is stored within one table property; the rejection email stays small however many reasons there
are, while its idempotency key still covers every reason.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import uuid
from datetime import UTC, datetime

from azure.data.tables import EdmType, EntityProperty
from pydantic import BaseModel

from shared.adapters.table_registry import MAX_LIST_JSON, _from_entity, _to_entity
from shared.domain.records import PackageRecord, PackageStatus
from shared.services import notifications
from tests.unit.test_emails import facts, page

PACKAGE_ID = "wp-7f3a9c21"
MANAGER = "system-manager@dsh.example"
NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
MIB = 2**20


def _path(i: int, chars: int = 1_024) -> str:
    head = f"outputs/run-{i:05d}/"
    body = "/".join("p" * 200 for _ in range(6))[: chars - len(head) - 4].rstrip("/")
    return head + body + "q" * (chars - len(head) - len(body) - 4) + ".csv"


def _unstaged(count: int, chars: int = 1_024) -> list[str]:
    return [f"file {_path(i, chars)!r} is listed in the manifest but was not staged" for i in range(count)]


def _record(**changes: object) -> PackageRecord:
    return PackageRecord.model_validate(
        {
            "package_id": PACKAGE_ID,
            "status": PackageStatus.REJECTED,
            "manifest_sha256": "a" * 64,
            "tier": 2,
            "file_count": 10_000,
            "total_bytes": 3 * 2**30,
            "recipient_count": 5,
            "expires_in_hours": 48,
            "created_at": NOW,
            "updated_at": NOW,
            **changes,
        }
    )


# -- any size ---------------------------------------------------------------------------------------


def test_every_int_of_a_record_is_written_as_int64_and_read_back_plain() -> None:
    record = _record()
    entity = _to_entity(record, PACKAGE_ID, "package")
    ints = {k for k, v in record.model_dump().items() if type(v) is int}
    assert ints == {"tier", "file_count", "total_bytes", "recipient_count", "expires_in_hours"}
    for key in ints:
        assert entity[key] == EntityProperty(getattr(record, key), EdmType.INT64), key
    assert entity["status"] == "rejected" and entity["rejection_reasons"] == "[]"

    back = _from_entity(PackageRecord, entity)  # as the SDK returns Int64: wrapped in EntityProperty
    assert back == record
    assert all(type(getattr(back, key)) is int for key in ints)


def test_a_bool_stays_a_bool_and_a_plain_int_is_read_as_is() -> None:
    class Flags(BaseModel):
        done: bool
        count: int

    entity = _to_entity(Flags(done=True, count=2**40), "p", "r")
    assert entity["done"] is True
    assert entity["count"] == EntityProperty(2**40, EdmType.INT64)
    assert _from_entity(Flags, {"PartitionKey": "p", "RowKey": "r", "done": False, "count": 7}) == Flags(
        done=False, count=7
    )  # rows written before Int64 (Edm.Int32) come back as plain ints


# -- the stored rejection list ----------------------------------------------------------------------


def test_a_rejection_list_that_fits_is_stored_whole() -> None:
    reasons = ["x" * 100] * 10
    stored = _to_entity(_record(rejection_reasons=reasons), PACKAGE_ID, "package")["rejection_reasons"]
    assert json.loads(stored) == reasons


def test_a_rejection_list_at_the_limit_is_whole_and_one_character_more_is_cut() -> None:
    exact = ["y" * (MAX_LIST_JSON - 4)]  # '["' + ... + '"]'
    stored = _to_entity(_record(rejection_reasons=exact), PACKAGE_ID, "package")["rejection_reasons"]
    assert len(stored) == MAX_LIST_JSON and json.loads(stored) == exact
    over = ["y" * (MAX_LIST_JSON - 3)]
    stored = _to_entity(_record(rejection_reasons=over), PACKAGE_ID, "package")["rejection_reasons"]
    assert json.loads(stored) == [f"... 1 more reason; the full list is in the audit trail (egress audit {PACKAGE_ID})"]


def test_10000_long_reasons_are_stored_as_the_first_that_fit_and_a_summary() -> None:
    reasons = _unstaged(10_000)
    stored = _to_entity(_record(rejection_reasons=reasons), PACKAGE_ID, "package")["rejection_reasons"]
    assert len(stored) <= MAX_LIST_JSON
    assert len(stored.encode("utf-16-le")) // 2 <= 32_768, "a table string property holds 32K UTF-16 code units"
    *kept, summary = json.loads(stored)
    assert kept == reasons[: len(kept)] and len(kept) >= 25
    assert summary == (
        f"... {10_000 - len(kept):,} more reasons; the full list is in the audit trail (egress audit {PACKAGE_ID})"
    )


def test_non_ascii_reasons_are_measured_as_the_table_measures_them() -> None:
    reasons = [f"file '{'😀' * 1_000}{i}' is listed in the manifest but was not staged" for i in range(100)]
    stored = _to_entity(_record(rejection_reasons=reasons), PACKAGE_ID, "package")["rejection_reasons"]
    assert stored.isascii() and len(stored) <= MAX_LIST_JSON
    *kept, _ = json.loads(stored)
    assert kept == reasons[: len(kept)] and kept


# -- the rejection email ----------------------------------------------------------------------------


def test_10000_reasons_of_1100_characters_make_an_email_under_1_mb() -> None:
    reasons = [f"{i:05d} " + "r" * 1_094 for i in range(10_000)]
    assert {len(r) for r in reasons} == {1_100}
    mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
    assert len(mail.text.encode()) + len(mail.html.encode()) < 1_000_000
    html = page(mail.html).text
    for part in (mail.text, html):
        assert reasons[49] in part and reasons[50][:6] not in part
        assert "There are 10,000 reasons. The first 50 are listed" in part
        assert "9,950 more reasons of other kinds" in part
        assert f"egress audit {PACKAGE_ID}" in part and f"egress status {PACKAGE_ID}" in part
    assert facts(mail.text) == facts(html)


def test_unstaged_files_are_counted_by_kind_past_the_first_50() -> None:
    reasons = _unstaged(10_000)
    mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
    assert len(mail.text.encode()) + len(mail.html.encode()) < 1_000_000
    for part in (mail.text, page(mail.html).text):
        assert "9,950 more files are listed in the manifest but were not staged" in part
        assert "The full list is in the package's audit trail (its rejected entry holds every reason):" in part
        assert f"egress audit {PACKAGE_ID}" in part


def test_several_kinds_are_counted_in_the_order_they_first_appear() -> None:
    path = "'tables/t.csv'"
    reasons = [f"classification: reason {i}" for i in range(50)] + [
        f"file {path} has SHA-256 {'1' * 64}, not {'2' * 64} as the manifest says",
        f"file {path} was staged but is not in the manifest",
        f"file {path} was staged but is not in the manifest",
        f"file {path} is 10 bytes but the manifest says 3,221,225,472 (truncated or replaced)",
        f"file {path} is listed in the manifest but was not staged",
        f"files[7].path {path} is listed twice",
        f"files[8].path {path} contains '..'",
        f"files[9].path {path} contains '..'",
        "recipients[0].email 'x' is not a valid email address",
    ]
    mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
    lines = [line[2:] for line in mail.text.splitlines() if line.startswith("- ")][50:]
    assert lines == [
        "1 more file has a SHA-256 other than the manifest says",
        "2 more files were staged but are not in the manifest",
        "1 more file has a size other than the manifest says (truncated or replaced)",
        "1 more file is listed in the manifest but was not staged",
        "1 more path is listed twice in the manifest",
        "2 more file paths in the manifest are not allowed",
        "1 more reason of another kind",
    ]
    html = page(mail.html).text
    assert all(line in html for line in lines)


def test_a_few_reasons_are_all_listed_with_no_summary() -> None:
    reasons = _unstaged(50)
    mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
    for part in (mail.text, page(mail.html).text):
        assert all(r in part for r in reasons)
        assert "more files are" not in part and "egress audit" not in part and "There are" not in part
        assert "See the package and every reason:" in part


def test_a_reason_of_any_length_is_cut_in_the_email() -> None:
    huge = f"files[0].path {'z' * 5_000_000!r} is longer than 1024 characters"
    mail = notifications.manager_rejected(PACKAGE_ID, [huge], MANAGER, "b" * 64)
    assert len(mail.text) + len(mail.html) < 50_000
    assert f"... ({len(huge) - notifications.REASON_CHARS:,} more characters)" in mail.text


def test_the_idempotency_key_still_covers_every_reason() -> None:
    reasons = _unstaged(10_000)
    mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
    joined = hashlib.sha256("\n".join(reasons).encode()).hexdigest()[:16]
    namespace = uuid.UUID("6f1c1f0e-3c1a-4b8e-9a51-0d6a4f1e2b7c")
    assert mail.idempotency_key == str(uuid.uuid5(namespace, f"rejected:{PACKAGE_ID}:{'b' * 64}:{joined}"))
    changed = notifications.manager_rejected(
        PACKAGE_ID, [*reasons[:-1], reasons[-1].replace("run-09999", "run-x9999")], MANAGER, "b" * 64
    )
    assert changed.idempotency_key != mail.idempotency_key  # a change past the 50 shown is another event
    assert changed.text == mail.text


def test_building_the_email_and_the_record_for_10000_long_reasons_takes_little_memory() -> None:
    reasons = _unstaged(10_000)  # about 10.8 million characters, built by intake either way
    tracemalloc.start()
    try:
        mail = notifications.manager_rejected(PACKAGE_ID, reasons, MANAGER, "b" * 64)
        entity = _to_entity(_record(rejection_reasons=reasons), PACKAGE_ID, "package")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert mail.text and entity
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB"
