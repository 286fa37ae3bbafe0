"""Fly answering 200 with something the action cannot read: the run stops with an error that
names the request and the field, and still writes every output.

Each case arms the simulator to carry out one request and then answer it malformed: not JSON, or
one value of the wrong type (flysim.malformed). The run must end as a Fly API error, never as an
"Unexpected error" with no outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flysim import ABSENT, NOT_JSON, Simulator

from action_run import ActionResult, run_inprocess

APP = "my-db"
LIST = f"GET /v1/apps/{APP}/machines"
APP_QUERY = "GraphQL query app (POST /graphql)"
LEASE = f"POST /v1/apps/{APP}/machines/"
OUTPUTS = {
    "database-url", "node-database-url", "jdbc-url", "password", "host", "port", "database",
    "user", "ipv4", "ipv6", "exposed", "changed", "config-diff", "comment-url",
}  # fmt: skip


@dataclass(frozen=True)
class BadAnswer:
    id: str
    arm: Callable[[Simulator], None]
    names: tuple[str, ...]  # what the error annotation must say
    planned: bool = False  # the run got as far as its plan (then it writes the job summary)


def _list(at: str, value: Any) -> Callable[[Simulator], None]:
    def arm(sim: Simulator) -> None:
        sim.faults.malformed_next(
            1, at=at, value=value, method="GET", path=f"/v1/apps/{APP}/machines"
        )

    return arm


def _app(at: str, value: Any) -> Callable[[Simulator], None]:
    def arm(sim: Simulator) -> None:
        sim.faults.malformed_next(1, at=at, value=value, operation="app")

    return arm


def _lease(at: str, value: Any) -> Callable[[Simulator], None]:
    def arm(sim: Simulator) -> None:
        sim.faults.malformed_next(1, at=at, value=value, method="POST", path_contains="/lease")

    return arm


CASES = [
    BadAnswer("list-not-json", _list("", NOT_JSON), (LIST, "not JSON")),
    BadAnswer("list-a-string", _list("", "x"), (LIST, "machines is a string", "expected a list")),
    BadAnswer("list-item-null", _list("2", None), (LIST, "machines[2] is null")),
    BadAnswer("machine-id-a-number", _list("0.id", 42), (LIST, "machines[0].id is a number")),
    BadAnswer("machine-state-an-int", _list("1.state", 3), (LIST, "machines[1].state")),
    BadAnswer("config-a-list", _list("1.config", []), (LIST, "machines[1].config is a list")),
    BadAnswer(
        "metadata-a-string",
        _list("0.config.metadata", "x"),
        (LIST, "machines[0].config.metadata is a string"),
    ),
    BadAnswer(
        "service-ports-a-string",
        _list("2.config.services", [{"internal_port": 5432, "ports": "5432"}]),
        (LIST, "machines[2].config.services[0].ports"),
    ),
    BadAnswer("graphql-not-json", _app("", NOT_JSON), (APP_QUERY, "not JSON")),
    BadAnswer("graphql-data-a-string", _app("data", "x"), (APP_QUERY, "data is a string")),
    BadAnswer(
        "ip-nodes-null",
        _app("data.app.ipAddresses.nodes", None),
        (APP_QUERY, "data.app.ipAddresses.nodes is null", "expected a list"),
    ),
    BadAnswer(
        "ip-address-a-number",
        _app("data.app.ipAddresses.nodes", [{"id": "ip_1", "address": 7, "type": "v4"}]),
        (APP_QUERY, "data.app.ipAddresses.nodes[0].address is a number"),
    ),
    BadAnswer(
        "lease-without-nonce",
        _lease("data.nonce", ABSENT),
        (LEASE, "/lease", "lease.data.nonce is missing"),
        planned=True,
    ),
    BadAnswer(
        "lease-data-a-string",
        _lease("data", "x"),
        (LEASE, "/lease", "lease.data is a string"),
        planned=True,
    ),
]


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    return flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=False,
        public_port_map={5432: 0, 5433: 0},
    )


def run(sim: Simulator, tmp_path: Path, case: BadAnswer) -> ActionResult:
    case.arm(sim)
    result = run_inprocess(sim, tmp_path, {"app": APP}, {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"})
    assert [r.fault for r in sim.requests].count("malformed") == 1, "the fault did not fire"
    return result


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_answer_stops_the_run_with_outputs_and_a_named_request(
    case: BadAnswer, sim: Simulator, tmp_path: Path
) -> None:
    result = run(sim, tmp_path, case)
    assert result.code == 1, result.log
    assert "Unexpected error" not in result.log, result.log
    assert "Traceback" not in result.log, result.log
    errors = [e for e in result.errors() if all(n in e for n in case.names)]
    assert errors, result.log
    assert "Fly API error" in errors[0]
    assert len(errors[0]) < 700, errors[0]  # a field named, not the answer quoted
    assert set(result.outputs) == OUTPUTS, result.outputs
    assert result.outputs["database-url"] == "" and result.outputs["password"] == ""
    assert result.outputs["exposed"] == "false"
    assert result.outputs["changed"] == "false"
    if not case.planned:
        assert sim.mutating_requests() == [], "a run that could not read the app changed it"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id)
        for c in CASES
        if c.id in {"list-not-json", "ip-nodes-null", "lease-without-nonce"}
    ],
)
def test_a_bad_answer_is_in_the_job_summary(
    case: BadAnswer, sim: Simulator, tmp_path: Path
) -> None:
    result = run(sim, tmp_path, case)
    assert result.code == 1, result.log
    assert result.summary.startswith("### ❌ Failed:"), result.summary
    assert all(name in result.summary for name in case.names), result.summary
