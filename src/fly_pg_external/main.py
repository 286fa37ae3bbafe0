"""Wiring only: settings → read → plan → apply → verify → report. Decisions live in plan.py."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import log as logchannel
from . import ownership, step_state
from .credential_steps import hand_out, sweep_expired
from .describe import describe_plan, describe_state
from .domain import IpAddress, IpFamily
from .errors import ActionError, FlyAuthError, NotExposed
from .event import RunContext
from .exposure import Exposure, exposure_of
from .flyapi import FlyApi
from .forks import guard_fork_runs, withheld_notice
from .gha import Actions
from .holders import holding_for
from .outcome import (
    Outcome,
    VerifyResult,
    build_outcome,
    concluded,
    redacted,
    stopped_outcome,
)
from .plan import Plan, make_plan
from .poll import SYSTEM_CLOCK
from .progress import Progress
from .releases import Holding
from .rollout import apply, read_cluster
from .settings import Settings, from_environ
from .steps import Cancelled, cancellable, make_fly
from .verification import raise_if_failed, verify_expose, verify_unexpose

log = logging.getLogger(__name__)


Publisher = Callable[[Outcome, Settings, Actions, RunContext], str]


def _write_fly_toml(plan: Plan, env: Mapping[str, str], gha: Actions) -> str | None:
    base = Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "fly-pg-external" / plan.app
    try:
        base.mkdir(parents=True, exist_ok=True)
        path = base / "fly.toml"
        path.write_text(gha.redactor.redact(plan.fly_toml_after), encoding="utf-8")
    except OSError as exc:
        log.warning(
            f"Could not write fly.toml to {base}: {exc}", extra={"title": "fly.toml not written"}
        )
        return None
    log.info(f"Wrote the app's fly.toml (after) to {path}")
    return str(path)


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
    urls = settings.urls if _hands_out(outcome, plan, settings) and not withheld else None
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


def _hands_out(outcome: Outcome | None, plan: Plan | None, settings: Settings) -> bool:
    """An expose that did not fail hands out its URLs; of the read-only runs, only `connect`:
    a dry run reports what would change, and a URL from it may not connect yet."""
    return (
        outcome is not None
        and plan is not None
        and plan.redacted_url is not None
        and outcome.mode == "expose"
        and outcome.status != "failed"
        and (settings.connect or not settings.read_only)
    )


def _require_reachable(exposure: Exposure, settings: Settings) -> None:
    """A `connect` run would hand out a URL that cannot connect: it fails, saying what is
    missing."""
    if exposure.exposed or not settings.connect:
        return
    gaps = "; ".join(exposure.gaps(settings.port))
    raise NotExposed(
        f"mode connect: {settings.app} is not reachable from outside Fly: {gaps}.",
        hint="Run this action with mode: expose first (e.g. in the job that provisions the "
        "database).",
    )


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


def _report_error(exc: ActionError, settings: Settings) -> str:
    """Log the error as an annotation; return the text the outcome records."""
    if isinstance(exc, FlyAuthError) and exc.hint is None:
        exc.hint = (
            f"Use a Fly token that can manage app {settings.app} "
            f"(fly tokens create deploy -a {settings.app})."
        )
    log.error(exc.explained, extra={"title": exc.title})
    return exc.explained


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
                plan = apply(
                    fly,
                    plan,
                    progress,
                    wait_timeout=settings.wait_timeout,
                    lease_wait=settings.lease_wait,
                    replan=lambda cluster: make_plan(settings.intent, cluster, holding),
                )
    except ActionError as exc:
        error = _report_error(exc, settings)
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
    checked = _after_change(facts, plan, settings, gha, env, withheld=fork is not None)
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


@dataclass(frozen=True)
class _Checked:
    """What the checks after the change returned; the outcome is built from them."""

    settings: Settings  # its URLs carry the run's temporary role when one was made
    exposure: Exposure
    verify: list[VerifyResult]
    error: str | None = None
    fly_toml_path: str | None = None

    def outcome(self, facts: Outcome) -> Outcome:
        urls = self.settings.urls
        shown = urls.redacted if urls is not None and self.settings.credentials.temporary else None
        return concluded(
            facts,
            verify=self.verify,
            error=self.error,
            fly_toml_path=self.fly_toml_path,
            shown_url=shown,
        )


def _after_change(
    facts: Outcome,
    plan: Plan,
    settings: Settings,
    gha: Actions,
    env: Mapping[str, str],
    *,
    withheld: bool,
) -> _Checked:
    """After a change that did not fail: write the fly.toml for the reader, check the endpoint
    as the change left it, judge whether the database is reachable, and make the run's
    temporary role; each returns what it found, and the first failure (an error of the one
    tree) is the run's. A dry run changes nothing to check; a `connect` run proves the URL it
    hands out connects (when the app looks exposed), so a later job never gets a dead one."""
    path = None if settings.releasing or facts.error else _write_fly_toml(plan, env, gha)
    verify: list[VerifyResult] = []
    error: str | None = None
    try:
        if facts.error is None:
            verify = _verify(facts, plan, settings, gha)
            if not settings.releasing:
                raise_if_failed(verify, settings.host)
            _require_reachable(exposure_of(plan, facts, verify), settings)
            if (
                settings.credentials.temporary
                and not withheld
                and _hands_out(facts, plan, settings)
            ):
                settings = hand_out(settings, gha, env)
    except ActionError as exc:
        error = _report_error(exc, settings)
    return _Checked(settings, exposure_of(plan, facts, verify), verify, error, path)


def _verify(facts: Outcome, plan: Plan, settings: Settings, gha: Actions) -> list[VerifyResult]:
    """The verification's results (none when it does not apply)."""
    handing_out = settings.connect and exposure_of(plan, facts).exposed
    if not settings.verify or (settings.read_only and not handing_out):
        return []
    with gha.group("Verify"):
        if settings.releasing:
            return verify_unexpose(facts, settings.port)
        return verify_expose(facts, settings)


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
    plan = make_plan(settings.intent, cluster, holding)
    hands_out = not settings.releasing and (settings.connect or not settings.read_only)
    if settings.database_url is not None and not hands_out and not settings.releasing:
        gha.notice(
            "A dry run reports what would change and hands out no URL. To get the connection "
            "outputs of a database an earlier run exposed, use mode: connect.",
            title="No URL from a dry run",
        )
    if settings.database_url is None and hands_out:
        gha.notice(
            "No database-url input: the database-url output stays empty. Pass the app's "
            "internal DATABASE_URL (from fly pg attach) to get the external one.",
            title="No database-url input",
        )
    with gha.group("Plan (read only)" if plan.read_only else "Plan"):
        describe_plan(plan)
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
