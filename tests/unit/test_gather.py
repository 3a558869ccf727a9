"""``gather``: the read that small files are sealed by keeps at most what the manifest allows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from shared.services.hashing_io import gather


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_what_fits_is_kept_whole_with_its_size_and_hash() -> None:
    data = bytes(range(256)) * 40
    found = gather(_chunks(data, 1000), keep=len(data))
    assert found.data == data
    assert found.size == len(data) and found.sha256 == hashlib.sha256(data).hexdigest()


def test_more_than_allowed_is_hashed_and_counted_but_not_kept() -> None:
    data = b"z" * 10_000
    seen: list[int] = []

    def watched() -> Iterator[bytes]:
        for chunk in _chunks(data, 1000):
            seen.append(len(chunk))
            yield chunk

    found = gather(watched(), keep=2_500)
    assert found.data is None
    assert found.size == len(data) and found.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data), "read to the end, so the reason can give the real size and hash"


def test_an_empty_file_is_kept_as_empty() -> None:
    found = gather(iter([]), keep=0)
    assert found.data == b"" and found.size == 0 and found.sha256 == hashlib.sha256(b"").hexdigest()
