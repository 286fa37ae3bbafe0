"""The Machines API ("flaps") routes under ``/v1``.

Every route is one rate-limited action (:mod:`flysim.ratelimit`): a request over Fly's limit is
answered 429 with ``Retry-After`` before its handler runs. Handlers read the request, take the
state core's lock and answer; what a lease, an update, a wait, metadata or an address does is in
:mod:`flysim.leases`, :mod:`flysim.lifecycle`, :mod:`flysim.waits`, :mod:`flysim.metadata` and
:mod:`flysim.ips` (through the :class:`~flysim.state.State`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from flysim import _ids, leases, lifecycle, metadata, models, waits
from flysim.errors import ApiError
from flysim.models import App
from flysim.ratelimit import ACTION_SCOPES
from flysim.requestlog import RequestRecord

if TYPE_CHECKING:
    from flysim.state import State

MAX_WAIT_TIMEOUT = 60  # fly-go clamps to this because of a proxy limit (fly-api.md §3.5)
REST_UNAUTHENTICATED = {"error": "Authenticate: token validation error"}
DEFAULT_LEASE_TTL = 30  # UNCONFIRMED: clients always send one; this only covers a bare POST


@dataclass
class Request:
    record: RequestRecord
    query: dict[str, list[str]]
    body: Any  # parsed JSON or None
    nonce: str | None
    params: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or [""])[-1].lower() in {"1", "true", "yes"}

    def last(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[["State", Request], Response]

# pattern -> method -> (handler, rate-limit action)
_ROUTES: list[tuple[re.Pattern[str], dict[str, tuple[Handler, str]]]] = []

# UNCONFIRMED: the body of Fly's 429 (the status and Retry-After are documented).
RATE_LIMITED = {"error": "rate limit exceeded"}


def route(pattern: str, method: str, action: str) -> Callable[[Handler], Handler]:
    compiled = re.compile(f"^{pattern}$")
    if action not in ACTION_SCOPES:
        raise ValueError(f"unknown rate-limit action {action!r}")

    def register(fn: Handler) -> Handler:
        for existing, methods in _ROUTES:
            if existing.pattern == compiled.pattern:
                methods[method] = (fn, action)
                return fn
        _ROUTES.append((compiled, {method: (fn, action)}))
        return fn

    return register


def dispatch(state: State, request: Request) -> Response:
    path = request.record.path
    for pattern, methods in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        entry = methods.get(request.record.method)
        if entry is None:
            return Response(405, {"error": f"method {request.record.method} not allowed"})
        handler, action = entry
        request.params = {k: unquote(v) for k, v in match.groupdict().items()}
        # Counted per machine ID or app name, whether or not that machine or app exists.
        identifier = request.params["id" if ACTION_SCOPES[action] == "machine" else "app"]
        retry_after = state.throttle(action, identifier)
        if retry_after is not None:
            request.record.throttled = True
            return Response(429, dict(RATE_LIMITED), {"Retry-After": str(retry_after)})
        try:
            return handler(state, request)
        except ApiError as exc:
            return Response(exc.status, {"error": exc.message})
    return Response(404, {"error": "not found"})


_APP = r"/v1/apps/(?P<app>[^/]+)"
_MACHINE = _APP + r"/machines/(?P<id>[^/]+)"


# ----------------------------------------------------------------------------------------- apps
@route(_APP, "GET", "get_app")
def get_app(state: State, req: Request) -> Response:
    with state.lock:
        app = state.require_app(req.params["app"])
        return Response(
            200,
            {
                "id": app.name,
                "name": app.name,
                "internal_numeric_id": app.internal_numeric_id,
                "network": "default",
                "status": "deployed" if app.machines else "pending",
                "machine_count": len(app.machines),
                "volume_count": len(app.machines) if app.is_postgres else 0,
                "organization": {
                    "name": app.org_slug,
                    "slug": app.org_slug,
                    "internal_numeric_id": app.internal_numeric_id * 7,
                },
                "cname_target": None,
                "app_role": app.app_role,
            },
        )


# ------------------------------------------------------------------------------------- machines
@route(_APP + "/machines", "GET", "list_machines")
def list_machines(state: State, req: Request) -> Response:
    # `summary` is accepted and ignored: the full objects are a superset of the summary.
    states = {s for v in req.query.get("state", []) for s in v.split(",") if s}
    region = req.last("region")
    metadata = {
        key.removeprefix("metadata."): values[-1]
        for key, values in req.query.items()
        if key.startswith("metadata.")
    }
    include_deleted = req.flag("include_deleted")
    include_leases = req.flag("include_leases")
    with state.lock:
        app = state.require_app(req.params["app"])
        result = []
        for machine in app.machines:
            if machine.state == "destroyed" and not include_deleted:
                continue
            if states and machine.reported_state not in states:
                continue
            if region and machine.region != region:
                continue
            meta = machine.config.get("metadata") or {}
            if any(meta.get(k) != v for k, v in metadata.items()):
                continue
            result.append(machine.to_json(include_lease=include_leases))
        return Response(200, result)


@route(_MACHINE, "GET", "get_machine")
def get_machine(state: State, req: Request) -> Response:
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        return Response(200, machine.to_json(include_lease=req.flag("include_leases")))


@route(_MACHINE, "POST", "update_machine")
def update_machine(state: State, req: Request) -> Response:
    with state.lock:
        app = state.require_app(req.params["app"])
        machine = lifecycle.require_reachable(state.require_machine(app, req.params["id"]))
        return Response(200, lifecycle.update_machine(state, app, machine, req.body, req.nonce))


# --------------------------------------------------------------------------------------- leases
@route(_MACHINE + "/lease", "POST", "acquire_lease")
def acquire_lease(state: State, req: Request) -> Response:
    ttl_text = req.last("ttl")
    description = ""
    if isinstance(req.body, dict):
        if ttl_text is None and req.body.get("ttl") is not None:
            ttl_text = str(req.body["ttl"])
        description = str(req.body.get("description") or "")
    elif req.body is not None:
        raise ApiError(400, "request body must be a JSON object")
    ttl = DEFAULT_LEASE_TTL if ttl_text is None else _positive_int(ttl_text, "ttl")
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        lease = leases.acquire(
            machine, req.nonce, ttl=ttl, owner=state.lease_owner, description=description
        )
        return Response(201, lease.envelope())


@route(_MACHINE + "/lease", "GET", "get_lease")
def get_lease(state: State, req: Request) -> Response:
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        return Response(200, leases.current(machine).envelope())


@route(_MACHINE + "/lease", "DELETE", "release_lease")
def release_lease(state: State, req: Request) -> Response:
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        leases.release(machine, req.nonce)
        return Response(200, {"status": "success", "data": {"ok": True}})


# ----------------------------------------------------------------------------------------- wait
@route(_MACHINE + "/wait", "GET", "wait")
def wait(state: State, req: Request) -> Response:
    target = _wait_request(req)
    with state.lock:
        app = state.require_app(req.params["app"])
        machine = lifecycle.require_reachable(state.require_machine(app, req.params["id"]))
        version = target.version
        if version and version != machine.instance_id and version not in machine.previous_versions:
            raise ApiError(404, f"machine {machine.id} has no version {version}")

    fault = state.armed.take_wait_timeout(req.record)
    if fault is not None:
        req.record.fault = fault.label
        time.sleep(fault.seconds)
        with state.lock:
            return Response(*waits.deadline_exceeded(target, machine.state))
    return Response(*waits.until(state, machine, target))


def _wait_request(req: Request) -> waits.Wait:
    """The wait's query, checked: states, then timeout, then version."""
    states = [s for v in req.query.get("state", []) for s in v.split(",") if s] or ["started"]
    unknown = [s for s in states if s not in models.WAITABLE_STATES]
    if unknown:
        raise ApiError(400, f"invalid state {unknown[0]!r}")
    timeout_text = req.last("timeout")
    timeout = MAX_WAIT_TIMEOUT if timeout_text is None else _positive_int(timeout_text, "timeout")
    if timeout > MAX_WAIT_TIMEOUT:
        raise ApiError(400, f"timeout must be at most {MAX_WAIT_TIMEOUT} seconds")
    # `version` is the current name, `instance_id` the one the docs use (fly-api.md §3.5):
    # clients send both, with the same value.
    version, instance_id = req.last("version"), req.last("instance_id")
    if version and instance_id and version != instance_id:
        raise ApiError(400, "version and instance_id disagree")
    version = version or instance_id or None
    if "stopped" in states and not version:
        # The docs: instance_id is "required when waiting for Machine to be in `stopped` state".
        # UNCONFIRMED that the server refuses the request (the OpenAPI spec says nothing); we
        # do, so that a client relying on it being optional fails here first.
        raise ApiError(400, "instance_id (or version) is required when waiting for stopped")
    return waits.Wait(states, timeout, version)


# ------------------------------------------------------------------------------------- metadata
# No lease nonce is asked for or checked: fly-go sends none, and a lease held by someone else is
# taken not to block these (UNCONFIRMED, the safe reading; see :mod:`flysim.metadata`). Nothing
# here makes a new version, restarts the machine or records a state change.
@route(_MACHINE + "/metadata", "GET", "metadata")
def get_metadata(state: State, req: Request) -> Response:
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        return Response(200, metadata.read(machine))


@route(_MACHINE + "/metadata/(?P<key>[^/]+)", "POST", "metadata")
def set_metadata(state: State, req: Request) -> Response:
    key = metadata.validate_key(req.params["key"])
    value = metadata.validate_value(req.body)
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        metadata.set_value(machine, key, value)
        state.after_change()
        return Response(204)


@route(_MACHINE + "/metadata/(?P<key>[^/]+)", "DELETE", "metadata")
def delete_metadata(state: State, req: Request) -> Response:
    key = metadata.validate_key(req.params["key"])
    with state.lock:
        machine = state.require_machine(state.require_app(req.params["app"]), req.params["id"])
        lifecycle.require_reachable(machine)
        metadata.delete(machine, key)
        state.after_change()
        return Response(204)


# -------------------------------------------------------------------------------- ip_assignments
@route(_APP + "/ip_assignments", "GET", "list_ip_assignments")
def list_ips(state: State, req: Request) -> Response:
    with state.lock:
        app = state.require_app(req.params["app"])
        ips = [ip.to_assignment() for ip in app.ips]
        if app.shared_ip is not None:
            ips.append(_shared_ip(app))
        return Response(200, {"ips": ips})


@route(_APP + "/ip_assignments", "POST", "assign_ip")
def assign_ip(state: State, req: Request) -> Response:
    if not isinstance(req.body, dict):
        raise ApiError(400, "request body must be a JSON object")
    type_ = req.body.get("type")
    if type_ in {"egress_v4", "egress_v6", "egress_pair"}:
        raise ApiError(422, f"{type_} addresses are not supported by this simulator")
    if type_ not in {"v4", "v6", "shared_v4", "private_v6"}:
        raise ApiError(400, f"invalid type {type_!r}")
    with state.lock:
        app = state.require_app(req.params["app"])
        ip = state.allocate_ip(
            app,
            str(type_),
            str(req.body.get("region") or ""),
            req.body.get("network") or None,
            req.body.get("service_name") or None,
        )
        return Response(200, _shared_ip(app) if ip is None else ip.to_assignment())


@route(_APP + "/ip_assignments/(?P<ip>[^/]+)", "DELETE", "release_ip_assignment")
def delete_ip(state: State, req: Request) -> Response:
    with state.lock:
        app = state.require_app(req.params["app"])
        if not state.release_ip(app, ip_id=None, address=req.params["ip"]):
            raise ApiError(404, "ip address not found")
        return Response(204)


# -------------------------------------------------------------------------------------- helpers
def _shared_ip(app: App) -> dict[str, Any]:
    """The app's shared v4 as an ip_assignment."""
    assert app.shared_ip is not None
    # UNCONFIRMED: the region Fly reports for a shared v4 here; `shared` is confirmed.
    return {
        "ip": app.shared_ip,
        "region": "",
        "service_name": "",
        "shared": True,
        "created_at": _ids.rfc3339(app.shared_ip_created_at),
    }


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number of seconds") from None
    if value < 1:
        raise ApiError(400, f"{name} must be at least 1")
    return value
