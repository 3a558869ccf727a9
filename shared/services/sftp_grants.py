"""What every stage that touches an sftp grant shares: the SFTP account's firewall follows the
active sftp grants. Delivery opens it for a new grant's addresses; ending a grant closes what no
active grant still needs.

The firewall is one list on the account, written whole: two workers changing it at the same moment
can each write a list the other had not seen. Opening adds to what the account already admits, so
a concurrent opening is not undone; closing recomputes from the registry, so the next end of a
grant (or delivery) puts right what a race left.
"""

from __future__ import annotations

from shared.domain.records import GrantStatus
from shared.ports import Registry, SftpAccess


def needed_ranges(registry: Registry) -> set[str]:
    """The addresses and blocks of every active sftp grant."""
    return {
        r
        for g in registry.list_grants(status=GrantStatus.ACTIVE)
        if g.sftp_user and g.status == GrantStatus.ACTIVE
        for r in g.ip_ranges
    }


def open_firewall(registry: Registry, sftp: SftpAccess) -> list[str]:
    """Admit every active sftp grant's addresses, keeping what is admitted already."""
    allowed = set(sftp.allowed_ranges())
    wanted = allowed | needed_ranges(registry)
    if wanted != allowed:
        sftp.allow_ranges(sorted(wanted))
    return sorted(wanted)


def close_firewall(registry: Registry, sftp: SftpAccess) -> list[str]:
    """Admit only what active sftp grants still need."""
    wanted = needed_ranges(registry)
    if set(sftp.allowed_ranges()) != wanted:
        sftp.allow_ranges(sorted(wanted))
    return sorted(wanted)
