"""The manifest (schema_version 1) that the classification team stages last.

Parsing turns every structural problem into a sentence a person can act on; the
classification rules that depend on configuration live in ``policy``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PACKAGE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,39}$"
_PACKAGE_ID_RE = re.compile(PACKAGE_ID_PATTERN)
_EMAIL_RE = re.compile(
    r"^[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_FILES = 10_000
MAX_PATH_LENGTH = 1024

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class Role(StrEnum):
    DATA_PROVIDER_REPRESENTATIVE = "data_provider_representative"
    INVESTIGATOR = "investigator"
    REFEREE = "referee"


class Method(StrEnum):
    STORAGE_EXPLORER = "storage_explorer"
    SFTP = "sftp"
    PHYSICAL = "physical"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Decision(_Frozen):
    role: Role
    name: NonEmpty
    email: NonEmpty
    tier: int = Field(ge=0, le=4)
    decided_at: datetime


class Classification(_Frozen):
    tier: int = Field(ge=0, le=4)
    decisions: list[Decision] = Field(min_length=1, max_length=10)


class Recipient(_Frozen):
    name: NonEmpty
    email: NonEmpty
    ip_ranges: list[str] = Field(default_factory=list, max_length=20)


class FileEntry(_Frozen):
    path: str
    size: int = Field(ge=0)
    sha256: Sha256Hex


class Manifest(_Frozen):
    """A classified work package as the classification team describes it."""

    schema_version: int
    package_id: str
    title: NonEmpty
    classification: Classification
    method: Method
    recipients: list[Recipient]
    expires_in_hours: int
    files: list[FileEntry]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file_map(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}


class ManifestRejected(Exception):
    """The manifest cannot be parsed or breaks a structural rule; ``reasons`` says why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def is_valid_package_id(value: str) -> bool:
    return bool(_PACKAGE_ID_RE.match(value))


def is_valid_email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value)) and len(value) <= 254


def email_domain(value: str) -> str:
    return value.rsplit("@", 1)[-1].lower()


def path_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable relative POSIX path, or None when it is."""
    if not path:
        return "is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"is longer than {MAX_PATH_LENGTH} characters"
    if _CONTROL_RE.search(path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash (use '/' between folders)"
    if path.startswith("/"):
        return "starts with '/' (paths are relative to the package's files/ folder)"
    parts = path.split("/")
    if any(part == ".." for part in parts):
        return "contains '..'"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' folder name"
    return None


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "manifest"


def _describe(error: Any) -> str:
    where = _location(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown field (remove it; schema_version 1 does not have it)"
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "enum":
        return f"{where}: {error['msg'].replace('Input should be', 'must be')}"
    if kind == "string_pattern_mismatch" and where.endswith("sha256"):
        return f"{where}: must be 64 lowercase hexadecimal characters"
    return f"{where}: {error['msg']}"


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and structurally check a manifest; raise ``ManifestRejected`` with every reason."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestRejected(["manifest.json is not UTF-8 text"]) from None
    except json.JSONDecodeError as exc:
        raise ManifestRejected(
            [f"manifest.json is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]
        ) from None
    if not isinstance(data, dict):
        raise ManifestRejected(["manifest.json must hold a JSON object"])
    if data.get("schema_version") != 1:
        raise ManifestRejected(
            [f"schema_version must be 1 (found {data.get('schema_version')!r}); this service reads version 1 only"]
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestRejected([_describe(e) for e in exc.errors()]) from None
    reasons = structural_problems(manifest)
    if reasons:
        raise ManifestRejected(reasons)
    return manifest


def structural_problems(manifest: Manifest) -> list[str]:
    """Rules that need no configuration: ids, emails, file paths, counts."""
    reasons: list[str] = []
    if not is_valid_package_id(manifest.package_id):
        reasons.append(
            "package_id must be 3 to 40 lowercase letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    for i, decision in enumerate(manifest.classification.decisions):
        if not is_valid_email(decision.email):
            reasons.append(f"classification.decisions[{i}].email {decision.email!r} is not a valid email address")
    for i, recipient in enumerate(manifest.recipients):
        if not is_valid_email(recipient.email):
            reasons.append(f"recipients[{i}].email {recipient.email!r} is not a valid email address")
    if not 1 <= len(manifest.files) <= MAX_FILES:
        reasons.append(f"files must list 1 to {MAX_FILES:,} files (found {len(manifest.files):,})")
    seen: set[str] = set()
    for i, entry in enumerate(manifest.files):
        problem = path_problem(entry.path)
        if problem:
            reasons.append(f"files[{i}].path {entry.path!r} {problem}")
        elif entry.path in seen:
            reasons.append(f"files[{i}].path {entry.path!r} is listed twice")
        seen.add(entry.path)
    return reasons
