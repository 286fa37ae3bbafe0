"""Bad input table: malformed values for every input and environment variable the action reads.

Each row is one `python entrypoint.py` run. Every one must end with exit 1 and a clear
`::error::` naming the problem (the input, or what Fly said), before any mutating request, with
nothing leaked and no workflow command injected by the value itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_runs import SECRETS, checked

from flysim import Simulator

GROUP = "Bad input"
APP = "my-db"
INJECT_V2 = "\n::set-output name=database-url::postgres://attacker@evil.example.com/x"
INJECT_MASK = "\n::add-mask::my-db"
HUGE = 5000


@dataclass(frozen=True)
class Bad:
    id: str
    field: str  # the input or variable that is wrong
    expect: str  # in the ::error:: line
    inputs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret: bool = False  # the value is a credential: it must not be echoed either
    shown: str = ""  # how the report describes the value (credentials are not shown)


def url(rest: str) -> str:
    return f"postgres://app_user:pw0rd-abc@{rest}"


CASES = [
    # -- the Fly token (input and environment) ---------------------------------------------------
    Bad("token-missing", "fly-api-token", "no Fly API token", {"fly-api-token": ""}),
    Bad("token-blank", "fly-api-token", "no Fly API token", {"fly-api-token": "  \t "}),
    Bad(
        "token-wrong",
        "fly-api-token",
        "refused the API token",
        {"fly-api-token": "fo1_wrongtoken_9f8e7d6c5b4a3210"},
        secret=True,
        shown="a well-formed token Fly does not accept",
    ),
    Bad(
        "token-garbled",
        "fly-api-token",
        "does not look like a Fly token",
        {"fly-api-token": 'fo1_abc "def" ghi'},
        secret=True,
        shown="a token with quotes and spaces",
    ),
    Bad("token-scheme-only", "fly-api-token", "is empty", {"fly-api-token": "FlyV1 "}),
    Bad(
        "token-injection",
        "fly-api-token",
        "does not look like a Fly token",
        {"fly-api-token": "fo1_simulatortoken_0123456789" + INJECT_V2},
        secret=True,
        shown="the right token + '\\n::set-output name=database-url::…'",
    ),
    Bad(
        "env-FLY_API_TOKEN",
        "FLY_API_TOKEN",
        'Input "FLY_API_TOKEN"',
        {"fly-api-token": ""},
        {"FLY_API_TOKEN": "not a token; rm -rf /"},
        secret=True,
        shown="'not a token; rm -rf /' (input empty)",
    ),
    Bad(
        "env-FLY_ACCESS_TOKEN",
        "FLY_ACCESS_TOKEN",
        'Input "FLY_ACCESS_TOKEN"',
        {"fly-api-token": ""},
        {"FLY_ACCESS_TOKEN": "fo1_abc\tdef"},
        secret=True,
        shown="a token with a tab in it (input empty)",
    ),
    # -- app ------------------------------------------------------------------------------------
    Bad("app-missing", "app", "is required", {"app": ""}),
    Bad("app-uppercase", "app", "is not a Fly app name", {"app": "My-DB"}),
    Bad(
        "app-set-output",
        "app",
        "is not a Fly app name",
        {"app": "my-db::set-output name=changed::pwned"},
    ),
    Bad("app-newline-add-mask", "app", "control character", {"app": "my-db" + INJECT_MASK}),
    Bad("app-huge", "app", "at most 4096", {"app": "a" * HUGE}),
    Bad("app-unknown", "app", "was not found", {"app": "nope-db"}),
    Bad("app-not-postgres", "app", "is not a Fly Postgres app", {"app": "web"}),
    # -- the other inputs -------------------------------------------------------------------------
    Bad("ip-shared-v4", "ip-versions", "shared IPv4", {"ip-versions": "v4,shared-v4"}),
    Bad("ip-unknown", "ip-versions", "is not accepted", {"ip-versions": "v5"}),
    Bad("ip-empty", "ip-versions", "is empty", {"ip-versions": " , "}),
    Bad("host-scheme", "host", "is not a hostname", {"host": "https://db.example.com"}),
    Bad("host-port", "host", "is not a hostname", {"host": "db.example.com:5433"}),
    Bad("host-ipv6", "host", "is not a hostname", {"host": "[2001:db8::1]"}),
    Bad("host-injection", "host", "control character", {"host": "db.example.com" + INJECT_V2}),
    Bad("host-huge", "host", "at most 4096", {"host": "a." * (HUGE // 2)}),
    Bad("port-zero", "port", "is not a port number", {"port": "0"}),
    Bad("port-too-big", "port", "is not a port number", {"port": "65536"}),
    Bad("port-proto", "port", "is not a port number", {"port": "5432/tcp"}),
    Bad("port-superscript", "port", "is not a port number", {"port": "\u00b2"}),
    Bad("port-arabic-digits", "port", "is not a port number", {"port": "\u0665\u0664\u0663\u0662"}),
    Bad("sslmode-disable", "sslmode", "is not accepted", {"sslmode": "disable"}),
    Bad("mode-unknown", "mode", "is not accepted", {"mode": "deploy"}),
    # lifetime, addresses, max-age: the row's first input is the value under test
    Bad(
        "lifetime-forever",
        "lifetime",
        "Input \"lifetime\": 'forever' is not accepted",
        {"lifetime": "forever"},
    ),
    Bad(
        "lifetime-job-unexpose",
        "lifetime",
        'Input "lifetime": job applies to mode expose',
        {"lifetime": "job", "mode": "unexpose"},
    ),
    Bad(
        "addresses-not-an-ip",
        "addresses",
        "Input \"addresses\": 'not-an-ip' is not an IP address",
        {"addresses": "not-an-ip", "mode": "unexpose"},
    ),
    Bad(
        "addresses-mode-expose",
        "addresses",
        'Input "addresses": names addresses to release, which only mode unexpose does',
        {"addresses": "137.66.1.2", "mode": "expose"},
    ),
    Bad(
        "addresses-not-the-apps",
        "addresses",
        'Input "addresses": 203.0.113.9 is not a public address of app my-db',
        {"addresses": "203.0.113.9", "mode": "unexpose"},
    ),
    Bad("max-age-zero", "max-age", "Input \"max-age\": '0' is not accepted", {"max-age": "0"}),
    Bad(
        "max-age-weeks",
        "max-age",
        "Input \"max-age\": '7 weeks' is not accepted",
        {"max-age": "7 weeks", "mode": "sweep"},
    ),
    Bad(
        "max-age-over-a-year",
        "max-age",
        "Input \"max-age\": '400d' is not accepted",
        {"max-age": "400d", "mode": "sweep"},
    ),
    Bad("dry-run-yes", "dry-run", "is not a boolean", {"dry-run": "yes"}),
    Bad("postgres-image-latest", "postgres-image", "is not accepted", {"postgres-image": "latest"}),
    Bad("wait-timeout-zero", "wait-timeout", "is not accepted", {"wait-timeout": "0"}),
    Bad("wait-timeout-nan", "wait-timeout", "is not accepted", {"wait-timeout": "nan"}),
    Bad("verify-maybe", "verify", "is not a boolean", {"verify": "maybe"}),
    Bad("pr-comment-1", "pr-comment", "is not a boolean", {"pr-comment": "1"}),
    Bad("mode-plan", "mode", "set dry-run: true", {"mode": "plan"}),
    Bad(
        "sslrootcert-system-verify-ca",
        "sslrootcert",
        "only with sslmode verify-full",
        {"sslmode": "verify-ca"},
    ),
    Bad(
        "sslrootcert-injected",
        "sslrootcert",
        "is not accepted",
        {"sslmode": "verify-full", "sslrootcert": "/ca.pem&sslmode=disable"},
    ),
    Bad(
        "require-exposed-renamed",
        "require-exposed",
        "replaced by mode: connect",
        {"require-exposed": "true", "mode": "expose"},
    ),
    Bad("pr-number-text", "pr-number", "not a pull request number", {"pr-number": "12; rm"}),
    Bad("pr-number-superscript", "pr-number", "not a pull request number", {"pr-number": "\u00b2"}),
    Bad("hold-name-space", "hold-name", "is not accepted", {"hold-name": "bi dashboard"}),
    Bad(
        "hold-name-job",
        "hold-name",
        "lifetime is job",
        {"hold-name": "bi", "lifetime": "job"},
    ),
    Bad("allow-forks-yes", "allow-forks", "is not a boolean", {"allow-forks": "yes"}),
    Bad("credentials-unknown", "credentials", "is not accepted", {"credentials": "ephemeral"}),
    Bad(
        "credentials-without-url",
        "credentials",
        "temporary needs the database-url input",
        {"credentials": "temporary"},
    ),
    Bad(
        "credentials-valid-for-month",
        "credentials-valid-for",
        "use a duration from 1m to 7d",
        {"credentials-valid-for": "30d"},
    ),
    Bad(
        "credentials-role-reserved",
        "credentials-role",
        "is a name PostgreSQL reserves",
        {"credentials-role": "pg_read_all_data"},
    ),
    Bad(
        "credentials-connection-limit-zero",
        "credentials-connection-limit",
        "from 1 to 1000",
        {"credentials-connection-limit": "0"},
    ),
    Bad(
        "github-token-newline",
        "github-token",
        "control character",
        {"github-token": "ghs_abcdef0123456789" + INJECT_MASK},
        secret=True,
        shown="a token + '\\n::add-mask::my-db'",
    ),
    # -- database-url -----------------------------------------------------------------------------
    Bad(
        "db-other-host",
        "database-url",
        "is not app",
        {"database-url": url("evil.example.com:5432/app_db")},
    ),
    Bad(
        "db-other-app",
        "database-url",
        "is not app",
        {"database-url": url("other-db.flycast:5432/app_db")},
    ),
    Bad(
        "db-bad-port",
        "database-url",
        "invalid port",
        {"database-url": url("my-db.flycast:99999/d")},
    ),
    Bad(
        "db-no-password",
        "database-url",
        "has no password",
        {"database-url": "postgres://app_user@my-db.flycast:5432/app_db"},
    ),
    Bad(
        "db-no-user",
        "database-url",
        "has no user",
        {"database-url": "postgres://my-db.flycast:5432/app_db"},
    ),
    Bad(
        "db-not-url",
        "database-url",
        "is not a postgres://",
        {"database-url": "host=my-db.flycast user=app_user password=pw0rd-abc"},
    ),
    Bad(
        "db-ipv6-literal",
        "database-url",
        "IP literal",
        {"database-url": url("[fdaa:0:1:a7b::2]:5432/app_db")},
    ),
    Bad(
        "db-path",
        "database-url",
        "more than a database name",
        {"database-url": url("my-db.flycast:5432/app_db/extra")},
    ),
    Bad(
        "db-huge",
        "database-url",
        "at most 4096",
        {"database-url": url("my-db.flycast/" + "d" * HUGE)},
    ),
    # -- environment ------------------------------------------------------------------------------
    Bad(
        "env-api-url-scheme",
        "FLY_API_BASE_URL",
        "is not an http(s) URL",
        env={"FLY_API_BASE_URL": "ftp://api.fly.io"},
    ),
    Bad(
        "env-flaps-url-no-scheme",
        "FLY_FLAPS_BASE_URL",
        "is not an http(s) URL",
        env={"FLY_FLAPS_BASE_URL": "api.machines.dev"},
    ),
    Bad(
        "env-http-timeout",
        "FLY_PG_EXTERNAL_HTTP_TIMEOUT",
        "is not accepted",
        env={"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "soon"},
    ),
    # -- rows that found bugs (tests/reliability/FINDINGS.md), kept as regression tests ---------
    Bad(
        "token-huge",
        "fly-api-token",
        'Input "fly-api-token"',
        {"fly-api-token": "fo1_" + "a" * 100_000},
        secret=True,
        shown="a well-formed token of 100 004 characters",
    ),
    Bad(
        "db-newline-add-mask",
        "database-url",
        "control character",
        {"database-url": url("my-db.flycast:5432/app_db") + INJECT_MASK},
    ),
]
FINDING = {"token-huge": 7, "db-newline-add-mask": 8}


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    return flysim(
        apps={APP: {"machines": 3, "legacy": True}, "web": {"machines": 1, "role": None}},
        postgres=False,
        public_port_map={5432: 0, 5433: 0},
    )


def _shown(value: str, limit: int = 48) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}…({len(value)} chars)"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.finding(FINDING[c.id])] if c.id in FINDING else []
        )
        for c in CASES
    ],
)
def test_bad_input_fails_cleanly_before_any_change(
    case: Bad, sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    # The value under test: the variable's when the row sets one, else the input's.
    value = next(iter((case.env or case.inputs).values()))
    scenario.describe(
        GROUP,
        case.id,
        injected=f"{case.field} = {case.shown or _shown(value)}",
        checked="exit 1; ::error:: says what is wrong; no mutating request; nothing leaked; "
        "no command injected",
    )
    secrets = dict(SECRETS)
    if case.secret:
        secrets["the given token"] = value.strip()
    inputs = {"app": APP, **case.inputs}
    result = checked(sim, tmp_path, inputs, case.env, secrets=secrets)
    errors = [e[len("::error::") :] for e in result.errors()]
    scenario.add("bad_inputs")
    scenario.outcome = (errors[0] if errors else f"exit {result.code}, no error")[:140]
    assert result.code == 1, result.log
    assert any(case.expect in e for e in errors), result.log[-2000:]
    assert all(len(e) < 1200 for e in errors), "the error echoes a huge value"
    assert sim.mutating_requests() == [], [(r.method, r.path) for r in sim.mutating_requests()]
    assert sim.app(APP).ips == [] and all(m.update_count == 0 for m in sim.app(APP).machines)


def test_table_covers_every_input_and_the_environment() -> None:
    import yaml

    action = yaml.safe_load((Path(__file__).parents[2] / "action.yml").read_text())
    covered = {c.field for c in CASES}
    missing = set(action["inputs"]) - covered
    assert not missing, f"no bad value tried for input(s) {sorted(missing)}"
    assert {"FLY_API_TOKEN", "FLY_API_BASE_URL", "FLY_FLAPS_BASE_URL"} <= covered
    assert len(CASES) >= 25
