"""The pipeline both steps run: plan an intent, carry the plan out, check what it left, conclude.

    plan_for(intent, cluster, holding)        the plan, described in the log
    carry_out(fly, plan, intent, holding, …)  apply it (a stale plan replanned with the intent)
    build_outcome(plan, progress, error)      the facts of the change
    check(facts, plan, intent, settings, …)   fly.toml, verification, reachability, the role
    Checked.outcome(facts)                    the one outcome every report renders

`main.py` is wiring around it (the fork guard, the step state, the outputs and the report);
`post.py` runs it with its own intent (`Intent.closing`) at the end of the job. The decisions are
the planner's (`plan.py`) and the checks' own modules; here they are put in order.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .credential_steps import hand_out
from .describe import describe_plan
from .domain import ClusterState
from .errors import ActionError, FlyAuthError, NotExposed
from .exposure import Exposure, exposure_of
from .flyapi import FlyApi
from .gha import Actions
from .intent import Intent
from .outcome import Outcome, VerifyResult, concluded
from .plan import Plan, make_plan
from .progress import Progress
from .releases import Holding
from .rollout import apply
from .settings import Settings
from .verification import raise_if_failed, verify_expose, verify_unexpose

log = logging.getLogger(__name__)


def plan_for(intent: Intent, cluster: ClusterState, holding: Holding | None) -> Plan:
    """The plan, and its account in the log."""
    plan = make_plan(intent, cluster, holding)
    describe_plan(plan)
    return plan


def carry_out(
    fly: FlyApi,
    plan: Plan,
    intent: Intent,
    *,
    holding: Holding | None,
    progress: Progress,
    settings: Settings,
) -> Plan:
    """Apply `plan`, recording into `progress` (kept by the caller on any exit); the plan as it
    ended. A read-only plan, or one with nothing to change or record, is returned as it is."""
    if plan.read_only or not (plan.changed or plan.record is not None):
        return plan
    return apply(
        fly,
        plan,
        progress,
        wait_timeout=settings.wait_timeout,
        lease_wait=settings.lease_wait,
        replan=lambda cluster: make_plan(intent, cluster, holding),
    )


def report_error(exc: ActionError, settings: Settings) -> str:
    """Log the error as an annotation; return the text the outcome records."""
    if isinstance(exc, FlyAuthError) and exc.hint is None:
        exc.hint = (
            f"Use a Fly token that can manage app {settings.app} "
            f"(fly tokens create deploy -a {settings.app})."
        )
    log.error(exc.explained, extra={"title": exc.title})
    return exc.explained


def hands_out(outcome: Outcome | None, plan: Plan | None, settings: Settings) -> bool:
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


@dataclass(frozen=True)
class Checked:
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


def check(
    facts: Outcome,
    plan: Plan,
    intent: Intent,
    *,
    settings: Settings,
    gha: Actions,
    env: Mapping[str, str],
    withheld: bool,
) -> Checked:
    """After a change that did not fail: write the fly.toml for the reader, check the endpoint
    as the change left it, judge whether the database is reachable, and make the run's
    temporary role; each returns what it found, and the first failure (an error of the one
    tree) is the run's. A dry run changes nothing to check; a `connect` run proves the URL it
    hands out connects (when the app looks exposed), so a later job never gets a dead one."""
    path = None if intent.releasing or facts.error else write_fly_toml(plan, env, gha)
    verify: list[VerifyResult] = []
    error: str | None = None
    try:
        if facts.error is None:
            verify = _verify(facts, plan, intent, settings, gha)
            if not intent.releasing:
                raise_if_failed(verify, settings.host)
            _require_reachable(exposure_of(plan, facts, verify), settings)
            temporary = settings.credentials.temporary and not withheld
            if temporary and hands_out(facts, plan, settings):
                settings = hand_out(settings, gha, env)
    except ActionError as exc:
        error = report_error(exc, settings)
    return Checked(settings, exposure_of(plan, facts, verify), verify, error, path)


def _verify(
    facts: Outcome, plan: Plan, intent: Intent, settings: Settings, gha: Actions
) -> list[VerifyResult]:
    """The verification's results (none when it does not apply)."""
    handing_out = settings.connect and exposure_of(plan, facts).exposed
    if not settings.verify or (intent.read_only and not handing_out):
        return []
    with gha.group("Verify"):
        if intent.releasing:
            return verify_unexpose(facts, settings.port)
        return verify_expose(facts, settings)


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


def write_fly_toml(plan: Plan, env: Mapping[str, str], gha: Actions) -> str | None:
    """The fly.toml after the change, for the reader, under RUNNER_TEMP; its path or None."""
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
