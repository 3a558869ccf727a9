"""The manifest (schema_version 1) that the classification team stages last.

Reading turns every problem into a sentence a person can act on, and goes as far as the document
allows: unknown fields, a bad package id, a bad path or a duplicate key are reported together with
everything else, and the file list is given back whenever it parsed, so that the staged files can
be verified in the same round. The classification rules that depend on configuration live in
``policy``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

PACKAGE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,39}$"
_PACKAGE_ID_RE = re.compile(PACKAGE_ID_PATTERN)
_EMAIL_RE = re.compile(
    r"[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # the trigger reads at most this much (plus one byte, to tell)
MAX_DEPTH = 32  # a manifest nests 4 levels deep; anything much deeper is not one
MAX_FILES = 10_000
MAX_PATH_LENGTH = 1024
MAX_NAME_BYTES = 255  # one file or folder name: ext4, NTFS and APFS refuse longer ones
MAX_TIER = 4
MAX_EXPIRY_HOURS = 8_760  # a year: the policy's tier limits are far lower; this only bounds the number
MAX_SIZE = 2**63 - 1  # sizes are stored as Edm.Int64 in the registry
_LONG_INT_DIGITS = 40  # integers longer than this are read as +-10**40: out of every range anyway
_LONG_INT: int = 10**_LONG_INT_DIGITS

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {f"{d}{i}" for d in ("COM", "LPT") for i in range(10)}
)
# Control characters (Unicode category Cc), surrogates (Cs), line and paragraph separators, bidi controls.
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + "".join(sorted(BIDI_CONTROLS)) + "]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")  # the only way a JSON text holds one
_WINDOWS_FORBIDDEN = '<>"|?*'  # and ':' (told apart: it names an NTFS stream), '\\' and '/'

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Tier = Annotated[int, Field(strict=True, ge=0, le=MAX_TIER)]


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
    tier: Tier
    decided_at: datetime


class Classification(_Frozen):
    tier: Tier
    decisions: list[Decision] = Field(min_length=1, max_length=10)


class Recipient(_Frozen):
    name: NonEmpty
    email: NonEmpty
    ip_ranges: list[str] = Field(default_factory=list, max_length=20)
    ssh_public_key: str | None = Field(default=None, max_length=8192)  # sftp only: key login (section 4a)


class FileEntry(_Frozen):
    path: str
    size: int = Field(strict=True, ge=0, le=MAX_SIZE)
    sha256: Sha256Hex


class Manifest(_Frozen):
    """A classified work package as the classification team describes it."""

    schema_version: int = Field(strict=True)
    package_id: str
    title: NonEmpty
    classification: Classification
    method: Method
    recipients: list[Recipient]
    expires_in_hours: int = Field(strict=True, ge=1, le=MAX_EXPIRY_HOURS)
    files: list[FileEntry]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file_map(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}


_FILES = TypeAdapter(list[FileEntry])


class ManifestRejected(Exception):
    """The manifest cannot be parsed or breaks a structural rule; ``reasons`` says why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class ManifestReading:
    """What could be read from a staged manifest, and every reason it cannot leave as it is.

    ``manifest`` is set when the document has the schema's shape (possibly after dropping unknown
    fields: they are among the reasons); ``files`` when the file list itself parsed (to verify the
    staged files against); ``package_id`` when it is text; ``reasons`` is empty only for a manifest
    that passes every structural rule.
    """

    manifest: Manifest | None
    files: tuple[FileEntry, ...] | None
    reasons: list[str]
    package_id: str | None = None


# -- single values ---------------------------------------------------------------------------


def is_valid_package_id(value: str) -> bool:
    return _PACKAGE_ID_RE.fullmatch(value) is not None  # fullmatch: '$' would let a final newline through


def is_valid_email(value: str) -> bool:
    if len(value) > 254 or _EMAIL_RE.fullmatch(value) is None or _UNSAFE_RE.search(value):
        return False
    return value.isascii() or not any(unicodedata.category(c) == "Cf" for c in value)  # no invisible characters


def email_domain(value: str) -> str:
    return value.rsplit("@", 1)[-1].lower()


def quoted(value: object, limit: int = 120) -> str:
    """``value`` as a reason shows it: repr (escapes control, bidi and other invisible characters), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unsafe(value: str) -> str | None:
    """What the first control, surrogate, separator or bidi character in ``value`` is, if any."""
    found = _UNSAFE_RE.search(value)
    return _char_problem(found.group()) if found else None


def _char_problem(char: str) -> str | None:
    code = f"U+{ord(char):04X}"
    category = unicodedata.category(char)
    if category == "Cc":
        return f"contains a control character ({code})"
    if category == "Cs":
        return f"contains an unpaired surrogate ({code}), which is not Unicode text"
    if category in ("Zl", "Zp"):
        return f"contains a line or paragraph separator ({code})"
    if char in BIDI_CONTROLS:
        return (
            f"contains a bidirectional control character ({code}), which makes it display differently from what it is"
        )
    return None


def text_problem(value: str) -> str | None:
    """Why a text field (title, a person's name) cannot be shown safely on one line, or None."""
    problem = _unsafe(value)
    if problem:
        return problem + "; write it on one line, as plain text"
    if value and not value.strip():
        return "is blank"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable relative POSIX path, or None when it is.

    A path is judged as written and after NFKC normalisation (full-width dots are dots, a
    superscript one is a one): some Windows tools map such characters to plain ones when they write
    the file. An accepted path can be created under any folder on Windows, macOS and Linux and stays
    inside it.
    """
    if not path:
        return "is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"is longer than {MAX_PATH_LENGTH} characters"
    problem = _unsafe(path)
    if problem:
        return problem
    normal = unicodedata.normalize("NFKC", path)
    read_as = "" if normal == path else f" (read as {normal!r} after Unicode NFKC normalisation)"
    problem = _normal_path_problem(normal)
    return problem + read_as if problem else None


def _normal_path_problem(path: str) -> str | None:
    problem = _unsafe(path)
    if problem:
        return problem
    if "\\" in path:
        return "contains a backslash (use '/' between folders)"
    if path.startswith("/"):
        return "starts with '/' (paths are relative to the package's files/ folder)"
    if ":" in path:
        return "contains ':' (on Windows it names a hidden NTFS stream of the file before it)"
    for char in _WINDOWS_FORBIDDEN:
        if char in path:
            return f"contains {char!r}, which Windows does not allow in file names"
    for part in path.split("/"):
        if part == "":
            return "has an empty folder name (two '/' in a row, or a '/' at the end)"
        if part == "..":
            return "contains '..'"
        if part == ".":
            return "has a '.' folder name"
        if not part.strip("."):
            return f"has a name of only dots ({part!r})"
        if part[-1] in ". ":
            return f"has a name ending in a dot or space ({part!r}), which Windows drops when it writes the file"
        device = part.split(".", 1)[0].rstrip(" ").upper()
        if device in WINDOWS_DEVICE_NAMES:
            return f"uses the Windows device name {device} ({part!r}); Windows cannot create such a file"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"has a file or folder name longer than {MAX_NAME_BYTES} bytes"
    return None


def _path_key(path: str) -> str:
    """Two paths with the same key are one file on Windows or macOS (case and compatibility forms ignored)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", path).casefold())


# -- the JSON text ---------------------------------------------------------------------------


class _Object(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice: dict[str, None] = {}
        for key, _ in pairs:
            if key in seen:
                twice[key] = None
            seen.add(key)
        obj.duplicates = tuple(twice)
    return obj


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _LONG_INT_DIGITS:  # int() refuses over 4,300 digits; no field takes more than 19
        return -_LONG_INT if text.startswith("-") else _LONG_INT
    return int(text)


def _too_deep() -> ManifestRejected:
    return ManifestRejected([f"manifest.json nests deeper than {MAX_DEPTH} levels (a manifest needs 4)"])


def _load(raw: bytes, size: int | None) -> tuple[Any, list[str]]:
    """The JSON value in ``raw`` and the problems found while reading it; raise when it cannot be read."""
    total = max(size or 0, len(raw))
    if total > MAX_MANIFEST_BYTES:
        raise ManifestRejected(
            [
                f"manifest.json is {total:,} bytes; at most 16 MiB ({MAX_MANIFEST_BYTES:,} bytes) is read: "
                "split the outputs into several packages"
            ]
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ManifestRejected(["manifest.json starts with a byte-order mark; save it as UTF-8 without BOM"])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestRejected(
            ["manifest.json is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestRejected([f"manifest.json is not UTF-8 text (byte {exc.start:,} cannot be decoded)"]) from None
    constants: list[str] = []

    def constant(name: str) -> None:
        constants.append(name)
        return None

    try:
        data = json.loads(text, object_pairs_hook=_object, parse_int=_int, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ManifestRejected(
            [f"manifest.json is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]
        ) from None
    except RecursionError:
        raise _too_deep() from None
    problems = [f"manifest.json contains {name}, which is not a JSON number" for name in dict.fromkeys(constants)]
    return data, problems + _inspect_tree(data, surrogates=_SURROGATE_ESCAPE_RE.search(text) is not None)


def _inspect_tree(data: Any, *, surrogates: bool) -> list[str]:
    """Check nesting depth (raise), report duplicate keys and, where the text has ``surrogates``
    escaped, unpaired ones (replaced by U+FFFD, so that what is recorded is Unicode text)."""
    problems: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())] if isinstance(data, dict | list) else []
    while stack:
        value, loc = stack.pop()
        if len(loc) >= MAX_DEPTH:
            raise _too_deep()
        for key in getattr(value, "duplicates", ()):
            problems.append(
                f"{_location(loc) if loc else 'manifest.json'} has the key {quoted(key)} more than once; "
                "keys must be unique (a reader would silently keep only one of them)"
            )
        if surrogates:
            problems += _replace_surrogates(value, loc)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        children = [(item, (*loc, key)) for key, item in items if isinstance(item, dict | list)]
        stack.extend(reversed(children))  # depth first, in document order
    return problems


def _replace_surrogates(value: dict[str, Any] | list[Any], loc: tuple[str | int, ...]) -> list[str]:
    problems: list[str] = []
    if isinstance(value, dict):
        for key in [k for k in value if _unpaired(k)]:
            where = _location(loc) if loc else "manifest.json"
            problems.append(f"{where} has a key {quoted(key)} with an unpaired surrogate; it is not Unicode text")
            value[_fix(key)] = value.pop(key)
    keys: Any = value.keys() if isinstance(value, dict) else range(len(value))
    for key in list(keys):
        item = value[key]
        if isinstance(item, str) and _unpaired(item):
            problems.append(f"{_location((*loc, key))} has an unpaired surrogate; it is not Unicode text")
            value[key] = _fix(item)
    return problems


def _unpaired(text: str) -> bool:
    return _SURROGATE_RE.search(text) is not None


def _fix(text: str) -> str:
    return _SURROGATE_RE.sub("\ufffd", text)


# -- the document ----------------------------------------------------------------------------


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME_RE.fullmatch(str(part)) and len(str(part)) <= 60:
            out += f".{part}" if out else str(part)
        else:
            out += f"[{quoted(str(part), 60)}]"
    return out or "manifest"


def _found(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return "a number of more than 40 digits" if abs(value) >= _LONG_INT else f"{value:,}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return quoted(value, 60)
    if isinstance(value, list):
        return "a list"
    return "an object"


_RANGES = {
    "tier": f"a whole number from 0 to {MAX_TIER}",
    "expires_in_hours": f"a whole number of hours from 1 to {MAX_EXPIRY_HOURS:,}",
    "size": f"a whole number of bytes from 0 to {MAX_SIZE:,} (2^63 - 1)",
    "schema_version": "the integer 1",
}


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    where = _location(loc)
    field = loc[-1] if loc else ""
    kind = error["type"]
    found = f" (found {_found(error.get('input'))})"
    if kind == "extra_forbidden":
        return f"{where}: unknown field (remove it; schema_version 1 does not have it)"
    if kind == "missing":
        return f"{where}: required field is missing"
    if field in _RANGES and kind in ("int_type", "int_parsing", "greater_than_equal", "less_than_equal"):
        return f"{where}: must be {_RANGES[field]}; found {_found(error.get('input'))}"
    if kind == "enum":
        return f"{where}: {error['msg'].replace('Input should be', 'must be')}{found}"
    if kind == "string_pattern_mismatch" and field == "sha256":
        return f"{where}: must be 64 lowercase hexadecimal characters{found}"
    if kind == "string_type":
        return f"{where}: must be text{found}"
    if kind == "string_too_short":
        return f"{where}: must not be empty"
    if kind == "string_too_long":
        return f"{where}: is longer than {error['ctx']['max_length']} characters"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: must be an object{found}"
    if kind == "list_type":
        return f"{where}: must be a list{found}"
    if kind == "too_short":
        return f"{where}: must list at least {error['ctx']['min_length']} (found {error['ctx']['actual_length']})"
    if kind == "too_long":
        return f"{where}: must list at most {error['ctx']['max_length']} (found {error['ctx']['actual_length']})"
    if kind.startswith(("datetime", "date")):
        return f"{where}: must be a date and time such as 2026-11-20T10:00:00Z{found}"
    return f"{where}: {error['msg']}{found}"


def _drop(data: Any, loc: tuple[Any, ...]) -> None:
    """Remove the unknown field at ``loc`` so that the rest can be checked."""
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(data, dict):
        data.pop(loc[-1], None)


def read_manifest(raw: bytes, *, size: int | None = None) -> ManifestReading:
    """Everything that can be read from ``raw`` and every reason it breaks a structural rule.

    ``size`` is the blob's size when only its first bytes were read. Never raises.
    """
    try:
        data, reasons = _load(raw, size)
    except ManifestRejected as exc:
        return ManifestReading(None, None, exc.reasons)
    if not isinstance(data, dict):
        return ManifestReading(None, None, [*reasons, "manifest.json must hold a JSON object"])
    version = data.get("schema_version")
    if type(version) is int and version != 1:
        return ManifestReading(
            None,
            None,
            [*reasons, f"schema_version must be 1 (found {_found(version)}); this service reads version 1 only"],
        )
    if "schema_version" not in data:
        reasons.append("schema_version: required field is missing (this service reads schema_version 1)")
        data["schema_version"] = 1
    elif type(version) is not int:
        reasons.append(
            f"schema_version must be 1, the integer (found {_found(version)}); this service reads version 1 only"
        )
        data["schema_version"] = 1

    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not unknown:
            reasons += [_describe(e) for e in exc.errors()]
        else:  # report the unknown fields, drop them, and check the rest
            reasons += [_describe(e) for e in unknown]
            for error in unknown:
                _drop(data, tuple(error["loc"]))
            try:
                manifest = Manifest.model_validate(data)
            except ValidationError as again:
                reasons += [_describe(e) for e in again.errors()]

    reasons += _structural(data)
    files: tuple[FileEntry, ...] | None = None
    if manifest is not None:
        files = tuple(manifest.files)
    else:
        try:
            files = tuple(_FILES.validate_python(data.get("files")))
        except ValidationError:
            pass
    if files is not None and len(files) > MAX_FILES:
        files = None
    if manifest is not None and manifest.total_bytes > MAX_SIZE:
        manifest = None  # the registry cannot record the total
    if manifest is None and not reasons:  # pragma: no cover - every failure above gives a reason
        reasons.append("manifest.json cannot be read as a schema_version 1 manifest")
    package_id = data.get("package_id")
    return ManifestReading(manifest, files, reasons, package_id if isinstance(package_id, str) else None)


def parse_manifest(raw: bytes, *, size: int | None = None) -> Manifest:
    """Parse and structurally check a manifest; raise ``ManifestRejected`` with every reason."""
    reading = read_manifest(raw, size=size)
    if reading.reasons or reading.manifest is None:
        raise ManifestRejected(reading.reasons)
    return reading.manifest


def structural_problems(manifest: Manifest) -> list[str]:
    """Rules that need no configuration: ids, emails, text, file paths, counts."""
    return _structural(manifest.model_dump())


def _structural(data: dict[str, Any]) -> list[str]:
    """The configuration-free rules on whatever parts of the document have the right types."""
    reasons: list[str] = []
    package_id = data.get("package_id")
    if isinstance(package_id, str) and not is_valid_package_id(package_id):
        reasons.append(
            "package_id must be 3 to 40 lowercase letters, digits and single hyphens, "
            f"starting and ending with a letter or digit (found {quoted(package_id)})"
        )
    title = data.get("title")
    if isinstance(title, str):
        problem = text_problem(title)
        if problem:
            reasons.append(f"title {problem}")
    classification = data.get("classification")
    decisions = classification.get("decisions") if isinstance(classification, dict) else None
    for where, people in (("classification.decisions", decisions), ("recipients", data.get("recipients"))):
        if not isinstance(people, list):
            continue
        for i, person in enumerate(people):
            if not isinstance(person, dict):
                continue
            name, email = person.get("name"), person.get("email")
            if isinstance(name, str) and (problem := text_problem(name)):
                reasons.append(f"{where}[{i}].name {quoted(name)} {problem}")
            if isinstance(email, str) and not is_valid_email(email):
                reasons.append(f"{where}[{i}].email {quoted(email)} is not a valid email address")
    files = data.get("files")
    if isinstance(files, list):
        reasons += _file_problems(files)
    return reasons


def _file_problems(files: list[Any]) -> list[str]:
    reasons: list[str] = []
    if not 1 <= len(files) <= MAX_FILES:
        reasons.append(f"files must list 1 to {MAX_FILES:,} files (found {len(files):,})")
    exact: set[str] = set()
    keys: dict[str, int] = {}  # path key -> index of the first file with it
    total = 0
    good: list[tuple[int, str]] = []
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            continue
        size = entry.get("size")
        if type(size) is int and 0 <= size <= MAX_SIZE:
            total += size
        path = entry.get("path")
        if not isinstance(path, str):
            continue
        problem = path_problem(path)
        if problem:
            reasons.append(f"files[{i}].path {quoted(path, 1100)} {problem}")
            continue
        if path in exact:
            reasons.append(f"files[{i}].path {quoted(path, 1100)} is listed twice")
            continue
        exact.add(path)
        key = _path_key(path)
        if key in keys:
            other = files[keys[key]]["path"]
            reasons.append(
                f"files[{i}].path {quoted(path, 1100)} is the same file as files[{keys[key]}].path "
                f"{quoted(other, 1100)} where case is ignored (Windows and macOS would keep only one)"
            )
            continue
        keys[key] = i
        good.append((i, key))
    for i, key in good:
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in keys:
                reasons.append(
                    f"files[{i}].path {quoted(files[i]['path'], 1100)} puts a file inside "
                    f"{quoted(files[keys[folder]]['path'], 1100)}, which is itself listed as a file"
                )
                break
    if total > MAX_SIZE:
        reasons.append(f"files add up to {total:,} bytes; the registry records at most {MAX_SIZE:,} (2^63 - 1)")
    return reasons
