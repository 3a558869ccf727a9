"""Every stage of a package's life built on in-memory fakes, for the unit tier's worlds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.services.config import PipelineConfig
from shared.services.deliver import DeliverService
from shared.services.end_grant import EndGrantService
from shared.services.intake import IntakeService
from shared.services.seal import SealService
from shared.services.signoff import SignoffService
from tests.support.fakes import FakeBlobStore, FakeLinks, FakeQueue, FakeSftpAccess


@dataclass
class Stages:
    intake: IntakeService
    signoff: SignoffService
    seal: SealService
    deliver: DeliverService
    end_grant: EndGrantService
    sftp: FakeSftpAccess


def fake_stages(
    *, staging: FakeBlobStore, delivery: FakeBlobStore, queue: FakeQueue, config: PipelineConfig, **common: Any
) -> Stages:
    """The stages on ``staging`` and ``delivery`` (which also stands for the SFTP account), with the
    ``registry``, ``audit``, ``email`` and ``clock`` in ``common``; sealing has no cipher (link packages)."""
    sftp = FakeSftpAccess()
    return Stages(
        intake=IntakeService(staging=staging, queue=queue, config=config, **common),
        signoff=SignoffService(records=staging, queue=queue, config=config, **common),
        seal=SealService(
            staging=staging, delivery=delivery, sftp_store=delivery, keys=None, crypto=None, config=config, **common
        ),
        deliver=DeliverService(
            records=staging,
            staging=staging,
            delivery=delivery,
            links=FakeLinks(),
            sftp=sftp,
            sftp_store=delivery,
            config=config,
            **common,
        ),
        end_grant=EndGrantService(delivery=delivery, sftp=sftp, config=config, **common),
        sftp=sftp,
    )
