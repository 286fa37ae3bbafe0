"""The post step of a `lifetime: job` run: at the end of the job, close what the job opened.

The runner runs it after the job's last step, whatever happened to the job (its `post-if` is
`always()`), with the same inputs and the step state the main step saved: whom the run held the
exposure for (`STATE_HOLDER`) and the addresses it allocated (`STATE_ALLOCATED`, saved the moment
each was made). It drops that hold and releases exactly those addresses, unless another holder
still relies on them; the pg_tls service stays (removing it would restart the cluster). Then it
checks they no longer accept connections, and says what it did in the log and the job summary.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace

from . import log as logchannel
from .describe import describe_plan
from .errors import ActionError
from .flyapi import FlyApi
from .gha import Actions
from .inputs import Addresses
from .main import STATE_ALLOCATED, STATE_HOLDER, make_fly
from .outcome import Outcome, build_outcome
from .plan import Plan, make_plan
from .progress import Progress
from .releases import Holding
from .report_sections import inline_code
from .rollout import apply, read_cluster
from .settings import Settings, from_environ
from .verification import verify_unexpose

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
        gha.info("fly-pg-external: lifetime is persistent; the exposure stays after the job.")
        return 0
    holder = env.get(f"STATE_{STATE_HOLDER}", "")
    allocated = tuple(a for a in env.get(f"STATE_{STATE_ALLOCATED}", "").split(",") if a)
    if not holder:
        gha.info(
            "fly-pg-external: the main step stopped before it held or allocated anything; "
            "nothing to release."
        )
        return 0
    fly = make_fly(settings)
    try:
        with (
            logchannel.to_workflow(gha),
            gha.group(f"Close what this job opened on {settings.app}"),
        ):
            return close(settings, fly, gha, holder=holder, allocated=allocated)
    finally:
        fly.close()


def close(
    settings: Settings, fly: FlyApi, gha: Actions, *, holder: str, allocated: tuple[str, ...]
) -> int:
    """Drop `holder`'s hold, release the `allocated` addresses nobody else holds, check they
    closed; the exit code."""
    releasing = replace(settings, mode="unexpose", dry_run=False, addresses=Addresses())
    progress = Progress()
    plan: Plan | None = None
    error: str | None = None
    try:
        cluster = read_cluster(fly, settings.app)
        holding = Holding(holder=holder, now=int(time.time()), only=allocated)
        plan = make_plan(releasing, cluster, holding)
        describe_plan(plan)
        if not allocated:
            log.info(
                "This job allocated no address (the app was already exposed): nothing to "
                "release. The pg_tls service stays: removing it would restart the cluster."
            )
        if plan.release or plan.record is not None:
            plan = apply(
                fly,
                plan,
                progress,
                wait_timeout=settings.wait_timeout,
                lease_wait=settings.lease_wait,
                replan=lambda fresh: make_plan(releasing, fresh, holding),
            )
    except ActionError as exc:
        error = exc.explained
        log.error(error, extra={"title": "End-of-job release failed"})
    outcome = build_outcome(plan, progress, error) if plan is not None else None
    if outcome is not None and error is None and settings.verify:
        verify_unexpose(outcome, releasing)
    still_open = _still_open(settings.app, allocated, plan, outcome)
    gha.append_summary(_summary(settings.app, allocated, plan, outcome, still_open))
    return 1 if still_open or (error is not None and allocated) else 0


def _still_open(
    app: str, allocated: tuple[str, ...], plan: Plan | None, outcome: Outcome | None
) -> list[str]:
    """The job's addresses that should be closed and are not, each named in an error with the
    command that closes it."""
    held = {k.ip.address for k in plan.kept if not k.foreign} if plan is not None else set()
    released = set(outcome.released()) if outcome is not None else set()
    open_ = [a for a in allocated if a not in released and a not in held]
    if plan is not None:  # an address already gone (released by someone else) is closed
        present = {ip.address for ip in plan.release} | {k.ip.address for k in plan.kept}
        open_ = [a for a in open_ if a in present]
    for address in open_:
        log.error(
            f"Address {address} of app {app}, allocated by this job, is still open. Release it "
            f"with: fly ips release {address} -a {app}",
            extra={"title": "Address still open"},
        )
    return open_


def _summary(
    app: str,
    allocated: tuple[str, ...],
    plan: Plan | None,
    outcome: Outcome | None,
    still_open: list[str],
) -> str:
    lines = [f"### fly-pg-external: end of the job on {inline_code(app)}", ""]
    if not allocated:
        lines.append(
            "This job allocated no address (the app was already exposed): nothing to release."
        )
        return "\n".join(lines) + "\n"
    released = set(outcome.released()) if outcome is not None else set()
    held = {k.ip.address: k.reason for k in plan.kept} if plan is not None else {}
    lines += ["| Address allocated by this job | At the end of the job |", "|---|---|"]
    for address in allocated:
        if address in released:
            what = "released"
        elif address in held:
            what = f"kept: {held[address]}"
        elif address in still_open:
            what = f"**still open**: `fly ips release {address} -a {app}`"
        else:
            what = "already gone"
        lines.append(f"| {inline_code(address)} | {what} |")
    return "\n".join(lines) + "\n"
