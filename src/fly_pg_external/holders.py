"""Who a run holds the exposure for (ownership.py), from the runner's environment, and which
holders a sweep finds gone (closed pull requests, asked of GitHub).

Every holder names its repository first (`acme/infra#…`): two repositories sharing one app
both have a pull request #5, and closing one must not drop the other's hold. Then:

- `lifetime: job`: `run-<run id>-<attempt>-<job>-<leg>`, where `<leg>` is random and made once
  by the main step, which keeps the whole name in the step state for its post step. Matrix
  legs, and a reusable workflow called twice, share run, attempt and job; the leg tells them
  apart.
- `hold-name`, when given: that name, shared by every run that gives it;
- a pull request event (or any run whose payload, or the `pr-number` input, names a pull
  request): `pr-<number>`;
- anything else: `wf-<workflow file>`, so a deploy workflow closing its exposure does not close
  the one a dashboard workflow keeps (`persistent` outside a workflow).

Records the previous format wrote name holders without a repository (`pr-5`, `persistent`,
`run-<id>-<attempt>-<job>`). A run drops its own legacy name with its own hold (`legacy_names`),
as it did then.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping

from .event import RunContext
from .ownership import PERSISTENT, Ownership
from .poll import SYSTEM_CLOCK, Clock
from .releases import Holding
from .settings import Settings

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LEGACY_PR = re.compile(r"^pr-([0-9]+)$")
_WORKFLOW_FILE = re.compile(r"/\.github/workflows/([^@/]+)@")


def repository_of(env: Mapping[str, str]) -> str:
    """The repository part of a holder: `owner/name`, or `local` outside GitHub."""
    repo = env.get("GITHUB_REPOSITORY") or "local"
    return "/".join(_UNSAFE.sub("_", part)[:100] for part in repo.split("/", 1))


def new_leg() -> str:
    """Unique per step: 32 random bits, so legs of one job never share a hold."""
    return secrets.token_hex(4)


def job_holder(env: Mapping[str, str], leg: str) -> str:
    run = _UNSAFE.sub("_", env.get("GITHUB_RUN_ID") or "local")[:20]
    attempt = _UNSAFE.sub("_", env.get("GITHUB_RUN_ATTEMPT") or "1")[:6]
    job = _UNSAFE.sub("_", env.get("GITHUB_JOB") or "job")[:60]
    return f"{repository_of(env)}#run-{run}-{attempt}-{job}-{leg}"


def workflow_of(env: Mapping[str, str]) -> str:
    """The workflow's file name (from GITHUB_WORKFLOW_REF, `owner/repo/.github/workflows/
    deploy.yml@refs/heads/main`), else its name; empty outside GitHub."""
    match = _WORKFLOW_FILE.search(env.get("GITHUB_WORKFLOW_REF", ""))
    name = match.group(1) if match else env.get("GITHUB_WORKFLOW", "")
    return _UNSAFE.sub("_", name)[:60]


def holder_of(settings: Settings, env: Mapping[str, str], ctx: RunContext) -> str:
    repo = repository_of(env)
    if settings.lifetime == "job":
        return job_holder(env, new_leg())
    if settings.hold_name:
        return f"{repo}#{settings.hold_name}"
    if ctx.pr_number is not None:
        return f"{repo}#pr-{ctx.pr_number}"
    workflow = workflow_of(env)
    return f"{repo}#wf-{workflow}" if workflow else f"{repo}#{PERSISTENT}"


def legacy_names(settings: Settings, env: Mapping[str, str], ctx: RunContext) -> tuple[str, ...]:
    """What the previous record format called this run's hold."""
    if settings.lifetime == "job":
        job = re.sub(r"[^A-Za-z0-9_.-]", "_", env.get("GITHUB_JOB") or "job")[:60]
        run, attempt = env.get("GITHUB_RUN_ID") or "local", env.get("GITHUB_RUN_ATTEMPT") or "1"
        return (f"run-{run}-{attempt}-{job}",)
    if ctx.pr_number is not None:
        return (f"pr-{ctx.pr_number}",)
    return (PERSISTENT,)


def holding_for(
    settings: Settings,
    env: Mapping[str, str],
    record: Ownership,
    *,
    ctx: RunContext,
    clock: Clock = SYSTEM_CLOCK,
) -> Holding:
    """This run's holder, the time, the families it asks for, and for a sweep the holders that
    are gone."""
    gone: frozenset[str] = frozenset()
    if settings.mode == "sweep":
        gone = gone_pull_requests(settings.github_token, ctx, record.holds, repository_of(env))
    return Holding(
        holder=holder_of(settings, env, ctx),
        now=int(clock.wall()),
        gone=gone,
        families=settings.ip_versions,
        legacy=legacy_names(settings, env, ctx),
    )


def gone_pull_requests(
    token: str, ctx: RunContext, holders: Iterable[str], repository: str
) -> frozenset[str]:
    """The holds of this repository's closed pull requests. Another repository's holds are not
    ours to judge (its pull request #5 is not ours): they go by age alone. A legacy `pr-<n>`
    hold is judged as the previous format judged it, against this repository."""
    prefix = f"{repository}#pr-"
    by_number: dict[int, list[str]] = {}
    for holder in holders:
        number = holder[len(prefix) :] if holder.startswith(prefix) else None
        legacy = _LEGACY_PR.match(holder)
        if number is not None and number.isascii() and number.isdigit():
            by_number.setdefault(int(number), []).append(holder)
        elif legacy:
            by_number.setdefault(int(legacy.group(1)), []).append(holder)
    closed = closed_pulls(ctx, token, by_number)
    return frozenset(h for n in closed for h in by_number[n])


def closed_pulls(ctx: RunContext, token: str, numbers: Iterable[int]) -> set[int]:
    """The pull requests among `numbers` that are closed. One that cannot be looked up counts as
    open: a sweep must never cut access because GitHub did not answer."""
    wanted = sorted(set(numbers))
    if not wanted:
        return set()
    if not token or not ctx.repository:
        log.warning(
            f"Cannot ask GitHub whether pull request(s) {', '.join(map(str, wanted))} are closed "
            "(no github-token or GITHUB_REPOSITORY): their holds count until max-age.",
            extra={"title": "Pull request state unknown"},
        )
        return set()
    from . import github  # PyGithub only when a sweep needs it

    closed: set[int] = set()
    repo = github.client(token, ctx.api_url, github.ClientTuning()).get_repo(ctx.repository)
    for number in wanted:
        try:
            if repo.get_pull(number).state == "closed":
                closed.add(number)
        except Exception as exc:  # one failed lookup leaves that hold alone, not the others
            log.warning(
                f"Could not ask GitHub whether pull request {number} is closed ({exc}); its "
                "hold counts until max-age.",
                extra={"title": "Pull request state unknown"},
            )
    return closed
