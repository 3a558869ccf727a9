"""Folders of outputs: their manifest, staging them, and downloading a package with its link."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared.domain.manifest import Manifest, ManifestRejected, parse_manifest
from shared.domain.policy import PolicyConfig, policy_problems
from shared.errors import InvalidRequest

MANIFEST_NAME = "manifest.json"
CHUNK = 4 * 1024 * 1024
Progress = Callable[[int], None]


def output_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` except its top-level manifest.json, in a stable order."""
    if not folder.is_dir():
        raise InvalidRequest(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST_NAME)
    if not files:
        raise InvalidRequest(f"{folder} holds no files to egress")
    return files


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            if progress:
                progress(len(chunk))
    return sha.hexdigest()


def build_manifest(folder: Path, details: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    files = [
        {"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p, progress)}
        for p in output_files(folder)
    ]
    return {"schema_version": 1, **details, "files": files}


def check_manifest(raw: bytes, policy: PolicyConfig) -> tuple[Manifest | None, list[str]]:
    """The same checks the service makes before anything is uploaded."""
    try:
        manifest = parse_manifest(raw)
    except ManifestRejected as exc:
        return None, exc.reasons
    return manifest, policy_problems(manifest, policy)


def read_manifest(folder: Path) -> tuple[bytes, dict[str, Any]]:
    path = folder / MANIFEST_NAME
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist: run `egress manifest {folder}` first")
    raw = path.read_bytes()
    try:
        return raw, json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}") from exc


def chunks_of(path: Path, progress: Progress | None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if progress:
                progress(len(chunk))
            yield chunk


_LINE = re.compile(r"^\s*(?P<path>\S(?:.*?\S)?)\s+.*?(?:sha256\s+)?(?P<sha>[0-9a-f]{64})\s*$")


def expected_hashes(source: Path) -> dict[str, str]:
    """Path -> SHA-256 from a manifest.json, or from the file list pasted from the email."""
    text = source.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        found = {}
        for line in text.splitlines():
            match = _LINE.match(line)
            if match:
                found[match["path"].split("  ")[0]] = match["sha"]
        if not found:
            raise InvalidRequest(f"{source} has no lines with a path and a SHA-256") from None
        return found
    return {f["path"]: f["sha256"] for f in data.get("files", [])}
