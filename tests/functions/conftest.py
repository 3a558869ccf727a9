"""Handlers run as the host runs them: settings from the environment, real azure.functions inputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.bootstrap import Services, get_services, reset_services
from shared.settings import Settings, get_settings


@pytest.fixture
def app_services(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    for field, info in Settings.model_fields.items():
        value = getattr(settings, field)
        if value is not None and info.alias:
            monkeypatch.setenv(info.alias, str(value).lower() if isinstance(value, bool) else str(value))
    get_settings.cache_clear()
    reset_services()
    yield get_services()
    get_settings.cache_clear()
    reset_services()
