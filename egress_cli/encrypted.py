"""Receiving encrypted packages: check what arrived, decrypt it, and write packages to disks."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egress_cli.folder import sha256_file
from shared.bootstrap import build_crypto
from shared.domain.manifest import path_problem
from shared.domain.names import ENCRYPTED_MANIFEST
from shared.errors import InvalidRequest

Progress = Callable[[int], None]


def load_encrypted_manifest(folder: Path) -> dict[str, Any]:
    path = folder / ENCRYPTED_MANIFEST
    if not path.exists():
        raise InvalidRequest(f"{path} is missing: it came with the encrypted files")
    try:
        data = dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not valid JSON") from exc
    for entry in data.get("files", []):
        for key in ("path", "encrypted_path"):
            problem = path_problem(entry[key])
            if problem:
                raise InvalidRequest(f"{ENCRYPTED_MANIFEST} lists {entry[key]!r}, which {problem}; refusing it")
    return data


def check_arrived(folder: Path, data: dict[str, Any]) -> list[str]:
    """What is wrong with the encrypted files as they arrived (empty: all there and unaltered)."""
    problems = []
    for entry in data["files"]:
        path = folder / entry["encrypted_path"]
        if not path.exists():
            problems.append(f"{entry['encrypted_path']} is missing")
        elif path.stat().st_size != entry["encrypted_size"] or sha256_file(path) != entry["encrypted_sha256"]:
            problems.append(f"{entry['encrypted_path']} does not match its SHA-256 (altered, truncated or swapped)")
    return problems


class _HashingSink:
    def __init__(self, handle: Any, progress: Progress) -> None:
        self._handle = handle
        self._progress = progress
        self.sha = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.sha.update(chunk)
        self._progress(len(chunk))
        return int(self._handle.write(chunk))


def decrypt_folder(folder: Path, out: Path, identity: str, progress: Progress) -> list[dict[str, Any]]:
    """Decrypt every file; a plain file appears only once its SHA-256 matches the manifest."""
    data = load_encrypted_manifest(folder)
    problems = check_arrived(folder, data)
    if problems:
        raise InvalidRequest("the encrypted files are not as sent:\n  - " + "\n  - ".join(problems))
    crypto = build_crypto()
    results = []
    for entry in data["files"]:
        target = out / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with (folder / entry["encrypted_path"]).open("rb") as source, partial.open("wb") as handle:
                sink = _HashingSink(handle, progress)
                crypto.decrypt(source, sink, identity)  # type: ignore[arg-type]
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        sha = sink.sha
        if sha.hexdigest() != entry["sha256"]:
            partial.unlink(missing_ok=True)
            raise InvalidRequest(f"{entry['path']}: the decrypted SHA-256 does not match the manifest; nothing written")
        os.replace(partial, target)
        results.append({"path": entry["path"], "size": entry["size"], "sha256": entry["sha256"], "check": "ok"})
    return results
