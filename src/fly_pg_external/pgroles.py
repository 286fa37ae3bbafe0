"""Temporary roles on the server: created, logged in with, dropped, found expired.

Every connection goes where clients of the `database-url` output go: the external host and port,
TLS checked as `sslmode` and `sslrootcert` say, through the endpoint the run verified. It is
psycopg on libpq, the protocol's reference client, so what libpq clients will do is what is
done here. Over `sslmode=require`, whose certificate nobody checks, libpq answers only SCRAM
(`require_auth`), as the verification's login does: the long-lived password never goes, in
cleartext or as an MD5 hash, to whoever answers in the server's place.

The SQL and the rules are `credentials.py`'s; every failure here is a `CredentialsError` that
says what the server answered.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from .credentials import (
    PREFIX,
    Creator,
    TemporaryRole,
    create_statements,
    is_temporary_role,
    login_role,
    quote_ident,
    refusal,
    release_statements,
)
from .errors import CredentialsError
from .poll import SYSTEM_CLOCK, Backoff, poll
from .settings import Settings
from .urls import SYSTEM

APPLICATION_NAME = "fly-pg-external"
# Seconds per connection attempt (libpq's connect_timeout), and for one statement.
ATTEMPT_TIMEOUT = 10
STATEMENT_TIMEOUT = "30s"
# How long ended sessions may take to go away before they are reported as still there.
SESSIONS_GONE_WAIT = 5.0
# Connection failures that retrying will not mend: the server, or libpq's checks, said no.
_DEFINITE = (
    "FATAL",
    "authentication method requirement",
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
)

_CREATOR = """
SELECT current_user, r.rolsuper, r.rolcreaterole,
       current_setting('server_version_num')::int,
       t.oid IS NOT NULL, coalesce(t.rolsuper, false),
       coalesce(pg_has_role(current_user, t.oid, 'MEMBER WITH ADMIN OPTION'), false),
       coalesce(pg_has_role(t.oid, current_user, 'MEMBER'), false),
       now()
FROM pg_roles r LEFT JOIN pg_roles t ON t.rolname = %s
WHERE r.rolname = current_user
"""
_ROLE = """
SELECT r.oid, s.setconfig FROM pg_roles r
LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
WHERE r.rolname = %s
"""
# Where the role owns objects or holds privileges; a shared object (a database it owns) is
# reassigned from any database, so it counts as the current one.
_DEPENDENT_DATABASES = """
SELECT DISTINCT coalesce(d.datname, current_database()) FROM pg_shdepend s
LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = %s
"""
# By the role's oid: once it is dropped, a session left over has no name to match.
_END_SESSIONS = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE usesysid = %s AND pid <> pg_backend_pid()
"""
_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s"
_EXISTS = "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)"
_EXPIRED = """
SELECT rolname, rolvaliduntil FROM pg_roles
WHERE starts_with(rolname, %s) AND rolvaliduntil < now() ORDER BY rolname
"""


@dataclass(frozen=True)
class Account:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, and for how long a connection may be retried (a fresh
    address can take a moment to answer when the verification did not wait for it)."""

    host: str
    port: int
    database: str
    sslmode: str
    sslrootcert: str
    wait: float


def endpoint_of(settings: Settings) -> tuple[Endpoint, Account]:
    """The external endpoint, and the internal URL's user, who creates and drops the roles."""
    db = settings.database_url
    if db is None:
        raise CredentialsError("Temporary credentials need the database-url input.")
    endpoint = Endpoint(
        settings.host,
        settings.port,
        db.database or db.user,  # libpq's default database is the user's name
        settings.sslmode,
        settings.sslrootcert,
        settings.verify_timeout,
    )
    return endpoint, Account(db.user, db.password)


def _roots(sslrootcert: str) -> str:
    """libpq's `system` means OpenSSL's default roots, but psycopg-binary's own OpenSSL looks
    in a folder of its build machine: name the file the system's OpenSSL reads instead
    (SSL_CERT_FILE first), as the verification's own TLS check does."""
    if sslrootcert != SYSTEM:
        return sslrootcert
    return ssl.get_default_verify_paths().cafile or SYSTEM


def _params(endpoint: Endpoint, account: Account, database: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "dbname": database or endpoint.database,
        "user": account.user,
        "password": account.password,
        "sslmode": endpoint.sslmode,
        "application_name": APPLICATION_NAME,
        "connect_timeout": ATTEMPT_TIMEOUT,
    }
    if endpoint.sslmode == "require":
        params["require_auth"] = "scram-sha-256"
    else:
        params["sslrootcert"] = _roots(endpoint.sslrootcert)
    return params


class _Unreachable(CredentialsError):
    """No connection: nothing answered, or not as PostgreSQL does."""


@contextmanager
def connect(
    endpoint: Endpoint, account: Account, database: str | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """A session as `account`, retried while nothing answers, never after a refusal."""
    params = _params(endpoint, account, database)
    failures: list[str] = []

    def attempt() -> psycopg.Connection[Any] | None:
        try:
            return psycopg.connect(**params, autocommit=True)
        except psycopg.OperationalError as exc:
            text = str(exc).strip()
            if any(marker in text for marker in _DEFINITE):
                raise _failure(params, text, unreachable=False) from None
            failures.append(text)
            return None

    deadline = SYSTEM_CLOCK.now() + endpoint.wait
    conn = poll(attempt, deadline=deadline, pauses=Backoff(0.25, 3.0), clock=SYSTEM_CLOCK)
    if conn is None:
        last = failures[-1] if failures else f"no answer within {endpoint.wait:g} s"
        raise _failure(params, last, unreachable=True)
    with conn:
        try:
            # Literals are quoted by doubling quotes alone (credentials.quote_literal).
            conn.execute("SET standard_conforming_strings = on")
            conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
            yield conn
        except psycopg.Error as exc:  # what the callers do not word themselves
            where = f"{endpoint.host}:{endpoint.port} as {account.user}"
            raise server_error(f"A statement on {where}", exc) from None


def _failure(params: dict[str, Any], text: str, *, unreachable: bool) -> Exception:
    kind = _Unreachable if unreachable else CredentialsError
    return kind(
        f"Could not log in to {params['host']}:{params['port']} as {params['user']} "
        f"(database {params['dbname']}): {text}"
    )


def server_error(doing: str, exc: psycopg.Error) -> CredentialsError:
    """What the server said, in its own words, with its detail and hint."""
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip(), diag.message_detail, diag.message_hint]
    said = " ".join(p.rstrip(".") + "." for p in parts if p)
    return CredentialsError(f"{doing} failed: {said}")


def read_creator(conn: psycopg.Connection[Any], target: str) -> Creator:
    row = conn.execute(_CREATOR, [target]).fetchone()
    if row is None:  # current_user is always a role; a server that says otherwise is broken
        raise CredentialsError("The server did not describe the role this step logged in as.")
    return Creator(*row)


def create(
    endpoint: Endpoint,
    account: Account,
    role: TemporaryRole,
    comment: Callable[[datetime], str],
) -> datetime:
    """Create `role` in one transaction, after checking that `account` may; its expiry."""
    with connect(endpoint, account) as conn:
        creator = read_creator(conn, role.target)
        problem = refusal(creator, role.target)
        if problem is not None:
            raise problem
        verifier = conn.pgconn.encrypt_password(
            role.password.encode(), role.name.encode(), b"scram-sha-256"
        ).decode()
        until = role.valid_until(creator.now)
        statements = create_statements(
            role,
            verifier=verifier,
            valid_until=until,
            comment=comment(until),
            self_grant=creator.self_grant,
        )
        try:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
        except psycopg.Error as exc:
            raise server_error(f"Creating role {role.name}", exc) from None
    return until


def check_login(endpoint: Endpoint, role: TemporaryRole) -> None:
    """Log in as the role, as a client of the URL will, and check it became its target."""
    with connect(endpoint, Account(role.name, role.password)) as conn:
        row = conn.execute("SELECT session_user, current_user").fetchone()
    if row != (role.name, role.target):
        raise CredentialsError(
            f"Logged in as {role.name}, but the session is {row}, not ({role.name}, "
            f"{role.target}): the login-time SET ROLE did not take."
        )


@dataclass(frozen=True)
class Dropped:
    """What became of a role this step was to drop."""

    name: str
    existed: bool
    gone: bool
    sessions_ended: int = 0
    sessions_left: int = 0
    databases: tuple[str, ...] = ()  # where its objects were reassigned, its privileges revoked
    target: str = ""


def drop(endpoint: Endpoint, account: Account, name: str, target: str) -> Dropped:
    """No new logins, its sessions ended, what it owns reassigned to its login role (`target`
    when it has none) and its privileges revoked in every database, then the role dropped."""
    if not is_temporary_role(name):  # the step state is ours, but a role is not dropped lightly
        raise CredentialsError(f"{name!r} is not the name of a temporary role; not dropped.")
    with connect(endpoint, account) as conn:
        row = conn.execute(_ROLE, [name]).fetchone()
        if row is None:
            return Dropped(name, existed=False, gone=True)
        oid, config = row
        target = login_role(config) or target
        try:
            conn.execute(f"ALTER ROLE {quote_ident(name)} NOLOGIN")
            ended = _end_sessions(conn, oid)
            databases = [d for (d,) in conn.execute(_DEPENDENT_DATABASES, [oid]).fetchall()]
            for database in databases:
                _release(endpoint, account, database, name, target)
            conn.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
        except psycopg.Error as exc:
            raise server_error(f"Dropping role {name}", exc) from None
        exists = conn.execute(_EXISTS, [name]).fetchone()
        left = conn.execute(_SESSIONS, [oid]).fetchone()
    return Dropped(
        name,
        existed=True,
        gone=exists == (False,),
        sessions_ended=ended,
        sessions_left=left[0] if left else 0,
        databases=tuple(databases),
        target=target,
    )


def _end_sessions(conn: psycopg.Connection[Any], oid: int) -> int:
    """End the role's sessions; wait a moment for them to go."""
    row = conn.execute(_END_SESSIONS, [oid]).fetchone()

    def gone() -> bool | None:
        left = conn.execute(_SESSIONS, [oid]).fetchone()
        return True if left == (0,) else None

    poll(
        gone,
        deadline=SYSTEM_CLOCK.now() + SESSIONS_GONE_WAIT,
        pauses=Backoff(0.05, 0.5),
        clock=SYSTEM_CLOCK,
    )
    return int(row[0]) if row else 0


def _release(endpoint: Endpoint, account: Account, database: str, name: str, target: str) -> None:
    """REASSIGN OWNED and DROP OWNED act on the database they run in: each where the role has
    something gets its own session."""
    with connect(endpoint, account, database) as conn:
        try:
            for statement in release_statements(name, target):
                conn.execute(statement)
        except psycopg.Error as exc:
            raise server_error(f"Releasing what {name} owns in database {database}", exc) from None


def expired(endpoint: Endpoint, account: Account) -> list[tuple[str, datetime]]:
    """The temporary roles whose validity has passed, by the server's clock: never a role of
    another shape, nor one without an expiry or not yet past it."""
    with connect(endpoint, account) as conn:
        rows = conn.execute(_EXPIRED, [PREFIX]).fetchall()
    return [(name, until) for name, until in rows if is_temporary_role(name)]


def is_unreachable(exc: CredentialsError) -> bool:
    return isinstance(exc, _Unreachable)
