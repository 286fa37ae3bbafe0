"""What a test observes of the simulated platform: the requests it saw, the machine timeline, a
machine's metadata, and the pg_tls listeners; and waiting until the state satisfies a condition.

:class:`Observation` is the read side of :class:`~flysim.simulator.Simulator`, which inherits it;
both work on the same :class:`~flysim.state.State`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flysim import metadata, timeline
from flysim.requestlog import RequestRecord
from flysim.state import State
from flysim.timeline import StateChange


class Observation:
    """The simulator's read side: assert on what the platform saw and did."""

    _state: State

    @property
    def requests(self) -> list[RequestRecord]:
        """Every finished request, oldest first (a copy)."""
        return self._state.requests()

    def clear_requests(self) -> None:
        self._state.clear_requests()

    def mutating_requests(self) -> list[RequestRecord]:
        """REST POST/PUT/PATCH/DELETE and GraphQL mutations."""
        return [r for r in self.requests if r.is_mutating]

    def throttled(self) -> list[RequestRecord]:
        """Requests the rate limits answered 429 (not those of an injected ``rate_limit_next``):
        empty when the client never went faster than Fly allows."""
        return [r for r in self.requests if r.throttled]

    def timeline(self, app: str | None = None) -> list[StateChange]:
        """Machine state changes (seeding, updates, restarts, checks, failovers), oldest first."""
        return self._state.timeline(app)

    def machine_metadata(self, app: str, machine_id: str) -> dict[str, str]:
        """The machine's metadata (``config.metadata``, what GET .../metadata answers), a copy."""
        state = self._state
        with state.lock:
            return metadata.read(state.require_machine(state.require_app(app), machine_id))

    def max_machines_down(self, app: str) -> int:
        """The most machines of ``app`` that were at the same time not healthy (started on a
        reachable host with every defined check passing; an empty check list right after a start
        is not healthy) after having been healthy: how much capacity a rollout took away."""
        return timeline.max_down(self.timeline(app))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``condition()`` (run under the state lock) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        changed = self._state.changed
        with changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                changed.wait(min(remaining, 0.05))
            return True

    def listening(self) -> dict[tuple[str, int], str]:
        """Open pg_tls listeners: (address, port) -> app."""
        with self._state.lock:
            proxy = self._state.proxy
            return {} if proxy is None else proxy.listening()

    @property
    def listener_errors(self) -> list[str]:
        with self._state.lock:
            proxy = self._state.proxy
            return [] if proxy is None else list(proxy.errors)

    @property
    def hostname_app(self) -> str | None:
        """The app whose ``<app>.fly.dev`` is played by 127.0.0.1 (see ``hostname_on_loopback``)."""
        with self._state.lock:
            return self._state.network.hostname_app

    def listen_port(self, service_port: int) -> int:
        """The local port a public service port listens on (see ``public_port_map``)."""
        with self._state.lock:
            return self._state.network.listen_port(service_port)

    def public_endpoint(self, app: str, port: int = 5432) -> tuple[str, int] | None:
        """Where a client reaches ``<app>.fly.dev:<port>`` now: 127.0.0.1 if this app plays the
        hostname, else its first listening IP; None when nothing listens."""
        state = self._state
        with state.lock:
            return state.network.endpoint(state.require_app(app), port, self.listening())

    @property
    def proxied_connections(self) -> int:
        with self._state.lock:
            proxy = self._state.proxy
            return 0 if proxy is None else proxy.connection_count
