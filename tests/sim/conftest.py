"""Clients for poking the simulator directly over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from flysim import Simulator

TOKEN = "fo1_testtoken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    """A 3-machine current flex cluster `my-db`, no Postgres, public ports on free ports."""
    return flysim(
        apps={"my-db": {"machines": 3}},
        postgres=False,
        token=TOKEN,
        public_port_map={5432: 0, 5433: 0},
        seed=7,
    )


@pytest.fixture
def rest(sim: Simulator) -> Iterator[httpx.Client]:
    """The Machines API, authenticated; paths are relative to ``/v1/apps/my-db``."""
    with httpx.Client(base_url=f"{sim.flaps_base_url}/v1/apps/my-db", headers=AUTH) as client:
        yield client


GraphQL = Callable[..., httpx.Response]


@pytest.fixture
def gql(sim: Simulator) -> Iterator[GraphQL]:
    """``gql(query, variables=None, headers=AUTH, operation_name=None) -> httpx.Response``."""
    with httpx.Client(base_url=sim.api_base_url) as client:

        def post(
            query: str,
            variables: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
            operation_name: str | None = None,
        ) -> httpx.Response:
            body: dict[str, Any] = {"query": query, "variables": variables or {}}
            if operation_name:
                body["operationName"] = operation_name
            return client.post("/graphql", json=body, headers=AUTH if headers is None else headers)

        yield post
