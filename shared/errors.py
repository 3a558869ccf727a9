"""Typed errors of the egress service.

    EgressError                      http 500, exit 1
    ├── NotFound                     http 404, exit 3   unknown package or grant
    ├── Conflict                     http 409, exit 4   the state does not allow the action
    │   ├── IllegalTransition                           a state machine refused a move
    │   ├── ConcurrencyConflict                         an ETag or append position moved under us
    │   └── AuditCorrupt                                an audit trail was damaged or changed outside the service
    ├── Gone                         http 410, exit 4   a sign-off link already used, expired or no longer needed
    ├── InvalidRequest               http 400, exit 2   a request a person can correct
    │   └── Unprocessable            http 422           a well-formed request whose content is refused
    ├── Unauthorized                 http 401, exit 5
    ├── Forbidden                    http 403, exit 5
    └── TransientError               http 503, exit 6   storage, Key Vault or email failed; retry
        ├── StorageUnavailable
        ├── SecretsUnavailable
        ├── EmailUnavailable
        └── InProgress                                another worker holds the claim; retried

Transient errors are re-raised by triggers so the host retries; everything else is recorded.
Messages are for people and never carry a token, key or secret.
"""

from __future__ import annotations

UNREACHABLE = "storage cannot be reached; check EGRESS_STORAGE (locally: is the stack running? `make run`)"


class EgressError(Exception):
    http_status = 500
    exit_code = 1
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EgressError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class Conflict(EgressError):
    http_status = 409
    exit_code = 4
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ConcurrencyConflict(Conflict):
    code = "concurrent_update"


class Gone(EgressError):
    http_status = 410
    exit_code = 4
    code = "gone"


class AuditCorrupt(Conflict):
    code = "audit_corrupt"


class InvalidRequest(EgressError):
    http_status = 400
    exit_code = 2
    code = "invalid_request"


class Unprocessable(InvalidRequest):
    http_status = 422
    code = "unprocessable"


class Unauthorized(EgressError):
    http_status = 401
    exit_code = 5
    code = "unauthorized"


class Forbidden(EgressError):
    http_status = 403
    exit_code = 5
    code = "forbidden"


class TransientError(EgressError):
    http_status = 503
    exit_code = 6
    code = "service_unavailable"


class StorageUnavailable(TransientError):
    code = "storage_unavailable"


class SecretsUnavailable(TransientError):
    code = "secrets_unavailable"


class EmailUnavailable(TransientError):
    code = "email_unavailable"


class InProgress(TransientError):
    """Another worker is doing this right now; trying again shortly finds it done."""

    code = "in_progress"
