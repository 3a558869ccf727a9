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


# `sha256sum` lines: "<hash>  <path>" (text mode) or "<hash> *<path>" (binary mode); a line starting
# with a backslash has its path escaped (\\ and \n), as `sha256sum` writes names with those characters.
_SHA256SUM = re.compile(r"^(?P<escaped>\\?)(?P<sha>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")
# `sha256sum --tag` (BSD) lines: "SHA256 (<path>) = <hash>".
_BSD_TAG = re.compile(r"^(?P<escaped>\\?)SHA256 \((?P<path>.+)\) = (?P<sha>[0-9a-fA-F]{64})$")
# The recipient email's earlier file list: "<path>  <size>  sha256 <hash>".
_EMAIL_LIST = re.compile(r"^(?P<path>.+)  (?:[\d,]+ bytes|\d+\.\d [KMGT]iB)  sha256 (?P<sha>[0-9a-f]{64})$")


def _unescape(path: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), path)


def checksum_line(line: str) -> tuple[str, str] | None:
    """(path, sha256) from one line of a checksum list, or None for any other line."""
    for pattern in (_SHA256SUM, _BSD_TAG):
        match = pattern.match(line)
        if match:
            path = _unescape(match["path"]) if match["escaped"] else match["path"]
            return path, match["sha"].lower()
    match = _EMAIL_LIST.match(line)
    return (match["path"], match["sha"]) if match else None


def expected_hashes(source: Path) -> dict[str, str]:
    """Path -> SHA-256 from a manifest.json, or from a checksum list: the email's file list or
    `sha256sum` output (``<hash>  <path>``, the path taken exactly as written, spaces and all)."""
    text = source.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        found: dict[str, str] = {}
        for line in text.splitlines():
            entry = checksum_line(line)
            if entry is None:
                continue
            path, sha = entry
            if found.get(path, sha) != sha:
                raise InvalidRequest(f"{source} lists {path!r} twice, with different SHA-256") from None
            found[path] = sha
        if not found:
            raise InvalidRequest(
                f"{source} has no checksum lines (`<sha256>  <path>`, as `sha256sum` writes them) and is not a "
                "manifest.json"
            ) from None
        return found
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise InvalidRequest(f"{source} is JSON but not a manifest.json (it has no list of files)")
    try:
        return {str(f["path"]): str(f["sha256"]).lower() for f in data["files"]}
    except (KeyError, TypeError) as exc:
        raise InvalidRequest(f"{source}: every file in a manifest.json needs a path and a sha256") from exc


def changed_since_manifest(folder: Path, files: list[tuple[str, int, str]], progress: Progress | None) -> list[str]:
    """Each listed file whose size or SHA-256 is no longer what the manifest says, with what differs."""
    problems = []
    unchanged_size = []
    for path, size, sha in files:
        actual = (folder / path).stat().st_size
        if actual != size:
            problems.append(f"{path}: {actual:,} bytes now, {size:,} in the manifest")
        else:
            unchanged_size.append((path, sha))
    for path, sha in unchanged_size:
        if sha256_file(folder / path, progress) != sha:
            problems.append(f"{path}: its SHA-256 is not the one in the manifest (its content changed)")
    return problems


class HashingChunks:
    """The chunks of a file, hashed on the way (so a change during an upload is caught too)."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self._path = path
        self._progress = progress
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in chunks_of(self._path, self._progress):
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk
