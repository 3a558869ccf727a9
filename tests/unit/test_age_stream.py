"""Our age writer against the reference readers: pyrage here, Debian's age binary when present.

Sizes sit on every boundary the writer handles: empty, one byte, one chunk (64 KiB) either side,
one read block (4 MiB) either side, and whole numbers of blocks.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest

from shared.adapters import age_stream
from shared.errors import InvalidRequest

CHUNK = age_stream.CHUNK
BLOCK = age_stream.BLOCK
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK]


class TrickleReader(io.RawIOBase):
    """Hands out at most 1,000 bytes per read, like a slow network stream."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        piece = self._data.read(min(len(buffer), 1000))
        buffer[: len(piece)] = piece
        return len(piece)


@pytest.fixture(scope="module")
def identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def encrypted(data: bytes, recipient: str, trickle: bool = False) -> bytes:
    out = io.BytesIO()
    source = TrickleReader(data) if trickle else io.BytesIO(data)
    age_stream.encrypt(source, out, recipient)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("size", SIZES)
def test_pyrage_decrypts_every_boundary(identity: pyrage.x25519.Identity, size: int) -> None:
    data = os.urandom(size)
    sealed = encrypted(data, str(identity.to_public()))
    plain = io.BytesIO()
    pyrage.decrypt_io(io.BytesIO(sealed), plain, [identity])
    assert plain.getvalue() == data
    # header + 16-byte nonce + one 16-byte tag per chunk (an empty input is one empty chunk)
    chunks = max(1, -(-size // CHUNK))
    assert len(sealed) - len(age_stream.header(b"k" * 16, os.urandom(32))) == 16 + size + 16 * chunks


@pytest.mark.skipif(shutil.which("age") is None, reason="Debian's age is installed by `make install`")
@pytest.mark.parametrize("size", [0, CHUNK, BLOCK + 1])
def test_the_age_binary_decrypts_it(identity: pyrage.x25519.Identity, size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    (tmp_path / "key.txt").write_text(str(identity))
    (tmp_path / "f.age").write_bytes(encrypted(data, str(identity.to_public())))
    result = subprocess.run(
        ["age", "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "f.age")], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_a_source_that_trickles_gives_the_same_plaintext(identity: pyrage.x25519.Identity) -> None:
    data = os.urandom(BLOCK + 12345)
    plain = io.BytesIO()
    pyrage.decrypt_io(io.BytesIO(encrypted(data, str(identity.to_public()), trickle=True)), plain, [identity])
    assert plain.getvalue() == data


def test_each_encryption_uses_a_fresh_key(identity: pyrage.x25519.Identity) -> None:
    data = b"same outputs" * 1000
    first, second = (encrypted(data, str(identity.to_public())) for _ in range(2))
    assert first != second
    assert first[-200:] != second[-200:]


@pytest.mark.parametrize("where", ["header", "payload", "tail"])
def test_tampering_is_detected_by_the_reader(identity: pyrage.x25519.Identity, where: str) -> None:
    sealed = bytearray(encrypted(os.urandom(3 * CHUNK), str(identity.to_public())))
    position = {"header": 30, "payload": len(sealed) // 2, "tail": len(sealed) - 1}[where]
    sealed[position] ^= 0x01
    with pytest.raises((pyrage.DecryptError, OSError)):
        pyrage.decrypt_io(io.BytesIO(bytes(sealed)), io.BytesIO(), [identity])


def test_dropping_the_last_chunk_is_detected(identity: pyrage.x25519.Identity) -> None:
    sealed = encrypted(os.urandom(3 * CHUNK), str(identity.to_public()))
    truncated = sealed[: -(CHUNK + 16)]  # whole chunks remain, but none flagged last
    with pytest.raises((pyrage.DecryptError, OSError)):
        pyrage.decrypt_io(io.BytesIO(truncated), io.BytesIO(), [identity])


def test_the_recipient_key_is_decoded_and_checked(identity: pyrage.x25519.Identity) -> None:
    recipient = str(identity.to_public())
    assert len(age_stream.recipient_key(recipient)) == 32
    broken = recipient[:-1] + ("q" if recipient[-1] != "q" else "p")
    for bad in (broken, recipient.upper(), "age1short", str(identity), ""):
        with pytest.raises(InvalidRequest, match="not an age X25519 recipient"):
            age_stream.recipient_key(bad)
