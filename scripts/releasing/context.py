"""`Context`: one invocation of the release, as every step gets it."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from fly_pg_external.gha import Actions

from .config import Config, Docker, Sleep, State
from .github import GitHub


@dataclass
class Context:
    """What the steps were asked to do, what they hand each other, and what they talk through:
    the runner (log lines, annotations, groups, the step summary), docker, GitHub and the
    registry. Tests hand in their own docker runner, transports and sleep."""

    cfg: Config
    state: State
    gha: Actions
    docker: Docker
    github: GitHub
    sleep: Sleep
    registry_transport: httpx.BaseTransport | None = None
