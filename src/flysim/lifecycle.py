"""Machine lifecycle: update validation, the restart an update causes, the first run of checks,
failover of the Postgres primary, host status, and the state changes they record on the timeline.

Every function takes the :class:`~flysim.state.State` and uses its state API: the lock,
``require_app`` / ``find_app``, ``record_change``, ``after_change``, ``call_later``,
``cut_connections`` and the armed machine faults. Callers that pass live objects hold the lock;
the scheduled steps take it themselves.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from flysim import _ids, configs, leases, models
from flysim.errors import ApiError
from flysim.models import App, Machine

if TYPE_CHECKING:
    from flysim.state import State

VALID_HANDLERS = frozenset({"http", "tls", "pg_tls", "proxy_proto", "edge_http"})


# -- updates ---------------------------------------------------------------------------------
def update_machine(
    state: State, app: App, machine: Machine, body: Any, nonce: str | None
) -> dict[str, Any]:
    """Apply a Machines API update: the machine is ``replacing`` for ``restart_seconds``."""
    leases.check_nonce(machine, nonce)
    config, skip_launch = validate_update(machine, body, state.stale_version_status)
    now = time.time()
    machine.previous_versions.append(machine.instance_id)
    machine.instance_id = _ids.ulid(now)
    machine.config = config
    machine.image_ref = configs.image_ref_for(
        config["image"], dict(machine.image_ref.get("labels") or {})
    )
    machine.generation += 1
    machine.update_count += 1
    machine.updated_at = now
    machine.add_event("update", "replacing", source="user")
    machine.clear_checks()  # the new version has run no check yet
    _set_state(state, app, machine, "replacing", "update")
    generation, app_name, machine_id = machine.generation, app.name, machine.id
    state.call_later(
        state.restart_seconds,
        lambda: _finish_restart(state, app_name, machine_id, generation, skip_launch),
    )
    state.after_change()
    return machine.to_json()


def validate_update(
    machine: Machine, body: Any, stale_version_status: int
) -> tuple[dict[str, Any], bool]:
    """The new config (a copy) and ``skip_launch`` of an update body, or the API's refusal."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    config = body.get("config")
    if not isinstance(config, dict):
        raise ApiError(422, "config is required: an update replaces the whole machine config")
    image = config.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ApiError(422, "invalid config: image is required (updates are not partial)")
    region = body.get("region")
    if region not in (None, "", machine.region):
        raise ApiError(
            400,
            f"cannot change region of machine {machine.id} from {machine.region} to {region}",
        )
    name = body.get("name")
    if name not in (None, "", machine.name):
        raise ApiError(400, f"cannot rename machine {machine.id}")
    skip_launch = body.get("skip_launch", False)
    if not isinstance(skip_launch, bool):
        raise ApiError(400, "skip_launch must be a boolean")
    current_version = body.get("current_version")
    if current_version not in (None, "", machine.instance_id):
        # UNCONFIRMED: no source states the status (412 appears nowhere); it is the
        # `stale_version_status` parameter so that tests can try the plausible ones.
        raise ApiError(
            stale_version_status,
            f"machine {machine.id} version mismatch: current_version {current_version} "
            f"is not {machine.instance_id}",
        )
    validate_services(config.get("services"))
    # UNCONFIRMED: we refuse an update that detaches or swaps the machine's volume. A
    # Postgres machine without its /data volume would come up empty, so be strict.
    old = sorted((m.get("volume"), m.get("path")) for m in machine.config.get("mounts") or [])
    mounts = config.get("mounts") or []
    if not isinstance(mounts, list) or not all(isinstance(m, dict) for m in mounts):
        raise ApiError(422, "invalid config: mounts must be a list of objects")
    new = sorted((m.get("volume"), m.get("path")) for m in mounts)
    if old != new:
        raise ApiError(
            422,
            f"invalid config: mounts of machine {machine.id} cannot change ({old} -> {new})",
        )
    return copy.deepcopy(config), skip_launch


def validate_services(services: Any) -> None:
    if services is None:
        return
    if not isinstance(services, list):
        raise ApiError(422, "invalid config: services must be a list")
    for index, service in enumerate(services):
        where = f"invalid config: services[{index}]"
        if not isinstance(service, dict):
            raise ApiError(422, f"{where} must be an object")
        if service.get("protocol") not in {"tcp", "udp"}:
            raise ApiError(422, f"{where}.protocol must be tcp or udp")
        internal = service.get("internal_port")
        if (
            not isinstance(internal, int)
            or isinstance(internal, bool)
            or not 1 <= internal <= 65535
        ):
            raise ApiError(422, f"{where}.internal_port must be a port number")
        ports = service.get("ports") or []
        if not isinstance(ports, list):
            raise ApiError(422, f"{where}.ports must be a list")
        for j, port in enumerate(ports):
            _validate_port(f"{where}.ports[{j}]", port)


def _validate_port(where: str, port: Any) -> None:
    """One entry of a service's ``ports``: a port (or a range) and known handlers."""
    if not isinstance(port, dict):
        raise ApiError(422, f"{where} must be an object")
    number = port.get("port")
    if number is not None and (not isinstance(number, int) or not 1 <= number <= 65535):
        raise ApiError(422, f"{where}.port must be a port number")
    if number is None and port.get("start_port") is None:
        raise ApiError(422, f"{where} needs port or start_port/end_port")
    handlers = port.get("handlers") or []
    if not isinstance(handlers, list) or not all(h in VALID_HANDLERS for h in handlers):
        raise ApiError(422, f"{where}.handlers has an unknown handler")


# -- what follows an update, on the scheduler's thread ---------------------------------------
def _finish_restart(
    state: State, app_name: str, machine_id: str, generation: int, skip_launch: bool
) -> None:
    with state.lock:
        app = state.find_app(app_name)
        machine = app.machine(machine_id) if app else None
        if app is None or machine is None or machine.generation != generation or state.stopped:
            return
        now = time.time()
        # A skip_launch update leaves the new version `created`, a persistent state: it is
        # never launched, so it neither starts nor becomes `stopped` by itself (docs
        # `machines/machine-states`).
        new_state = "created" if skip_launch else "started"
        if new_state == "started" and state.armed.take_fail_start(machine.id):
            new_state = "failed"
        machine.updated_at = now
        machine.add_event("start" if new_state == "started" else "update", new_state)
        _set_state(state, app, machine, new_state, "restarted")
        app.updates_completed += 1
        app.updated_since_armed.add(machine.id)
        _maybe_failover(state, app)
        if new_state == "started":
            # Until its checks first run, the list stays empty: a client that reads
            # "no checks" as "all passing" moves on too early (flyctl #4952).
            state.call_later(
                state.check_grace_seconds,
                lambda: _run_checks(state, app_name, machine_id, generation),
            )
        state.after_change()


def _run_checks(state: State, app_name: str, machine_id: str, generation: int) -> None:
    """The first run of a started machine's checks: every defined check gets a status."""
    with state.lock:
        app = state.find_app(app_name)
        machine = app.machine(machine_id) if app else None
        if app is None or machine is None or machine.generation != generation:
            return
        if machine.state != "started" or state.stopped:
            return
        if state.armed.is_never_healthy(machine.id):
            machine.fail_checks(time.time())  # and they stay so until the next update
            state.record_change(app, machine, "checks_critical")
        else:
            machine.pass_checks(time.time())
            state.record_change(app, machine, "checks_passing")
        state.after_change()


# -- failover --------------------------------------------------------------------------------
def arm_failover(state: State, app_name: str, updates: int) -> None:
    """Move the primary role once ``updates`` more updates of ``app_name`` have completed."""
    with state.lock:
        app = state.require_app(app_name)
        app.failover_after = app.updates_completed + updates
        app.updated_since_armed = set()


def _maybe_failover(state: State, app: App) -> None:
    if app.failover_after is None or app.updates_completed < app.failover_after:
        return
    app.failover_after = None
    others = [m for m in app.machines if m.id != app.primary_id and m.state != "destroyed"]
    # Prefer a started machine the rollout has not reached yet: that is the case that breaks
    # a "primary last" plan computed before the rollout began.
    ranked = sorted(
        others,
        key=lambda m: (
            m.state != "started" or m.host_status != "ok",
            m.id in app.updated_since_armed,
        ),
    )
    if ranked:
        _set_primary(state, app, ranked[0].id, "failover")


def _set_primary(state: State, app: App, machine_id: str, reason: str) -> None:
    old = app.primary_id
    app.primary_id = machine_id
    now = time.time()
    for machine in app.machines:
        role = "primary" if machine.id == machine_id else "replica"
        if machine.role != role:
            machine.role = role
            machine.refresh_role_output(now)
            state.record_change(app, machine, reason)
    if old is not None:
        # Connections through HAProxy to the old primary end with its role.
        state.cut_connections(
            lambda r: r.app == app.name and r.haproxy and r.backend_machine == old
        )


# -- state changes ---------------------------------------------------------------------------
def _set_state(state: State, app: App, machine: Machine, new_state: str, reason: str) -> None:
    machine.state = new_state
    state.record_change(app, machine, reason)
    if new_state != "started":
        # The machine's HAProxy/Postgres is gone: connections through it or to it drop.
        state.cut_connections(
            lambda r: r.app == app.name and machine.id in (r.backend_machine, r.via_machine)
        )


def set_host_status(state: State, app_name: str, machine_id: str, status: str) -> None:
    """See :meth:`Simulator.set_host_status <flysim.simulator.Simulator.set_host_status>`."""
    if status not in models.HOST_STATUSES:
        raise ValueError(f"host status must be one of {sorted(models.HOST_STATUSES)}")
    with state.lock:
        app = state.require_app(app_name)
        machine = state.require_machine(app, machine_id)
        if machine.host_status == status:
            return
        if status == "ok":
            machine.known_state = None
        elif machine.host_status == "ok":
            machine.known_state = machine.state
        machine.host_status = status
        state.record_change(app, machine, f"host_{status}")
        if status != "ok":
            # Connections through the machine's proxy or to its Postgres die with the host.
            state.cut_connections(
                lambda r: r.app == app_name and machine_id in (r.backend_machine, r.via_machine)
            )
        state.after_change()


def require_reachable(machine: Machine) -> Machine:
    """Refuse what only the machine's host (flyd) can do while that host is unreachable."""
    if machine.host_status != "ok":
        raise ApiError(503, unreachable_text(machine))
    return machine


def unreachable_text(machine: Machine) -> str:
    # UNCONFIRMED: the status and text of a lease/update/wait on a machine whose host is not
    # `ok`. flyctl does not even try to lease such a machine (`internal/machine/lease.go`).
    return (
        f"host unreachable: machine {machine.id} is on a host that cannot be reached "
        f"(host_status {machine.host_status})"
    )
