"""Programmable failures: latency, error statuses, resets, slow answers, unhealthy machines,
failover."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flysim.requestlog import RequestRecord

if TYPE_CHECKING:
    from flysim.simulator import Simulator

FaultKind = Literal["fail", "rate_limit", "reset", "slow", "wait_timeout", "lose_allocation"]


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

    def matches(self, record: RequestRecord) -> bool:
        if self.ip_type is not None and not (
            _is_allocation(record) and _ip_type(record) == self.ip_type
        ):
            return False
        if self.method is not None and record.method != self.method.upper():
            return False
        if self.path_contains is not None and self.path_contains not in record.path:
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
        return self.kind


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
    request-level rule. ``method`` / ``path_contains`` / ``operation`` narrow which requests count.
    """

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._latency = 0.0
        self._never_healthy: set[str] = set()

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
    ) -> None:
        """The next ``count`` matching requests get ``status`` (5xx) without being processed."""
        if not 500 <= status <= 599:
            raise ValueError("fail_next injects server errors: status must be 5xx")
        self._arm(
            FaultRule(
                "fail", count, method, path_contains, operation, status=status, ip_type=ip_type
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
    ) -> None:
        """The next ``count`` matching requests get 429; ``Retry-After`` unless it is None."""
        self._arm(
            FaultRule(
                "rate_limit",
                count,
                method,
                path_contains,
                operation,
                retry_after=retry_after,
                ip_type=ip_type,
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
    ) -> None:
        """Sleep ``seconds`` before handling the next ``count`` matching requests."""
        self._arm(
            FaultRule(
                "slow", count, method, path_contains, operation, seconds=seconds, ip_type=ip_type
            )
        )

    def wait_timeout_next(self, count: int = 1, *, after: float = 0.0) -> None:
        """The next ``count`` wait requests answer 408 ``deadline_exceeded`` after ``after`` s."""
        self._arm(FaultRule("wait_timeout", count, seconds=after))

    def lose_allocation_response(self, count: int = 1, *, ip_type: str | None = None) -> None:
        """The next ``count`` successful IP allocations (GraphQL or ip_assignments) are committed,
        then the connection is reset: the client must list the IPs to learn what happened."""
        self._arm(FaultRule("lose_allocation", count, ip_type=ip_type))

    # -- platform faults -------------------------------------------------------------------------
    def never_healthy(self, machine_id: str) -> None:
        """After its next update(s) this machine starts but its checks stay critical."""
        with self._lock:
            self._never_healthy.add(machine_id)

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
        self._sim._arm_failover(app, updates)

    # -- bookkeeping -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Disarm every fault and set latency back to 0 (armed failovers stay)."""
        with self._lock:
            self._rules.clear()
            self._latency = 0.0
            self._never_healthy.clear()

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
                is_after = rule.kind == "lose_allocation" or (
                    rule.kind == "reset" and rule.after_commit
                )
                if rule.kind in kinds and is_after == after and rule.matches(record):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return FaultRule(**vars(rule))
        return None

    def take_before(self, record: RequestRecord) -> FaultRule | None:
        return self._take(record, {"fail", "rate_limit", "reset", "slow"}, after=False)

    def take_after(self, record: RequestRecord, *, succeeded: bool) -> FaultRule | None:
        kinds: set[FaultKind] = {"reset", "lose_allocation"} if succeeded else {"reset"}
        return self._take(record, kinds, after=True)

    def take_wait_timeout(self, record: RequestRecord) -> FaultRule | None:
        return self._take(record, {"wait_timeout"}, after=False)
