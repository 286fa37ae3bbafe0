"""Programmable failures: latency, error statuses, 408 timeouts (before or after the change
landed), resets, slow answers, malformed answers, unhealthy machines, failover.

:class:`Faults` is how a test arms them (``sim.faults``); what is armed, and which requests each
rule shapes, is :mod:`flysim.faultrules`, kept in the state core where the HTTP side takes it.
Unreachable hosts are state, not a one-shot fault: see :meth:`Simulator.set_host_status`. Fly's
rate limits are always on (see :mod:`flysim.ratelimit`); ``rate_limit_next`` adds 429s on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flysim import lifecycle
from flysim.faultrules import DEADLINE_EXCEEDED, FaultRule
from flysim.malformed import NOT_JSON

if TYPE_CHECKING:
    from flysim.state import State

# FaultRule and DEADLINE_EXCEEDED are read from here by tests, as they always were.
__all__ = ["DEADLINE_EXCEEDED", "FaultRule", "Faults"]


class Faults:
    """Failure injection for one simulator; every method is safe to call while requests run.

    Rules are consumed in the order they were armed; a request is shaped by at most one
    request-level rule. ``method`` / ``path_contains`` / ``path`` (exact) / ``operation`` /
    ``ip_type`` narrow which requests count. A rule that answers before processing keeps the
    request from the rate limits too: it never reached the API.
    """

    def __init__(self, state: State) -> None:
        self._state = state
        self._armed = state.armed

    # -- latency ---------------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Seconds added to every API request before it is handled."""
        return self._armed.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._armed.latency = seconds

    # -- request-level faults --------------------------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        path_contains: str | None = None,
        method: str | None = None,
        operation: str | None = None,
        ip_type: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``count`` matching requests get ``status`` (5xx) without being processed."""
        if not 500 <= status <= 599:
            raise ValueError("fail_next injects server errors: status must be 5xx")
        self._arm(
            FaultRule(
                "fail",
                count,
                method,
                path_contains,
                operation,
                status=status,
                ip_type=ip_type,
                path=path,
            )
        )

    def rate_limit_next(
        self,
        count: int = 1,
        *,
        retry_after: float | None = 1,
        path_contains: str | None = None,
        method: str | None = None,
        operation: str | None = None,
        ip_type: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``count`` matching requests get 429; ``Retry-After`` unless it is None.

        On top of the simulator's own rate limits (which answer 429 whenever a client goes faster
        than Fly allows); these are recorded as faults, not in ``Simulator.throttled()``.
        """
        self._arm(
            FaultRule(
                "rate_limit",
                count,
                method,
                path_contains,
                operation,
                retry_after=retry_after,
                ip_type=ip_type,
                path=path,
            )
        )

    def reset_next(
        self,
        count: int = 1,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        operation: str | None = None,
        ip_type: str | None = None,
        after_commit: bool = False,
        path: str | None = None,
    ) -> None:
        """Close the connection without a response (TCP RST).

        With ``after_commit`` the request is processed first, so its effect persists and only the
        answer is lost.
        """
        self._arm(
            FaultRule(
                "reset",
                count,
                method,
                path_contains,
                operation,
                after_commit=after_commit,
                ip_type=ip_type,
                path=path,
            )
        )

    def timeout_next(
        self,
        count: int = 1,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        operation: str | None = None,
        ip_type: str | None = None,
        after_commit: bool = False,
        seconds: float = 0.0,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests (any REST endpoint, or GraphQL) with 408
        ``{"error": "deadline_exceeded: ..."}``, after ``seconds``.

        Without ``after_commit`` the request is not processed. With it, it is processed first (an
        update, lease or allocation lands and stays) and only then answered 408: the ambiguous
        case a client must resolve by reading the state again (docs/fly-behaviour.md, 408).
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._arm(
            FaultRule(
                "timeout",
                count,
                method,
                path_contains,
                operation,
                seconds=seconds,
                after_commit=after_commit,
                ip_type=ip_type,
                path=path,
            )
        )

    def slow_next(
        self,
        count: int = 1,
        *,
        seconds: float = 5.0,
        path_contains: str | None = None,
        method: str | None = None,
        operation: str | None = None,
        ip_type: str | None = None,
        path: str | None = None,
    ) -> None:
        """Sleep ``seconds`` before handling the next ``count`` matching requests."""
        self._arm(
            FaultRule(
                "slow",
                count,
                method,
                path_contains,
                operation,
                seconds=seconds,
                ip_type=ip_type,
                path=path,
            )
        )

    def wait_timeout_next(self, count: int = 1, *, after: float = 0.0) -> None:
        """The next ``count`` wait requests answer 408 ``deadline_exceeded`` after ``after`` s."""
        self._arm(FaultRule("wait_timeout", count, seconds=after))

    def lose_allocation_response(self, count: int = 1, *, ip_type: str | None = None) -> None:
        """The next ``count`` successful IP allocations (GraphQL or ip_assignments) are committed,
        then the connection is reset: the client must list the IPs to learn what happened."""
        self._arm(FaultRule("lose_allocation", count, ip_type=ip_type))

    def malformed_next(
        self, count: int = 1, *, at: str = "", value: Any = NOT_JSON, **match: Any
    ) -> None:
        """The next ``count`` matching requests that succeed are carried out, then answered 200
        with ``value`` at ``at`` in the answer (see :mod:`flysim.malformed`); ``match`` takes
        the other rules' ``method``, ``path_contains``, ``path`` and ``operation``."""
        self._arm(FaultRule("malformed", count, at=at, value=value, **match))

    # -- platform faults -------------------------------------------------------------------------
    def never_healthy(self, machine_id: str) -> None:
        """After its next update(s) this machine starts but its checks, once they run, are
        critical and stay so."""
        self._armed.arm_never_healthy(machine_id)

    def fails_to_start(self, machine_id: str) -> None:
        """This machine's next update ends in `failed` (its new version's process exits at
        start) instead of `started`; the update after that starts it again."""
        self._armed.arm_fail_start(machine_id)

    def healthy_again(self, machine_id: str) -> None:
        self._armed.disarm_never_healthy(machine_id)

    def failover_after_updates(self, app: str, updates: int) -> None:
        """After ``updates`` more completed machine updates in ``app``, the primary role moves to
        another machine (one not updated since this call, if possible), as repmgr would promote a
        standby when the primary goes away."""
        if updates < 1:
            raise ValueError("updates must be >= 1")
        lifecycle.arm_failover(self._state, app, updates)

    # -- bookkeeping -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Disarm every fault and set latency back to 0 (armed failovers stay)."""
        self._armed.clear()

    @property
    def pending(self) -> list[FaultRule]:
        return self._armed.pending

    def _arm(self, rule: FaultRule) -> None:
        self._armed.arm(rule)
