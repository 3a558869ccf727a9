"""Session-wide local servers and per-test isolated settings.

Azurite and the SMTP sink are started here, by the test session, never assumed to run.
Each test gets its own containers and tables, so tests share one Azurite safely.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from shared.bootstrap import Services, build_services, get_services, reset_services
from shared.settings import Settings, get_settings
from tests.support.servers import Azurite, SmtpSink, start_azurite, start_smtp_sink

MANAGER = "system-manager@dsh.example"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_session() -> Iterator[SmtpSink]:
    sink = start_smtp_sink()
    yield sink
    sink.controller.stop()  # type: ignore[attr-defined]


@pytest.fixture
def smtp(smtp_session: SmtpSink) -> SmtpSink:
    smtp_session.clear()
    return smtp_session


class ShiftableClock:
    """Real time plus an offset the test can move."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture
def settings(azurite: Azurite, smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tag = secrets.token_hex(3)
    return Settings(
        EGRESS_STORAGE=azurite.connection_string(),
        STAGING_CONTAINER=f"staging-{tag}",
        AUDIT_CONTAINER=f"audit-{tag}",
        RECORDS_CONTAINER=f"records-{tag}",
        REGISTRY_TABLE_PREFIX=f"t{tag}",
        RELEASE_QUEUE=f"release-{tag}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp.port,
        EMAIL_SENDER="egress@dsh.example",
        SYSTEM_MANAGER_EMAIL=MANAGER,
        SAS_ALLOW_HTTP=True,
        RETENTION_HOURS=24,
        LOCAL_SECRETS_DIR=str(tmp_path_factory.mktemp("secrets")),
    )


@pytest.fixture
def services(settings: Settings, clock: ShiftableClock) -> Services:
    return build_services(settings, clock=clock)


@pytest.fixture
def blob_service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string())


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
