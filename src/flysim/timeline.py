"""The machine timeline: one :class:`StateChange` per change of a machine's state, health, role
or host, in the order they happened, and what it tells about a rollout (:func:`max_down`).

The state core records the entries (:meth:`State.record_change
<flysim.state.State.record_change>`); tests read them through ``Simulator.timeline``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StateChange:
    """One entry of the machine timeline (see ``Simulator.timeline``)."""

    at: float  # time.monotonic()
    app: str
    machine_id: str
    state: str
    healthy: bool  # started on a reachable host with every defined check passing
    role: str
    instance_id: str
    # seed / update / restarted / checks_passing / checks_critical / failover / host_<status>
    reason: str
    host_status: str = "ok"


def max_down(timeline: Iterable[StateChange]) -> int:
    """The most machines at the same time not healthy after having been healthy (see
    :meth:`Simulator.max_machines_down <flysim.simulator.Simulator.max_machines_down>`)."""
    down: set[str] = set()
    peak = 0
    was_healthy: set[str] = set()
    for change in timeline:
        if change.healthy:
            down.discard(change.machine_id)
            was_healthy.add(change.machine_id)
        elif change.machine_id in was_healthy:
            down.add(change.machine_id)
        peak = max(peak, len(down))
    return peak
