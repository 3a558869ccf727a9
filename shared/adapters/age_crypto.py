"""age encryption (https://age-encryption.org/v1) to a per-package X25519 identity, streamed.

Recipients decrypt with the widely available ``age`` tool (``age -d -i key.txt``) or with
``egress decrypt``; our software is not needed to read the data.
"""

from __future__ import annotations

from typing import BinaryIO

import pyrage

from shared.adapters import age_stream
from shared.errors import InvalidRequest


class AgeCrypto:
    def new_identity(self) -> tuple[str, str]:
        """A fresh (secret identity, public recipient) pair, as age writes them."""
        identity = pyrage.x25519.Identity.generate()
        return str(identity), str(identity.to_public())

    def public_of(self, identity: str) -> str:
        return str(pyrage.x25519.Identity.from_str(identity.strip()).to_public())

    def encrypt(self, source: BinaryIO, target: BinaryIO, recipient: str) -> None:
        """Streamed in 4 MiB reads (see age_stream for why not pyrage.encrypt_io)."""
        age_stream.encrypt(source, target, recipient)

    def decrypt(self, source: BinaryIO, target: BinaryIO, identity: str) -> None:
        try:
            key = pyrage.x25519.Identity.from_str(identity.strip())
        except Exception as exc:  # pyrage raises its own IdentityError
            raise InvalidRequest("the key file does not hold an age identity (AGE-SECRET-KEY-1...)") from exc
        try:
            pyrage.decrypt_io(source, target, [key])
        except (pyrage.DecryptError, OSError) as exc:  # a truncated stream surfaces as an I/O error
            raise InvalidRequest(
                f"decryption failed ({exc}): the key does not fit this file, or the file is damaged or truncated"
            ) from exc
