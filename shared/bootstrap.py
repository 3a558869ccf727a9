"""Composition root: builds credentials, SDK clients, adapters and services once per worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.communication.email import EmailClient
from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.adapters.age_crypto import AgeCrypto
from shared.adapters.audit_log import BlobAuditTrail
from shared.adapters.blob_store import AzureBlobStore, KeySignedService, LinkContainer, client_options
from shared.adapters.email import AcsEmailSender, SmtpEmailSender
from shared.adapters.grant_index import TableDueIndex
from shared.adapters.indexed_registry import IndexedRegistry
from shared.adapters.once_email import OnceEmailSender
from shared.adapters.outbox import TableOutbox
from shared.adapters.package_keys import KeyVaultPackageKeys, LocalPackageKeys
from shared.adapters.release_queue import BLOB_POISON_QUEUE, StoragePoisonWatch, StorageReleaseQueue
from shared.adapters.sas import SasLinkMinter
from shared.adapters.secrets import KeyVaultSigningKeys, LocalSigningKeys
from shared.adapters.sftp_azure import AzureSftpAccess
from shared.adapters.sftp_local import TableSftpAccess
from shared.adapters.table_registry import TableRegistry
from shared.ports import Clock, EmailSender, PackageKeys, SftpAccess, SigningKeys
from shared.services.config import PipelineConfig
from shared.services.deliver import DeliverService
from shared.services.end_grant import EndGrantService
from shared.services.intake import IntakeService
from shared.services.key_release import KeyReleaseService
from shared.services.overview import OverviewService
from shared.services.seal import SealService
from shared.services.signoff import SignoffService
from shared.services.sweep import SweepSchedule, SweepService
from shared.settings import Settings, get_settings


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Services:
    """One service per stage of a package's life, and the adapters tests and the CLI look through."""

    settings: Settings
    config: PipelineConfig
    intake: IntakeService
    signoff: SignoffService
    seal: SealService
    deliver: DeliverService
    key_release: KeyReleaseService
    end_grant: EndGrantService
    sweep: SweepService
    overview: OverviewService
    audit: BlobAuditTrail
    registry: IndexedRegistry  # the TableRegistry (``.inner``) keeping the sweep's due indexes
    staging: AzureBlobStore
    delivery: AzureBlobStore
    sftp_store: AzureBlobStore  # the SFTP account's blobs (the delivery account's unless SFTP_STORAGE is set)
    sftp: SftpAccess
    queue: StorageReleaseQueue
    grants_due: TableDueIndex
    packages_due: TableDueIndex


def _credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _blob_service(connection: str | None, service_uri: str | None, **extra: Any) -> BlobServiceClient:
    options = {**client_options(), **extra}
    if service_uri:
        return BlobServiceClient(service_uri, credential=_credential(), **options)
    assert connection
    return BlobServiceClient.from_connection_string(connection, **options)


def _account_service(uri: str | None, connection: str | None, otherwise: BlobServiceClient) -> BlobServiceClient:
    """Another storage account: by identity (``uri``), by connection string, or ``otherwise`` the same one."""
    if uri:
        return _blob_service(None, uri)
    if connection:
        return _blob_service(connection, None)
    return otherwise


def _sftp_access(settings: Settings, tables: TableServiceClient, account_name: str) -> SftpAccess:
    """Azure's management plane when SFTP_ACCOUNT_ID names the account, else the local stand-in's table."""
    if settings.sftp_account_id:
        return AzureSftpAccess.from_resource_id(
            settings.sftp_account_id, _credential(), host=settings.sftp_host, port=settings.sftp_port
        )
    local = TableSftpAccess(
        tables.get_table_client(f"{settings.registry_table_prefix}sftpusers"),
        account_name=account_name,
        host=settings.sftp_host,
        port=settings.sftp_port,
    )
    local.ensure_table()
    return local


def _signing_keys(settings: Settings, delivery: BlobServiceClient) -> SigningKeys:
    if settings.key_vault_url:
        client = SecretClient(settings.key_vault_url, credential=_credential())
        return KeyVaultSigningKeys(client, settings.signing_key_secret_name)
    return LocalSigningKeys(getattr(delivery.credential, "account_key", None))


def _email(settings: Settings) -> EmailSender:
    if settings.email_backend == "acs":
        if settings.acs_connection_string:
            client = EmailClient.from_connection_string(settings.acs_connection_string)
        else:
            client = EmailClient(settings.acs_endpoint or "", credential=_credential())
        return AcsEmailSender(client, settings.email_sender)
    return SmtpEmailSender(settings.smtp_host, settings.smtp_port, settings.email_sender)


def build_staging_store(settings: Settings, *, interactive: bool = False) -> AzureBlobStore:
    """Only the staging account's blobs, for staging a package (no registry, keys or email needed).

    ``interactive``: a person is waiting (the CLI), so give up within seconds rather than retrying
    for a minute and a half as a background function may.
    """
    extra: dict[str, Any] = {}
    if interactive:
        extra = {
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2),
            "connection_timeout": 10,
        }
    return AzureBlobStore(_blob_service(settings.egress_storage, settings.egress_blob_service_uri, **extra))


def open_link(sas_url: str) -> LinkContainer:
    """A recipient's view of a sealed container through their SAS link (the CLI's download)."""
    return LinkContainer(sas_url)


def build_crypto() -> AgeCrypto:
    """The age encryption the service seals with (the CLI decrypts with the same)."""
    return AgeCrypto()


def package_status_of(settings: Settings, package_id: str) -> str | None:
    """A package's status straight from the registry (the CLI's check before staging), or None."""
    if settings.egress_table_service_uri:
        tables = TableServiceClient(settings.egress_table_service_uri, credential=_credential())
    else:
        tables = TableServiceClient.from_connection_string(settings.egress_storage)
    record = TableRegistry(tables, settings.registry_table_prefix).get_package(package_id)
    return record.status.value if record else None


def _queue_client(settings: Settings) -> QueueClient:
    encode = TextBase64EncodePolicy()  # base64 text: the Functions queue trigger's default encoding
    if settings.egress_queue_service_uri:
        return QueueClient(
            settings.egress_queue_service_uri,
            settings.release_queue,
            credential=_credential(),
            message_encode_policy=encode,
        )
    return QueueClient.from_connection_string(
        settings.egress_storage, settings.release_queue, message_encode_policy=encode
    )


def _poison_watch(settings: Settings) -> StoragePoisonWatch:
    names = (f"{settings.release_queue}-poison", BLOB_POISON_QUEUE)
    if settings.egress_queue_service_uri:
        return StoragePoisonWatch(
            [QueueClient(settings.egress_queue_service_uri, n, credential=_credential()) for n in names]
        )
    return StoragePoisonWatch([QueueClient.from_connection_string(settings.egress_storage, n) for n in names])


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        staging_container=settings.staging_container,
        records_container=settings.records_container,
        system_manager_email=settings.system_manager_email,
        policy=settings.policy(),
        workers=settings.copy_workers,
        signoff_mode=settings.classification_signoff,
        signoff_ttl=timedelta(hours=settings.signoff_ttl_hours),
        public_base_url=settings.public_base_url,
        signoff_require_principal=settings.signoff_require_principal,
        retention=timedelta(hours=settings.retention_hours),
    )


def build_services(
    settings: Settings,
    *,
    email: EmailSender | None = None,
    keys: SigningKeys | None = None,
    clock: Clock | None = None,
    keys_store: PackageKeys | None = None,
) -> Services:
    """Wire every service from ``settings``; tests may pass their own email sender, key source or clock."""
    staging_client = _blob_service(settings.egress_storage, settings.egress_blob_service_uri)
    delivery_client = _account_service(settings.delivery_blob_service_uri, settings.delivery_storage, staging_client)
    if settings.egress_table_service_uri:
        tables = TableServiceClient(settings.egress_table_service_uri, credential=_credential())
    else:
        tables = TableServiceClient.from_connection_string(settings.egress_storage)
    signing = keys or _signing_keys(settings, delivery_client)
    staging = AzureBlobStore(staging_client)
    # Reached by identity (Azure), the delivery account's stored access policies still need
    # Shared Key: that client is built from the signing key (see KeySignedService).
    by_key = getattr(delivery_client.credential, "account_key", None) is not None
    delivery = AzureBlobStore(delivery_client, None if by_key else KeySignedService(delivery_client, signing))
    # The SFTP-enabled account (Azure: hierarchical namespace, SFTP on); unset = the delivery account.
    sftp_client = _account_service(settings.sftp_blob_service_uri, settings.sftp_storage, delivery_client)
    sftp_store = delivery if sftp_client is delivery_client else AzureBlobStore(sftp_client)
    sftp = _sftp_access(settings, tables, sftp_store.account_name)
    prefix = settings.registry_table_prefix
    config = pipeline_config(settings)
    table_registry = TableRegistry(tables, prefix)
    grants_due = TableDueIndex(tables.get_table_client(f"{prefix}grantsdue"))
    packages_due = TableDueIndex(tables.get_table_client(f"{prefix}packagesdue"))
    registry = IndexedRegistry(
        table_registry, grants_due=grants_due, packages_due=packages_due, schedule=SweepSchedule.of(config)
    )
    clock = clock or SystemClock()
    audit = BlobAuditTrail(
        staging_client,
        settings.audit_container,
        tables.get_table_client(f"{settings.registry_table_prefix}auditanchors"),
        clock.now,
    )
    outbox = TableOutbox(tables.get_table_client(f"{settings.registry_table_prefix}outbox"))
    sender = OnceEmailSender(email or _email(settings), outbox, clock)
    queue = StorageReleaseQueue(_queue_client(settings))

    table_registry.ensure_tables()
    grants_due.ensure_table()
    packages_due.ensure_table()
    audit.ensure_container()
    outbox.ensure_table()
    staging.ensure_container(settings.staging_container)
    staging.ensure_container(settings.records_container)
    queue.ensure_queue()

    package_keys: PackageKeys
    if keys_store is not None:
        package_keys = keys_store
    elif settings.key_vault_url:
        package_keys = KeyVaultPackageKeys(SecretClient(settings.key_vault_url, credential=_credential()))
    else:
        package_keys = LocalPackageKeys(Path(settings.local_secrets_dir))
    common: dict[str, Any] = {"registry": registry, "audit": audit, "clock": clock, "config": config}
    end_grant = EndGrantService(delivery=delivery, email=sender, sftp=sftp, **common)
    return Services(
        settings=settings,
        config=config,
        intake=IntakeService(staging=staging, email=sender, queue=queue, **common),
        signoff=SignoffService(records=staging, email=sender, queue=queue, **common),
        seal=SealService(
            staging=staging,
            delivery=delivery,
            sftp_store=sftp_store,
            keys=package_keys,
            crypto=AgeCrypto(),
            email=sender,
            **common,
        ),
        deliver=DeliverService(
            records=staging,
            staging=staging,
            delivery=delivery,
            links=SasLinkMinter(delivery, signing, allow_http=settings.sas_allow_http),
            email=sender,
            sftp=sftp,
            sftp_store=sftp_store,
            **common,
        ),
        key_release=KeyReleaseService(
            records=staging, delivery=delivery, sftp_store=sftp_store, keys=package_keys, email=sender, **common
        ),
        end_grant=end_grant,
        sweep=SweepService(
            delivery=delivery,
            sftp_store=sftp_store,
            records=staging,
            keys=package_keys,
            email=sender,
            queue=queue,
            grants=end_grant,
            poison=_poison_watch(settings),
            grants_due=grants_due,
            packages_due=packages_due,
            sftp=sftp,
            **common,
        ),
        overview=OverviewService(records=staging, registry=registry, audit=audit, config=config),
        audit=audit,
        registry=registry,
        staging=staging,
        delivery=delivery,
        sftp_store=sftp_store,
        sftp=sftp,
        queue=queue,
        grants_due=grants_due,
        packages_due=packages_due,
    )


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The worker's services, built on first use (not at import, so indexing needs no storage)."""
    global _services
    with _lock:
        if _services is None:
            _services = build_services(get_settings())
        return _services


def reset_services() -> None:
    """Forget the built services (tests change settings between cases)."""
    global _services
    with _lock:
        _services = None
