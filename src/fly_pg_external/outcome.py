"""What a run did (or would do), as plain data: the input of every report.

The log summary, the job summary, the PR comment and the step outputs are all rendered from one
`Outcome`, so they cannot disagree. Nothing here holds a secret: URLs are stored redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .domain import IP_FAMILIES, ImagePolicy, IpFamily, Mode, PlanWarning
from .plan import Plan
from .ports import OpenPort
from .progress import MachineResult, Progress
from .redact import Redactor

# plan: a dry run with changes pending; applied: expose/unexpose changed something;
# no-change: nothing to do; failed: the run stopped on an error.
Status = Literal["plan", "applied", "no-change", "failed"]


@dataclass(frozen=True)
class IpChange:
    """One public IP family: what exists and what the run does about it."""

    family: IpFamily
    # allocate: none exists, one is (or would be) allocated; keep: one exists already;
    # release: unexpose removes it; absent: unexpose found none.
    action: Literal["allocate", "keep", "release", "absent"]
    addresses: tuple[str, ...] = ()  # known addresses (empty for an allocation not yet made)
    done: bool = False  # the change actually happened on Fly in this run
    note: str = ""  # why a releasing run keeps it (still held, or not the action's own)


@dataclass(frozen=True)
class MachineChange:
    """One machine of the cluster and what the rollout does to it, in rollout order."""

    id: str
    region: str
    role: str  # primary / replica / unknown / error, from the `role` check
    state: str  # machine state when read
    services_change: bool  # the pg_tls service is added or fixed on this machine
    image_before: str
    image_after: str
    # What the run did to it: see `progress.MachineResult`.
    result: MachineResult = "pending"

    @property
    def restarts(self) -> bool:
        return self.services_change or self.image_before != self.image_after


@dataclass(frozen=True)
class VerifyResult:
    target: str  # address or host, as dialled
    ok: bool
    detail: str  # e.g. "TLSv1.3" or the error
    server_version: str | None = None
    warning_only: bool = False  # an IPv6 the runner cannot route: reported, not fatal


@dataclass(frozen=True)
class Outcome:
    """What a run did: built from the plan and its record (`build_outcome`), then once more with
    what the checks after the change returned (`concluded`); never changed in place, so the log,
    the outputs, the summary and the comment all render the same one."""

    app: str
    mode: Mode
    status: Status
    changed: bool
    ips: list[IpChange] = field(default_factory=list)
    machines: list[MachineChange] = field(default_factory=list)  # rollout order, primary last
    service_port: int = 5432
    # What a public address opens (expose only): 5433 of `fly pg create` too, not only the URL's.
    open_ports: tuple[OpenPort, ...] = ()
    image_policy: ImagePolicy = "keep"
    fly_toml_before: str = ""
    fly_toml_after: str = ""
    config_diff: str = ""  # unified diff of fly.toml before/after; "" when configs are unchanged
    fly_toml_path: str | None = None  # where the "after" fly.toml was written
    redacted_url: str | None = None  # external URL with the password as ***; None without input
    host: str = ""
    warnings: list[PlanWarning] = field(default_factory=list)
    error: str | None = None
    verify: list[VerifyResult] = field(default_factory=list)
    # `lifetime: job`: the post step closes what this run opened when the job ends.
    closes_at_job_end: bool = False

    @property
    def machines_to_restart(self) -> list[MachineChange]:
        return [m for m in self.machines if m.restarts]

    def released(self) -> list[str]:
        """The addresses this run released."""
        return [a for ip in self.ips if ip.action == "release" and ip.done for a in ip.addresses]

    def addresses(self, family: IpFamily) -> list[str]:
        """Public addresses of the family that exist on Fly at the end of the run."""
        out: list[str] = []
        for ip in self.ips:
            if ip.family != family:
                continue
            exists = ip.action == "keep" or (ip.action == "allocate") == ip.done
            # allocate+done: made by this run; release+not done: still there (plan or failure)
            if exists and ip.action != "absent":
                out.extend(ip.addresses)
        return out


def stopped_outcome(app: str, mode: Mode, error: str, *, host: str, port: int) -> Outcome:
    """What a run that stopped before it had a plan (Fly's answer unreadable, the app not
    found, a fork's run refused) reports: the error, nothing known, nothing changed."""
    return Outcome(
        app=app,
        mode=mode,
        status="failed",
        changed=False,
        error=error,
        host=host,
        service_port=port,
    )


def build_outcome(
    plan: Plan,
    progress: Progress | None = None,
    error: str | None = None,
    *,
    closes_at_job_end: bool = False,
) -> Outcome:
    """What is true after the run, from the plan and what the run recorded doing.

    Without `progress` (a read-only run, or nothing to change) it is what the plan describes.
    With it, it is built the same way on every exit (success, failure, cancellation), so an
    address the run allocated is reported even when the run stopped right after.
    """
    applied = progress is not None
    done = progress or Progress()
    if error is not None:
        status: Status = "failed"
    elif not plan.changed:
        status = "no-change"
    elif not applied:
        status = "plan" if plan.read_only else "applied"
    else:
        status = "applied" if done.changed else "no-change"
    return Outcome(
        app=plan.app,
        mode=plan.mode,
        status=status,
        closes_at_job_end=closes_at_job_end,
        changed=done.changed if applied else plan.changed,
        ips=_ips(plan, done, applied=applied),
        machines=_machines(plan, done, applied=applied),
        service_port=plan.port,
        open_ports=plan.open_ports if plan.opens else (),
        image_policy=plan.image_policy,
        fly_toml_before=plan.fly_toml_before,
        fly_toml_after=plan.fly_toml_after,
        config_diff=plan.config_diff,
        redacted_url=plan.redacted_url,
        host=plan.host,
        warnings=list(plan.warnings),
        error=error,
    )


def _ips(plan: Plan, done: Progress, *, applied: bool) -> list[IpChange]:
    """Each family's addresses; the ones the run changed first."""
    if plan.releasing:
        return _released_ips(plan, done)
    allocated: list[IpChange] = []
    others: list[IpChange] = []
    for family in IP_FAMILIES:
        if family in done.allocated:
            address = done.allocated[family].address
            allocated.append(IpChange(family, "allocate", (address,), done=True))
        elif family in plan.allocate:
            if not applied:  # an allocation a run did not make is not reported as pending
                others.append(IpChange(family, "allocate"))
        elif family in plan.existing:
            others.append(IpChange(family, "keep", plan.existing[family]))
    return [*allocated, *others]


def _released_ips(plan: Plan, done: Progress) -> list[IpChange]:
    """Released first, then those still to release, then those kept and why."""
    released: list[IpChange] = []
    pending: list[IpChange] = []
    kept: list[IpChange] = []
    for family in IP_FAMILIES:
        gone = done.released.get(family, [])
        rest = tuple(
            ip.address for ip in plan.release if ip.type == family and ip.address not in gone
        )
        if gone:
            released.append(IpChange(family, "release", tuple(gone), done=True))
        if rest:
            pending.append(IpChange(family, "release", rest))
        held = [k for k in plan.kept if k.ip.type == family]
        kept += [IpChange(family, "keep", (k.ip.address,), note=k.reason) for k in held]
        if gone or rest or held:
            continue
        if family in plan.existing:
            kept.append(IpChange(family, "keep", plan.existing[family]))
        elif family in plan.requested:
            kept.append(IpChange(family, "absent"))
    return [*released, *pending, *kept]


def _machines(plan: Plan, done: Progress, *, applied: bool) -> list[MachineChange]:
    planned = [
        MachineChange(
            id=u.machine.id,
            region=u.machine.region,
            role=done.roles.get(u.machine.id, u.machine.role),
            state=u.machine.state,
            services_change=u.services_change,
            image_before=u.machine.image,
            image_after=u.image_after,
            result=done.machines.get(u.machine.id, "untouched" if applied else "pending"),
        )
        for u in plan.updates
    ]
    left_alone = [
        MachineChange(
            id=m.id,
            region=m.region,
            role=m.role,
            state=m.state if m.reachable else f"host {m.host_status}",
            services_change=False,
            image_before=m.image,
            image_after=m.image,
            result="untouched",
        )
        for m in (*plan.untouched, *plan.unreachable)
    ]
    return planned + left_alone


def concluded(
    facts: Outcome,
    *,
    verify: list[VerifyResult],
    error: str | None = None,
    fly_toml_path: str | None = None,
    shown_url: str | None = None,
) -> Outcome:
    """The outcome a run reports: `facts` (what the change did, `build_outcome`) with the
    results of the checks that followed it, the error that failed one (if the change itself did
    not fail first), where the fly.toml went, and the URL as shown when the run's credentials
    changed it."""
    failed = facts.error or error
    return replace(
        facts,
        status="failed" if failed else facts.status,
        error=failed,
        verify=list(verify),
        fly_toml_path=fly_toml_path,
        redacted_url=shown_url if shown_url is not None else facts.redacted_url,
    )


def redacted(outcome: Outcome, redactor: Redactor) -> Outcome:
    """The outcome with every secret hidden in its free text: done once, where the text enters
    the report, so rendering and publishing never need to redact again."""
    r = redactor.redact
    return replace(
        outcome,
        ips=list(outcome.ips),
        machines=list(outcome.machines),
        fly_toml_before=r(outcome.fly_toml_before),
        fly_toml_after=r(outcome.fly_toml_after),
        config_diff=r(outcome.config_diff),
        fly_toml_path=r(outcome.fly_toml_path) if outcome.fly_toml_path else None,
        redacted_url=r(outcome.redacted_url) if outcome.redacted_url else None,
        warnings=[replace(w, text=r(w.text), hint=r(w.hint)) for w in outcome.warnings],
        error=r(outcome.error) if outcome.error else None,
        verify=[replace(v, detail=r(v.detail)) for v in outcome.verify],
    )
