"""``local.settings.json``: the same file ``func start`` reads; its Values become app settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_local_settings(path: Path | None = None) -> dict[str, str]:
    """Put the file's Values into the environment (a value already set there wins, as with Core Tools)."""
    candidates = [path] if path else [ROOT / "local.settings.json", ROOT / "local.settings.example.json"]
    for candidate in candidates:
        if candidate and candidate.exists():
            values = {k: str(v) for k, v in json.loads(candidate.read_text())["Values"].items()}
            for key, value in values.items():
                os.environ.setdefault(key, value)
            return values
    raise FileNotFoundError("no local.settings.json (copy local.settings.example.json)")


def resolve(expression: str) -> str:
    """Resolve ``%NAME%`` app-setting references the way the host does."""
    out = expression
    while "%" in out:
        start = out.index("%")
        end = out.index("%", start + 1)
        name = out[start + 1 : end]
        if name not in os.environ:
            raise KeyError(f"app setting {name} is not set (needed by {expression!r})")
        out = out[:start] + os.environ[name] + out[end + 1 :]
    return out


def connection_string(name: str) -> str:
    """A binding's ``connection``: the setting itself, as for a connection string."""
    value = os.environ.get(name)
    if not value:
        raise KeyError(f"connection setting {name} is not set")
    return value
