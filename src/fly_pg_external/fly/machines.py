"""Fly's Machines REST API ("flaps"): machines, leases and the wait endpoint.

Paths and bodies follow fly-go's `flaps` package. Machine IDs are not escaped (fly-go does not);
app names are.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ..domain import Lease, Machine, UpdateRequest
from ..errors import FlyAuthError, FlyError
from ..flytoken import FlyAuth
from .http import FlyHttp
from .ratelimit import DEFAULT, GET_MACHINE, Limit

NONCE_HEADER = "fly-machine-lease-nonce"
# The wait endpoint caps `timeout` at 60 s (a proxy limit; fly-go clamps to [1, 60]).
WAIT_SLICE_MAX = 60


def machine_from_api(data: dict[str, Any]) -> Machine:
    """A machine as the Machines API sends it (list, get, update answers)."""
    return Machine(
        id=str(data.get("id", "")),
        region=str(data.get("region", "")),
        state=str(data.get("state", "")),
        instance_id=str(data.get("instance_id", "")),
        # Our own copy: plans derive new configs from it and must not alias API data.
        config=copy.deepcopy(_config_of(data)),
        checks=tuple(
            c
            for c in (data.get("checks") or [])
            if isinstance(c, dict)
            and not str(c.get("name", "")).startswith("bg_deployments_compat")
        ),
        host_status=str(data.get("host_status") or "ok"),
    )


def _config_of(data: dict[str, Any]) -> dict[str, Any]:
    """`config`, or for a machine on an unreachable host the `incomplete_config` Fly sends
    instead: good enough to name its image and services, never to send back in an update."""
    for key in ("config", "incomplete_config"):
        value = data.get(key)
        if isinstance(value, dict) and value:
            return value
    return {}


def update_body(request: UpdateRequest) -> dict[str, Any]:
    """The Machines API update request body.

    `current_version` makes the update conditional on the version the plan was made from
    (documented in the Machines API reference and OpenAPI spec; fly-go does not send it, so
    whether Fly enforces it is UNCONFIRMED): a resent or late request cannot restart a machine
    twice where it is enforced, and is ignored where it is not.
    """
    return {
        "config": request.config,
        "region": request.region,
        "skip_launch": request.skip_launch,
        "skip_secrets": False,
        "current_version": request.current_version,
    }


class Machines:
    def __init__(self, http: FlyHttp, base_url: str, auth: FlyAuth) -> None:
        self._http = http
        self._base = f"{base_url}/v1"
        self._auth = {"Authorization": auth.flaps_header}

    def _app(self, app: str) -> str:
        return f"{self._base}/apps/{quote(app, safe='')}"

    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        limit: tuple[str, str] | tuple[str, str, Limit],
        nonce: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """One call; `limit` is its rate-limit bucket: (action, app or machine ID[, limit])."""
        headers = dict(self._auth)
        if nonce:
            headers[NONCE_HEADER] = nonce
        bucket = (limit[0], limit[1], limit[2] if len(limit) == 3 else DEFAULT)
        try:
            response = self._http.request(
                method, url, idempotent=idempotent, headers=headers, limit=bucket, **kwargs
            )
        except FlyAuthError as exc:
            raise FlyAuthError(
                "Fly refused the API token (Machines API): " + exc.message, status=exc.status
            ) from None
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def list(self, app: str) -> list[Machine]:
        data = self._send("GET", f"{self._app(app)}/machines", idempotent=True, limit=("list", app))
        if not isinstance(data, list):
            raise FlyError("machines list: unexpected response shape")
        return [machine_from_api(m) for m in data if isinstance(m, dict)]

    def get(self, app: str, machine_id: str) -> Machine:
        data = self._send(
            "GET",
            f"{self._app(app)}/machines/{machine_id}",
            idempotent=True,
            limit=("get", machine_id, GET_MACHINE),
        )
        if not isinstance(data, dict):
            raise FlyError(f"machine {machine_id}: unexpected response shape")
        return machine_from_api(data)

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Lease:
        """Take a lease, or refresh ours (same nonce) when `nonce` is given."""
        data = self._send(
            "POST",
            f"{self._app(app)}/machines/{machine_id}/lease",
            # A refresh with our nonce can be repeated safely; a first acquire cannot (a lost
            # response would leave a lease we do not know the nonce of).
            idempotent=nonce is not None,
            limit=("lease", machine_id),
            nonce=nonce,
            params={"ttl": ttl},
            json={"ttl": ttl, "description": "fly-pg-external"},
        )
        if not isinstance(data, dict) or data.get("status") != "success" or "data" not in data:
            message = (data or {}).get("message") if isinstance(data, dict) else None
            raise FlyError(f"lease on machine {machine_id} refused: {message or data}")
        d = data["data"]
        return Lease(
            nonce=str(d.get("nonce", "")),
            expires_at=int(d.get("expires_at") or 0),
            owner=str(d.get("owner", "")),
            version=str(d.get("version", "")),
        )

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        self._send(
            "DELETE",
            f"{self._app(app)}/machines/{machine_id}/lease",
            idempotent=True,
            limit=("release", machine_id),
            nonce=nonce,
        )

    def set_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        """fly-go `SetMetadata`: POST …/metadata/{key} {"value": …}, 204; no lease nonce (fly-go
        sends none, and flyctl writes metadata on machines it holds leases on). Idempotent: the
        same value written twice is one value."""
        self._send(
            "POST",
            f"{self._app(app)}/machines/{machine_id}/metadata/{key}",
            idempotent=True,
            limit=("metadata", machine_id),
            json={"value": value},
        )

    def update(
        self, app: str, machine_id: str, request: UpdateRequest, *, nonce: str | None
    ) -> Machine:
        data = self._send(
            "POST",
            f"{self._app(app)}/machines/{machine_id}",
            idempotent=False,
            limit=("update", machine_id),
            nonce=nonce,
            json=update_body(request),
        )
        if not isinstance(data, dict):
            raise FlyError(f"update of machine {machine_id}: unexpected response shape")
        return machine_from_api(data)

    def wait(
        self,
        app: str,
        machine_id: str,
        *,
        states: Sequence[str],
        version: str | None,
        timeout: int,
    ) -> str | None:
        """One call of the wait endpoint: returns the state reached (None when the answer does
        not say), raises FlyTimeout (408) when none of `states` was reached within `timeout`.

        The version goes out under both names: the docs and the published spec call it
        `instance_id`, fly-go switched to `version` in March 2026, and whether the server
        honours `version` alone is UNCONFIRMED. The docs require it when waiting for `stopped`.
        """
        params: list[tuple[str, str | int]] = [("state", s) for s in states]
        slice_ = max(1, min(WAIT_SLICE_MAX, timeout))
        params.append(("timeout", slice_))
        if version:
            params += [("instance_id", version), ("version", version)]
        data = self._send(
            "GET",
            f"{self._app(app)}/machines/{machine_id}/wait",
            idempotent=True,
            limit=("wait", machine_id),
            params=params,
            # The server holds the request up to `timeout`; give it room before our own timeout.
            timeout=slice_ + 15,
            # A 408 here is the answer ("not yet"), not a failure to retry blindly.
            retry_statuses=frozenset({429, 502, 503, 504}),
        )
        state = data.get("state") if isinstance(data, dict) else None
        return state if isinstance(state, str) else None
