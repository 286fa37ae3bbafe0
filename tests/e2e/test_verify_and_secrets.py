"""The emitted URL works through a real pg_tls proxy, and no secret leaks anywhere."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from flysim import Simulator

from action_run import TOKEN, run_subprocess, warnings_of

USER, PASSWORD, DB = "app_user", "s3cr3t/p@ss:w0rd", "app_db"
INTERNAL = f"postgres://{USER}:{quote(PASSWORD, safe='')}@my-db.flycast:5432/{DB}?sslmode=disable"


def secret_forms() -> list[str]:
    forms = []
    for s in (TOKEN, PASSWORD):
        forms += [s, quote(s, safe=""), base64.b64encode(s.encode()).decode().rstrip("=")]
    return forms


@pytest.fixture
def pg_sim(flysim: Any, pg_server: Any) -> Simulator:
    pg_server.create_database(USER, PASSWORD, DB)
    sim: Simulator = flysim(apps={"my-db": {"machines": 2, "legacy": True}}, postgres=True)
    return sim


def test_emitted_url_connects_through_pg_tls_and_nothing_leaks(
    pg_sim: Simulator, tmp_path: Path
) -> None:
    result = run_subprocess(
        pg_sim,
        tmp_path,
        {
            "app": "my-db",
            "database-url": INTERNAL,
            "host": "localhost",
            "verify": "true",
            "ip-versions": "v4 v6",
        },
    )
    assert result.code == 0, result.log
    url = result.outputs["database-url"]
    assert url == (
        f"postgres://{USER}:{quote(PASSWORD, safe='')}@localhost:5432/{DB}?sslmode=require"
    )
    assert result.outputs["database"] == DB and result.outputs["user"] == USER
    # the log proves the login through every public address and the host
    assert f"✓ {result.outputs['ipv4']}:5432 answers pg_tls" in result.stdout
    assert "logged in, PostgreSQL 15" in result.stdout
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == (USER,)

    # masks come first, before anything else is printed
    lines = result.stdout.splitlines()
    masks = [i for i, line in enumerate(lines) if line.startswith("::add-mask::")]
    assert masks == list(range(len(masks))) and len(masks) >= 3
    # workflow-command data is escaped (% → %25); the runner unescapes it before masking
    assert "::add-mask::" + url.replace("%", "%25") in lines
    # ...and no secret appears elsewhere: log (beyond masks), summary, files, other outputs
    texts = ["\n".join(lines[len(masks) :]), result.stderr, result.summary, *result.files.values()]
    # The outputs that hold the password are masked by the runner; every other one is checked.
    secret_outputs = {"database-url", "node-database-url", "password"}
    texts += [v for k, v in result.outputs.items() if k not in secret_outputs]
    for name in secret_outputs:
        assert "::add-mask::" + result.outputs[name].replace("%", "%25") in lines, name
    for text in texts:
        for form in secret_forms():
            assert form not in text
    assert "postgres://app_user:***@localhost:5432/app_db?sslmode=require" in result.stdout


def test_plaintext_client_is_refused_and_wrong_password_fails_verification(
    pg_sim: Simulator, tmp_path: Path
) -> None:
    wrong = INTERNAL.replace("s3cr3t", "wrong")
    result = run_subprocess(
        pg_sim,
        tmp_path,
        {"app": "my-db", "database-url": wrong, "host": "localhost", "verify": "true"},
    )
    assert result.code == 1
    assert any("login refused" in e for e in result.errors()), result.log
    assert result.outputs["database-url"] == ""
    ipv4 = result.outputs["ipv4"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            f"postgres://{USER}:x@{ipv4}:5432/{DB}?sslmode=disable", connect_timeout=5
        ).close()


def test_an_ipv6_address_this_runner_has_no_route_to_is_one_notice_not_a_warning(
    flysim: Any, pg_server: Any, tmp_path: Path
) -> None:
    # The simulator hands out ::1 first, then addresses of 2001:db8::/32: with another app
    # holding ::1, this one's IPv6 is an address the test's network has no route to, as any
    # IPv6 is on a GitHub-hosted runner.
    from exposure import allocate_by_hand

    from fly_pg_external.verify import has_route

    pg_server.create_database(USER, PASSWORD, DB)
    sim: Simulator = flysim(apps={"my-db": {"machines": 2}, "other": {"machines": 1}})
    allocate_by_hand(sim, "other", "v6")
    if has_route("2001:db8::1", 5432):
        pytest.skip(
            "this network routes 2001:db8::/32, so it cannot stand for a runner without IPv6"
        )
    inputs = {"app": "my-db", "database-url": INTERNAL, "host": "localhost", "verify": "true"}
    result = run_subprocess(sim, tmp_path, inputs)
    assert result.code == 0, result.log
    assert result.outputs["ipv6"].startswith("2001:db8::")
    assert [w for w in warnings_of(result) if "IPv6" in w or "2001:db8" in w] == []
    notices = [line for line in result.stdout.splitlines() if line.startswith("::notice")]
    [notice] = [n for n in notices if "IPv6 not checked" in n]
    assert result.outputs["ipv6"] in notice and "no route" in notice
    assert f"✓ {result.outputs['ipv4']}:5432 answers pg_tls" in result.stdout
    assert f"{result.outputs['ipv6']}:5432" not in result.stdout.replace(notice, "")
    assert "not counted as a failure" in result.summary
