"""Pass-through streams that hash and count what flows through them."""

from __future__ import annotations

import hashlib
import io
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
