"""The verification logs in through a real pg_tls proxy and PostgreSQL with the URL it hands
out: the server's verdict on that URL's `options` and password is the verification's."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from fly_pg_external.pgwire import Conn, Login, login_and_query
from flysim import PostgresServer, Simulator

from action_run import run_subprocess

DB = "url_login_db"


@pytest.fixture
def sim(flysim: Any, pg_server: PostgresServer) -> Simulator:
    made: Simulator = flysim(apps={"my-db": {"machines": 1, "legacy": True}}, postgres=True)
    return made


def expose(sim: Simulator, tmp_path: Path, internal: str) -> Any:
    return run_subprocess(
        sim,
        tmp_path,
        {"app": "my-db", "database-url": internal, "host": "localhost", "verify": "true"},
    )


def test_options_the_server_refuses_fail_the_verification(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """A client of the URL sends its `options` at login, and the server refuses the value: the
    verification must fail the same way, not log in without them."""
    pg_server.create_database("options_user", "pw-options-1", DB)
    bad = "-cstatement_timeout=bogus"  # no space: the same in any spelling of the URL
    internal = (
        f"postgres://options_user:pw-options-1@my-db.flycast:5432/{DB}"
        f"?options={quote(bad, safe='')}&sslmode=disable"
    )
    result = expose(sim, tmp_path, internal)
    assert result.code == 1, result.log
    errors = [e for e in result.errors() if "login refused" in e]
    assert errors, result.log
    assert 'invalid value for parameter "statement_timeout"' in errors[0]
    assert result.outputs["database-url"] == ""


def test_a_password_that_saslprep_changes_logs_in_as_with_libpq(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """The server stores a SCRAM password SASLprepped (NFKC; a no-break space is a space), and
    libpq prepares the password it sends the same way: so must the verification."""
    password = "Ⅸ\u00a0pass\u00adword"  # the server stores "IX password"
    pg_server.create_database("saslprep_user", password, DB)
    internal = f"postgres://saslprep_user:{quote(password, safe='')}@my-db.flycast:5432/{DB}"
    result = expose(sim, tmp_path, internal)
    assert result.code == 0, result.log
    assert "logged in, PostgreSQL" in result.stdout
    url = result.outputs["database-url"]
    with psycopg.connect(url, connect_timeout=10) as conn:  # libpq agrees
        assert conn.execute("SELECT current_user").fetchone() == ("saslprep_user",)


@pytest.mark.parametrize(
    "password",
    [
        "a\u200bb-x",  # zero-width space: a space (C.1.2 before B.1)
        "x\u00ady\ufe0f\u3000z",  # mapped to nothing, and an ideographic space
        "\ufb01\u2168",  # NFKC: "fiIX"
        "\u05d0\u05d1",  # right-to-left only: prepared
        "\u05d0a\u05d0",  # right-to-left mixed with left-to-right: used as it is
    ],
)
def test_scram_prepares_the_password_as_the_server_did(
    pg_server: PostgresServer, password: str
) -> None:
    """pgwire's SCRAM against the real server, on its plain port, and libpq beside it."""
    user = f"saslprep_{sum(map(ord, password))}"
    dsn = pg_server.create_database(user, password, DB)
    sock = socket.create_connection((pg_server.host, pg_server.port), timeout=5)
    try:
        done = login_and_query(
            Conn(sock, time.monotonic() + 10, 5), Login(user, password, DB), verified=False
        )
    finally:
        sock.close()
    assert done.auth == "SCRAM-SHA-256"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
