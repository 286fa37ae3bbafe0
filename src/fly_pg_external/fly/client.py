"""Both Fly APIs over one HTTP client, as the core's `FlyApi`."""

from __future__ import annotations

from collections.abc import Sequence

from ..domain import AppInfo, IpAddress, IpFamily, Lease, Machine, UpdateRequest
from ..flytoken import FlyAuth
from .graphql import GraphQL
from .http import FlyHttp
from .machines import Machines


class FlyClient:
    """The `FlyApi` the action runs with: GraphQL for the app and its IPs, the Machines API for
    machines, leases and waits, one connection pool and one request count for both."""

    def __init__(self, http: FlyHttp, graphql: GraphQL, machines: Machines) -> None:
        self.http = http
        self.graphql = graphql
        self.machines = machines

    @classmethod
    def connect(
        cls, *, api_base_url: str, flaps_base_url: str, auth: FlyAuth, timeout: float
    ) -> FlyClient:
        http = FlyHttp(timeout=timeout)
        return cls(http, GraphQL(http, api_base_url, auth), Machines(http, flaps_base_url, auth))

    @property
    def request_timeout(self) -> float:
        return self.http.timeout

    def get_app(self, app: str) -> AppInfo:
        return self.graphql.get_app(app)

    def allocate_ip(self, app: str, family: IpFamily) -> tuple[IpAddress, tuple[IpAddress, ...]]:
        return self.graphql.allocate_ip(app, family)

    def release_ip(self, app: str, address: str) -> None:
        self.graphql.release_ip(app, address)

    def list_machines(self, app: str) -> list[Machine]:
        return self.machines.list(app)

    def get_machine(self, app: str, machine_id: str) -> Machine:
        return self.machines.get(app, machine_id)

    def update_machine(
        self, app: str, machine_id: str, request: UpdateRequest, *, nonce: str | None
    ) -> Machine:
        return self.machines.update(app, machine_id, request, nonce=nonce)

    def wait_machine(
        self, app: str, machine_id: str, *, states: Sequence[str], version: str, timeout: int
    ) -> str | None:
        return self.machines.wait(app, machine_id, states=states, version=version, timeout=timeout)

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Lease:
        return self.machines.acquire_lease(app, machine_id, ttl, nonce=nonce)

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        self.machines.release_lease(app, machine_id, nonce)

    def set_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        self.machines.set_metadata(app, machine_id, key, value)

    def close(self) -> None:
        self.http.close()
