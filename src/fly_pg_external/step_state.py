"""The step state a `lifetime: job` run leaves for its post step: the one place its names are.

The main step saves each value through the runner's GITHUB_STATE file command as soon as it is
known (a save overwrites: the runner keeps the last value saved for a name); at the end of the
job the runner starts the post step with every saved value as `STATE_<name>`. Four values:

- `HOLDER`: whom the run holds the exposure for (holders.job_holder), unique to the step;
- `ALLOCATED`: the addresses it allocated, comma-separated, saved the moment each is made;
- `COMMENT_URL`: the pull request comment it wrote, which the post step updates;
- `TEMP_ROLE`: the temporary role of `credentials: temporary` (credential_steps.py), saved
  before it is created, which the post step drops.

    main step:  save_holder(gha, holder); save_allocated(gha, addresses); save_comment_url(...)
    post step:  state = load(env); state.holder, state.allocated, state.comment_url

Anything that reads the saved values the way the runner hands them over (the release's run of
the image by digest reads the main step's GITHUB_STATE file) goes through `StepState.from_saved`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .gha import Actions

HOLDER = "HOLDER"
ALLOCATED = "ALLOCATED"
COMMENT_URL = "COMMENT_URL"
TEMP_ROLE = "TEMP_ROLE"
NAMES = (HOLDER, ALLOCATED, COMMENT_URL, TEMP_ROLE)
# What the runner prefixes each saved name with in the post step's environment.
ENV_PREFIX = "STATE_"


@dataclass(frozen=True)
class StepState:
    """What the main step saved; empty values for what it never got to save."""

    holder: str = ""
    allocated: tuple[str, ...] = ()
    comment_url: str = ""
    temp_role: str = ""

    @classmethod
    def from_saved(cls, saved: Mapping[str, str]) -> StepState:
        """From the values as saved, by name (GITHUB_STATE's records); other names are ignored."""
        return cls(
            holder=saved.get(HOLDER, ""),
            allocated=tuple(a for a in saved.get(ALLOCATED, "").split(",") if a),
            comment_url=saved.get(COMMENT_URL, ""),
            temp_role=saved.get(TEMP_ROLE, ""),
        )


def load(env: Mapping[str, str]) -> StepState:
    """In the post step: what the main step saved, from the `STATE_<name>` variables."""
    return StepState.from_saved(
        {name: env[ENV_PREFIX + name] for name in NAMES if ENV_PREFIX + name in env}
    )


def save_holder(gha: Actions, holder: str) -> None:
    gha.save_state(HOLDER, holder)


def save_allocated(gha: Actions, addresses: Iterable[str]) -> None:
    """Every address allocated so far (not just the newest): the last save is what is kept."""
    gha.save_state(ALLOCATED, ",".join(addresses))


def save_comment_url(gha: Actions, url: str) -> None:
    gha.save_state(COMMENT_URL, url)


def save_temp_role(gha: Actions, name: str) -> None:
    gha.save_state(TEMP_ROLE, name)
