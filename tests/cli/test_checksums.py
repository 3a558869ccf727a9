"""`egress download --checksums`: the lists it reads, parsed exactly (pure, no storage)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from egress_cli.folder import expected_hashes
from shared.errors import InvalidRequest

A = hashlib.sha256(b"a").hexdigest()
B = hashlib.sha256(b"b").hexdigest()


def _list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.txt"
    path.write_text(text)
    return path


def test_sha256sum_lines_keep_every_space_of_a_path(tmp_path: Path) -> None:
    text = f"{A}  tables/table 1 (final).csv\n{B}  figures/two  spaces .png\n"
    assert expected_hashes(_list(tmp_path, text)) == {
        "tables/table 1 (final).csv": A,
        "figures/two  spaces .png": B,
    }


def test_binary_mode_tag_format_and_upper_case_hashes(tmp_path: Path) -> None:
    text = f"{A.upper()} *report final.pdf\nSHA256 (notes (v2).txt) = {B}\n"
    assert expected_hashes(_list(tmp_path, text)) == {"report final.pdf": A, "notes (v2).txt": B}


def test_escaped_names_as_sha256sum_writes_them(tmp_path: Path) -> None:
    assert expected_hashes(_list(tmp_path, f"\\{A}  back\\\\slash\n")) == {"back\\slash": A}


def test_the_email_text_around_the_list_is_ignored(tmp_path: Path) -> None:
    email = (
        "Dear Ada,\n\nYour links\n----------\nLink for 203.0.113.7: https://x.example/c?sv=1&sig=2\n\n"
        f"Check the files\n---------------\n{A}  tables/my table.csv\n{B}  README.md\n\n"
        "If a link leaks, tell the system manager.\n"
    )
    assert expected_hashes(_list(tmp_path, email)) == {"tables/my table.csv": A, "README.md": B}


def test_the_earlier_email_file_list_still_reads(tmp_path: Path) -> None:
    text = f"tables/my table.csv  1,234 bytes  sha256 {A}\nfigures/fig 1.png  2.5 MiB  sha256 {B}\n"
    assert expected_hashes(_list(tmp_path, text)) == {"tables/my table.csv": A, "figures/fig 1.png": B}


def test_a_manifest_json_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": [{"path": "a b.csv", "size": 1, "sha256": A}]}))
    assert expected_hashes(path) == {"a b.csv": A}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing to see here\n", "has no checksum lines"),
        ('{"not": "a manifest"}', "not a manifest.json"),
        (f"{A}  same.csv\n{B}  same.csv\n", "twice, with different SHA-256"),
    ],
)
def test_lists_that_cannot_be_used_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        expected_hashes(_list(tmp_path, text))


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils' sha256sum is not on this machine")
def test_what_sha256sum_writes_reads_back_and_sha256sum_checks_it(tmp_path: Path) -> None:
    files = {"my table.csv": b"1,2\n", "sub dir/a*b.txt": b"x", " leading.txt": b"y"}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    written = subprocess.run(
        ["sha256sum", "--", *files], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    parsed = expected_hashes(_list(tmp_path, written))
    assert parsed == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    subprocess.run(["sha256sum", "-c", "list.txt"], cwd=tmp_path, capture_output=True, check=True)
