"""Reading Fly's answers (fly/shape.py and its readers in fly/machines.py and fly/graphql.py):
a wrong shape is a FlyBadAnswer naming the request and the field, never a KeyError or TypeError,
and a well-formed answer reads as it always did."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fly_pg_external.errors import FlyBadAnswer, FlyError, FlyNotFound
from fly_pg_external.fly.graphql import GraphQL
from fly_pg_external.fly.http import FlyHttp, RetryPolicy
from fly_pg_external.fly.machines import Machines, machine_from_api
from fly_pg_external.fly.shape import (
    DEPTH_MAX,
    MISSING,
    QUOTE_MAX,
    Where,
    check_depth,
    check_table,
    describe,
    objects,
    want_int,
    want_object,
    want_opt_str,
    want_str,
)
from fly_pg_external.flytoken import parse_token

from machines_data import machine

HERE = Where("GET /v1/apps/a/machines", "machines", 200, "req-1")
BASE = "http://fly.test"
AUTH = parse_token("Bearer fo1_unit_test_token")


# -- the helpers -----------------------------------------------------------------------------


def test_a_place_is_a_path_into_the_answer() -> None:
    assert HERE.at(1).at("config").at("services").at(0).path == "machines[1].config.services[0]"
    assert Where("POST /graphql").at("data").at("app").path == "data.app"


def test_the_error_names_the_request_the_field_and_what_was_expected() -> None:
    error = HERE.at(1).at("config").unexpected([], "an object")
    assert isinstance(error, FlyBadAnswer)
    assert (
        error.message == "GET /v1/apps/a/machines: machines[1].config is a list, expected an object"
    )
    assert str(error).endswith("(HTTP 200) [fly-request-id req-1]")
    assert error.hint and "Re-run" in error.hint
    assert Where("POST /graphql").wrong("is odd").message == "POST /graphql: the answer is odd"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (MISSING, "missing"),
        (None, "null"),
        (True, "a boolean (true)"),
        (42, "a number (42)"),
        (1.5, "a number (1.5)"),
        ("x", 'a string ("x")'),
        ("a\n::set-output name=x::y", 'a string ("a\\n::set-output name=x::y")'),
        ([1], "a list"),
        ({"a": 1}, "an object"),
    ],
)
def test_a_value_is_described_by_its_json_type(value: Any, said: str) -> None:
    assert describe(value) == said


def test_a_long_value_is_quoted_short() -> None:
    said = describe("fo1_" + "x" * 500)
    assert len(said) <= QUOTE_MAX + len("a string ()") and said.endswith("…)")


def test_field_readers_take_absent_and_null_as_empty_and_refuse_other_types() -> None:
    obj: dict[str, Any] = {"s": "v", "n": None, "i": 3, "b": True, "o": {"k": 1}, "e": ""}
    assert want_str(obj, "s", HERE) == "v"
    assert want_str(obj, "n", HERE) == want_str(obj, "absent", HERE) == ""
    assert want_opt_str(obj, "n", HERE) is None
    assert want_int(obj, "i", HERE) == 3 and want_int(obj, "n", HERE) is None
    assert want_object(obj, "o", HERE) == {"k": 1}
    assert want_object(obj, "n", HERE, optional=True) == {}
    with pytest.raises(FlyBadAnswer, match=r"machines\.i is a number \(3\), expected a string"):
        want_str(obj, "i", HERE)
    with pytest.raises(FlyBadAnswer, match=r"machines\.b is a boolean \(true\), expected an int"):
        want_int(obj, "b", HERE)
    with pytest.raises(FlyBadAnswer, match=r"machines\.e is a string \(\"\"\), expected a non-emp"):
        want_str(obj, "e", HERE, required=True)
    with pytest.raises(FlyBadAnswer, match=r"machines\.absent is missing, expected an object"):
        want_object(obj, "absent", HERE)


def test_objects_names_the_item_that_is_not_one() -> None:
    assert [w.path for w, _ in objects([{}, None, {}], HERE, skip_null=True)] == [
        "machines[0]",
        "machines[2]",
    ]
    with pytest.raises(FlyBadAnswer, match=r"machines\[1\] is null, expected an object"):
        list(objects([{}, None], HERE))


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_deeper_than_the_limit_is_refused_without_recursing() -> None:
    check_depth(nested(DEPTH_MAX), HERE)
    with pytest.raises(FlyBadAnswer, match=f"nests deeper than {DEPTH_MAX} levels"):
        check_depth(nested(DEPTH_MAX + 1), HERE)
    with pytest.raises(FlyBadAnswer):
        check_depth(nested(100_000), HERE)  # would overflow a recursive walk


def test_a_table_may_leave_a_value_null_but_not_a_value_inside_one() -> None:
    check_table({"a": None, "b": [1, {"c": 2}]}, HERE)
    with pytest.raises(FlyBadAnswer, match=r"machines\.b\[1\]\.c is null, expected a value"):
        check_table({"b": [1, {"c": None}]}, HERE)


# -- machines --------------------------------------------------------------------------------


def test_a_well_formed_machine_reads_as_before() -> None:
    data = machine("m1", "primary")
    data["checks"].append({"name": "bg_deployments_compat_x", "status": "passing"})
    m = machine_from_api(data)
    assert (m.id, m.region, m.state, m.instance_id, m.host_status) == (
        "m1",
        "iad",
        "started",
        "01HQ73A7BFFDF1B6WMGHFZZ4E7",
        "ok",
    )
    assert m.config == data["config"] and m.config is not data["config"]
    assert m.role == "primary" and [c["name"] for c in m.checks] == ["role", "pg", "vm"]


def test_an_unreachable_hosts_incomplete_config_is_read() -> None:
    data = machine("m1")
    data["incomplete_config"] = data.pop("config")
    data["host_status"] = "unreachable"
    m = machine_from_api(data)
    assert m.config == data["incomplete_config"] and not m.reachable


Change = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Change:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value

    return change


BAD_MACHINES = {
    "id a number": (_set("id", 42), "machine.id is a number (42), expected a string"),
    "state an int": (_set("state", 3), "machine.state is a number (3)"),
    "config a list": (_set("config", []), "machine.config is a list, expected an object"),
    "incomplete_config a string": (
        _set("incomplete_config", "x"),
        "machine.incomplete_config is a string",
    ),
    "image a number": (_set("config.image", 1), "machine.config.image is a number"),
    "metadata a list": (_set("config.metadata", ["x"]), "machine.config.metadata is a list"),
    "metadata value a number": (
        _set("config.metadata.fly_process_group", 1),
        "machine.config.metadata.fly_process_group is a number",
    ),
    "env value a list": (_set("config.env.PRIMARY_REGION", []), "config.env.PRIMARY_REGION"),
    "init cmd a number": (_set("config.init", {"cmd": 5}), "machine.config.init.cmd is a number"),
    "services a string": (_set("config.services", "x"), "machine.config.services is a string"),
    "service a list": (_set("config.services.0", []), "machine.config.services[0] is a list"),
    "ports an object": (_set("config.services.0.ports", {}), "services[0].ports is an object"),
    "start_port a string": (
        _set("config.services.0.ports.0.start_port", "5432"),
        "services[0].ports[0].start_port is a string",
    ),
    "handlers a string": (
        _set("config.services.0.ports.0.handlers", "tls"),
        "services[0].ports[0].handlers is a string",
    ),
    "handler a number": (
        _set("config.services.0.ports.0.handlers", [1]),
        "services[0].ports[0].handlers[0] is a number",
    ),
    "null inside concurrency": (
        _set("config.services.0.concurrency", {"limits": {"soft": None}}),
        "services[0].concurrency.limits.soft is null",
    ),
    "config checks a list": (_set("config.checks", []), "machine.config.checks is a list"),
    "mount name a number": (_set("config.mounts.0.name", 1), "config.mounts[0].name is a number"),
    "metrics a list": (_set("config.metrics", [None]), "machine.config.metrics is a list"),
    "checks a string": (_set("checks", "x"), 'machine.checks is a string ("x"), expected a list'),
    "check a string": (_set("checks.0", "x"), "machine.checks[0] is a string"),
    "config too deep": (_set("config.files", nested(100)), "machine.config nests deeper"),
}


@pytest.mark.parametrize("case", list(BAD_MACHINES), ids=list(BAD_MACHINES))
def test_a_machine_of_the_wrong_shape_names_the_field(case: str) -> None:
    change, expected = BAD_MACHINES[case]
    data = machine("m1")
    change(data)
    with pytest.raises(FlyBadAnswer) as raised:
        machine_from_api(data)
    assert expected in raised.value.message


# -- whole answers, through the HTTP client ---------------------------------------------------


Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def clients(answer: Answer) -> tuple[Machines, GraphQL]:
    def handler(request: httpx.Request) -> httpx.Response:
        return answer(request) if callable(answer) else answer

    http = FlyHttp(retry=RetryPolicy(attempts=1), transport=httpx.MockTransport(handler))
    return Machines(http, BASE, AUTH), GraphQL(http, BASE, AUTH)


def raw(body: str, status: int = 200, content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(status, content=body.encode(), headers={"content-type": content_type})


def test_a_body_that_is_not_json_names_the_request_not_the_body() -> None:
    page = "<html>" + "secret-looking fo1_" + "x" * 5000 + "</html>"
    machines, graphql = clients(raw(page, content_type="text/html"))
    with pytest.raises(FlyBadAnswer) as raised:
        machines.list("my-db")
    message = raised.value.message
    assert message.startswith("GET /v1/apps/my-db/machines answered with a body that is not JSON")
    assert "text/html" in message and "fo1_" not in message and len(message) < 200
    with pytest.raises(FlyBadAnswer, match=r"^GraphQL query app \(POST /graphql\) answered with"):
        graphql.get_app("my-db")


def test_json_nested_past_the_parsers_limit_is_not_json() -> None:
    machines, _ = clients(raw("[" * 100_000 + "]" * 100_000))
    with pytest.raises(FlyBadAnswer, match="not JSON"):
        machines.list("my-db")


def test_a_well_formed_machine_list_reads_as_before() -> None:
    data = [machine("m1", "primary"), machine("m2")]
    machines, _ = clients(httpx.Response(200, json=data))
    assert [m.id for m in machines.list("my-db")] == ["m1", "m2"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"machines": []}, "GET /v1/apps/my-db/machines: machines is an object, expected a list"),
        ([machine("m1"), None], "machines[1] is null, expected an object"),
        ([machine("m1"), {**machine("m2"), "config": []}], "machines[1].config is a list"),
    ],
)
def test_a_machine_list_of_the_wrong_shape(body: Any, expected: str) -> None:
    machines, _ = clients(httpx.Response(200, json=body))
    with pytest.raises(FlyBadAnswer) as raised:
        machines.list("my-db")
    assert expected in raised.value.message


LEASE_PATH = "POST /v1/apps/my-db/machines/m1/lease: "


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "success", "data": {"owner": "x"}}, "lease.data.nonce is missing"),
        ({"status": "success", "data": {"nonce": ""}}, 'lease.data.nonce is a string ("")'),
        ({"status": "success", "data": "x"}, "lease.data is a string"),
        ({"status": "success"}, "lease.data is missing"),
        ({"status": "success", "data": {"nonce": "n", "expires_at": "soon"}}, "expires_at"),
        ({"data": {"nonce": "n"}}, 'lease.status is missing, expected "success"'),
        ([], "lease is a list, expected an object"),
    ],
)
def test_a_lease_of_the_wrong_shape(body: Any, expected: str) -> None:
    machines, _ = clients(httpx.Response(200, json=body))
    with pytest.raises(FlyBadAnswer) as raised:
        machines.acquire_lease("my-db", "m1", 30)
    assert raised.value.message.startswith(LEASE_PATH)
    assert expected in raised.value.message


def test_a_lease_refused_in_a_200_carries_flys_message_short() -> None:
    machines, _ = clients(httpx.Response(200, json={"status": "error", "message": "no" * 200}))
    with pytest.raises(FlyError) as raised:
        machines.acquire_lease("my-db", "m1", 30)
    assert not isinstance(raised.value, FlyBadAnswer)
    assert raised.value.message.startswith("lease on machine m1 refused: nono")
    assert len(raised.value.message) < 120


def test_a_lease_reads_as_before() -> None:
    data = {"nonce": "n1", "expires_at": 1700000000, "owner": "ci@example.com", "version": "v"}
    machines, _ = clients(httpx.Response(200, json={"status": "success", "data": data}))
    lease = machines.acquire_lease("my-db", "m1", 30)
    assert (lease.nonce, lease.expires_at, lease.owner, lease.version) == (
        "n1",
        1700000000,
        "ci@example.com",
        "v",
    )


def test_the_wait_endpoint_may_not_say_the_state_but_must_not_say_it_wrong() -> None:
    def wait(body: Any) -> str | None:
        machines, _ = clients(httpx.Response(200, json=body))
        return machines.wait("my-db", "m1", states=["started"], version="v", timeout=10)

    assert wait({"ok": True}) is None and wait({"state": "started"}) == "started"
    with pytest.raises(FlyBadAnswer, match=r"/wait: wait\.state is a number"):
        wait({"state": 1})
    with pytest.raises(FlyBadAnswer, match=r"/wait: wait is a list"):
        wait([])


# -- GraphQL ---------------------------------------------------------------------------------


def app_answer() -> dict[str, Any]:
    node = {"id": "ip1", "address": "203.0.113.7", "type": "v4", "region": "global"}
    return {
        "data": {
            "app": {
                "id": "app1",
                "name": "my-db",
                "role": {"name": "postgres_cluster"},
                "ipAddresses": {"nodes": [{**node, "createdAt": "2024-01-01T00:00:00Z"}]},
                "sharedIpAddress": None,
            }
        }
    }


def test_an_app_reads_as_before() -> None:
    _, graphql = clients(httpx.Response(200, json=app_answer()))
    app = graphql.get_app("my-db")
    assert (app.id, app.name, app.role, app.shared_ipv4) == (
        "app1",
        "my-db",
        "postgres_cluster",
        None,
    )
    assert [(ip.address, ip.type, ip.created_at) for ip in app.ips] == [
        ("203.0.113.7", "v4", "2024-01-01T00:00:00Z")
    ]


def _app_with(path: str, value: Any) -> dict[str, Any]:
    answer = app_answer()
    _set(path, value)(answer)
    return answer


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "the answer is a list, expected an object"),
        ({"data": "x"}, 'data is a string ("x"), expected an object'),
        ({"errors": "boom"}, 'errors is a string ("boom"), expected a list'),
        ({"errors": ["boom"]}, 'errors[0] is a string ("boom"), expected an object'),
        ({"errors": [{"message": 1}]}, "errors[0].message is a number"),
        ({"errors": []}, "data is missing, expected an object"),
        (_app_with("data.app", "my-db"), "data.app is a string"),
        (_app_with("data.app.ipAddresses.nodes", None), "data.app.ipAddresses.nodes is null"),
        (_app_with("data.app.ipAddresses", None), "data.app.ipAddresses is null"),
        (_app_with("data.app.ipAddresses.nodes.0.address", 7), "nodes[0].address is a number"),
        (_app_with("data.app.role", "postgres"), "data.app.role is a string"),
        (_app_with("data.app.sharedIpAddress", 1), "data.app.sharedIpAddress is a number"),
    ],
)
def test_an_app_answer_of_the_wrong_shape(body: Any, expected: str) -> None:
    _, graphql = clients(httpx.Response(200, json=body))
    with pytest.raises(FlyBadAnswer) as raised:
        graphql.get_app("my-db")
    assert raised.value.message.startswith("GraphQL query app (POST /graphql): ")
    assert expected in raised.value.message


def test_a_missing_app_and_graphql_errors_keep_their_meaning() -> None:
    _, graphql = clients(httpx.Response(200, json={"data": {"app": None}}))
    with pytest.raises(FlyNotFound):
        graphql.get_app("my-db")
    _, graphql = clients(httpx.Response(200, json={"errors": [{"message": "Could not find App"}]}))
    with pytest.raises(FlyNotFound):
        graphql.get_app("my-db")


def test_an_allocation_of_the_wrong_shape_names_the_mutation() -> None:
    ip = app_answer()["data"]["app"]["ipAddresses"]["nodes"][0]
    good = {"allocateIpAddress": {"ipAddress": ip, "app": {"ipAddresses": {"nodes": [ip]}}}}
    _, graphql = clients(httpx.Response(200, json={"data": good}))
    new, listed = graphql.allocate_ip("my-db", "v4")
    assert new.address == "203.0.113.7" and [i.address for i in listed] == ["203.0.113.7"]
    bad = copy.deepcopy(good)
    bad["allocateIpAddress"]["ipAddress"] = None
    _, graphql = clients(httpx.Response(200, json={"data": bad}))
    with pytest.raises(FlyBadAnswer) as raised:
        graphql.allocate_ip("my-db", "v4")
    assert raised.value.message == (
        "GraphQL mutation allocateIpAddress (POST /graphql): "
        "data.allocateIpAddress.ipAddress is null, expected an object"
    )


def test_no_answer_is_quoted_whole() -> None:
    """Whatever the answer holds, the message stays short: fields are named, values clipped."""
    big = "fo1_" + "y" * 10_000
    answers: list[Any] = [
        [{**machine("m1"), "config": big}],
        [{**machine("m1"), "checks": [big]}],
        [{**machine("m1"), "host_status": {"a": big}}],
    ]
    for body in answers:
        machines, _ = clients(raw(json.dumps(body)))
        with pytest.raises(FlyBadAnswer) as raised:
            machines.list("my-db")
        assert len(str(raised.value)) < 250, str(raised.value)
