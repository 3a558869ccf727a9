"""A recipient's SSH public key for SFTP login (DESIGN section 4a): one OpenSSH public key line,
ed25519, ECDSA, or RSA of 3,072 bits or more. Pure: parsed with ``cryptography``, never run."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MIN_RSA_BITS = 3072
MAX_KEY_CHARS = 8192  # an RSA key of 16,384 bits is about 2,800 characters
# What Azure Blob SFTP takes for a local user's key (its "supported algorithms"): no NIST P-521.
_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")
_EXAMPLE = "ssh-ed25519 AAAA... name@example"


def ssh_key_problem(value: str) -> str | None:
    """Why ``value`` is not a public key the SFTP server may accept, or None when it is."""
    if len(value) > MAX_KEY_CHARS:
        return f"is {len(value):,} characters long; a public key line is at most {MAX_KEY_CHARS:,}"
    if "PRIVATE KEY" in value:
        return "looks like a PRIVATE key: never share it; give the .pub file's contents instead"
    if any(c in value.strip() for c in "\r\n\x00"):
        return "must be one line: the contents of a .pub file (for example id_ed25519.pub)"
    parts = value.strip().split()
    if len(parts) < 2:
        return f"is not an OpenSSH public key line ({_EXAMPLE}: the contents of a .pub file)"
    kind = parts[0]
    if kind not in _TYPES:
        return f"has type {kind[:40]!r}; use ssh-ed25519 (recommended), ecdsa-sha2-nistp256/384 or ssh-rsa"
    try:
        key = load_ssh_public_key(f"{kind} {parts[1]}".encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return f"is not a valid {kind} public key (its base64 part does not decode to one)"
    except Exception:  # the library refuses some malformed keys with other types
        return f"is not a valid {kind} public key"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"is an RSA key of {key.key_size} bits; RSA keys need {MIN_RSA_BITS} bits or more (or use ssh-ed25519)"
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return f"has type {kind!r}, which the SFTP server does not accept"
    return None


def normalised_key(value: str) -> str:
    """``type base64 [comment]`` on one line, as Azure and ``authorized_keys`` store it."""
    return " ".join(value.strip().split())
