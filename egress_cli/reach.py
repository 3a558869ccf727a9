"""A quick check that storage answers at all, before a command starts a long upload.

The storage SDK retries a refused connection with exponential back-off for about 90 seconds
before it gives up; a person at a terminal should hear within seconds that nothing is there.
"""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request

from shared.errors import UNREACHABLE, StorageUnavailable

PROBE_SECONDS = 5.0


def _target(url: str) -> tuple[str, int]:
    """Where a connection to ``url`` goes first: its host, or the proxy the environment names for it."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        through = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return through.hostname or host, through.port or 80
    return host, port


def ensure_reachable(url: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise StorageUnavailable unless something accepts a TCP connection for ``url`` within ``timeout``."""
    host, port = _target(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise StorageUnavailable(
            f"{UNREACHABLE} (nothing accepted a connection to {host}:{port} within {timeout:.0f} s: "
            f"{exc.strerror or type(exc).__name__})"
        ) from exc
