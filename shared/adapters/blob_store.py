"""Azure Blob Storage adapter (works the same against Azurite).

Downloads stream in fixed chunks, so memory stays bounded whatever a blob's size.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import requests
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import AccessPolicy as SdkAccessPolicy
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.errors import UNREACHABLE, ConcurrencyConflict, Forbidden, NotFound, StorageUnavailable
from shared.ports import AccessPolicy, BlobInfo, BlobStore, FileDigest, SigningKeys

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
_LEASE_SECONDS = 15
_BATCH_DELETES = 256  # the most sub-requests one Blob Batch request may carry
_BATCHES_AT_ONCE = 4
_T = TypeVar("_T")


# Connections kept open per host: as many as the most copy workers (COPY_WORKERS <= 64) plus a few
# for the audit trail and records written beside them. requests keeps 10, and a worker beyond the
# tenth then opens a new connection for nearly every request.
POOL_CONNECTIONS = 72


class _NoNetrc(requests.auth.AuthBase):
    """Stops requests looking up ~/.netrc for every request (a Basic header from it would also
    replace the storage Authorization header the SDK signed)."""

    def __call__(self, request: Any) -> Any:
        return request


class _StorageSession(requests.Session):
    """A requests session for one storage client: the environment's proxy and CA-bundle settings
    are read once per origin, not on every request (requests walks the whole environment twice a
    request: about a tenth of the CPU a small blob's request costs), and the connection pool has
    room for every worker. Retries and redirects stay with the SDK's pipeline, as in azure-core's
    own session."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _NoNetrc()
        self._origins: dict[tuple[Any, ...], dict[str, Any]] = {}
        adapter = HTTPAdapter(
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
            pool_maxsize=POOL_CONNECTIONS,
        )
        for prefix in ("http://", "https://"):
            self.mount(prefix, adapter)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if proxies:  # proxies given for this request: requests' own rules
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        origin = urlsplit(url)
        key = (origin.scheme, origin.netloc, stream, verify, cert)
        found = self._origins.get(key)
        if found is None:
            found = self._origins[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return {**found, "proxies": dict(found["proxies"])}


def client_options() -> dict[str, Any]:
    """Transfer sizes that keep every download and upload to a few chunks in memory, and a session
    of its own for each client (see ``_StorageSession``)."""
    return {
        "max_single_get_size": CHUNK_BYTES,
        "max_chunk_get_size": CHUNK_BYTES,
        "max_single_put_size": CHUNK_BYTES,
        "max_block_size": CHUNK_BYTES,
        "session": _StorageSession(),
    }


def _storage_call(what: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except ResourceNotFoundError as exc:
        raise NotFound(f"{what}: not found") from exc
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise Forbidden(f"{what}: access refused") from exc
        raise StorageUnavailable(f"{what}: storage did not answer as expected ({type(exc).__name__})") from exc
    except ServiceRequestError as exc:
        raise StorageUnavailable(f"{what}: {UNREACHABLE}") from exc
    except AzureError as exc:
        raise StorageUnavailable(f"{what}: storage did not answer as expected ({type(exc).__name__})") from exc


def _moment(value: datetime | str) -> datetime:
    """The SDK hands stored policy times back as ISO text."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _BlockWriter(io.RawIOBase):
    """Stages a block per write (the BufferedWriter in front makes them CHUNK_BYTES) and commits on close."""

    def __init__(self, blob: Any) -> None:
        self._blob = blob
        self._blocks: list[Any] = []
        self._discarded = False

    def writable(self) -> bool:
        return True

    def discard(self) -> None:
        self._discarded = True

    def write(self, data: Any) -> int:
        from azure.storage.blob import BlobBlock

        if self._discarded:
            return len(data)  # dropped: uncommitted blocks expire on their own

        block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
        _storage_call(f"writing {self._blob.blob_name}", lambda: self._blob.stage_block(block_id, bytes(data)))
        self._blocks.append(BlobBlock(block_id=block_id))
        return len(data)

    def close(self) -> None:
        if not self.closed and not self._discarded:
            _storage_call(f"writing {self._blob.blob_name}", lambda: self._blob.commit_block_list(self._blocks))
        super().close()


class _BlobWriter(io.BufferedWriter):
    """Buffers writes into CHUNK_BYTES blocks; ``close()`` commits, ``discard()`` commits nothing."""

    def __init__(self, raw: _BlockWriter) -> None:
        super().__init__(raw, CHUNK_BYTES)
        self._block_writer = raw

    def discard(self) -> None:
        self._block_writer.discard()
        self.close()


class KeySignedService:
    """A Shared Key client of the same account, built with the key the signing-key source gives now.

    Azure lets only Shared Key read or write a container's stored access policies (Get/Set
    Container ACL); Microsoft Entra tokens are refused. In Azure the function reaches the
    delivery account by managed identity for everything else and through this client, with the
    key held in Key Vault, for the policies. A rotated key is picked up on the next call.
    """

    def __init__(self, service: BlobServiceClient, keys: SigningKeys) -> None:
        self._url = service.url
        self._account = service.account_name or ""
        self._keys = keys
        self._cached: tuple[str, BlobServiceClient] | None = None

    def __call__(self) -> BlobServiceClient:
        key = self._keys.account_key()
        if self._cached is None or self._cached[0] != key:
            client = BlobServiceClient(
                self._url, credential=AzureNamedKeyCredential(self._account, key), **client_options()
            )
            self._cached = (key, client)
        return self._cached[1]


class AzureBlobStore:
    """One storage account's blob service.

    ``acl_service`` gives the client for stored access policies when ``service`` is not
    authorised by Shared Key (see ``KeySignedService``); by default ``service`` itself.
    """

    def __init__(self, service: BlobServiceClient, acl_service: Callable[[], BlobServiceClient] | None = None) -> None:
        self._service = service
        self._acl_service = acl_service or (lambda: service)
        self.account_name: str = service.account_name or ""

    @property
    def endpoint(self) -> str:
        return self._service.url.rstrip("/")

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        client = self._service.get_container_client(container)
        return _storage_call(
            f"listing {container}/{prefix}",
            lambda: [BlobInfo(b.name, b.size) for b in client.list_blobs(name_starts_with=prefix)],
        )

    def chunks(self, container: str, name: str) -> Iterator[bytes]:
        """The blob's bytes in chunks of at most ``CHUNK_BYTES``."""
        blob = self._service.get_blob_client(container, name)
        downloader = _storage_call(f"reading {container}/{name}", lambda: blob.download_blob(max_concurrency=1))
        try:
            yield from downloader.chunks()
        except AzureError as exc:
            raise StorageUnavailable(f"reading {container}/{name}: the download broke off") from exc

    def digest(self, container: str, name: str) -> FileDigest:
        sha = hashlib.sha256()
        size = 0
        for chunk in self.chunks(container, name):
            sha.update(chunk)
            size += len(chunk)
        return FileDigest(size=size, sha256=sha.hexdigest())

    def open_read(self, container: str, name: str) -> BinaryIO:
        """A readable stream over the blob, fetched chunk by chunk."""
        return io.BufferedReader(_ChunkReader(self.chunks(container, name)), CHUNK_BYTES)

    def open_write(self, container: str, name: str) -> _BlobWriter:
        """A writable stream that uploads in blocks and commits the blob when closed (``discard()``: never)."""
        return _BlobWriter(_BlockWriter(self._service.get_blob_client(container, name)))

    def read(self, container: str, name: str) -> bytes:
        return b"".join(self.chunks(container, name))

    def write(self, container: str, name: str, data: bytes | Iterable[bytes]) -> None:
        """Write a blob from bytes or, streamed in blocks, from an iterable of chunks."""
        blob = self._service.get_blob_client(container, name)
        _storage_call(f"writing {container}/{name}", lambda: blob.upload_blob(data, overwrite=True, max_concurrency=1))

    def ensure_container(self, container: str) -> None:
        try:
            self._service.create_container(container)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"creating container {container}: {type(exc).__name__}") from exc

    def container_exists(self, container: str) -> bool:
        client = self._service.get_container_client(container)
        return _storage_call(f"checking container {container}", client.exists)

    def delete_container(self, container: str) -> None:
        try:
            self._service.delete_container(container)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"deleting container {container}: {type(exc).__name__}") from exc

    def delete_blobs(self, container: str, names: Iterable[str]) -> None:
        """Delete the blobs (and their snapshots); a blob already gone is not an error.

        Up to 256 go in one Blob Batch request (one round trip instead of 256), a few batches at a
        time. Where the account refuses a batch as a whole (a hierarchical-namespace account may),
        its blobs go one by one.
        """
        client = self._service.get_container_client(container)
        pending = list(names)
        if len(pending) <= 1:
            self._delete_each(client, container, pending)
            return
        groups = [pending[start : start + _BATCH_DELETES] for start in range(0, len(pending), _BATCH_DELETES)]
        if len(groups) == 1:
            self._delete_batch(client, container, groups[0])
            return
        with ThreadPoolExecutor(max_workers=min(len(groups), _BATCHES_AT_ONCE)) as pool:
            list(pool.map(lambda group: self._delete_batch(client, container, group), groups))

    def _delete_batch(self, client: Any, container: str, group: list[str]) -> None:
        try:
            parts = list(client.delete_blobs(*group, delete_snapshots="include", raise_on_any_failure=False))
        except HttpResponseError as exc:  # one by one, each answer then read on its own (404: gone)
            logger.info("a batch delete in %s was refused (%s); deleting one by one", container, exc.status_code)
            self._delete_each(client, container, group)
            return
        except AzureError as exc:
            raise StorageUnavailable(f"deleting from {container}: {type(exc).__name__}") from exc
        if len(parts) != len(group):
            raise StorageUnavailable(f"deleting from {container}: {len(parts)} answers to {len(group)} deletes")
        for name, part in zip(group, parts, strict=True):
            if not (200 <= part.status_code < 300 or part.status_code == 404):  # 404: already gone
                raise StorageUnavailable(f"deleting {container}/{name}: storage answered {part.status_code}")

    @staticmethod
    def _delete_each(client: Any, container: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                client.delete_blob(name, delete_snapshots="include")
            except ResourceNotFoundError:
                continue  # already gone: deleting is idempotent
            except AzureError as exc:
                raise StorageUnavailable(f"deleting {container}/{name}: {type(exc).__name__}") from exc

    def copy_into(self, source: BlobStore, source_container: str, name: str, container: str, dest_name: str) -> None:
        """Copy a blob into this account: server-side within one account, streamed across accounts.

        Across accounts the staging account is private to the Safe Haven's network, so the
        delivery account's service could not fetch from it; the bytes pass through us in chunks.
        """
        dest = self._service.get_blob_client(container, dest_name)
        if isinstance(source, AzureBlobStore) and source.endpoint == self.endpoint:
            source_url = source._service.get_blob_client(source_container, name).url
            props = _storage_call(f"copying {name}", lambda: dest.start_copy_from_url(source_url))
            status = props.get("copy_status")
            deadline = time.monotonic() + 600
            while status == "pending":
                if time.monotonic() > deadline:
                    raise StorageUnavailable(f"copying {name}: the server-side copy did not finish in time")
                time.sleep(0.2)
                status = _storage_call(f"copying {name}", dest.get_blob_properties).copy.status
            if status != "success":
                raise StorageUnavailable(f"copying {name}: the server-side copy ended {status}")
            return
        chunks = source.chunks(source_container, name)
        _storage_call(f"copying {name}", lambda: dest.upload_blob(chunks, overwrite=True, max_concurrency=1))

    def container_url(self, container: str) -> str:
        return str(self._service.get_container_client(container).url)

    def stored_policies(self, container: str) -> list[AccessPolicy]:
        client = self._acl_service().get_container_client(container)
        acl = _storage_call(f"reading the access policies of {container}", client.get_container_access_policy)
        return [
            AccessPolicy(
                policy_id=si.id, start=_moment(si.access_policy.start), expiry=_moment(si.access_policy.expiry)
            )
            for si in acl["signed_identifiers"]
        ]

    def update_policies(self, container: str, add: Sequence[AccessPolicy], remove: Sequence[str]) -> None:
        """Add and remove stored access policies in one read-modify-write, under a container lease.

        The lease serialises concurrent writers (the trigger granting, an operator revoking, the
        timer expiring); without it one writer could put back a policy another just deleted.
        """
        client = self._acl_service().get_container_client(container)
        lease = self._acquire_lease(container)
        try:
            acl = _storage_call(
                f"reading the access policies of {container}",
                lambda: client.get_container_access_policy(lease=lease.id),
            )
            policies = {si.id: si.access_policy for si in acl["signed_identifiers"]}
            for policy_id in remove:
                policies.pop(policy_id, None)
            for policy in add:
                policies[policy.policy_id] = SdkAccessPolicy(
                    permission=ContainerSasPermissions(read=True, list=True),
                    start=policy.start,
                    expiry=policy.expiry,
                )
            _storage_call(
                f"writing the access policies of {container}",
                lambda: client.set_container_access_policy(signed_identifiers=policies, lease=lease.id),
            )
        finally:
            try:
                lease.release()
            except AzureError:
                logger.warning("could not release the lease on %s; it lapses in %d s", container, _LEASE_SECONDS)

    def _acquire_lease(self, container: str):  # type: ignore[no-untyped-def]
        client = self._service.get_container_client(container)
        for attempt in range(40):
            try:
                return client.acquire_lease(lease_duration=_LEASE_SECONDS)
            except ResourceNotFoundError as exc:
                raise NotFound(f"container {container} does not exist") from exc
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise StorageUnavailable(f"leasing {container}: {type(exc).__name__}") from exc
                time.sleep(min(0.05 * (attempt + 1), 0.5))
            except AzureError as exc:
                raise StorageUnavailable(f"leasing {container}: {type(exc).__name__}") from exc
        raise ConcurrencyConflict(f"container {container} stayed leased by another writer; try again")


class LinkContainer:
    """A container reached through a SAS URL, as a recipient reaches it."""

    def __init__(self, sas_url: str) -> None:
        from azure.storage.blob import ContainerClient

        try:
            self._client = ContainerClient.from_container_url(sas_url, **client_options())
        except ValueError as exc:
            raise NotFound("that is not a container URL") from exc
        self.name = self._client.container_name

    def list_blobs(self) -> list[BlobInfo]:
        return _storage_call(
            "listing the package (an authorization error means the link was revoked, has expired, or is used from "
            "an address that was not declared)",
            lambda: [BlobInfo(b.name, b.size) for b in self._client.list_blobs()],
        )

    def chunks(self, name: str) -> Iterator[bytes]:
        downloader = _storage_call(f"downloading {name}", lambda: self._client.download_blob(name, max_concurrency=1))
        try:
            yield from downloader.chunks()
        except AzureError as exc:
            raise StorageUnavailable(f"downloading {name}: the download broke off") from exc
