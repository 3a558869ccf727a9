"""Write a local.settings.json from a Settings object, as a user's file would hold it."""

from __future__ import annotations

import json
from pathlib import Path

from shared.settings import Settings


def write_local_settings(settings: Settings, path: Path, **extra: str) -> Path:
    values: dict[str, str] = {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": settings.egress_storage}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is not None and info.alias:
            values[info.alias] = str(value).lower() if isinstance(value, bool) else str(value)
    values.update(extra)
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
    return path
