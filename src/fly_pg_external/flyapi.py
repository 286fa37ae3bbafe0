"""What the core needs from Fly, as a Protocol over the domain's types.

`fly.client.FlyClient` implements it over HTTP; the rollout's unit tests hand in an in-memory
fake. Errors are the `FlyError` family of `errors.py`: `FlyConflict` for a lease held by someone
else, `FlyTimeout` for a 408 (a write may have landed), `FlyTransient` for what survived the
client's retries, `FlyNotFound`, `FlyAuthError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .domain import AppInfo, IpAddress, IpFamily, Lease, Machine, UpdateRequest


class FlyApi(Protocol):
    @property
    def request_timeout(self) -> float:
        """Seconds one request may take: a write that timed out may land within about twice
        that."""
        ...

    # GraphQL: the app and its IP addresses
    def get_app(self, app: str) -> AppInfo: ...

    def allocate_ip(self, app: str, family: IpFamily) -> tuple[IpAddress, tuple[IpAddress, ...]]:
        """The new address, and the app's addresses right after the allocation."""
        ...

    def release_ip(self, app: str, address: str) -> None: ...

    # Machines API
    def list_machines(self, app: str) -> list[Machine]:
        """Every machine of the app, including ones that are not part of the cluster
        (`Machine.active` tells)."""
        ...

    def get_machine(self, app: str, machine_id: str) -> Machine: ...

    def update_machine(
        self, app: str, machine_id: str, request: UpdateRequest, *, nonce: str | None
    ) -> Machine:
        """Not idempotent: never resent by the client."""
        ...

    def wait_machine(
        self, app: str, machine_id: str, *, states: Sequence[str], version: str, timeout: int
    ) -> str | None:
        """The state reached (None when the answer does not say); FlyTimeout when none of
        `states` was reached within `timeout` seconds."""
        ...

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Lease:
        """Take a lease, or refresh ours when `nonce` is given."""
        ...

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None: ...

    def set_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        """One key of the machine's metadata: no new version, no restart (Fly docs)."""
        ...

    def close(self) -> None: ...
