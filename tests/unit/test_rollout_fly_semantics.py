"""Rollout rules that depend on how the real Fly answers, proven without a server.

Each test scripts the Machines API the way Fly's sources say it behaves (empty checks on a fresh
start, 408 on a write that landed, a stale `current_version` answered with an unknown status,
lease refreshes that fail once or come back with another nonce) and runs one rollout function
against it with a fake clock.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from fly_pg_external.cluster import ClusterState, Machine
from fly_pg_external.fly.errors import FlyConflict, FlyError, FlyTimeout, FlyTransient
from fly_pg_external.fly.http import FlyHttp, RetryPolicy
from fly_pg_external.fly.machines import Lease
from fly_pg_external.fly.ratelimit import DEFAULT, GET_MACHINE, Limit, Limiter
from fly_pg_external.rollout import (
    Fly,
    LeaseSet,
    _down,
    lease_expiry,
    update_machine,
    wait_healthy,
)

from machines_data import machine as machine_json


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append("warning: " + message)


class ScriptedMachines:
    """Each method pops its next answer from a script: a value, or an exception to raise."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = {name: list(items) for name, items in scripts.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _next(self, name: str, **kwargs: Any) -> Any:
        self.calls.append((name, kwargs))
        script = self.scripts[name]
        item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, BaseException):
            raise item
        return item(**kwargs) if callable(item) else item

    def get(self, app: str, machine_id: str) -> Any:
        return self._next("get", machine_id=machine_id)

    def update(self, app: str, machine_id: str, body: dict[str, Any], *, nonce: str | None) -> Any:
        return self._next("update", machine_id=machine_id, body=body)

    def wait(self, app: str, machine_id: str, **kwargs: Any) -> Any:
        return self._next("wait", machine_id=machine_id, **kwargs)

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Any:
        return self._next("acquire_lease", machine_id=machine_id, nonce=nonce)

    def release_lease(self, app: str, machine_id: str, nonce: str) -> Any:
        return self._next("release_lease", machine_id=machine_id, nonce=nonce)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def fly_with(machines: ScriptedMachines) -> Fly:
    http = FlyHttp(timeout=2.0, retry=RetryPolicy(sleep=lambda _s: None))
    return Fly(http, graphql=None, machines=machines)  # type: ignore[arg-type]


def with_state(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes}


# -- 1. empty checks ---------------------------------------------------------------------------


def test_a_started_machine_with_no_check_results_yet_is_not_healthy() -> None:
    fresh = Machine.from_api(with_state(machine_json("m1"), checks=[]))
    assert fresh.state == "started"
    assert not fresh.healthy  # all([]) would say yes: flyctl #4952
    assert "pg (not yet run)" in fresh.pending_checks
    assert _down(fresh) is not None


def test_a_machine_is_healthy_only_when_every_configured_check_passes() -> None:
    data = machine_json("m1")
    partial = with_state(data, checks=[c for c in data["checks"] if c["name"] != "vm"])
    assert not Machine.from_api(partial).healthy
    assert Machine.from_api(data).healthy


def test_service_checks_count_even_without_a_name_in_the_config() -> None:
    data = machine_json("m1")
    data["config"]["services"] = [
        {"protocol": "tcp", "internal_port": 5432, "checks": [{"type": "tcp", "interval": "15s"}]}
    ]
    assert not Machine.from_api(data).healthy  # the service check has not run yet
    service_check = {"name": "servicecheck-00-tcp-5432", "status": "passing", "output": ""}
    ran = with_state(data, checks=[*data["checks"], service_check])
    assert Machine.from_api(ran).healthy


def test_wait_healthy_keeps_polling_while_checks_are_empty() -> None:
    started = machine_json("m1")
    version = started["instance_id"]
    empty = with_state(started, checks=[])
    machines = ScriptedMachines(wait=["started"], get=[empty, empty, empty, started])
    clock = Clock()
    result = wait_healthy(
        fly_with(machines),
        "db",
        "m1",
        version=version,
        want_started=True,
        deadline=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.machine.healthy
    assert machines.names().count("get") == 4


def test_health_polls_read_the_one_machine_not_the_list() -> None:
    started = machine_json("m1")
    empty = with_state(started, checks=[])
    machines = ScriptedMachines(wait=["started"], get=[*[empty] * 30, started])
    clock = Clock()
    wait_healthy(
        fly_with(machines),
        "db",
        "m1",
        version=started["instance_id"],
        want_started=True,
        deadline=600,
        clock=clock,
        sleep=clock.sleep,
    )
    assert set(machines.names()) == {"wait", "get"}


@pytest.mark.parametrize(
    ("limit", "fly_rate", "fly_burst"), [(DEFAULT, 1.0, 3), (GET_MACHINE, 5.0, 10)]
)
def test_the_client_never_sends_faster_than_flys_published_limits(
    limit: Limit, fly_rate: float, fly_burst: int
) -> None:
    # Requests as fast as the caller can make them, with up to 0.2 s of jitter on the way
    # (a request may arrive late, the next one on time): Fly's own bucket never runs dry.
    clock = Clock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    jitter = itertools.cycle([0.2, 0.0, 0.1, 0.0])
    arrivals = []
    for _ in range(200):
        limiter.take("get", "m1", limit)
        arrivals.append(clock.now + next(jitter))
    tokens, then = float(fly_burst), 0.0
    for at in sorted(arrivals):
        tokens = min(float(fly_burst), tokens + (at - then) * fly_rate) - 1
        then = at
        assert tokens >= 0, f"Fly would answer 429 at {at:.2f} s"


# -- 2. created after a skip_launch update -----------------------------------------------------


def test_a_skip_launch_update_that_stays_created_is_done() -> None:
    created = with_state(machine_json("m1", state="created"), checks=[])
    machines = ScriptedMachines(wait=["created"], get=[created])
    clock = Clock()
    result = wait_healthy(
        fly_with(machines),
        "db",
        "m1",
        version=created["instance_id"],
        want_started=False,
        deadline=300,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.machine.state == "created"
    (_, wait_args), *_ = machines.calls
    assert wait_args["states"] == ("settled",)
    assert clock.now < 1


def test_resting_machines_do_not_block_the_one_down_rule() -> None:
    for state in ("created", "stopped", "suspended"):
        assert _down(Machine.from_api(machine_json("m1", state=state))) is None


# -- 4. unreachable hosts ----------------------------------------------------------------------


def test_a_machine_on_an_unreachable_host_is_down_not_absent() -> None:
    data = machine_json("m2")
    unreachable = with_state(
        data, config=None, incomplete_config=data["config"], host_status="unreachable"
    )
    cluster = ClusterState.from_api(_app_info(), [machine_json("m1", "primary"), unreachable])
    assert [m.id for m in cluster.machines] == ["m1", "m2"]
    (down,) = cluster.unreachable
    assert down.image == data["config"]["image"]
    assert _down(down) == "on a host Fly cannot reach (host_status unreachable)"


def _app_info() -> Any:
    from fly_pg_external.fly.graphql import AppInfo

    return AppInfo("db", "db", "postgres_cluster", (), None)


# -- 3 and 6. ambiguous updates ----------------------------------------------------------------


def _update(machines: ScriptedMachines, before: str) -> dict[str, Any]:
    clock = Clock()
    return update_machine(
        fly_with(machines),
        "db",
        "m1",
        {"config": {}, "current_version": before},
        before=before,
        nonce="n",
        clock=clock,
        sleep=clock.sleep,
    )


def test_an_update_answered_408_that_landed_is_not_sent_again() -> None:
    old = machine_json("m1")
    new = with_state(old, instance_id="01NEWVERSION")
    machines = ScriptedMachines(update=[FlyTimeout("deadline_exceeded", status=408)], get=[new])
    assert _update(machines, old["instance_id"])["instance_id"] == "01NEWVERSION"
    assert machines.names().count("update") == 1


@pytest.mark.parametrize("status", [400, 409, 412, 422])
def test_a_stale_version_answer_is_judged_by_the_instance_id_whatever_its_status(
    status: int,
) -> None:
    # The first update lands only after the watch gave up; the resend, conditional on the old
    # version, is then refused with a status no source names.
    old = machine_json("m1")
    new = with_state(old, instance_id="01NEWVERSION")
    machines = ScriptedMachines(
        update=[FlyTimeout("timed out"), FlyError("version mismatch", status=status)]
    )
    machines.scripts["get"] = [
        lambda machine_id: new if machines.names().count("update") == 2 else old
    ]
    landed = _update(machines, old["instance_id"])
    assert landed["instance_id"] == "01NEWVERSION"
    assert machines.names().count("update") == 2


def test_a_refused_resend_of_an_update_that_never_landed_is_an_error() -> None:
    old = machine_json("m1")
    machines = ScriptedMachines(
        update=[FlyTransient("reset"), FlyError("bad request", status=400)], get=[old]
    )
    with pytest.raises(FlyError, match="bad request"):
        _update(machines, old["instance_id"])


# -- 7. lease hygiene --------------------------------------------------------------------------


def _leases(machines: ScriptedMachines, clock: Clock, *, wait: float = 40.0) -> LeaseSet:
    return LeaseSet(fly_with(machines), "db", Log(), wait=wait, clock=clock, sleep=clock.sleep)


def lease(nonce: str = "n1", version: str = "v1") -> Lease:
    return Lease(nonce=nonce, expires_at=0, owner="me", version=version)


def test_one_failed_refresh_is_not_a_lost_lease() -> None:
    clock = Clock()
    machines = ScriptedMachines(acquire_lease=[lease(), FlyTimeout("deadline_exceeded"), lease()])
    leases = _leases(machines, clock)
    leases._take(Machine.from_api(machine_json("m1")))
    clock.now += 10
    leases._refresh_one("m1", leases.leases["m1"])
    assert leases.nonce("m1") == "n1"
    clock.now += 10
    leases._refresh_one("m1", leases.leases["m1"])
    clock.now += 25  # 35 s after the first refresh failed, 25 s after the last success
    assert leases.nonce("m1") == "n1"


def test_a_lease_not_refreshed_before_its_ttl_counts_as_lost() -> None:
    clock = Clock()
    machines = ScriptedMachines(acquire_lease=[lease(), FlyTransient("503", status=503)])
    leases = _leases(machines, clock)
    leases._take(Machine.from_api(machine_json("m1")))
    for _ in range(3):
        clock.now += 10
        leases._refresh_one("m1", leases.leases["m1"])
    with pytest.raises(Exception, match="lost"):
        leases.nonce("m1")


def test_a_refresh_that_returns_another_nonce_loses_the_lease() -> None:
    clock = Clock()
    machines = ScriptedMachines(acquire_lease=[lease("n1"), lease("someone-elses")])
    leases = _leases(machines, clock)
    leases._take(Machine.from_api(machine_json("m1")))
    leases._refresh_one("m1", leases.leases["m1"])
    with pytest.raises(Exception, match="another nonce"):
        leases.nonce("m1")


def _held_until(expiry: float) -> FlyConflict:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return FlyConflict(
        f"machine ID m1 lease currently held by deploy@example.com, expires at {stamp}",
        status=409,
    )


def test_a_lease_held_by_someone_else_is_waited_for_while_it_ends_soon() -> None:
    import time

    clock = Clock()
    held = _held_until(time.time() + 5)
    machines = ScriptedMachines(acquire_lease=[held, held, held, lease()])
    leases = _leases(machines, clock)
    leases._take(Machine.from_api(machine_json("m1")))
    assert leases.nonce("m1") == "n1"
    # Asked again every 2 s (the holder may let go before the stated expiry): 3 refusals.
    assert clock.now == 6.0
    assert machines.names() == ["acquire_lease"] * 4
    assert sum("waiting up to 40 s" in line for line in leases.log.lines) == 1  # type: ignore[attr-defined]


def test_a_lease_held_for_longer_than_the_wait_fails_at_once() -> None:
    import time

    clock = Clock()
    machines = ScriptedMachines(acquire_lease=[_held_until(time.time() + 600)])
    leases = _leases(machines, clock)
    with pytest.raises(Exception, match="leased by someone else"):
        leases._take(Machine.from_api(machine_json("m1")))
    assert clock.now == 0
    assert machines.names() == ["acquire_lease"]


def test_lease_expiry_is_read_from_flys_conflict_text() -> None:
    text = "machine ID 2879325b42d318 lease currently held by x@tokens.fly.io, expires at "
    assert lease_expiry(text + "2026-05-14T10:41:08Z") == 1778755268.0
    assert lease_expiry("lease held") is None
