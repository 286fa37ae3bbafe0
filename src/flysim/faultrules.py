"""The faults armed on a simulator: each rule, which requests it shapes, and the book the HTTP
side takes them from as requests arrive.

Tests arm them through :class:`~flysim.faults.Faults`; the server (:mod:`flysim.server`), the wait
endpoint (:mod:`flysim.rest_api`) and the machine lifecycle (:mod:`flysim.lifecycle`) take them
here, from the state core's :attr:`State.armed <flysim.state.State.armed>`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from flysim.malformed import NOT_JSON
from flysim.requestlog import RequestRecord

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
        """Whether the rule shapes ``record``: the test's narrowing holds and the request is of
        the sort this kind of fault applies to."""
        return self._narrowed_to(record) and self._applies_to(record)

    def _narrowed_to(self, record: RequestRecord) -> bool:
        """Every narrowing the test gave (None: any request) holds for ``record``."""
        return (
            (self.ip_type is None or (_is_allocation(record) and _ip_type(record) == self.ip_type))
            and (self.method is None or record.method == self.method.upper())
            and (self.path_contains is None or self.path_contains in record.path)
            and (self.path is None or record.path.rstrip("/") == self.path.rstrip("/"))
            and (
                self.operation is None
                or self.operation == record.operation_name
                or self.operation in record.graphql_fields
            )
        )

    def _applies_to(self, record: RequestRecord) -> bool:
        # Two kinds only mean something for one sort of request: a wait, an IP allocation.
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


class ArmedFaults:
    """The armed rules, the added latency and the machines armed to fail; every method is safe
    to call while requests run (a lock of its own, never held while calling out).

    Rules are consumed in the order they were armed; a request is shaped by at most one
    request-level rule.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._latency = 0.0
        self._never_healthy: set[str] = set()
        self._fail_start: set[str] = set()

    @property
    def latency(self) -> float:
        """Seconds added to every API request before it is handled."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def arm(self, rule: FaultRule) -> None:
        if rule.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._rules.append(rule)

    @property
    def pending(self) -> list[FaultRule]:
        """Copies of the rules still armed, in the order they will be consumed."""
        with self._lock:
            return [FaultRule(**vars(rule)) for rule in self._rules]

    def clear(self) -> None:
        """Disarm every rule and machine fault; latency back to 0."""
        with self._lock:
            self._rules.clear()
            self._latency = 0.0
            self._never_healthy.clear()
            self._fail_start.clear()

    # -- machines --------------------------------------------------------------------------------
    def arm_never_healthy(self, machine_id: str) -> None:
        with self._lock:
            self._never_healthy.add(machine_id)

    def disarm_never_healthy(self, machine_id: str) -> None:
        with self._lock:
            self._never_healthy.discard(machine_id)

    def is_never_healthy(self, machine_id: str) -> bool:
        with self._lock:
            return machine_id in self._never_healthy

    def arm_fail_start(self, machine_id: str) -> None:
        with self._lock:
            self._fail_start.add(machine_id)

    def take_fail_start(self, machine_id: str) -> bool:
        """Whether the machine's next start fails; it is armed for that one start only."""
        with self._lock:
            armed = machine_id in self._fail_start
            self._fail_start.discard(machine_id)
            return armed

    # -- requests --------------------------------------------------------------------------------
    def take_before(self, record: RequestRecord) -> FaultRule | None:
        """The rule that answers ``record`` instead of the API, if one is armed for it."""
        return self._take(record, {"fail", "rate_limit", "reset", "slow", "timeout"}, after=False)

    def take_after(self, record: RequestRecord, *, succeeded: bool) -> FaultRule | None:
        """The rule that shapes the answer to ``record`` once the API has processed it."""
        # A lost or timed-out answer does not care whether the change was accepted; a "lost
        # allocation" only means something when there was one, a malformed answer in place of
        # a success.
        kinds: set[FaultKind] = {"reset", "timeout"}
        if succeeded:
            kinds |= {"lose_allocation", "malformed"}
        return self._take(record, kinds, after=True)

    def take_wait_timeout(self, record: RequestRecord) -> FaultRule | None:
        return self._take(record, {"wait_timeout"}, after=False)

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
