"""Who a run holds the exposure for (ownership.py), from the runner's environment, and which
holders a sweep finds gone (closed pull requests, asked of GitHub).

- `lifetime: job`: `run-<run id>-<attempt>-<job>`, released by the job's own post step;
- a pull request event (or any run whose payload, or the `pr-number` input, names a pull
  request): `pr-<number>`;
- anything else: `persistent`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping

from .event import RunContext
from .ownership import PERSISTENT, Ownership
from .releases import Holding
from .settings import Settings

log = logging.getLogger(__name__)

_PR_HOLDER = re.compile(r"^pr-(\d+)$")


def job_holder(env: Mapping[str, str]) -> str:
    run = env.get("GITHUB_RUN_ID") or "local"
    attempt = env.get("GITHUB_RUN_ATTEMPT") or "1"
    job = re.sub(r"[^A-Za-z0-9_.-]", "_", env.get("GITHUB_JOB") or "job")[:60]
    return f"run-{run}-{attempt}-{job}"


def holder_of(settings: Settings, env: Mapping[str, str], ctx: RunContext) -> str:
    if settings.lifetime == "job":
        return job_holder(env)
    return f"pr-{ctx.pr_number}" if ctx.pr_number is not None else PERSISTENT


def holding_for(
    settings: Settings, env: Mapping[str, str], record: Ownership, *, ctx: RunContext
) -> Holding:
    """This run's holder, the time, and for a sweep the holders that are gone."""
    token = settings.github_token
    gone: frozenset[str] = frozenset()
    if settings.mode == "sweep":
        numbers = [int(m.group(1)) for h in record.holds if (m := _PR_HOLDER.match(h))]
        gone = frozenset(f"pr-{n}" for n in closed_pulls(ctx, token, numbers))
    return Holding(holder=holder_of(settings, env, ctx), now=int(time.time()), gone=gone)


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
