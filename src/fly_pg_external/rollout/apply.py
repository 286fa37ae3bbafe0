"""Reading the cluster, and carrying out a plan in the order that keeps it safe.

The record's turn (the lease on the first machine by ID) and the leases on every machine to
update are taken first, so a run stopped by someone else's lease has changed nothing; the run
then reads the cluster again and decides from what it reads under the turn. IPs are allocated
next, and recorded at once, so a failed allocation stops the run before any machine restarts;
then the rolling update. Leases are released on every path. What is done is recorded in the
caller's `Progress` as it happens; failures are raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..describe import describe_plan
from ..domain import ClusterState
from ..errors import ActionError, FlyError, FlyNotFound, RunError
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

# Fly Managed Postgres (`fly mpg`, what `fly launch` now creates) is not a Fly app of the
# organization: its name is never found here, and it cannot be opened to the internet at all.
MANAGED_POSTGRES = (
    "A Fly Managed Postgres cluster (fly mpg list) cannot be opened to the internet, by this "
    "action or otherwise: reach it with fly mpg proxy (a local port through WireGuard), or run "
    "what needs the database on Fly (a release_command)."
)


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
                f"(fly tokens create deploy -a {app}). " + MANAGED_POSTGRES,
            ) from None
        if not info.is_postgres:
            raise RunError(
                f'Fly app "{app}" is not a Fly Postgres app (its role is '
                f"{info.role or 'none'}, expected postgres_cluster).",
                hint="This action only exposes clusters made by fly pg create (postgres-flex). "
                + MANAGED_POSTGRES,
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
    has to stop. Returns the plan carried out.

    Every run that writes the ownership record takes its turn first: the lease on the plan's
    `turn_machine` (the first machine by ID, the same for every run), taken before any other.
    Under it the run reads the cluster again and plans again with `replan`, so it decides from
    the record as the previous writer left it, never from a copy read before that writer was
    done (two exposes at once keep both holds; an expose after an unexpose allocates again)."""
    if plan.releasing:
        return _release(fly, plan, progress, lease_wait=lease_wait, clock=clock, replan=replan)
    _refuse_restart_beside_unreachable(plan)
    turn = [plan.turn_machine] if plan.turn_machine is not None else []
    others = [u.machine for u in plan.updates if u.machine.id not in {m.id for m in turn}]
    with leased(fly, plan.app, turn + others, wait=lease_wait, clock=clock) as leases:
        plan = _plan_again(fly, plan, replan)
        if not plan.changed and plan.record is None:
            return plan  # another run did it meanwhile
        _refuse_restart_beside_unreachable(plan)
        more = [u.machine for u in plan.updates if not leases.holds(u.machine.id)]
        if more:
            leases.extend(more)
        plan, ambiguous = _allocate_and_record(fly, plan, progress, clock)
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


def _refuse_restart_beside_unreachable(plan: Plan) -> None:
    if plan.updates and plan.unreachable:
        # Checked before anything changes: a restart now would be a second machine down.
        names = ", ".join(f"{m.id} (host_status {m.host_status})" for m in plan.unreachable)
        raise RunError(
            f"Machine(s) {names} on a host Fly cannot reach count as down, and "
            f"{len(plan.updates)} machine(s) need a restart: nothing was changed.",
            hint="Re-run once every machine is reachable again (fly machine status <id>).",
        )


def _plan_again(fly: FlyApi, plan: Plan, replan: Callable[[ClusterState], Plan] | None) -> Plan:
    """The plan made again from the cluster as it is now that this run has its turn."""
    if replan is None or plan.turn_machine is None:
        return plan
    fresh = replan(read_cluster(fly, plan.app))
    if _decisions(fresh) != _decisions(plan):
        log.info("The cluster or its record changed while this run waited its turn; planned again.")
        describe_plan(fresh)
    return fresh


def _decisions(plan: Plan) -> tuple[object, ...]:
    return (
        plan.allocate,
        plan.release,
        plan.kept,
        tuple(u.machine.id for u in plan.updates),
        plan.dropped_holds,
    )


def _allocate_and_record(
    fly: FlyApi, plan: Plan, progress: Progress, clock: Clock
) -> tuple[Plan, bool]:
    """Allocate what the plan asks for, then record it with this run's hold before anything
    else happens, on every path: an address that lands is never left out of the record, and an
    allocation whose outcome is unknown (a failure, a cancellation) is recorded as an attempt,
    the evidence a later run needs to claim the address if it turns up."""
    try:
        ambiguous = allocate_families(fly, plan, progress, clock=clock)
    except BaseException:
        _record_after_failure(fly, plan, progress)
        raise
    if plan.record is None and not progress.allocated:
        return plan, ambiguous
    record = write_record(fly, plan.app, list(plan.machines), _exposed_record(plan, progress))
    return carry_record(plan, record), ambiguous


def _exposed_record(plan: Plan, progress: Progress, *, unresolved: bool = False) -> Ownership:
    record = (plan.record or plan.ownership).with_addresses(progress.allocated.values())
    if unresolved:
        missing = [f for f in plan.allocate if f not in progress.allocated]
        record = record.with_attempts(missing, plan.now)
    return record


def _record_after_failure(fly: FlyApi, plan: Plan, progress: Progress) -> None:
    """Write what the run allocated, and the allocations it could not see the end of, while the
    run's own failure (or cancellation) goes on up; a failed write is logged, not raised, so it
    does not hide that failure."""
    try:
        write_record(
            fly, plan.app, list(plan.machines), _exposed_record(plan, progress, unresolved=True)
        )
    except (ActionError, FlyError) as exc:
        log.error(
            f"The ownership record could not be written after the allocation failed ({exc}); "
            f"addresses this run allocated ({', '.join(progress.allocated_addresses.values())}"
            " or none) are not recorded as the action's own: release them with fly ips "
            f"release <address> -a {plan.app}.",
            extra={"title": "Ownership record not written"},
        )


def _release(
    fly: FlyApi,
    plan: Plan,
    progress: Progress,
    *,
    lease_wait: float,
    clock: Clock,
    replan: Callable[[ClusterState], Plan] | None,
) -> Plan:
    """Release and rewrite the record in this run's turn (see `apply`): dropping a hold is a
    read, a change and a write of the record, and two pull requests closing at once would each
    keep the addresses for the other."""
    turn = [plan.turn_machine] if plan.turn_machine is not None else []
    with leased(fly, plan.app, turn, wait=lease_wait, clock=clock):
        plan = _plan_again(fly, plan, replan)
        try:
            release_ips(fly, plan, progress, clock=clock)
        except BaseException:
            _record_releases(fly, plan, progress, raising=False)
            raise
        _record_releases(fly, plan, progress, raising=True)
    return plan


def _record_releases(fly: FlyApi, plan: Plan, progress: Progress, *, raising: bool) -> None:
    """Whatever was released is out of the record, even when a later release failed."""
    released = [a for addresses in progress.released.values() for a in addresses]
    if plan.record is None and not released:
        return
    after = (plan.record or plan.ownership).without_addresses(released)
    if not after.addresses:
        # Holds guard the action's own addresses; with none left they guard nothing, and must
        # not keep a later exposure open.
        after = replace(after, holds={})
    try:
        write_record(fly, plan.app, list(plan.machines), after)
    except (ActionError, FlyError) as exc:
        if raising:
            raise
        log.error(str(exc), extra={"title": "Ownership record not written"})
