"""Application settings: the only module that reads the process environment.

Names are the app-setting names of DESIGN.md section 6 (plus the additions listed in the
README). Azure passes them as environment variables; locally the Functions host (or our
local host) loads them from ``local.settings.json``.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.policy import PolicyConfig, TierLimit
from shared.domain.signoff import SignoffMode


class Settings(BaseSettings):
    """Validated settings; tests build it directly with keyword arguments."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    egress_storage: str = Field("UseDevelopmentStorage=true", alias="EGRESS_STORAGE")
    egress_blob_service_uri: str | None = Field(None, alias="EGRESS_STORAGE__blobServiceUri")
    egress_table_service_uri: str | None = Field(None, alias="EGRESS_STORAGE__tableServiceUri")
    delivery_storage: str | None = Field(None, alias="DELIVERY_STORAGE")
    delivery_blob_service_uri: str | None = Field(None, alias="DELIVERY_STORAGE__blobServiceUri")
    staging_container: str = Field("egress-staging", alias="STAGING_CONTAINER")
    audit_container: str = Field("egress-audit", alias="AUDIT_CONTAINER")
    records_container: str = Field("egress-records", alias="RECORDS_CONTAINER")
    registry_table_prefix: str = Field("egress", alias="REGISTRY_TABLE_PREFIX")

    key_vault_url: str | None = Field(None, alias="KEY_VAULT_URL")
    signing_key_secret_name: str = Field("delivery-storage-key", alias="SIGNING_KEY_SECRET_NAME")

    email_backend: str = Field("smtp", alias="EMAIL_BACKEND")
    acs_endpoint: str | None = Field(None, alias="ACS_ENDPOINT")
    acs_connection_string: str | None = Field(None, alias="ACS_CONNECTION_STRING")
    smtp_host: str = Field("127.0.0.1", alias="SMTP_HOST")
    smtp_port: int = Field(1025, alias="SMTP_PORT")
    email_sender: str = Field("egress@dsh.example", alias="EMAIL_SENDER")
    system_manager_email: str = Field("system-manager@dsh.example", alias="SYSTEM_MANAGER_EMAIL")

    # The SFTP-enabled account (hierarchical namespace) holding sealed sftp packages; unset = the
    # delivery account. Its local users are managed through Azure's management plane when
    # SFTP_ACCOUNT_ID names the account, else kept for the local SFTP endpoint in a table.
    sftp_storage: str | None = Field(None, alias="SFTP_STORAGE")
    sftp_blob_service_uri: str | None = Field(None, alias="SFTP_STORAGE__blobServiceUri")
    sftp_account_id: str | None = Field(None, alias="SFTP_ACCOUNT_ID")
    sftp_host: str = Field("127.0.0.1", alias="SFTP_HOST")
    sftp_port: int = Field(22, ge=1, le=65535, alias="SFTP_PORT")
    local_secrets_dir: str = Field(".local/secrets", alias="LOCAL_SECRETS_DIR")

    sas_allow_http: bool = Field(False, alias="SAS_ALLOW_HTTP")
    expiry_schedule: str = Field("0 */5 * * * *", alias="EXPIRY_SCHEDULE")
    retention_hours: float = Field(168.0, ge=0, alias="RETENTION_HOURS")
    require_manager_principal: bool = Field(False, alias="REQUIRE_MANAGER_PRINCIPAL")
    manager_role: str = Field("EgressManager", alias="MANAGER_ROLE")

    max_expiry_hours_tier_0_1: int = Field(336, ge=1, alias="MAX_EXPIRY_HOURS_TIER_0_1")
    max_expiry_hours_tier_2_3: int = Field(72, ge=1, alias="MAX_EXPIRY_HOURS_TIER_2_3")
    max_ip_prefix: int = Field(24, ge=0, le=32, alias="MAX_IP_RANGE_PREFIX")
    copy_workers: int = Field(8, ge=1, le=64, alias="COPY_WORKERS")

    classification_signoff: SignoffMode = Field(SignoffMode.REQUIRED, alias="CLASSIFICATION_SIGNOFF")
    public_base_url: str = Field("http://127.0.0.1:7071", alias="PUBLIC_BASE_URL")
    signoff_ttl_hours: float = Field(168.0, gt=0, alias="SIGNOFF_TTL_HOURS")
    signoff_require_principal: bool = Field(False, alias="SIGNOFF_REQUIRE_PRINCIPAL")
    release_queue: str = Field("egress-release", alias="RELEASE_QUEUE")
    egress_queue_service_uri: str | None = Field(None, alias="EGRESS_STORAGE__queueServiceUri")

    @field_validator("email_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in ("smtp", "acs"):
            raise ValueError("EMAIL_BACKEND must be 'smtp' or 'acs'")
        return value

    def policy(self) -> PolicyConfig:
        """The classification policy these settings configure."""
        return PolicyConfig(
            tiers={
                0: TierLimit(max_expiry_hours=self.max_expiry_hours_tier_0_1, same_domain=False),
                1: TierLimit(max_expiry_hours=self.max_expiry_hours_tier_0_1, same_domain=False),
                2: TierLimit(max_expiry_hours=self.max_expiry_hours_tier_2_3, same_domain=True),
                3: TierLimit(max_expiry_hours=self.max_expiry_hours_tier_2_3, same_domain=True),
            },
            max_ip_prefix=self.max_ip_prefix,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this worker, read once from the environment."""
    return Settings()


def blob_trigger_source() -> str:
    """`EventGrid` in Azure (Flex Consumption), `LogsAndContainerScan` (polling) locally.

    Read on its own because the blob trigger's decorator needs it when the app is indexed,
    before the rest of the settings are validated.
    """
    value = os.environ.get("BLOB_TRIGGER_SOURCE", "LogsAndContainerScan")
    if value not in ("EventGrid", "LogsAndContainerScan"):
        raise ValueError("BLOB_TRIGGER_SOURCE must be 'EventGrid' or 'LogsAndContainerScan'")
    return value


def expiry_schedule() -> str:
    """The timer's NCRONTAB schedule, as a binding expression the host resolves."""
    return "%EXPIRY_SCHEDULE%"
