"""What every stage of a package's life is configured with, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from shared.domain.policy import PolicyConfig
from shared.domain.signoff import SignoffMode


@dataclass(frozen=True)
class PipelineConfig:
    staging_container: str = "egress-staging"
    records_container: str = "egress-records"
    system_manager_email: str = "system-manager@dsh.example"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    workers: int = 8
    signoff_mode: SignoffMode = SignoffMode.REQUIRED
    signoff_ttl: timedelta = timedelta(hours=168)
    public_base_url: str = "http://127.0.0.1:7071"
    signoff_require_principal: bool = False
    retention: timedelta = timedelta(hours=168)
    stuck_after: timedelta = timedelta(minutes=10)  # a signed-off package not sealed by then is queued again

    def signoff_link(self, token: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/api/signoff/{token}"
