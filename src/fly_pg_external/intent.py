"""What a run asks for, and nothing else: the planner's and the release rule's only input besides
what was read from Fly and who holds the exposure.

`Settings` (every input, the tokens and the URLs with their passwords among them) stays at the
edge: the main step builds the intent from it (`Settings.intent`), and the post step states its
own (`Intent.closing`) rather than patching a Settings to steer the planner. So the planner can
read no secret, and what a plan depends on is exactly this type's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .domain import IP_FAMILIES, ImagePolicy, IpFamily, Mode
from .inputs import Addresses

DEFAULT_MAX_AGE = 7 * 86400.0


@dataclass(frozen=True)
class Intent:
    app: str
    mode: Mode
    families: tuple[IpFamily, ...]  # the address families asked for (`ip-versions`)
    host: str  # the external hostname clients use
    port: int  # the external port of the pg_tls service
    read_only: bool = False  # a dry run (or `mode: connect`): nothing changes on Fly
    image_policy: ImagePolicy = "keep"
    # The external URL as a person may see it (password and unclassified values as ***); None
    # without a `database-url` input and for a releasing run.
    shown_url: str | None = None
    # unexpose: addresses to release although they are not the action's own; sweep: how old a
    # hold may get.
    addresses: Addresses = field(default_factory=Addresses)
    max_age: float = DEFAULT_MAX_AGE

    @property
    def releasing(self) -> bool:
        """unexpose or sweep: the run may release addresses, never allocates or restarts."""
        return self.mode in ("unexpose", "sweep")

    @classmethod
    def closing(cls, app: str, *, host: str, port: int) -> Intent:
        """The post step of `lifetime: job`: release, for real, every address of the action's own
        that no hold covers any more, in every family (the last holder closes every one,
        whichever run asked for it)."""
        return cls(app=app, mode="unexpose", families=IP_FAMILIES, host=host, port=port)
