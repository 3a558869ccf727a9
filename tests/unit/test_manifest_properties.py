"""Properties of manifest reading, policy and paths, for any input (hypothesis, issue 11).

Deterministic (derandomized, no example database) and quick: a few hundred examples each.
"""

from __future__ import annotations

import copy
import json
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.manifest import (
    BIDI_CONTROLS,
    MAX_NAME_BYTES,
    WINDOWS_DEVICE_NAMES,
    Manifest,
    ManifestRejected,
    parse_manifest,
    path_problem,
    read_manifest,
)
from shared.domain.policy import PolicyConfig, TierLimit, policy_problems
from tests.support.packages import SAMPLE_FILES, manifest_for

FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ANY_CHAR = st.characters(exclude_categories=())  # surrogates and control characters too
TEXT = st.text(ANY_CHAR, max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**31 - 2, max_value=2**64 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
BASE = manifest_for("wp-2026-0042", SAMPLE_FILES)

# Pieces of paths that break one rule or nearly do.
SEGMENTS = st.sampled_from(
    [
        "a",
        "b.csv",
        "tables",
        "..",
        ".",
        "...",
        "x.",
        "x ",
        "x\u00a0",
        "con",
        "CON.txt",
        "Aux",
        "nul .tar.gz",
        "com1",
        "COM\u00b9",
        "lpt9.x",
        "\uff23\uff2f\uff2e",
        "\uff0e\uff0e",
        "\u2025",
        "a:b",
        "a\uff1ab",
        "a\\b",
        "a\uff3cb",
        "\uff0f",
        "a\u202eb",
        "a\u2066b",
        "a\nb",
        "a\x00b",
        "a\x85b",
        "a\ud800b",
        "a?b",
        "<x>",
        "x" * 256,
        "CONSOLE",
        "com10",
        "",
    ]
)
FINE_SEGMENTS = st.sampled_from(
    [
        "a",
        "b.csv",
        "Tables",
        "donn\u00e9es",
        "x y.txt",
        ".hidden",
        "a..b",
        "CONSOLE",
        "com10",
        "lpt",
        "\uff41",
        "e\u0301",
    ]
)
PATHS = st.one_of(
    st.lists(
        FINE_SEGMENTS | st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=5), min_size=1, max_size=4
    ).map("/".join),
    st.lists(SEGMENTS | st.text(ANY_CHAR, max_size=6), min_size=1, max_size=5).map("/".join),
    st.text(ANY_CHAR, max_size=30),
    st.text(st.sampled_from([*"aB./\\: ", "\uff0e", "\uff0f", "\u00b9", "\u202e", "\x00"]), max_size=12),
)


def _rejected_or_manifest(raw: bytes) -> Manifest | None:
    try:
        return parse_manifest(raw)
    except ManifestRejected as exc:
        assert exc.reasons and all(isinstance(r, str) and r for r in exc.reasons)
        return None


@FAST
@given(JSON)
def test_any_json_value_is_a_manifest_or_reasons(value: Any) -> None:
    _rejected_or_manifest(json.dumps(value).encode())


@FAST
@given(TEXT | st.text(max_size=200))
def test_any_text_is_a_manifest_or_reasons(text: str) -> None:
    _rejected_or_manifest(text.encode("utf-8", "surrogatepass"))


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_are_a_manifest_or_reasons(raw: bytes) -> None:
    _rejected_or_manifest(raw)


def _locations(value: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [loc]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _locations(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _locations(item, (*loc, i))
    return found


LOCATIONS = _locations(BASE)[1:]


@st.composite
def altered_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """The sample manifest with a few of its values replaced, removed, or joined by unknown fields."""
    manifest = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        loc = draw(st.sampled_from(LOCATIONS))
        parent: Any = manifest
        try:
            for part in loc[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "remove", "add"]))
            if action == "replace":
                parent[loc[-1]] = draw(JSON | PATHS)
            elif action == "remove" and isinstance(parent, dict):
                parent.pop(loc[-1], None)
            elif isinstance(parent, dict):
                parent[draw(TEXT)] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this part
    return manifest


@FAST
@given(altered_manifests())
def test_an_altered_manifest_is_read_without_raising_and_policy_never_raises(manifest: dict[str, Any]) -> None:
    raw = json.dumps(manifest).encode()
    reading = read_manifest(raw)
    assert all(isinstance(r, str) and r for r in reading.reasons)
    assert reading.manifest is not None or reading.reasons
    if reading.manifest is not None:
        for config in (PolicyConfig(), PolicyConfig(tiers={0: TierLimit(1, True)}, max_ip_prefix=32)):
            reasons = policy_problems(reading.manifest, config)
            assert isinstance(reasons, list) and all(isinstance(r, str) and r for r in reasons)
    _rejected_or_manifest(raw)


PEOPLE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["data_provider_representative", "investigator", "referee"]),
        "name": st.sampled_from(["Ada", "Alan", "Grace"]) | TEXT,
        "email": st.sampled_from(["ada@provider.example", "alan@institute.example", "x@PROVIDER.example"]) | TEXT,
        "tier": st.integers(0, 4),
        "decided_at": st.just("2026-11-20T10:00:00Z"),
    }
)
RECIPIENTS = st.fixed_dictionaries(
    {
        "name": TEXT,
        "email": st.sampled_from(["ada@provider.example", "eve@elsewhere.example"]) | TEXT,
        "ip_ranges": st.lists(
            st.sampled_from(
                ["203.0.113.7", "10.0.0.1", "0.0.0.0/0", "::1", "198.51.100.0/28", "1.2.3.4/33", "300.1.1.1"]
            )
            | TEXT,
            max_size=3,
        ),
    }
)


@FAST
@given(
    st.lists(PEOPLE, min_size=1, max_size=5),
    st.integers(0, 4),
    st.lists(RECIPIENTS, max_size=7),
    st.integers(1, 8760),
    st.sampled_from(["storage_explorer", "sftp", "physical"]),
)
def test_policy_gives_reasons_for_any_parsed_manifest(
    decisions: list[dict[str, Any]], tier: int, recipients: list[dict[str, Any]], hours: int, method: str
) -> None:
    manifest = {
        **BASE,
        "classification": {"tier": tier, "decisions": decisions},
        "recipients": recipients,
        "expires_in_hours": hours,
        "method": method,
    }
    reading = read_manifest(json.dumps(manifest).encode("utf-8", "surrogatepass"))
    if reading.manifest is None:
        assert reading.reasons
        return
    for config in (PolicyConfig(), PolicyConfig(tiers={})):
        reasons = policy_problems(reading.manifest, config)
        assert all(isinstance(r, str) and r for r in reasons)


def _safe_segment(segment: str) -> bool:
    stem = segment.split(".", 1)[0].rstrip(" ").upper()
    return (
        segment not in ("", ".", "..")
        and segment.strip(".") != ""
        and segment[-1] not in ". "
        and stem not in WINDOWS_DEVICE_NAMES
        and len(segment.encode("utf-8")) <= MAX_NAME_BYTES
    )


def _plain(text: str) -> bool:
    return not any(
        unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS or c in ':\\<>"|?*' for c in text
    )


@settings(FAST, max_examples=300)
@given(PATHS)
def test_an_accepted_path_is_safe_to_create_on_windows_and_posix(path: str) -> None:
    if path_problem(path) is not None:
        return
    normal = unicodedata.normalize("NFKC", path)
    for form in {path, normal}:
        assert _plain(form) and not form.startswith("/"), form
        assert all(_safe_segment(s) for s in form.split("/")), form
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        for form in {path, normal}:  # as written, and as a tool that folds compatibility characters writes it
            target = root / form
            assert target.resolve().is_relative_to(root), form
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"an output")
            assert target.resolve().is_relative_to(root) and target.read_bytes() == b"an output"


@FAST
@given(st.lists(PATHS, min_size=1, max_size=6))
def test_accepted_file_lists_make_distinct_files_on_case_insensitive_disks(paths: list[str]) -> None:
    files = [{"path": p, "size": 1, "sha256": "0" * 64} for p in paths]
    reading = read_manifest(json.dumps({**BASE, "files": files}).encode("utf-8", "surrogatepass"))
    if any(r.startswith("files") for r in reading.reasons):
        return
    keys = [unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", p).casefold()) for p in paths]
    assert len(set(keys)) == len(keys), paths
    folders = {"/".join(k.split("/")[:i]) for k in keys for i in range(1, k.count("/") + 1)}
    assert not folders & set(keys), paths
