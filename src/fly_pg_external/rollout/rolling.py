"""The rolling update: one machine at a time, failing role checks first, the primary last.

Before each restart the cluster must have no machine down (the one-at-a-time rule), and the
plan is brought up to date: a machine updated meanwhile by someone else is dropped, and roles
are read again so the current primary goes last even after a failover. A machine that does not
become healthy gets its previous config back and stops the rollout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ..domain import Machine
from ..errors import ActionError, FlyError, LandingUnknown, RunError
from ..flyapi import FlyApi
from ..ownership import record_text, with_record
from ..plan import MachineUpdate, Plan, plan_machine, rollout_order
from ..poll import Backoff, Clock, poll
from ..progress import MachineResult, Progress
from .leases import LeaseSet
from .machine import HealthWait, active_machines, down, update_machine, wait_healthy

log = logging.getLogger(__name__)

ROLLBACK_WAIT_MAX = 120.0
# While a machine is down, the list is read again no faster than List Machines' rate limit
# (1 request/s per app).
DOWN_CHECKS = Backoff(1.0, 5.0)


@dataclass
class Rollout:
    """What every step of one rolling update shares."""

    fly: FlyApi
    plan: Plan
    leases: LeaseSet
    progress: Progress
    wait_timeout: float
    clock: Clock
    # Learnt from the machine before: how long its checks took, and a read's round trip.
    checks_took: float | None = None
    round_trip: float = 0.0


def rolling_update(
    fly: FlyApi,
    plan: Plan,
    leases: LeaseSet,
    progress: Progress,
    *,
    wait_timeout: float,
    clock: Clock,
) -> None:
    """Update the machines one at a time, recording each result in `progress`; on a failure
    roll that machine back and raise `RunError`."""
    run = Rollout(fly, plan, leases, progress, wait_timeout, clock)
    remaining = list(plan.updates)
    # The plan was read just before the leases were taken; if every lease names the version
    # the plan saw, that read is still the truth and needs no second look.
    known: list[Machine] | None = None
    if leases.versions_match({u.machine.id: u.machine.instance_id for u in plan.updates}):
        known = [u.machine for u in plan.updates] + list(plan.untouched)
    while remaining:
        machines = _wait_until_none_down(run, known)
        remaining = _still_needed(run, remaining, machines)
        if not remaining:
            return
        update = remaining.pop(0)
        step = _MachineStep(run, update, read_list=bool(remaining))
        result, error = step.run()
        progress.machine(update.machine.id, result, role=update.machine.role)
        known = step.cluster_after()
        if error is not None:
            if remaining:
                error += f" {len(remaining)} machine(s) not yet updated were left untouched."
            raise RunError(error)


def _wait_until_none_down(run: Rollout, known: list[Machine] | None) -> list[Machine]:
    """The machines, once none of them is down; waits (within the wait timeout) while one is.

    `known` is a list just read, which saves a request.
    """
    announced = False
    listed = known
    last_down: tuple[str, str] = ("", "")

    def none_down() -> list[Machine] | None:
        nonlocal listed, announced, last_down
        machines = listed if listed is not None else active_machines(run.fly, run.plan.app)
        listed = None
        is_down = [(m.id, why) for m in machines if (why := down(m))]
        if not is_down:
            return machines
        last_down = is_down[0]
        if last_down[1] == "failed":
            raise RunError(_down_message(*last_down))
        if not announced:
            log.info(
                f"Waiting for machine {last_down[0]} ({last_down[1]}) before restarting "
                "another machine."
            )
            announced = True
        return None

    machines = poll(
        none_down,
        deadline=run.clock.now() + run.wait_timeout,
        pauses=DOWN_CHECKS,
        clock=run.clock,
    )
    if machines is None:
        raise RunError(_down_message(*last_down))
    return machines


def _down_message(machine_id: str, why: str) -> str:
    return (
        f"Machine {machine_id} is {why}: not restarting another machine of the cluster while "
        "one is down. The machines not yet updated were left as they are; re-run once the "
        "cluster is healthy."
    )


def _still_needed(
    run: Rollout, remaining: list[MachineUpdate], machines: list[Machine]
) -> list[MachineUpdate]:
    """The updates still needed, in order; a machine that complies by now is recorded as
    untouched.

    A plan gone stale while waiting for leases (another run finished first) is brought up to
    date machine by machine, and roles are read again, so the current primary goes last even
    after a failover.
    """
    by_id = {m.id: m for m in machines}
    kept: list[MachineUpdate] = []
    dropped: list[str] = []
    for update in remaining:
        current = by_id.get(update.machine.id)
        if current is None:
            log.warning(
                f"Machine {update.machine.id} is gone; skipping it.",
                extra={"title": "Machine gone"},
            )
            dropped.append(update.machine.id)
        elif current.instance_id == update.machine.instance_id:
            kept.append(replace(update, machine=replace(update.machine, checks=current.checks)))
        elif (fresh := plan_machine(current, run.plan.port, run.plan.image_policy)) is None:
            log.info(f"Machine {current.id} was updated meanwhile and already complies.")
            dropped.append(current.id)
        else:
            kept.append(fresh)
    for machine_id in dropped:
        run.progress.machine(machine_id, "untouched")
    reordered = sorted(kept, key=lambda u: rollout_order(u.machine))
    planned = [u.machine.id for u in remaining if u.machine.id not in dropped]
    if [u.machine.id for u in reordered] != planned:
        primary = next((u.machine.id for u in reordered if u.machine.role == "primary"), None)
        log.warning(
            f"The primary moved during the rollout (now {primary or 'unknown'}); "
            "the current primary is updated last.",
            extra={"title": "Primary moved"},
        )
    return reordered


class _MachineStep:
    """Updating one machine and waiting for it, and the cluster as seen meanwhile."""

    def __init__(self, run: Rollout, update: MachineUpdate, *, read_list: bool) -> None:
        self.run_ = run
        self.update = update
        self.read_list = read_list  # read the machine list while the checks run (for the next)
        self.listed: list[Machine] | None = None  # that list
        self.healthy: Machine | None = None

    def cluster_after(self) -> list[Machine] | None:
        """The list read while the checks ran, with this machine as last seen (healthy), for the
        next step's one-down check: the list costs no time there (the checks take longer)."""
        if self.listed is None or self.healthy is None:
            return None
        done = self.healthy
        return [done if m.id == done.id else m for m in self.listed]

    def _on_started(self) -> None:
        if not self.read_list:
            return
        try:
            self.listed = active_machines(self.run_.fly, self.run_.plan.app)
        except FlyError:
            self.listed = None  # the next step reads it again

    def run(self) -> tuple[MachineResult, str | None]:
        """The machine's result and the error that stopped the rollout, if any. A machine whose
        update may be live is watched, never rolled back blindly; one whose update did not
        land is left alone."""
        run, m = self.run_, self.update.machine
        log.info(f"Updating machine {m.id} ({m.role}, {m.region}): {self._what()}.")
        start = run.clock.now()
        try:
            nonce = run.leases.nonce(m.id)
            new = update_machine(
                run.fly, run.plan.app, m.id, self.update.request(), nonce=nonce, clock=run.clock
            )
        except LandingUnknown as exc:
            return "failed", (
                f"The update of machine {m.id} failed ({exc}). Check it with fly machine status "
                f"{m.id}."
            )
        except ActionError as exc:
            return "untouched", (
                f"The update of machine {m.id} was not carried out ({exc}); the machine was "
                "left as it was."
            )
        how = HealthWait(
            version=new.instance_id,
            want_started=not self.update.skip_launch,
            deadline=start + run.wait_timeout,
            checks_expected=run.checks_took,
            round_trip=run.round_trip,
        )
        try:
            settled = wait_healthy(
                run.fly, run.plan.app, m.id, how, clock=run.clock, on_started=self._on_started
            )
        except ActionError as exc:
            error = f"Machine {m.id} did not become healthy after its update: {exc}."
            log.warning(
                error + " Restoring its previous config.",
                extra={"title": "Machine unhealthy after update"},
            )
            if _rollback(run, self.update):
                return "rolled-back", error + " It was restored to its previous config."
            return "failed", error + " Rollback failed."
        self.healthy = settled.machine
        run.checks_took = settled.checks_took or run.checks_took
        run.round_trip = settled.round_trip or run.round_trip
        log.info(f"Machine {m.id} is healthy again ({run.clock.now() - start:.1f} s).")
        return "updated", None

    def _what(self) -> str:
        what = []
        if self.update.services_change:
            what.append(f"pg_tls service on port {self.run_.plan.port}")
        if self.update.image_after != self.update.machine.image:
            what.append(f"image {self.update.image_after}")
        return ", ".join(what)


def _rollback(run: Rollout, update: MachineUpdate) -> bool:
    machine_id = update.machine.id
    try:
        # The failed update made a new version: the rollback is conditional on that one.
        current = run.fly.get_machine(run.plan.app, machine_id)
        # The previous config, still carrying the ownership record the update carried.
        text = record_text(update.new_config)
        config = update.machine.config if text is None else with_record(update.machine.config, text)
        request = replace(update.request(), config=config, current_version=current.instance_id)
        new = update_machine(
            run.fly,
            run.plan.app,
            machine_id,
            request,
            nonce=run.leases.nonce(machine_id),
            clock=run.clock,
        )
        how = HealthWait(
            version=new.instance_id,
            want_started=not update.skip_launch,
            deadline=run.clock.now() + ROLLBACK_WAIT_MAX,
        )
        wait_healthy(run.fly, run.plan.app, machine_id, how, clock=run.clock)
    except ActionError as exc:
        log.warning(
            f"Rollback of machine {machine_id} did not complete: {exc}",
            extra={"title": "Rollback incomplete"},
        )
        return False
    log.info(f"Machine {machine_id} is back on its previous config and healthy.")
    return True
