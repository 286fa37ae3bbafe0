"""Wiring only: the main step around the pipeline (pipeline.py): the fork guard, the step state,
the outputs and the report. Decisions live in plan.py and the checks' own modules."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping

from . import log as logchannel
from . import ownership, step_state
from .credential_steps import sweep_expired
from .describe import describe_state
from .domain import IpAddress, IpFamily
from .errors import ActionError
from .event import RunContext
from .exposure import Exposure
from .flyapi import FlyApi
from .forks import guard_fork_runs, withheld_notice
from .gha import Actions
from .holders import holding_for
from .outcome import (
    Outcome,
    build_outcome,
    redacted,
    stopped_outcome,
)
from .pipeline import carry_out, check, hands_out, plan_for, report_error
from .plan import Plan
from .poll import SYSTEM_CLOCK
from .progress import Progress
from .releases import Holding
from .rollout import read_cluster
from .settings import Settings, from_environ
from .steps import Cancelled, cancellable, make_fly

log = logging.getLogger(__name__)


Publisher = Callable[[Outcome, Settings, Actions, RunContext], str]


def set_outputs(
    settings: Settings,
    gha: Actions,
    outcome: Outcome | None = None,
    plan: Plan | None = None,
    exposure: Exposure | None = None,
    *,
    withheld: bool = False,
) -> None:
    """Every output but `comment-url`, on every exit: without an outcome (the run stopped before
    it read the app) as "nothing known, nothing changed", so `if: steps.db.outputs.exposed ==
    'false'` means what it says. The connection outputs only when the run exposes and did not
    fail (in `mode: connect`, only when the database is reachable), and never when they are
    `withheld` (a read-only run a fork triggered)."""
    urls = settings.urls if hands_out(outcome, plan, settings) and not withheld else None
    db = settings.database_url
    gha.set_output("database-url", urls.libpq if urls else "")
    gha.set_output("node-database-url", urls.node if urls else "")
    gha.set_output("jdbc-url", urls.jdbc if urls else "")
    gha.set_output("password", urls.password if urls else "")
    gha.set_output("host", settings.host)
    gha.set_output("port", str(settings.port))
    gha.set_output("database", db.database if db else "")
    gha.set_output("user", db.user if db else "")
    gha.set_output("ipv4", ",".join(outcome.addresses("v4")) if outcome else "")
    gha.set_output("ipv6", ",".join(outcome.addresses("v6")) if outcome else "")
    gha.set_output("exposed", "true" if exposure is not None and exposure.exposed else "false")
    gha.set_output("changed", "true" if outcome is not None and outcome.changed else "false")
    gha.set_output("config-diff", outcome.config_diff if outcome else "")


def _final_summary(outcome: Outcome) -> None:
    updated = [m.id for m in outcome.machines if m.result == "updated"]
    v4 = ", ".join(outcome.addresses("v4")) or "none"
    v6 = ", ".join(outcome.addresses("v6")) or "none"
    log.info(f"Result: {outcome.status} (changed={str(outcome.changed).lower()})")
    log.info(f"  IPv4: {v4}")
    log.info(f"  IPv6: {v6}")
    log.info(f"  machines updated: {', '.join(updated) or 'none'}")
    if outcome.redacted_url and outcome.mode not in ("unexpose", "sweep"):
        log.info(f"  URL: {outcome.redacted_url}")


def run(
    settings: Settings,
    fly: FlyApi,
    gha: Actions,
    env: Mapping[str, str],
    publish: Publisher | None = None,
) -> int:
    """One run of the action against `fly`; returns the exit code."""
    with logchannel.to_workflow(gha):
        return _run(settings, fly, gha, env, publish)


def _run(
    settings: Settings,
    fly: FlyApi,
    gha: Actions,
    env: Mapping[str, str],
    publish: Publisher | None,
) -> int:
    ctx = RunContext.from_env(env, pr_number=settings.pr_number)  # the payload, read once
    plan: Plan | None = None
    progress: Progress | None = None
    error: str | None = None
    fork: str | None = None
    try:
        fork = guard_fork_runs(settings, ctx)
        if fork is not None:
            gha.notice(withheld_notice(fork, ctx), title="Connection outputs withheld")
        plan, holding = _read_and_plan(settings, fly, gha, env, ctx)
        roles_swept = sweep_expired(settings, gha)  # before a release closes the database
        if settings.lifetime == "job":
            # Saved whatever follows: the post step then always knows whose hold to drop, and
            # says truthfully what the job allocated (maybe nothing).
            step_state.save_holder(gha, plan.holder)
        if not plan.read_only and (plan.changed or plan.record is not None):
            # Ours: what apply does is in it however apply ends.
            progress = _progress(settings, plan, gha)
            with gha.group("Apply"):
                plan = carry_out(
                    fly,
                    plan,
                    settings.intent,
                    holding=holding,
                    progress=progress,
                    settings=settings,
                )
    except ActionError as exc:
        error = report_error(exc, settings)
        if plan is None:
            set_outputs(settings, gha)
            stopped = stopped_outcome(
                settings.app, settings.mode, error, host=settings.host, port=settings.port
            )
            gha.set_output(
                "comment-url", _report(redacted(stopped, gha.redactor), settings, gha, ctx, publish)
            )
            return 1
    except Cancelled as exc:
        return _cancelled(exc, settings, plan, progress, gha)
    facts = build_outcome(plan, progress, error, closes_at_job_end=settings.lifetime == "job")
    checked = check(
        facts, plan, settings.intent, settings=settings, gha=gha, env=env, withheld=fork is not None
    )
    settings = checked.settings
    outcome = redacted(checked.outcome(facts), gha.redactor)
    set_outputs(settings, gha, outcome, plan, checked.exposure, withheld=fork is not None)
    comment_url = _report(outcome, settings, gha, ctx, publish)
    if comment_url and settings.lifetime == "job":
        step_state.save_comment_url(gha, comment_url)
    gha.set_output("comment-url", comment_url)
    _final_summary(outcome)
    return 1 if outcome.status == "failed" or not roles_swept else 0


def _report(
    outcome: Outcome, settings: Settings, gha: Actions, ctx: RunContext, publish: Publisher | None
) -> str:
    """The job summary and the PR comment (when one applies); the comment's URL or ''."""
    if publish is None:
        return ""
    with gha.group("Report"):
        return publish(outcome, settings, gha, ctx)


def _cancelled(
    exc: Cancelled, settings: Settings, plan: Plan | None, progress: Progress | None, gha: Actions
) -> int:
    message = (
        f"Cancelled ({exc}) while working on {settings.app}; every lease this run held was "
        "released. Re-run the workflow to finish: the action picks up where it stopped."
    )
    log.error(message, extra={"title": "Cancelled"})
    outcome = None if plan is None else build_outcome(plan, progress, message)
    set_outputs(settings, gha, outcome and redacted(outcome, gha.redactor), plan)
    gha.set_output("comment-url", "")
    return 1


def _progress(settings: Settings, plan: Plan, gha: Actions) -> Progress:
    """The run's record; a `lifetime: job` run also saves, for its post step, whom it holds the
    exposure for and, the moment each is made, the addresses it allocates."""
    if settings.lifetime != "job":
        return Progress()

    def save(allocated: dict[IpFamily, IpAddress]) -> None:
        step_state.save_allocated(gha, (ip.address for ip in allocated.values()))

    return Progress(on_allocated=save)


def _read_and_plan(
    settings: Settings, fly: FlyApi, gha: Actions, env: Mapping[str, str], ctx: RunContext
) -> tuple[Plan, Holding]:
    with gha.group(f"Read {settings.app} from Fly"):
        cluster = read_cluster(fly, settings.app)
        describe_state(cluster)
    reachable = [m for m in cluster.machines if m.reachable]
    record = ownership.read(reachable, cluster.app.ips, now=int(SYSTEM_CLOCK.wall()))
    holding = holding_for(settings, env, record, ctx=ctx)
    handing_out = not settings.releasing and (settings.connect or not settings.read_only)
    if settings.database_url is not None and not handing_out and not settings.releasing:
        gha.notice(
            "A dry run reports what would change and hands out no URL. To get the connection "
            "outputs of a database an earlier run exposed, use mode: connect.",
            title="No URL from a dry run",
        )
    if settings.database_url is None and handing_out:
        gha.notice(
            "No database-url input: the database-url output stays empty. Pass the app's "
            "internal DATABASE_URL (from fly pg attach) to get the external one.",
            title="No database-url input",
        )
    with gha.group("Plan (read only)" if settings.read_only else "Plan"):
        plan = plan_for(settings.intent, cluster, holding)
    return plan, holding


def _publish(outcome: Outcome, settings: Settings, gha: Actions, ctx: RunContext) -> str:
    # Imported here: the report costs start-up time that a run without one does not need.
    from . import publish

    try:
        url = publish.publish(
            outcome,
            token=settings.github_token,
            pr_comment=settings.pr_comment,
            ctx=ctx,
            summary=gha,
        )
    except Exception as exc:
        log.warning(
            f"Could not write the report: {type(exc).__name__}: {exc}",
            extra={"title": "Report not written"},
        )
        return ""
    return url


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    gha = Actions(env)
    try:
        settings = from_environ(env, gha.input)
    except ActionError as exc:
        # Mask whatever token-looking input we got before printing anything at all.
        for name in ("fly-api-token", "github-token", "database-url"):
            gha.add_mask((gha.input(name) or "").strip())
        for var in ("FLY_ACCESS_TOKEN", "FLY_API_TOKEN"):
            gha.add_mask(env.get(var, "").strip())
        gha.error(exc.explained, title=exc.title)
        return 1
    for secret in settings.secrets:
        gha.add_mask(secret)
    fly = make_fly(settings)
    try:
        with cancellable():
            return run(settings, fly, gha, env, _publish)
    except Exception as exc:
        gha.error(f"Unexpected error: {type(exc).__name__}: {exc}", title="Unexpected error")
        sys.stderr.write(gha.redactor.redact(traceback.format_exc()))
        return 1
    finally:
        fly.close()
