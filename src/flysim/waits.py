"""Waiting for a machine as the Machines API's ``wait`` does: what reaching a state means
(``settled``, a replaced version) and the wait itself on the state core's condition, until the
machine reaches a wanted state, the deadline passes, its host goes away or the simulator stops.

The route (:mod:`flysim.rest_api`) reads and checks the request; this module waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flysim import lifecycle, models
from flysim.models import Machine

if TYPE_CHECKING:
    from flysim.state import State

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Wait:
    """One checked wait request: the states wanted, the timeout in seconds, the version."""

    states: list[str]
    timeout: int
    version: str | None

    @property
    def wanted(self) -> str:
        return ",".join(self.states)

    def current(self, machine: Machine) -> str:
        """The state of the version waited on."""
        # An older version was replaced by the update; it will never be started again.
        if self.version and self.version != machine.instance_id:
            return "replaced"
        return machine.state

    def reached(self, state: str) -> bool:
        return any(
            state == want or (want == "settled" and state not in models.TRANSIENT_STATES)
            for want in self.states
        )


def until(state: State, machine: Machine, wait: Wait) -> Answer:
    """Wait (the lock released while waiting) and answer as the endpoint does."""
    deadline = time.monotonic() + wait.timeout
    with state.changed:
        while True:
            if state.stopped:
                return 503, {"error": "the simulator is shutting down"}
            if machine.host_status != "ok":
                return 503, {"error": lifecycle.unreachable_text(machine)}
            current = wait.current(machine)
            if wait.reached(current):
                return 200, {
                    "ok": True,
                    "state": current,
                    "version": wait.version or machine.instance_id,
                    "event_id": machine.events[0]["id"] if machine.events else None,
                }
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return deadline_exceeded(wait, current)
            state.changed.wait(remaining)


def deadline_exceeded(wait: Wait, current: str) -> Answer:
    message = (
        f"deadline_exceeded: machine failed to reach desired state, {wait.wanted}, "
        f"currently {current}"
    )
    return 408, {"error": message}
