"""Shared fixtures: one real PostgreSQL per session and started Fly simulators per test."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flysim import PostgresServer, Simulator

# pytest runs with --import-mode=importlib, which puts no test directory on sys.path; the
# helpers the end-to-end tests share are imported by module name from here.
_HELPERS = Path(__file__).parent / "helpers"
# scripts/ too: runner_step (a step started as the runner does) serves the release and tests.
_SCRIPTS = Path(__file__).parents[1] / "scripts"
for _path in (_HELPERS, _SCRIPTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def pytest_configure(config: pytest.Config) -> None:
    """Each test process gets a network of its own (see `netns`), unless the run builds and
    starts the action's container: `docker run --network host` joins the daemon's network, so
    that test must see the machine's loopback. `make test` runs it on its own."""
    import netns

    markers = config.getoption("markexpr", "") or ""
    if os.environ.get("FLY_PG_EXTERNAL_TEST_NETNS", "1") == "0":
        return
    if "not container" in markers and netns.isolate():
        config.stash[_ISOLATED] = True
    elif _workers(config) and "not container" not in markers:
        # Workers sharing the machine's network would fight over 127.0.0.1:5432 and fail at
        # random; say so instead.
        raise pytest.UsageError(
            'parallel workers (-n) need -m "not container": only then does each get a network '
            "namespace of its own (the container test needs the machine's network)."
        )


def _workers(config: pytest.Config) -> bool:
    """Whether this run starts parallel workers (an explicit `-n N`, N > 0)."""
    value = getattr(config.option, "numprocesses", None)
    return isinstance(value, int) and value > 0


_ISOLATED = pytest.StashKey[bool]()
# Most tests wait on simulated restarts, not on the CPU: more workers than cores pay off.
PARALLEL_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: parallel only where each worker can have a network of its own (root, and not
    the container test); otherwise the workers would fight over 127.0.0.1:5432."""
    markers = config.getoption("markexpr", "") or ""
    if os.environ.get("FLY_PG_EXTERNAL_TEST_NETNS", "1") == "0" or os.geteuid() != 0:
        return 0
    return PARALLEL_WORKERS if "not container" in markers else 0


#: The token every simulator from ``flysim`` accepts (the one the action-run helpers send).
SIMULATOR_TOKEN = "fo1_simulatortoken_0123456789"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the whole session (started on first use, stopped at the end)."""
    started = time.monotonic()
    server = PostgresServer.start()
    print(f"\nPostgreSQL {server.version} ready in {time.monotonic() - started:.2f}s")
    yield server
    server.stop()


@pytest.fixture
def flysim(request: pytest.FixtureRequest) -> Iterator[Callable[..., Simulator]]:
    """Factory for started simulators; each one is stopped after the test.

    ``flysim(apps=None, *, postgres=True, **simulator_kwargs) -> Simulator``

    - ``apps`` maps app names to :meth:`Simulator.add_app` keyword arguments, e.g.
      ``{"my-db": {"machines": 3, "legacy": True}, "web": {"postgres": False}}``.
    - ``postgres=True`` puts the session's ``pg_server`` behind the pg_tls proxy (it is started
      the first time a test asks for it); ``False`` leaves the proxy without a backend.
    - Other keyword arguments go to :class:`Simulator`. Defaults here: the token
      ``SIMULATOR_TOKEN``, ``restart_seconds=0.05`` and ``check_grace_seconds=0.05``, so a
      rollout takes a fraction of a second. Public listeners use the real service ports and the
      first exposed app is also on 127.0.0.1 (``hostname_on_loopback``), like ``<app>.fly.dev``;
      pass ``public_port_map={5432: 0, 5433: 0}`` for free ports instead.
    """
    made: list[Simulator] = []

    def make(
        apps: dict[str, dict[str, Any]] | None = None,
        *,
        postgres: bool = True,
        **kwargs: Any,
    ) -> Simulator:
        kwargs.setdefault("token", SIMULATOR_TOKEN)
        kwargs.setdefault("restart_seconds", 0.05)
        kwargs.setdefault("check_grace_seconds", 0.05)
        backend = request.getfixturevalue("pg_server") if postgres else None
        sim = Simulator(postgres=backend, **kwargs)
        made.append(sim)
        for name, options in (apps or {}).items():
            sim.add_app(name, **options)
        return sim.start()

    yield make
    for sim in made:
        # A listener that could not bind (e.g. another process holds 127.0.0.1:5432) means the
        # test's connections went somewhere else: say so next to whatever failed.
        for error in sim.listener_errors:
            warnings.warn(f"flysim: {error}", RuntimeWarning, stacklevel=1)
        sim.stop()
