"""Reading the cluster, and carrying out a plan in the order that keeps it safe.

Leases on every machine to update are taken first, so a run stopped by someone else's lease has
changed nothing. IPs are allocated next, so a failed allocation stops the run before any
machine restarts; then the rolling update. Leases are released on every path. What is done is
recorded in the caller's `Progress` as it happens; failures are raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..describe import describe_plan
from ..domain import ClusterState
from ..errors import ActionError, FlyNotFound, RunError
from ..flyapi import FlyApi
from ..ownership import Ownership
from ..plan import Plan
from ..poll import SYSTEM_CLOCK, Clock
from ..progress import Progress
from .ips import allocate_families, release_ips, sweep_duplicates
from .leases import LEASE_WAIT, leased
from .record import carry_record, write_record
from .rolling import rolling_update

log = logging.getLogger(__name__)


def read_cluster(fly: FlyApi, app: str) -> ClusterState:
    """The app (role, IPs) and its machines, read concurrently: one round trip."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        app_f = pool.submit(fly.get_app, app)
        machines_f = pool.submit(fly.list_machines, app)
        try:
            info = app_f.result()
        except FlyNotFound:
            raise RunError(
                f'Fly app "{app}" was not found, or the token cannot see it.',
                hint="Check the app input and that the token is a deploy token of that app "
                f"(fly tokens create deploy -a {app}).",
            ) from None
        if not info.is_postgres:
            raise RunError(
                f'Fly app "{app}" is not a Fly Postgres app (its role is '
                f"{info.role or 'none'}, expected postgres_cluster).",
                hint="This action only exposes clusters made by fly pg create.",
            )
        try:
            machines = machines_f.result()
        except FlyNotFound:
            raise RunError(f'Fly app "{app}" has no Machines API record.') from None
    return ClusterState.of(info, machines)


def apply(
    fly: FlyApi,
    plan: Plan,
    progress: Progress,
    *,
    wait_timeout: float,
    lease_wait: float = LEASE_WAIT,
    clock: Clock = SYSTEM_CLOCK,
    replan: Callable[[ClusterState], Plan] | None = None,
) -> Plan:
    """Carry out `plan`, recording what is done in `progress`; raise `ActionError` when the run
    has to stop. Returns the plan carried out: a releasing run plans again under the record's
    lease with `replan`, since another run may have changed the holds meanwhile."""
    if plan.releasing:
        return _release(fly, plan, progress, lease_wait=lease_wait, clock=clock, replan=replan)
    machines = [u.machine for u in plan.updates] + list(plan.untouched)
    if plan.updates and plan.unreachable:
        # Checked before anything changes: a restart now would be a second machine down.
        names = ", ".join(f"{m.id} (host_status {m.host_status})" for m in plan.unreachable)
        raise RunError(
            f"Machine(s) {names} on a host Fly cannot reach count as down, and "
            f"{len(plan.updates)} machine(s) need a restart: nothing was changed.",
            hint="Re-run once every machine is reachable again (fly machine status <id>).",
        )
    with leased(
        fly, plan.app, [u.machine for u in plan.updates], wait=lease_wait, clock=clock
    ) as leases:
        ambiguous = allocate_families(fly, plan, progress, clock=clock)
        if plan.record is not None or progress.allocated:
            # Recorded before any restart: the record outlives a run stopped mid-rollout.
            record = (plan.record or plan.ownership).with_addresses(progress.allocated.values())
            write_record(fly, plan.app, machines, record)
            plan = carry_record(plan, record)
        try:
            if plan.updates:
                rolling_update(fly, plan, leases, progress, wait_timeout=wait_timeout, clock=clock)
        except ActionError:
            if ambiguous:
                sweep_duplicates(fly, plan, progress)
            raise
        if ambiguous:
            sweep_duplicates(fly, plan, progress)
    return plan


def _release(
    fly: FlyApi,
    plan: Plan,
    progress: Progress,
    *,
    lease_wait: float,
    clock: Clock,
    replan: Callable[[ClusterState], Plan] | None,
) -> Plan:
    """Release and rewrite the record, one releasing run at a time.

    Dropping a hold is a read, a change and a write of the record: two pull requests closing
    at once would each keep the addresses for the other and leave one hold behind. The lease on
    the cluster's first machine (the same one for every run) makes them take turns, and the
    second reads the record the first one wrote.
    """
    first = sorted(plan.untouched, key=lambda m: m.id)[:1]
    with leased(fly, plan.app, first, wait=lease_wait, clock=clock):
        if replan is not None and first:
            fresh = replan(read_cluster(fly, plan.app))
            if (fresh.release, fresh.kept) != (plan.release, plan.kept):
                log.info("The record changed while this run waited its turn; planned again.")
                describe_plan(fresh)
            plan = fresh
        machines = list(plan.untouched)
        try:
            release_ips(fly, plan, progress, clock=clock)
        finally:
            # Whatever was released is out of the record, even when a later release failed.
            released = [a for addresses in progress.released.values() for a in addresses]
            if plan.record is not None or released:
                after = (plan.record or plan.ownership).without_addresses(released)
                if not after.addresses:
                    # Holds guard the action's own addresses; with none left they guard nothing,
                    # and must not keep a later exposure open.
                    after = Ownership()
                write_record(fly, plan.app, machines, after)
    return plan
