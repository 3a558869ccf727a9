"""Pass-through streams that hash and count what flows through them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from shared.ports import BlobWriter


class HashingReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha.update(data)
        self.size += n
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


class HashingWriter(io.RawIOBase):
    def __init__(self, inner: BlobWriter) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._inner.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def discard(self) -> None:
        """Drop what was written: the blob is not committed."""
        if not self.closed:
            self._inner.discard()
        super().close()

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


@dataclass(frozen=True)
class Gathered:
    """What a stream of chunks held: its size, its SHA-256 and, when it was small enough, its bytes."""

    size: int
    sha256: str
    data: bytes | None  # None: more than ``keep`` bytes, hashed and counted but not kept


def gather(chunks: Iterable[bytes], keep: int) -> Gathered:
    """Hash and count every chunk; keep the bytes only while they total at most ``keep`` (bounded memory)."""
    sha = hashlib.sha256()
    size = 0
    kept: list[bytes] | None = []
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        if kept is not None:
            if size <= keep:
                kept.append(chunk)
            else:
                kept = None  # over the limit: from here on only hashed
    return Gathered(size=size, sha256=sha.hexdigest(), data=None if kept is None else b"".join(kept))
