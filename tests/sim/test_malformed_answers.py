"""The `malformed` fault: the request is carried out, then answered 200 with a body a client must
not trust (flysim.malformed), on the next matching successful requests only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flysim import ABSENT, NOT_JSON, Simulator
from flysim.malformed import CUT_SHORT, body, parse_value

GraphQL = Callable[..., httpx.Response]
APP_QUERY = '{ app(name: "my-db") { id ipAddresses { nodes { id address } } } }'


def test_the_default_is_a_json_answer_cut_short(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.malformed_next(1, method="GET", path="/v1/apps/my-db/machines")
    answer = rest.get("/machines")
    assert answer.status_code == 200 and answer.content == CUT_SHORT
    with pytest.raises(ValueError):
        answer.json()
    assert len(rest.get("/machines").json()) == 3  # one answer only
    assert [r.fault for r in sim.requests] == ["malformed", None]
    assert sim.faults.pending == []


def test_a_value_is_put_at_a_path_into_the_answer(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.malformed_next(1, at="1.config", value=[], path_contains="/machines")
    machines = rest.get("/machines").json()
    assert machines[1]["config"] == [] and isinstance(machines[0]["config"], dict)
    assert sim.requests[-1].response[1]["config"] == []  # the log has what was sent


def test_a_write_is_carried_out_before_its_answer_is_spoiled(
    sim: Simulator, rest: httpx.Client
) -> None:
    target = sim.app("my-db").machines[0].id
    sim.faults.malformed_next(1, at="data.nonce", value=ABSENT, method="POST")
    answer = rest.post(f"/machines/{target}/lease", json={"ttl": 30})
    assert answer.status_code in (200, 201)
    assert "nonce" not in answer.json()["data"]
    assert sim.app("my-db").machine(target).active_lease() is not None  # granted all the same


def test_a_failed_request_keeps_the_fault_armed(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.malformed_next(1, method="POST", path_contains="/lease")
    assert rest.post("/machines/nope/lease", json={"ttl": 30}).status_code == 404
    assert [r.kind for r in sim.faults.pending] == ["malformed"]


def test_a_graphql_operation_can_be_targeted(sim: Simulator, gql: GraphQL) -> None:
    sim.faults.malformed_next(1, at="data.app.ipAddresses.nodes", value=None, operation="app")
    assert gql(APP_QUERY).json()["data"]["app"]["ipAddresses"]["nodes"] is None
    assert isinstance(gql(APP_QUERY).json()["data"]["app"]["ipAddresses"]["nodes"], list)


@pytest.mark.parametrize(
    ("text", "value"),
    [("not-json", NOT_JSON), ("absent", ABSENT), ("42", 42), ('"x"', "x"), ("null", None)],
)
def test_the_command_line_spells_values_as_json_or_a_keyword(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_an_empty_body_and_a_whole_body() -> None:
    assert body({"a": 1}, "", ABSENT) == (b"", None)
    assert body({"a": 1}, "", "x") == (b'"x"', "x")
    assert body({"a": [1, 2]}, "a.1", ABSENT) == (b'{"a": [1]}', {"a": [1]})
