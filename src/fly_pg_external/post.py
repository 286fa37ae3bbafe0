"""The post step of a `lifetime: job` run: at the end of the job, close what the job held open.

The runner runs it after the job's last step, whatever happened to the job (its `post-if` is
`always()`), with the same inputs and the step state the main step saved: the job's holder, unique
to this step (`STATE_HOLDER`), and the addresses it allocated (`STATE_ALLOCATED`, saved the moment
each was made). In the record's turn it drops that hold and releases every address of the
action's own that no remaining hold covers: those the job allocated, and those an earlier run
left that nobody holds any more (the last holder closes the door). The pg_tls service stays
(removing it would restart the cluster). Then it checks they no longer accept connections, and
says what it did in the log and the job summary. Cancelled (SIGTERM, SIGINT), it gives back its
lease and names every address still open with the command that closes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import log as logchannel
from . import step_state
from .credential_steps import drop_at_job_end
from .errors import ActionError
from .flyapi import FlyApi
from .gha import Actions
from .intent import Intent
from .markdown import inline_code
from .outcome import Outcome, build_outcome
from .pipeline import carry_out, check, plan_for
from .plan import Plan
from .poll import SYSTEM_CLOCK
from .progress import Progress
from .releases import Holding
from .rollout import read_cluster
from .settings import Settings, from_environ
from .steps import Cancelled, cancellable, make_fly

log = logging.getLogger(__name__)


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    gha = Actions(env)
    try:
        settings = from_environ(env, gha.input)
    except ActionError:
        # The main step refused the same inputs before doing anything.
        gha.info("fly-pg-external: the main step changed nothing (its inputs were refused).")
        return 0
    for secret in settings.secrets:
        gha.add_mask(secret)
    if settings.lifetime != "job":
        gha.info(
            "fly-pg-external: nothing to close (a read-only run, or lifetime: persistent, whose "
            "exposure stays after the job)."
        )
        return 0
    saved = step_state.load(env)
    holder, allocated = saved.holder, saved.allocated
    if not holder:
        gha.info(
            "fly-pg-external: the main step stopped before it held or allocated anything; "
            "nothing to release."
        )
        return 0
    fly = make_fly(settings)
    try:
        with (
            cancellable(),
            logchannel.to_workflow(gha),
            gha.group(f"Close what this job opened on {settings.app}"),
        ):
            # The temporary role first: once the addresses close, the database is out of reach.
            dropped = drop_at_job_end(settings, env, gha, cancelled=Cancelled)
            return max(
                dropped,
                close(
                    settings,
                    fly,
                    gha,
                    holder=holder,
                    allocated=allocated,
                    on_report=_comment_updater(settings, env),
                ),
            )
    finally:
        fly.close()


def _comment_updater(settings: Settings, env: Mapping[str, str]) -> Callable[[str], object] | None:
    """Where the end of the job is reported besides the summary: the PR comment the main step
    wrote (its URL in the step state), which would otherwise go on saying "open"."""
    comment_url = step_state.load(env).comment_url
    if not comment_url or not settings.pr_comment:
        return None
    from . import publish  # PyGithub only when there is a comment to update
    from .event import RunContext

    ctx = RunContext.from_env(env)
    return lambda report: publish.close_comment(
        comment_url=comment_url,
        job_end=report,
        app=settings.app,
        token=settings.github_token,
        ctx=ctx,
    )


@dataclass
class _Closing:
    """What the post step did, for its exit code, errors and summary."""

    app: str
    allocated: tuple[str, ...]
    plan: Plan | None = None
    outcome: Outcome | None = None
    error: str | None = None
    cancelled: bool = False


def close(
    settings: Settings,
    fly: FlyApi,
    gha: Actions,
    *,
    holder: str,
    allocated: tuple[str, ...],
    on_report: Callable[[str], object] | None = None,
) -> int:
    """Drop `holder`'s hold, release what no hold covers any more, check it closed; the exit
    code. The report goes to the job summary, and to `on_report` (the PR comment's update)."""
    releasing = Intent.closing(settings.app, host=settings.host, port=settings.port)
    closing = _Closing(settings.app, allocated)
    progress = Progress()
    try:
        cluster = read_cluster(fly, settings.app)
        holding = Holding(holder=holder, now=int(SYSTEM_CLOCK.wall()), claims=allocated)
        closing.plan = plan_for(releasing, cluster, holding)
        closing.plan = carry_out(
            fly, closing.plan, releasing, holding=holding, progress=progress, settings=settings
        )
        if not closing.plan.release and not allocated:
            log.info(
                "This job allocated no address, and none of the action's own is left without "
                "a holder: nothing to release. The pg_tls service stays: removing it would "
                "restart the cluster."
            )
    except ActionError as exc:
        closing.error = exc.explained
        log.error(closing.error, extra={"title": "End-of-job release failed"})
    except Cancelled as exc:
        closing.cancelled = True
        closing.error = (
            f"Cancelled ({exc}) while closing what this job opened on {settings.app}; the lease "
            "this step held was given back."
        )
        log.error(closing.error, extra={"title": "Cancelled"})
    if closing.plan is not None:
        closing.outcome = build_outcome(closing.plan, progress, closing.error)
    if closing.outcome is not None and closing.plan is not None:
        facts = closing.outcome
        checked = check(
            facts, closing.plan, releasing, settings=settings, gha=gha, env={}, withheld=True
        )
        closing.outcome = checked.outcome(facts)
    still_open = _still_open(closing)
    report = _summary(closing, still_open)
    gha.append_summary(report)
    if on_report is not None:
        on_report(report)
    return 1 if still_open or closing.cancelled or (closing.error and allocated) else 0


def _still_open(closing: _Closing) -> list[str]:
    """The addresses this step should have closed and did not, each named in an error with the
    command that closes it: those it planned to release, and those the job allocated that no
    other holder keeps. Without a plan (stopped before one), every address the job allocated."""
    plan, app = closing.plan, closing.app
    released = set(closing.outcome.released()) if closing.outcome is not None else set()
    if plan is None:
        due = list(closing.allocated)
    else:
        held = {k.ip.address for k in plan.kept if not k.foreign}
        present = {ip.address for ip in plan.release} | {k.ip.address for k in plan.kept}
        due = [ip.address for ip in plan.release] + [
            a for a in closing.allocated if a in present and a not in held
        ]
    open_ = [a for a in dict.fromkeys(due) if a not in released]
    for address in open_:
        whose = "allocated by this job" if address in closing.allocated else "the action's own"
        log.error(
            f"Address {address} of app {app}, {whose}, is still open. Release it with: "
            f"fly ips release {address} -a {app}",
            extra={"title": "Address still open"},
        )
    return open_


def _headline(closing: _Closing, still_open: list[str]) -> str:
    """What is true once the job is over, first (the PR comment shows this line on top)."""
    app = inline_code(closing.app)
    if still_open or closing.cancelled or (closing.error and closing.allocated):
        return f"⚠️ End of the job: {app} may still be open to external connections"
    if closing.plan is not None and any(not k.foreign for k in closing.plan.kept):
        return f"End of the job: {app} stays open for its other holders"
    return f"🔒 End of the job: what this job opened on {app} is closed"


def _summary(closing: _Closing, still_open: list[str]) -> str:
    app, plan, allocated = closing.app, closing.plan, closing.allocated
    lines = [f"### {_headline(closing, still_open)}", ""]
    if closing.cancelled:
        lines += [f"**Cancelled** before it was done: {closing.error}", ""]
    released = set(closing.outcome.released()) if closing.outcome is not None else set()
    kept = {k.ip.address: k.reason for k in plan.kept if not k.foreign} if plan else {}
    foreign = {k.ip.address: k.reason for k in plan.kept if k.foreign} if plan else {}
    planned = [ip.address for ip in plan.release] if plan is not None else []
    rows = list(dict.fromkeys([*allocated, *planned, *kept]))
    if not rows:
        lines.append(
            "This job allocated no address, and none of the action's own is left without a "
            "holder: nothing to release."
        )
        return "\n".join(lines) + "\n"
    if not allocated:
        lines += ["This job allocated no address (the app was already exposed).", ""]
    lines += ["| Address | At the end of the job |", "|---|---|"]
    for address in rows:
        if address in still_open:
            what = f"**still open**: `fly ips release {address} -a {app}`"
        elif address in released:
            what = "released" if address in allocated else "released (no run holds it any more)"
        elif address in kept:
            what = f"kept: {kept[address]}"
        elif address in foreign:
            what = f"kept: {foreign[address]}"
        else:
            what = "already gone"
        lines.append(f"| {inline_code(address)} | {what} |")
    return "\n".join(lines) + "\n"
