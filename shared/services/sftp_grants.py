"""What every stage that touches an sftp grant shares: the SFTP account's firewall follows the
active sftp grants. Delivery opens it for a new grant's addresses; ending a grant closes what no
active grant still needs.

The firewall is one list on the account, written whole: two workers changing it at the same moment
can each write a list the other had not seen. Opening adds to what the account already admits, so
a concurrent opening is not undone; closing recomputes from the registry, so the next end of a
grant (or the sweep's hourly check) puts right what a race left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.domain.records import GrantRecord, GrantStatus
from shared.ports import Registry, SftpAccess

_OURS = re.compile(r"u[0-9a-f]{32}")  # names.sftp_user of a grant id


def needed_ranges(registry: Registry) -> set[str]:
    """The addresses and blocks of every active sftp grant."""
    return {
        r
        for g in registry.list_grants(status=GrantStatus.ACTIVE)
        if g.sftp_user and g.status == GrantStatus.ACTIVE
        for r in g.ip_ranges
    }


def open_firewall(sftp: SftpAccess, grants: Iterable[GrantRecord]) -> list[str]:
    """Admit the addresses of ``grants`` that are open, keeping what is admitted already (no read of
    every grant: the sweep's hourly check puts right whatever else is missing)."""
    allowed = set(sftp.allowed_ranges())
    wanted = allowed | {r for g in grants if g.sftp_login_open for r in g.ip_ranges}
    if wanted != allowed:
        sftp.allow_ranges(sorted(wanted))
    return sorted(wanted)


def close_firewall(registry: Registry, sftp: SftpAccess) -> list[str]:
    """Admit only what active sftp grants still need. Read again after writing: a delivery that
    opened a range between our reading and our writing gets it back at once."""
    wanted = needed_ranges(registry)
    if set(sftp.allowed_ranges()) != wanted:
        sftp.allow_ranges(sorted(wanted))
        again = needed_ranges(registry)
        if again != wanted:
            sftp.allow_ranges(sorted(again))
            wanted = again
    return sorted(wanted)


def remove_stray_users(registry: Registry, sftp: SftpAccess) -> list[str]:
    """Delete every local user whose grant is not open (ended, ending, or gone): a delivery that made a
    user again after its revocation, or a worker that died between the two. Users are listed before
    grants, so a user made meanwhile has a grant in the list."""
    users = [u for u in sftp.user_names() if _OURS.fullmatch(u)]  # a user someone else made is left alone
    if not users:
        return []
    open_users = {g.sftp_user for g in registry.list_grants(status=GrantStatus.ACTIVE) if g.sftp_login_open}
    stray = [u for u in users if u not in open_users]
    for user in stray:
        sftp.delete_user(user)
    return stray
