"""One machine: updating it exactly once, waiting until it is healthy, telling whether it is down.

Checks have no wait endpoint, so they are polled, reading the one machine (Get Machine, the
cheapest rate limit); once a machine of the rollout has shown how long its checks take, the next
one is polled densely around that moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..domain import Machine, UpdateRequest
from ..errors import FlyError, FlyTimeout, FlyTransient
from ..flyapi import FlyApi
from ..poll import Backoff, Clock, poll, write_once

# Persistent states of a machine that does not run: not serving now, and not serving before the
# run either (scale to zero, or a skip_launch update, which leaves the new version `created`).
RESTING_STATES = frozenset({"created", "stopped", "suspended"})
# Each wait call is one slice (the endpoint caps it at 60 s), and the machine itself is read
# after each: it tells `failed` (which no source documents as a wait state, so it is never
# waited for) from a start still under way, and what `settled` settled in (its server-side
# meaning is UNCONFIRMED). A machine that failed is seen within one slice.
WAIT_SLICE = 10
# Health polls read the one machine (Get Machine), quickly at first: checks usually pass within
# a second or two of the start. The HTTP layer keeps them under Get Machine's rate limit.
POLL_MIN = 0.1
POLL_MAX = 1.0
# Once a machine of the rollout has shown how long its checks take, the next one is polled
# densely around that moment (within Get Machine's burst of 10).
POLL_DENSE = 0.04
DENSE_POLLS = 8
# After a wait call that failed (a 5xx that survived the client's retries).
WAIT_RETRY = Backoff(0.5, 4.0)


def update_machine(
    fly: FlyApi,
    app: str,
    machine_id: str,
    request: UpdateRequest,
    *,
    nonce: str,
    clock: Clock,
) -> Machine:
    """Send an update conditional on `request.current_version`, and make sure an ambiguous
    failure cannot restart the machine twice. Returns the machine as updated.

    We hold the machine's lease, so a new instance_id can only be our update: that is what
    tells whether a failed request landed (see `write_once`).
    """

    def landed() -> Machine | None:
        machine = fly.get_machine(app, machine_id)
        return machine if machine.instance_id != request.current_version else None

    return write_once(
        lambda: fly.update_machine(app, machine_id, request, nonce=nonce),
        landed,
        request_timeout=fly.request_timeout,
        clock=clock,
    )


@dataclass(frozen=True)
class Settled:
    machine: Machine
    checks_took: float | None = None  # from the start until every check passed, about
    round_trip: float = 0.0  # of the last read, to aim the next machine's first one


@dataclass(frozen=True)
class HealthWait:
    """How to wait for one machine after its update."""

    version: str  # the instance_id the update made
    want_started: bool  # False after a skip_launch update: at rest is the goal
    deadline: float
    # How long the checks took on the previous machine, and a read's round trip then: the first
    # read is aimed at that moment.
    checks_expected: float | None = None
    round_trip: float = 0.0


def wait_healthy(
    fly: FlyApi,
    app: str,
    machine_id: str,
    how: HealthWait,
    *,
    clock: Clock,
    on_started: Callable[[], None] | None = None,
) -> Settled:
    """Wait until the machine runs `how.version`: started with every check its config defines
    passing, or, after a skip_launch update, at rest (`created`, `stopped` or `suspended`).

    `on_started` runs once the machine has started, while its checks have yet to run: time the
    caller can use for a read of its own.
    """
    machine = _wait_for_state(fly, app, machine_id, how, clock=clock)
    if machine is not None and not how.want_started:
        return Settled(machine)
    reached = clock.now()
    if on_started is not None:
        on_started()
    return _wait_for_checks(
        fly, app, machine_id, how, machine=machine, reached=reached, clock=clock
    )


_STARTED = object()  # the wait endpoint said `started`: no read needed


def _wait_for_state(
    fly: FlyApi, app: str, machine_id: str, how: HealthWait, *, clock: Clock
) -> Machine | None:
    """The machine once started (None when the wait's answer said so and it was not read) or,
    for a skip_launch update, once at rest.

    Only states with a source are waited for: `started` (the published spec's enum) and, after
    a skip_launch update, `settled` (flyctl's `mach.Update` waits for it: the new version may
    stay `created`, which `stopped` would never match). The machine is read after each slice
    to see where it is, `failed` included, unless the answer says it started.
    """
    states = ("started",) if how.want_started else ("settled",)
    retries = iter(WAIT_RETRY)
    pause = 0.0

    def once() -> object | None:
        nonlocal pause
        pause = 0.0
        remaining = how.deadline - clock.now()
        slice_ = min(remaining, WAIT_SLICE)
        answer: str | None = None
        try:
            answer = fly.wait_machine(
                app, machine_id, states=states, version=how.version, timeout=max(1, int(slice_))
            )
        except FlyTimeout:
            pass  # not yet: the machine itself says where it is
        except FlyTransient:
            pause = next(retries)
        if how.want_started and answer == "started":
            # The answer is about `version` (the wait names it), so it needs no second look;
            # a freshly started machine has no check results to read yet anyway.
            return _STARTED
        machine = read_version(fly, app, machine_id, how.version)
        done = machine.state == "started" if how.want_started else machine.state in RESTING_STATES
        return machine if done else None

    def pauses() -> Iterator[float]:
        while True:
            yield pause

    result = (
        None
        if clock.now() >= how.deadline
        else poll(once, deadline=how.deadline, pauses=pauses(), clock=clock)
    )
    if result is None:
        raise FlyTimeout(f"machine {machine_id} did not reach {states[0]} in time")
    return result if isinstance(result, Machine) else None


def _wait_for_checks(
    fly: FlyApi,
    app: str,
    machine_id: str,
    how: HealthWait,
    *,
    machine: Machine | None,
    reached: float,
    clock: Clock,
) -> Settled:
    """Poll until every check passes; how long that took, for the next machine's first read."""
    round_trip = how.round_trip
    if machine is None or not machine.healthy:
        # A moment after the start, or so that the read arrives as the checks are expected to
        # pass (one round trip earlier).
        first = POLL_MIN if how.checks_expected is None else how.checks_expected - round_trip
        clock.sleep(max(0.0, reached + first - clock.now()))
    last = machine
    # When reads answered that the checks were pending, to estimate the moment they passed
    # (the start is the earliest it can have been).
    pending_seen: float | None = None

    def read() -> Machine | None:
        nonlocal last, round_trip, pending_seen
        if last is not None and last.healthy:
            return last
        sent = clock.now()
        last = read_version(fly, app, machine_id, how.version)
        round_trip = clock.now() - sent
        if last.healthy:
            return last
        pending_seen = clock.now()
        return None

    healthy = poll(
        read,
        deadline=how.deadline,
        pauses=_check_polls(how.checks_expected is not None, clock),
        clock=clock,
    )
    if healthy is None:
        assert last is not None
        raise FlyTimeout(
            f"machine {machine_id} is {last.state} but its checks "
            f"{', '.join(last.pending_checks) or '(none)'} are not passing"
        )
    passed_seen = clock.now()
    # The checks passed between the last answer that saw them pending and the one that saw them
    # pass: the middle is the best guess. When the first read already saw them pass, the guess
    # is a little earlier, and corrects itself.
    if pending_seen is None:
        took = passed_seen - reached - POLL_DENSE
    else:
        took = (pending_seen + passed_seen) / 2 - reached
    return Settled(healthy, max(0.0, took), round_trip)


def _check_polls(dense: bool, clock: Clock) -> Iterator[float]:
    """Dense around the expected moment (a late read costs wall time), then slower and slower."""
    if dense:
        yield from [POLL_DENSE] * DENSE_POLLS
    since = clock.now()
    while True:
        yield min(POLL_MAX, max(POLL_MIN, 0.2 * (clock.now() - since)))


def read_version(fly: FlyApi, app: str, machine_id: str, version: str) -> Machine:
    """The machine, which must still run `version` and must not have failed."""
    machine = fly.get_machine(app, machine_id)
    if machine.instance_id != version:
        raise FlyError(
            f"machine {machine_id} now runs version {machine.instance_id}, not {version}: "
            "someone else changed it"
        )
    if machine.state == "failed":
        raise FlyError(f"machine {machine_id} failed to start")
    return machine


def down(machine: Machine) -> str | None:
    """Why a machine counts as down for the one-at-a-time rule, or None if it is serving or at
    rest (a stopped, suspended or created machine was not serving before the run either)."""
    if not machine.reachable:
        return f"on a host Fly cannot reach (host_status {machine.host_status})"
    if machine.state in RESTING_STATES:
        return None
    if machine.state == "started":
        if machine.healthy:
            return None
        return f"started with checks not passing ({', '.join(machine.pending_checks)})"
    return machine.state  # on its way somewhere (replacing, starting, ...), or failed


def active_machines(fly: FlyApi, app: str) -> list[Machine]:
    return [m for m in fly.list_machines(app) if m.active]
