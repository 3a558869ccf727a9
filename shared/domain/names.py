"""Every storage name the service uses: containers, prefixes and blob paths.

Nothing else formats a container or blob name; change a layout here and it changes everywhere.
The staging layout is the contract of DESIGN.md section 2.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
FILES_FOLDER = "files"
ENCRYPTED_MANIFEST = "encrypted-manifest.json"
ENCRYPTED_SUFFIX = ".age"


def egress_container(package_id: str) -> str:
    """The sealed package's own container in the delivery account."""
    return f"egress-{package_id}"


def staged_prefix(package_id: str) -> str:
    """Where the classification team stages a package's output files."""
    return f"{package_id}/{FILES_FOLDER}/"


def staged_file(package_id: str, path: str) -> str:
    return staged_prefix(package_id) + path


def manifest_blob(package_id: str) -> str:
    """The staged manifest, uploaded last; its arrival starts processing."""
    return f"{package_id}/{MANIFEST}"


def package_of_manifest(blob_name: str) -> str | None:
    """``<package_id>/manifest.json`` -> the package id; None for anything else (deeper or other names).

    The trigger's path pattern matches across ``/`` in Azure, so the handler decides itself.
    """
    parts = blob_name.split("/")
    if len(parts) == 2 and parts[1] == MANIFEST:
        return parts[0]
    return None


def record_manifest(package_id: str) -> str:
    """The verified (and, after sign-off, signed) manifest kept in the records container."""
    return f"manifests/{package_id}.json"


def archived_grants(package_id: str) -> str:
    """A closed package's grant records, moved out of the registry table after retention."""
    return f"grants/{package_id}.json"


def audit_blob(package_id: str) -> str:
    return f"{package_id}.jsonl"


def sftp_user(grant_id: str) -> str:
    """The SFTP local user of a grant: 3 to 64 lowercase letters and digits (Azure's rule)."""
    return f"u{grant_id}"[:64]


def sftp_login(account: str, user: str) -> str:
    """What an SFTP client logs in as: Azure Blob SFTP names a local user ``<account>.<user>``."""
    return f"{account}.{user}"


def encrypted_file(path: str) -> str:
    return path + ENCRYPTED_SUFFIX
