"""Text the action does not control must not become a workflow command in its log.

App data and error messages come from Fly's API; lease owners from whoever holds a lease; the
connection string from the workflow. Each case plants workflow commands in such text — the
current syntax after a newline (`\\n::set-output ...`) and the legacy one the runner still honours
anywhere in a line (`##[set-output ...]`) — runs the action, and parses its log the way the runner
does (tests/helpers/workflow_log.py): no command may come out of the planted text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import workflow_log
from reliability_runs import checked

from flysim import Simulator

from action_run import TOKEN
from machines_data import machine

GROUP = "Untrusted text"
APP = "my-db"
V2 = "\n::set-output name=database-url::postgres://attacker@evil.example.com/x"
V1 = " ##[set-output name=database-url;]postgres://attacker@evil.example.com/x"
PAYLOADS = {"v2-newline": V2, "v1-inline": V1}
LEGACY_FINDING = pytest.mark.finding(6)  # the legacy syntax was not fenced


def payload_params() -> list[Any]:
    return [
        pytest.param(V2, id="v2-newline"),
        pytest.param(V1, id="v1-inline", marks=LEGACY_FINDING),
    ]


def assert_nothing_injected(result: Any, scenario: Any) -> None:
    """`checked` already refused any injected command; say what the parser saw for the doc."""
    parsed = workflow_log.parse(result.stdout)
    fenced = len(parsed.fenced)
    scenario.outcome = f"exit {result.code}; no command issued from the planted text" + (
        f" ({fenced} command-looking line(s) fenced by ::stop-commands::)" if fenced else ""
    )
    scenario.add("injection_attempts")


# -- the parser the checks rely on ---------------------------------------------------------------

RUNNER_CASES = {
    "::set-output name=a::1": ["set-output"],
    "   \t::SET-OUTPUT name=a::1": ["set-output"],  # leading white space, any case
    "text ##[set-output name=a;]1": ["set-output"],  # legacy syntax, anywhere in a line
    "text ::set-output name=a::1": [],  # the current syntax only at a line start
    "a\r::add-path::/tmp": ["add-path"],  # CR ends a line
    "::stop-commands::t1\n::set-output name=a::1\n##[save-state name=b;]2\n::t1::": [
        "stop-commands"
    ],
    "::unknown-cmd::x": [],
    "::error::a%0A::set-output name=a::1": ["error"],  # escaped newline stays in the message
}


def test_runner_parser_recognises_what_the_runner_runs(scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "runner parser self-test",
        injected=f"{len(RUNNER_CASES)} log snippets: both command syntaxes, white space, case, "
        "CR line ends, stop-commands, unknown names, escaped newlines",
        checked="the suite's parser issues exactly the commands actions/runner would",
    )
    for text, expected in RUNNER_CASES.items():
        assert [c.name for c in workflow_log.parse(text).commands] == expected, text
    scenario.outcome = f"{len(RUNNER_CASES)}/{len(RUNNER_CASES)} snippets parsed as the runner does"


# -- a Fly API that answers with hostile text -------------------------------------------------


class HostileFly:
    """GraphQL and Machines API answers chosen by the test, on one loopback port."""

    def __init__(self) -> None:
        self.graphql: tuple[int, Any] = (200, {"data": {"app": None}})
        self.machines: tuple[int, Any] = (200, [])
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(*owner.graphql)

            def do_GET(self) -> None:
                self._send(*owner.machines)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileFly]:
    fly = HostileFly()
    yield fly
    fly.close()


class _NoSim:
    """What action_run needs of a simulator: the two base URLs."""

    def __init__(self, url: str) -> None:
        self.api_base_url = self.flaps_base_url = url


def app_data(*, address: str = "203.0.113.7", role: str = "postgres_cluster") -> dict[str, Any]:
    return {
        "data": {
            "app": {
                "id": APP,
                "name": APP,
                "role": {"name": role},
                "ipAddresses": {
                    "nodes": [
                        {
                            "id": "ip_1",
                            "address": address,
                            "type": "v4",
                            "region": "global",
                            "createdAt": "2024-01-01T00:00:00Z",
                        }
                    ]
                },
                "sharedIpAddress": None,
            }
        }
    }


ERRORS = {
    "graphql-error": lambda p: ((200, {"errors": [{"message": "boom" + p}]}), (200, [])),
    "graphql-401": lambda p: ((401, {"errors": [{"message": "token expired" + p}]}), (200, [])),
    "machines-500": lambda p: ((200, app_data()), (500, {"error": "flaps broke" + p})),
    # A value of the wrong type is quoted (short) in the error that names it.
    "wrong-type": lambda p: ((200, app_data()), (200, [{"id": "m1", "config": "x" + p}])),
}


@pytest.mark.parametrize("source", list(ERRORS))
@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_api_error_message_cannot_issue_commands(
    source: str, payload: str, hostile: HostileFly, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        f"API error text ({source})",
        injected=f"workflow commands in Fly's error message: {payload.strip()[:34]!r}…",
        checked="exit 1 with an ::error::; the runner's parser finds no command from the text",
    )
    hostile.graphql, hostile.machines = ERRORS[source](payload)
    result = checked(_NoSim(hostile.url), tmp_path, {"app": APP})
    assert result.code == 1, result.log
    assert result.errors(), result.log
    assert_nothing_injected(result, scenario)


@pytest.mark.parametrize("payload", payload_params())
def test_api_data_cannot_issue_commands(
    payload: str, hostile: HostileFly, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "API data (addresses, machine fields)",
        injected=f"commands in an IP address, a machine's region, image and role check: "
        f"{payload.strip()[:30]!r}…",
        checked="the action prints the state it read; no command comes out of it",
    )
    m = machine("148e21ea7e5d89", "primary")
    m["region"] = "iad" + payload
    m["config"]["image"] += payload
    m["checks"][0]["output"] = "primary" + payload
    hostile.graphql = (200, app_data(address="203.0.113.7" + payload))
    hostile.machines = (200, [m])
    result = checked(_NoSim(hostile.url), tmp_path, {"app": APP, "ip-versions": "v4"})
    assert "203.0.113.7" in result.stdout  # the hostile data was printed
    assert_nothing_injected(result, scenario)


# -- hostile text through the simulator ---------------------------------------------------------


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    return flysim(
        apps={APP: {"machines": 3, "public_v4": True, "public_v6": True}},
        postgres=False,
        public_port_map={5432: 0, 5433: 0},
    )


def test_lease_owner_cannot_issue_commands(sim: Simulator, tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "lease owner",
        injected="a lease held by an owner named with both command syntaxes",
        checked="exit 1 'leased by someone else'; no command comes out of the owner's name",
    )
    victim = sim.app(APP).machines[0].id
    sim.hold_lease(APP, victim, owner="ops@example.com" + V2 + V1, ttl=60)
    result = checked(sim, tmp_path, {"app": APP, "postgres-image": "major"})
    assert result.code == 1
    assert any("leased by someone else" in e for e in result.errors()), result.log
    assert_nothing_injected(result, scenario)


@pytest.mark.parametrize("payload", payload_params())
def test_machine_image_set_through_the_api_cannot_issue_commands(
    payload: str, sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "machine image from the Machines API",
        injected=f"a machine config whose image carries {payload.strip()[:30]!r}…, written "
        "through the Machines API",
        checked="the run prints the machine's image; no command comes out of it",
    )
    target = sim.app(APP).machines[0]
    config = dict(target.config)
    config["image"] = str(config["image"]) + payload
    response = httpx.post(
        f"{sim.flaps_base_url}/v1/apps/{APP}/machines/{target.id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"config": config, "region": target.region},
    )
    assert response.status_code == 200, response.text
    assert sim.wait_for(lambda: all(m.healthy for m in sim.app(APP).machines), 10)
    result = checked(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    assert "attacker@evil.example.com" in result.stdout  # printed, as text
    assert_nothing_injected(result, scenario)


@pytest.mark.parametrize(
    "user",
    [
        pytest.param("app_user\n::set-output name=changed::pwned", id="v2-newline"),
        pytest.param(
            "app_user ##[set-output name=changed;]pwned", id="v1-inline", marks=LEGACY_FINDING
        ),
    ],
)
def test_database_url_cannot_issue_commands(
    user: str, sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "database-url user name",
        injected=f"commands in the user part of database-url: {user[8:40]!r}…",
        checked="refused, or the redacted URL printed as text; no command comes out of it",
    )
    result = checked(
        sim,
        tmp_path,
        {"app": APP, "database-url": f"postgres://{user}:pw0rd-abc@{APP}.flycast:5432/app_db"},
    )
    if result.code != 0:
        assert any('Input "database-url"' in e for e in result.errors()), result.log
    else:
        assert "URL: postgres://app_user" in result.stdout  # printed, as text
    assert_nothing_injected(result, scenario)
