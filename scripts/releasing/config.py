"""What the steps of one invocation share: the configuration from the command line and the
runner's environment, what they hand each other, and the job's outputs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ReleaseError
from .versions import Version

SCRIPTS = Path(__file__).resolve().parents[1]
IMAGE_NAME = "fly-pg-external"
PLATFORMS = ("linux/amd64", "linux/arm64")
# What a dry run uses where a push or a GitHub write would have answered.
DRY_DIGEST = "sha256:" + "0" * 64
DRY_SHA = "0" * 40

Docker = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]
Sleep = Callable[[float], None]


@dataclass
class Config:
    root: Path
    version: Version
    repository: str
    source_sha: str
    image: str  # registry/owner/name, no tag
    platforms: tuple[str, ...]
    api_url: str
    server_url: str
    token: str | None
    dry_run: bool
    simulator_python: str
    output: Path | None


@dataclass
class State:
    """What the steps of one invocation hand each other."""

    digest: str | None = None
    release_sha: str | None = None
    done: list[str] = field(default_factory=list)

    def need_digest(self) -> str:
        if self.digest is None:
            raise ReleaseError("No digest", "run `push` first, or pass --digest sha256:…")
        return self.digest

    def need_release_sha(self) -> str:
        if self.release_sha is None:
            raise ReleaseError("No release commit", "run `commit` first, or pass --release-commit")
        return self.release_sha


def write_output(cfg: Config, name: str, value: str) -> None:
    """A job output, as a `name=value` line of GITHUB_OUTPUT. Not the action's heredoc writer
    (fly_pg_external.gha): every value here is one line (a digest, an image name, a SHA, a
    branch), and the release's tests read the file back as such lines."""
    if cfg.output is not None:
        with cfg.output.open("a", encoding="utf-8") as f:
            f.write(f"{name}={value}\n")
