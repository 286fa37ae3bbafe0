"""Fly's Machines REST API ("flaps"): machines, leases and the wait endpoint.

Paths and bodies follow fly-go's `flaps` package. Machine IDs are not escaped (fly-go does not);
app names are.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from ..domain import Lease, Machine, UpdateRequest
from ..errors import FlyAuthError, FlyError
from ..flytoken import FlyAuth
from .http import FlyHttp
from .ratelimit import DEFAULT, GET_MACHINE, Limit
from .shape import (
    MISSING,
    Where,
    as_list,
    as_object,
    check_depth,
    check_table,
    clip,
    json_body,
    objects,
    string_values,
    strings,
    want_int,
    want_list,
    want_object,
    want_opt_str,
    want_str,
)

NONCE_HEADER = "fly-machine-lease-nonce"
# The wait endpoint caps `timeout` at 60 s (a proxy limit; fly-go clamps to [1, 60]).
WAIT_SLICE_MAX = 60


# Where a machine comes from when the caller does not say (a machine read from a fixture).
A_MACHINE = Where("a machine", "machine")
# Where a machine's config is: on an unreachable host, Fly sends only `incomplete_config`.
CONFIG_KEYS = ("config", "incomplete_config")
# The keys of a service that fly.toml shows as they are.
SERVICE_KEYS = ("protocol", "internal_port", "autostop", "autostart", "min_machines_running")


def machine_from_api(data: dict[str, Any], where: Where = A_MACHINE) -> Machine:
    """A machine as the Machines API sends it (list, get, update answers), every field the
    action reads checked for its type (`where` names the answer it came in)."""
    return Machine(
        id=want_str(data, "id", where),
        region=want_str(data, "region", where),
        state=want_str(data, "state", where),
        instance_id=want_str(data, "instance_id", where),
        # Our own copy: plans derive new configs from it and must not alias API data.
        config=copy.deepcopy(_config_of(data, where)),
        checks=_checks_of(data, where),
        host_status=want_str(data, "host_status", where) or "ok",
    )


def _checks_of(data: dict[str, Any], where: Where) -> tuple[dict[str, Any], ...]:
    kept = []
    for at, check in objects(want_list(data, "checks", where, optional=True), where.at("checks")):
        name = want_str(check, "name", at)
        want_str(check, "status", at)
        want_str(check, "output", at)
        if not name.startswith("bg_deployments_compat"):
            kept.append(check)
    return tuple(kept)


def _config_of(data: dict[str, Any], where: Where) -> dict[str, Any]:
    """`config`, or for a machine on an unreachable host the `incomplete_config` Fly sends
    instead: good enough to name its image and services, never to send back in an update."""
    found = {key: want_object(data, key, where, optional=True) for key in CONFIG_KEYS}
    for key, value in found.items():
        if value:
            check_config(value, where.at(key))
            return value
    return {}


def check_config(config: dict[str, Any], where: Where) -> None:
    """The parts of a machine config the action reads or renders into fly.toml, each of the
    type it must have; the rest is only sent back as it came."""
    check_depth(config, where)
    image = config.get("image", "")
    if not isinstance(image, str):
        raise where.at("image").unexpected(image, "a string")
    string_values(want_object(config, "metadata", where, optional=True), where.at("metadata"))
    string_values(want_object(config, "env", where, optional=True), where.at("env"))
    init = want_object(config, "init", where, optional=True)
    cmd = init.get("cmd")
    if isinstance(cmd, list):
        strings(cmd, where.at("init").at("cmd"))
    elif cmd is not None and not isinstance(cmd, str):
        raise where.at("init").at("cmd").unexpected(cmd, "a list of strings")
    services = want_list(config, "services", where, optional=True)
    for at, service in objects(services, where.at("services")):
        _check_service(service, at)
    checks = want_object(config, "checks", where, optional=True)
    for name in checks:
        check_table(want_object(checks, name, where.at("checks")), where.at("checks").at(name))
    for at, mount in objects(want_list(config, "mounts", where, optional=True), where.at("mounts")):
        for key in ("name", "volume", "path"):
            want_opt_str(mount, key, at)
    check_table(want_object(config, "metrics", where, optional=True), where.at("metrics"))


def _check_service(service: dict[str, Any], where: Where) -> None:
    check_table({key: service.get(key) for key in SERVICE_KEYS}, where)
    want_opt_str(service, "protocol", where)
    want_int(service, "internal_port", where)
    for at, port in objects(want_list(service, "ports", where, optional=True), where.at("ports")):
        check_table(port, at)
        for key in ("port", "start_port", "end_port"):
            want_int(port, key, at)
        strings(want_list(port, "handlers", at, optional=True), at.at("handlers"))
    check_table(want_object(service, "concurrency", where, optional=True), where.at("concurrency"))
    for at, check in objects(
        want_list(service, "checks", where, optional=True), where.at("checks")
    ):
        check_table(check, at)


def lease_from_api(data: Any, where: Where, machine_id: str) -> Lease:
    """The lease a successful acquire or refresh answers with; a refusal in a 200 is an error
    carrying Fly's message."""
    body = as_object(data, where)
    status = body.get("status", MISSING)
    if status != "success":
        message = body.get("message")
        if isinstance(message, str) and message:
            raise FlyError(
                f"lease on machine {machine_id} refused: {clip(message)}",
                status=where.status,
                request_id=where.request_id,
            )
        raise where.at("status").unexpected(status, '"success"')
    lease = want_object(body, "data", where)
    at = where.at("data")
    return Lease(
        nonce=want_str(lease, "nonce", at, required=True),
        expires_at=want_int(lease, "expires_at", at) or 0,
        owner=want_str(lease, "owner", at),
        version=want_str(lease, "version", at),
    )


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
        root: str = "",
        nonce: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Where]:
        """One call: its JSON answer (None for none) and where that answer came from, for the
        errors of its readers; `root` names the answer in them. `limit` is the call's rate-limit
        bucket: (action, app or machine ID[, limit])."""
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
        request = f"{method} {urlsplit(url).path}"
        where = Where.of(response, request, root)
        if response.status_code == 204 or not response.content:
            return None, where
        return json_body(response, request), where

    def list(self, app: str) -> list[Machine]:
        data, where = self._send(
            "GET",
            f"{self._app(app)}/machines",
            idempotent=True,
            limit=("list", app),
            root="machines",
        )
        return [machine_from_api(m, at) for at, m in objects(as_list(data, where), where)]

    def get(self, app: str, machine_id: str) -> Machine:
        data, where = self._send(
            "GET",
            f"{self._app(app)}/machines/{machine_id}",
            idempotent=True,
            limit=("get", machine_id, GET_MACHINE),
            root="machine",
        )
        return machine_from_api(as_object(data, where), where)

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Lease:
        """Take a lease, or refresh ours (same nonce) when `nonce` is given."""
        data, where = self._send(
            "POST",
            f"{self._app(app)}/machines/{machine_id}/lease",
            # A refresh with our nonce can be repeated safely; a first acquire cannot (a lost
            # response would leave a lease we do not know the nonce of).
            idempotent=nonce is not None,
            limit=("lease", machine_id),
            nonce=nonce,
            params={"ttl": ttl},
            json={"ttl": ttl, "description": "fly-pg-external"},
            root="lease",
        )
        return lease_from_api(data, where, machine_id)

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
        data, where = self._send(
            "POST",
            f"{self._app(app)}/machines/{machine_id}",
            idempotent=False,
            limit=("update", machine_id),
            root="machine",
            nonce=nonce,
            json=update_body(request),
        )
        return machine_from_api(as_object(data, where), where)

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
        data, where = self._send(
            "GET",
            f"{self._app(app)}/machines/{machine_id}/wait",
            idempotent=True,
            limit=("wait", machine_id),
            params=params,
            # The server holds the request up to `timeout`; give it room before our own timeout.
            timeout=slice_ + 15,
            # A 408 here is the answer ("not yet"), not a failure to retry blindly.
            retry_statuses=frozenset({429, 502, 503, 504}),
            root="wait",
        )
        if data is None:
            return None
        return want_opt_str(as_object(data, where), "state", where)
