"""Programmable failures: latency, error statuses, 408 timeouts (before or after the change
landed), resets, slow answers, malformed answers, unhealthy machines, failover.

Unreachable hosts are state, not a one-shot fault: see :meth:`Simulator.set_host_status`. Fly's
rate limits are always on (see :mod:`flysim.ratelimit`); ``rate_limit_next`` adds 429s on top.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from flysim import lifecycle
from flysim.malformed import NOT_JSON
from flysim.requestlog import RequestRecord

if TYPE_CHECKING:
    from flysim.simulator import Simulator

FaultKind = Literal[
    "fail", "rate_limit", "reset", "slow", "timeout", "wait_timeout", "lose_allocation", "malformed"
]

# Fly's answer when flaps gives up on flyd: flyctl calls a 408 from any endpoint "typically a
# context.DeadlineExceeded that flaps hit talking to flyd" (`flapsutil/retry.go`). The prefix is
# the wait endpoint's (fly-api.md §3.5); the rest is Go's context.DeadlineExceeded text.
# UNCONFIRMED: the exact text outside the wait endpoint.
DEADLINE_EXCEEDED = "deadline_exceeded: context deadline exceeded"


@dataclass
class FaultRule:
    """One armed fault: it shapes the next ``remaining`` requests that match it."""

    kind: FaultKind
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    operation: str | None = None  # a GraphQL operation name or top-level field name
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    after_commit: bool = False
    # Only IP allocations of this type ("v4", "v6"): the action allocates the families at once,
    # so "the next allocation" alone would hit whichever family the scheduler sent first.
    ip_type: str | None = None
    # Only this exact path: `/v1/apps/a/machines` without `/v1/apps/a/machines/<id>/...`.
    path: str | None = None
    # A malformed answer: where in it, and what goes there (see flysim.malformed).
    at: str = ""
    value: Any = NOT_JSON

    def matches(self, record: RequestRecord) -> bool:
        if self.ip_type is not None and not (
            _is_allocation(record) and _ip_type(record) == self.ip_type
        ):
            return False
        if self.method is not None and record.method != self.method.upper():
            return False
        if self.path_contains is not None and self.path_contains not in record.path:
            return False
        if self.path is not None and record.path.rstrip("/") != self.path.rstrip("/"):
            return False
        if self.operation is not None and not (
            self.operation == record.operation_name or self.operation in record.graphql_fields
        ):
            return False
        if self.kind == "wait_timeout":
            return record.api == "rest" and record.path.endswith("/wait")
        if self.kind == "lose_allocation":
            return _is_allocation(record)
        return True

    @property
    def label(self) -> str:
        if self.kind == "fail":
            return f"fail:{self.status}"
        if self.kind == "reset" and self.after_commit:
            return "reset:after_commit"
        if self.kind == "timeout":
            return "timeout:408:after_commit" if self.after_commit else "timeout:408"
        return self.kind

    @property
    def answers_after_commit(self) -> bool:
        """Whether the request is processed first and only its answer is shaped."""
        return self.kind in {"lose_allocation", "malformed"} or (
            self.kind in {"reset", "timeout"} and self.after_commit
        )


def _is_allocation(record: RequestRecord) -> bool:
    if record.api == "graphql":
        return "allocateIpAddress" in record.graphql_fields
    return record.method == "POST" and record.path.rstrip("/").endswith("/ip_assignments")


def _ip_type(record: RequestRecord) -> str | None:
    """The address type an allocation asks for: GraphQL carries it in the variables (`input`,
    or a bare `type`), the REST ip_assignments endpoint in its JSON body."""
    value: object
    if record.api == "rest":
        value = record.json.get("type") if isinstance(record.json, dict) else None
    else:
        variables = record.graphql_variables or {}
        given = variables.get("input")
        value = given.get("type") if isinstance(given, dict) else variables.get("type")
    return value if isinstance(value, str) else None


class Faults:
    """Failure injection for one simulator; every method is safe to call while requests run.

    Rules are consumed in the order they were armed; a request is shaped by at most one
    request-level rule. ``method`` / ``path_contains`` / ``path`` (exact) / ``operation`` /
    ``ip_type`` narrow which requests count. A rule that answers before processing keeps the
    request from the rate limits too: it never reached the API.
    """

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._latency = 0.0
        self._never_healthy: set[str] = set()
        self._fail_start: set[str] = set()

    # -- latency ---------------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Seconds added to every API request before it is handled."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = seconds

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
        with self._lock:
            self._never_healthy.add(machine_id)

    def fails_to_start(self, machine_id: str) -> None:
        """This machine's next update ends in `failed` (its new version's process exits at
        start) instead of `started`; the update after that starts it again."""
        with self._lock:
            self._fail_start.add(machine_id)

    def take_fail_start(self, machine_id: str) -> bool:
        with self._lock:
            armed = machine_id in self._fail_start
            self._fail_start.discard(machine_id)
            return armed

    def healthy_again(self, machine_id: str) -> None:
        with self._lock:
            self._never_healthy.discard(machine_id)

    def is_never_healthy(self, machine_id: str) -> bool:
        with self._lock:
            return machine_id in self._never_healthy

    def failover_after_updates(self, app: str, updates: int) -> None:
        """After ``updates`` more completed machine updates in ``app``, the primary role moves to
        another machine (one not updated since this call, if possible), as repmgr would promote a
        standby when the primary goes away."""
        if updates < 1:
            raise ValueError("updates must be >= 1")
        lifecycle.arm_failover(self._sim, app, updates)

    # -- bookkeeping -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Disarm every fault and set latency back to 0 (armed failovers stay)."""
        with self._lock:
            self._rules.clear()
            self._latency = 0.0
            self._never_healthy.clear()
            self._fail_start.clear()

    @property
    def pending(self) -> list[FaultRule]:
        with self._lock:
            return [FaultRule(**vars(rule)) for rule in self._rules]

    def _arm(self, rule: FaultRule) -> None:
        if rule.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._rules.append(rule)

    def _take(
        self, record: RequestRecord, kinds: set[FaultKind], *, after: bool
    ) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if (
                    rule.kind in kinds
                    and rule.answers_after_commit == after
                    and rule.matches(record)
                ):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return FaultRule(**vars(rule))
        return None

    def take_before(self, record: RequestRecord) -> FaultRule | None:
        return self._take(record, {"fail", "rate_limit", "reset", "slow", "timeout"}, after=False)

    def take_after(self, record: RequestRecord, *, succeeded: bool) -> FaultRule | None:
        # A lost or timed-out answer does not care whether the change was accepted; a "lost
        # allocation" only means something when there was one, a malformed answer in place of
        # a success.
        kinds: set[FaultKind] = {"reset", "timeout"}
        if succeeded:
            kinds |= {"lose_allocation", "malformed"}
        return self._take(record, kinds, after=True)

    def take_wait_timeout(self, record: RequestRecord) -> FaultRule | None:
        return self._take(record, {"wait_timeout"}, after=False)
