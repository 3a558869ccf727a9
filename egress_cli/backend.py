"""Where the CLI's manager commands go: straight to storage, or to a deployed app's HTTP API.

Both answer with the same JSON shapes as the HTTP API, so the output is the same either way.
"""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from shared.domain.audit import AuditAnchor, AuditEntry, verify_chain
from shared.domain.records import GrantStatus
from shared.errors import Conflict, EgressError, Forbidden, InvalidRequest, NotFound, StorageUnavailable, Unauthorized
from shared.settings import Settings

_BY_STATUS: dict[int, type[EgressError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
}


class Backend(Protocol):
    def status(self, package_id: str) -> dict[str, Any]: ...
    def grants(self, status: str | None, package_id: str | None) -> list[dict[str, Any]]: ...
    def revoke_grant(self, grant_id: str, reason: str | None) -> dict[str, Any]: ...
    def revoke_package(self, package_id: str, reason: str | None) -> dict[str, Any]: ...
    def resend_signoff(self, package_id: str) -> dict[str, Any]: ...
    def key_release(self, package_id: str) -> dict[str, Any]: ...


def audit_problems(package_id: str, events: list[dict[str, Any]], anchor: dict[str, Any] | None) -> list[str]:
    """The chain checked entry by entry, and against the registry's anchor (count and head hash)."""
    problems: list[str] = []
    entries = []
    for index, event in enumerate(events):
        try:
            entries.append(AuditEntry.model_validate(event))
        except ValueError:
            problems.append(f"entry {index}: is not a valid audit entry")
    if problems:
        return problems
    return verify_chain(entries, package_id, AuditAnchor.model_validate(anchor) if anchor else None)


class DirectBackend:
    """Calls the same services as the functions, with the settings given."""

    def __init__(self, settings: Settings) -> None:
        from shared.bootstrap import build_services

        self._services = build_services(settings)
        self._actor = f"{getpass.getuser()} (egress CLI)"

    def status(self, package_id: str) -> dict[str, Any]:
        return self._services.overview.package_status(package_id)

    def grants(self, status: str | None, package_id: str | None) -> list[dict[str, Any]]:
        return self._services.overview.list_grants(
            package_id=package_id, status=GrantStatus(status) if status else None
        )

    def revoke_grant(self, grant_id: str, reason: str | None) -> dict[str, Any]:
        return self._services.end_grant.revoke_grant(grant_id, self._actor, reason)

    def revoke_package(self, package_id: str, reason: str | None) -> dict[str, Any]:
        return self._services.end_grant.revoke_package(package_id, self._actor, reason)

    def resend_signoff(self, package_id: str) -> dict[str, Any]:
        return self._services.signoff.resend(package_id, self._actor)

    def key_release(self, package_id: str) -> dict[str, Any]:
        return self._services.key_release.release(package_id, self._actor)


class ApiBackend:
    """The deployed (or local) app's HTTP API, with a function key and, in Azure, an Entra ID token
    (App Service authentication answers 401 before the code runs without one)."""

    def __init__(self, base_url: str, key: str | None, token: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        if not self._base.endswith("/api"):
            self._base += "/api"
        self._key = key
        self._token = token

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> Any:
        url = f"{self._base}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        if self._key:
            request.add_header("x-functions-key", self._key)
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message", exc.reason)
            except ValueError:
                message = str(exc.reason)
            if exc.code == 401:
                message = self._refused_because()
            raise _BY_STATUS.get(exc.code, StorageUnavailable)(f"{message} (HTTP {exc.code})") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise StorageUnavailable(f"the API at {self._base} did not answer ({exc})") from exc

    def _refused_because(self) -> str:
        """The local host and Azure answer 401 alike for a missing and a wrong key: say which we sent."""
        if not self._key:
            return "no function key given: --key or EGRESS_FUNCTION_KEY"
        if self._token:
            return "the function key was refused, or the access token (--token or EGRESS_API_TOKEN) is not valid"
        return (
            "the function key was refused (check --key or EGRESS_FUNCTION_KEY); in Azure the API also needs "
            "an access token: --token or EGRESS_API_TOKEN"
        )

    def status(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"packages/{urllib.parse.quote(package_id)}"))

    def grants(self, status: str | None, package_id: str | None) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "grants", query={"status": status or "", "package_id": package_id or ""})["grants"]
        )

    def revoke_grant(self, grant_id: str, reason: str | None) -> dict[str, Any]:
        return dict(self._call("POST", f"grants/{urllib.parse.quote(grant_id)}/revoke", {"reason": reason}))

    def revoke_package(self, package_id: str, reason: str | None) -> dict[str, Any]:
        return dict(self._call("POST", f"packages/{urllib.parse.quote(package_id)}/revoke", {"reason": reason}))

    def resend_signoff(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"packages/{urllib.parse.quote(package_id)}/signoff/resend", {}))

    def key_release(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"packages/{urllib.parse.quote(package_id)}/key-release", {}))
