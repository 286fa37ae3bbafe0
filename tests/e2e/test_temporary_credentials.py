"""`credentials: temporary`: the URLs carry a role made for the run, which expires by itself.

Every step runs as the runner runs it (`python entrypoint.py`, then `python post.py` with the
state the main step saved), against the simulator's real PostgreSQL behind its pg_tls proxy.
What is checked is what the server says: `pg_roles`, `pg_stat_activity`, `pg_tables`, and
whether a login with the URL handed out is accepted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from exposure import job_env

from flysim import PostgresServer, Simulator

from action_run import ActionResult, run_main_step, run_post_step, run_subprocess, step_state

APP = "my-db"
OWNER, OWNER_PASSWORD, DB = "tc_owner", "Long-lived/p@ss:w0rd+9", "tc_db"
TEMP_ROLE = re.compile(r"fpe_tmp_[0-9a-f]{16}")


@pytest.fixture
def sim(flysim: Any) -> Simulator:
    return flysim(apps={APP: {"machines": 2}}, postgres=True)


def superuser_url(sim: Simulator, pg: PostgresServer) -> str:
    """The internal URL of a superuser, as `fly pg attach` makes by default."""
    url = sim.attach_database(APP, OWNER, OWNER_PASSWORD, DB)
    pg.psql(f'ALTER ROLE "{OWNER}" SUPERUSER')
    return url


def inputs(url: str, **more: str) -> dict[str, str]:
    return {
        "app": APP,
        "lifetime": "job",
        "database-url": url,
        # The simulator serves <app>.fly.dev's endpoint on localhost, which its CA names.
        "host": "localhost",
        "verify": "true",
        "credentials": "temporary",
        **more,
    }


def sql(pg: PostgresServer, query: str, *params: object, dbname: str = "postgres") -> list[Any]:
    """The rows of a query, as the server's superuser, straight to the server."""
    with psycopg.connect(pg.dsn(pg.superuser, pg.password, dbname), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def role_exists(pg: PostgresServer, name: str) -> bool:
    return sql(pg, "SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(1,)]


def oid_of(pg: PostgresServer, name: str) -> int:
    [(oid,)] = sql(pg, "SELECT oid FROM pg_roles WHERE rolname = %s", name)
    return int(oid)


def sessions_of(pg: PostgresServer, oid: int) -> int:
    """By the role's oid: a session of a dropped role has no name left to match."""
    [(count,)] = sql(pg, "SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s", oid)
    return int(count)


def seconds_left(pg: PostgresServer, name: str) -> float:
    query = "SELECT extract(epoch FROM rolvaliduntil - now()) FROM pg_roles WHERE rolname = %s"
    [(left,)] = sql(pg, query, name)
    return float(left)


def temporary_roles(pg: PostgresServer) -> list[Any]:
    return sql(pg, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'fpe_tmp_')")


def owner_of(pg: PostgresServer, table: str, dbname: str) -> str:
    [(owner,)] = sql(
        pg, "SELECT tableowner FROM pg_tables WHERE tablename = %s", table, dbname=dbname
    )
    return str(owner)


def long_lived_password_nowhere(result: ActionResult) -> None:
    """Not in any output, nor in the step state: the URLs, user and password are the role's."""
    for form in (OWNER_PASSWORD, quote(OWNER_PASSWORD, safe="")):
        assert all(form not in v for v in result.outputs.values()), result.outputs.keys()
        assert form not in str(step_state(result))


# -- the job: made at the start, dropped at the end ------------------------------------------


def test_job_gets_a_role_of_its_own_and_the_post_step_drops_it(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    given = inputs(superuser_url(sim, pg_server))
    main = run_main_step(sim, tmp_path / "main", given, job_env())

    assert main.code == 0, main.log
    name = main.outputs["user"]
    assert TEMP_ROLE.fullmatch(name), name
    assert main.outputs["password"] and main.outputs["password"] != OWNER_PASSWORD
    url = main.outputs["database-url"]
    assert url.startswith(f"postgres://{name}:") and f"@localhost:5432/{DB}?" in url
    assert main.outputs["node-database-url"].startswith(f"postgres://{name}:")
    assert main.outputs["database"] == DB
    long_lived_password_nowhere(main)
    assert step_state(main)["TEMP_ROLE"] == name
    assert f"::add-mask::{main.outputs['password']}" in main.stdout
    # Valid for the job's longest (6 h), at most 20 connections, by the server's clock.
    assert 6 * 3600 - 120 < seconds_left(pg_server, name) <= 6 * 3600
    assert sql(pg_server, "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", name) == [(20,)]

    # In the job: the URL logs in as the role, which becomes the internal URL's user; what it
    # creates belongs to that user.
    session = psycopg.connect(url, autocommit=True)
    assert session.execute("SELECT session_user, current_user").fetchone() == (name, OWNER)
    session.execute("CREATE TABLE made_in_the_job (id int)")
    assert owner_of(pg_server, "made_in_the_job", DB) == OWNER

    oid = oid_of(pg_server, name)
    assert sessions_of(pg_server, oid) == 1
    post = run_post_step(sim, tmp_path / "post", given, step_state(main), extra_env=job_env())

    assert post.code == 0, post.log
    assert not role_exists(pg_server, name)
    assert sessions_of(pg_server, oid) == 0
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")  # its session was ended
    # The job's addresses are closed now; at the server itself, the login is refused.
    direct = pg_server.dsn(name, main.outputs["password"], DB)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(direct, connect_timeout=5)
    assert f"Role `{name}`: dropped; 1 session(s) ended" in post.summary
    assert f"✓ Role {name}: dropped" in post.stdout
    assert owner_of(pg_server, "made_in_the_job", DB) == OWNER  # what the job made stays
    assert post.errors() == []


def test_post_step_reassigns_what_the_role_owns_in_every_database_before_dropping_it(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """A role that owns an object in another database, and holds a privilege in a third,
    cannot be dropped until both are dealt with, each in its own database."""
    given = inputs(superuser_url(sim, pg_server))
    main = run_main_step(sim, tmp_path / "main", given, job_env())
    assert main.code == 0, main.log
    name = main.outputs["user"]
    for database in ("tc_other", "tc_third"):
        pg_server.psql(f"DROP DATABASE IF EXISTS {database}")
        pg_server.psql(f"CREATE DATABASE {database}")
    pg_server.psql(
        f'CREATE TABLE kept (id int); ALTER TABLE kept OWNER TO "{name}"', dbname="tc_other"
    )
    pg_server.psql(
        f'CREATE TABLE shared (id int); GRANT SELECT ON shared TO "{name}"', dbname="tc_third"
    )

    post = run_post_step(sim, tmp_path / "post", given, step_state(main), extra_env=job_env())

    assert post.code == 0, post.log
    assert not role_exists(pg_server, name)
    assert owner_of(pg_server, "kept", "tc_other") == OWNER
    assert f"what it owned went to {OWNER}, its privileges revoked" in post.summary
    assert "tc_other" in post.summary and "tc_third" in post.summary


def test_least_privilege_setup_from_the_readme(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """A role with CREATEROLE and ADMIN OPTION on a group role that owns the objects, no
    superuser: the README's setup, run as written."""
    pg_server.psql(
        """
        DROP DATABASE IF EXISTS lp_db;
        DROP ROLE IF EXISTS lp_ci; DROP ROLE IF EXISTS lp_owner;
        CREATE ROLE lp_owner NOLOGIN;
        CREATE DATABASE lp_db OWNER lp_owner;
        CREATE ROLE lp_ci LOGIN PASSWORD 'Ci-role-pw-123' CREATEROLE;
        GRANT lp_owner TO lp_ci WITH ADMIN OPTION;
        """
    )
    url = f"postgres://lp_ci:Ci-role-pw-123@{APP}.flycast:5432/lp_db?sslmode=disable"
    given = inputs(url, **{"credentials-role": "lp_owner", "credentials-valid-for": "45m"})
    main = run_main_step(sim, tmp_path / "main", given, job_env())

    assert main.code == 0, main.log
    name = main.outputs["user"]
    with psycopg.connect(main.outputs["database-url"], autocommit=True) as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (name, "lp_owner")
        conn.execute("CREATE TABLE lp_table (id int)")
    assert owner_of(pg_server, "lp_table", "lp_db") == "lp_owner"
    assert 45 * 60 - 120 < seconds_left(pg_server, name) <= 45 * 60

    post = run_post_step(sim, tmp_path / "post", given, step_state(main), extra_env=job_env())

    assert post.code == 0, post.log
    assert not role_exists(pg_server, name)


def test_a_user_that_cannot_create_roles_gets_the_sql_that_grants_it(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.psql("DROP ROLE IF EXISTS tc_plain_owner; CREATE ROLE tc_plain_owner NOLOGIN")
    url = sim.attach_database(APP, "tc_plain", "Plain-pw-1234", "tc_plain_db")
    given = inputs(url, **{"credentials-role": "tc_plain_owner"})
    before = temporary_roles(pg_server)

    main = run_main_step(sim, tmp_path / "main", given, job_env())

    assert main.code == 1, main.log
    [error] = main.errors()
    assert "tc_plain cannot create the temporary role: it lacks CREATEROLE" in error
    assert 'ALTER ROLE "tc_plain" CREATEROLE;' in error
    assert main.error_titles() == ["Missing privilege for temporary credentials"]
    for output in ("database-url", "node-database-url", "password"):
        assert main.outputs[output] == "", output
    assert temporary_roles(pg_server) == before


def test_a_user_that_would_become_itself_is_told_to_use_a_group_role(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = sim.attach_database(APP, "tc_self", "Self-pw-1234", "tc_self_db")
    pg_server.psql('ALTER ROLE "tc_self" CREATEROLE')

    main = run_main_step(sim, tmp_path / "main", inputs(url), job_env())

    assert main.code == 1, main.log
    [error] = main.errors()
    assert "tc_self is not a superuser, and the temporary role would become tc_self" in error
    assert 'GRANT app_owner TO "tc_self" WITH ADMIN OPTION;' in error
    assert main.outputs["database-url"] == ""


def test_a_role_the_post_step_cannot_drop_is_reported_and_the_addresses_still_close(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = sim.attach_database(APP, "tc_demoted", "Demoted-pw-1234", "tc_demoted_db")
    pg_server.psql('ALTER ROLE "tc_demoted" SUPERUSER')
    given = inputs(url)
    main = run_main_step(sim, tmp_path / "main", given, job_env())
    assert main.code == 0, main.log
    name = main.outputs["user"]
    pg_server.psql('ALTER ROLE "tc_demoted" NOSUPERUSER')  # it may no longer manage roles

    post = run_post_step(sim, tmp_path / "post", given, step_state(main), extra_env=job_env())

    assert post.code == 1, post.log
    assert post.error_titles() == ["Temporary role not dropped"]
    [error] = post.errors()
    assert f"Role {name} was not dropped: Dropping role {name} failed: permission denied" in error
    assert f"REASSIGN OWNED BY {name} TO tc_demoted; DROP OWNED BY {name}" in error
    assert f"Role `{name}`: **not dropped**" in post.summary
    assert "released" in post.summary  # the addresses closed all the same
    pg_server.psql(f'DROP ROLE "{name}"')


# -- expiry, without a post step -------------------------------------------------------------


@pytest.mark.slow
def test_a_role_nobody_dropped_refuses_logins_once_it_expires(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """`lifetime: persistent` with a validity of one minute, and no post step: the URL logs in
    at once, and is refused once the minute has passed. Sleeps until then (about 61 s)."""
    given = inputs(
        superuser_url(sim, pg_server), lifetime="persistent", **{"credentials-valid-for": "1m"}
    )
    main = run_main_step(sim, tmp_path / "main", given)
    assert main.code == 0, main.log
    name, url = main.outputs["user"], main.outputs["database-url"]
    assert "TEMP_ROLE" not in step_state(main)  # no post step will come for it
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (name,)
    time.sleep(seconds_left(pg_server, name) + 1.0)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, connect_timeout=5)
    assert role_exists(pg_server, name)  # refused by its expiry; a sweep drops it


# -- sweep -------------------------------------------------------------------------------------


def make_role(pg: PostgresServer, name: str, valid_until: str | None) -> None:
    until = f" VALID UNTIL '{valid_until}'" if valid_until else ""
    pg.psql(f'DROP ROLE IF EXISTS "{name}"; CREATE ROLE "{name}" LOGIN{until}')


def test_sweep_drops_expired_temporary_roles_and_no_other(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = superuser_url(sim, pg_server)
    exposed = run_subprocess(sim, tmp_path / "expose", {"app": APP, "host": "localhost"})
    assert exposed.code == 0, exposed.log
    past, future = "2001-01-01 00:00:00+00", "2999-01-01 00:00:00+00"
    expired_a, expired_b = "fpe_tmp_00000000000000a1", "fpe_tmp_00000000000000b2"
    kept = {
        "fpe_tmp_00000000000000c3": future,  # not expired yet
        "fpe_tmp_00000000000000d4": None,  # no expiry at all
        "fpe_tmp_manual": past,  # the prefix, but not a name the action makes
        "tc_ci_expired": past,  # expired, without the prefix
    }
    for name in (expired_a, expired_b):
        make_role(pg_server, name, past)
    pg_server.psql(f'GRANT CONNECT ON DATABASE {DB} TO "{expired_b}"')  # a privilege to revoke
    for name, until in kept.items():
        make_role(pg_server, name, until)
    sweep = {"app": APP, "mode": "sweep", "database-url": url, "host": "localhost"}

    dry = run_subprocess(
        sim, tmp_path / "dry", {**sweep, "credentials": "temporary", "dry-run": "true"}
    )
    assert dry.code == 0, dry.log
    assert f"Would drop {expired_a}" in dry.stdout
    assert role_exists(pg_server, expired_a)

    result = run_subprocess(sim, tmp_path / "sweep", {**sweep, "credentials": "temporary"})

    assert result.code == 0, result.log
    assert not role_exists(pg_server, expired_a) and not role_exists(pg_server, expired_b)
    assert all(role_exists(pg_server, name) for name in kept)
    assert (
        f"| `{expired_a}` | 2001-01-01 00:00:00 UTC | dropped; 0 session(s) ended |"
        in result.summary
    )
    for name in kept:
        assert name not in result.summary
    # Without credentials: temporary a sweep leaves roles alone.
    make_role(pg_server, expired_a, past)
    plain = run_subprocess(sim, tmp_path / "plain", sweep)
    assert plain.code == 0, plain.log
    assert role_exists(pg_server, expired_a)
    for name in (expired_a, *kept):
        pg_server.psql(f'DROP ROLE IF EXISTS "{name}"')


# -- lifetime: persistent ----------------------------------------------------------------------


def test_persistent_run_hands_out_a_role_that_outlives_the_job(
    sim: Simulator, pg_server: PostgresServer, tmp_path: Path
) -> None:
    given = inputs(superuser_url(sim, pg_server), lifetime="persistent")
    main = run_main_step(sim, tmp_path / "main", given, job_env())
    assert main.code == 0, main.log
    name = main.outputs["user"]

    post = run_post_step(sim, tmp_path / "post", given, step_state(main))

    assert post.code == 0, post.log
    assert role_exists(pg_server, name)
    with psycopg.connect(main.outputs["database-url"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (OWNER,)
    query = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"
    [(comment,)] = sql(pg_server, query, name)
    assert comment.startswith("fly-pg-external: temporary credentials for acme/infra")
    pg_server.psql(f'DROP ROLE "{name}"')
