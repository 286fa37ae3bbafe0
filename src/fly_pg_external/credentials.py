"""Temporary credentials: a login role of its own for each run, which expires by itself.

With `credentials: temporary` the URLs a run hands out carry a role made for that run, not the
long-lived password of the internal URL: a random name with a recognisable prefix, a random
password, `VALID UNTIL` a bounded time and a connection limit. It is a member of a target role
(the internal URL's user unless `credentials-role` names another) and becomes it at login
(`ALTER ROLE … SET role`), so what a job creates belongs to the target, and the temporary role
owns nothing when it is dropped. The internal URL's user creates and drops it; its password
reaches no output.

This module is the pure part: the inputs, the role's name and password, the SQL, and which
privileges the creator lacks. `pgroles.py` runs the SQL; `credential_steps.py` wires it into
the steps. SQL is built as text here (identifiers and literals quoted as PostgreSQL quotes
them; the session sets `standard_conforming_strings`), so the same text can be shown to people
as the statement that grants what is missing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from .connstr import ConnString, encode
from .domain import Mode
from .errors import CredentialsError, InputError
from .inputs import clean_choice, clean_text

# Every role the action makes starts with this, and a sweep drops no role of another shape.
PREFIX = "fpe_tmp_"
_RANDOM_HEX = 16
_NAME_RE = re.compile(re.escape(PREFIX) + f"[0-9a-f]{{{_RANDOM_HEX}}}")

CredentialKind = Literal["internal", "temporary"]
KINDS: tuple[CredentialKind, ...] = ("internal", "temporary")
# 6 h is the longest a job may run on GitHub-hosted runners: a role made at its start outlives
# it. A week at most: a hand-off that must last longer should get a fresh role.
DEFAULT_VALID_FOR = 6 * 3600.0
MIN_VALID_FOR, MAX_VALID_FOR = 60.0, 7 * 86400.0
DEFAULT_CONNECTION_LIMIT = 20
MAX_CONNECTION_LIMIT = 1000
# Query parameters of the internal URL that name the login: libpq lets them override the
# userinfo, so a temporary URL that kept them would log in with the long-lived password.
_LOGIN_PARAMS = frozenset({"user", "password"})
_DURATION_RE = re.compile(r"^([0-9]{1,7})[ \t]*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Names PostgreSQL reserves or reads as keywords in a role specification.
_NOT_ROLES = frozenset({"public", "none", "current_user", "session_user", "current_role"})
_MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: longer names are truncated by the server


@dataclass(frozen=True)
class CredentialSettings:
    """The `credentials*` inputs."""

    kind: CredentialKind = "internal"
    valid_for: float = DEFAULT_VALID_FOR  # seconds
    role: str = ""  # the target role; empty: the internal URL's user
    connection_limit: int = DEFAULT_CONNECTION_LIMIT

    @property
    def temporary(self) -> bool:
        return self.kind == "temporary"

    def target(self, user: str) -> str:
        return self.role or user


def clean_valid_for(raw: str) -> float:
    value = clean_text("credentials-valid-for", raw).lower()
    match = _DURATION_RE.match(value)
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
    if not MIN_VALID_FOR <= seconds <= MAX_VALID_FOR:
        raise InputError(
            "credentials-valid-for",
            f"{value[:40]!r} is not accepted; use a duration from 1m to 7d, e.g. 45m, 6h or 2d "
            "(seconds without a unit).",
        )
    return seconds


def clean_connection_limit(raw: str) -> int:
    value = clean_text("credentials-connection-limit", raw)
    number = int(value) if re.fullmatch(r"[0-9]{1,4}", value) else -1
    if not 1 <= number <= MAX_CONNECTION_LIMIT:
        raise InputError(
            "credentials-connection-limit",
            f"{value[:40]!r} is not accepted; use a number of connections from 1 to "
            f"{MAX_CONNECTION_LIMIT}.",
        )
    return number


def clean_role_name(raw: str) -> str:
    """A role name as PostgreSQL stores it (case kept: it is quoted, never folded)."""
    value = clean_text("credentials-role", raw)
    why = ""
    if len(value.encode()) > _MAX_NAME_BYTES:
        why = f"is longer than {_MAX_NAME_BYTES} bytes, the longest role name PostgreSQL keeps"
    elif value.lower() in _NOT_ROLES or value.startswith("pg_"):
        why = "is a name PostgreSQL reserves"
    elif value.startswith(PREFIX):
        why = f"starts with {PREFIX}, the prefix of the temporary roles themselves"
    if why:
        raise InputError(
            "credentials-role",
            f"{value[:70]!r} {why}. Name the role that should own what the job creates (e.g. "
            "app_owner), or leave it empty for the database-url's user.",
        )
    return value


def clean_credential_inputs(
    inp: Callable[[str, str], str], *, mode: Mode, has_database_url: bool
) -> CredentialSettings:
    """`credentials` and the inputs that shape the temporary role; each value is checked
    whatever `credentials` says, so a typo fails before anything changes."""
    kind = clean_choice(
        "credentials",
        inp("credentials", "internal"),
        KINDS,
        " temporary hands out a role made for this run; internal, the database-url's own.",
    )
    settings = CredentialSettings(
        kind=kind,
        valid_for=clean_valid_for(inp("credentials-valid-for", "6h")),
        role=clean_role_name(inp("credentials-role", "")),
        connection_limit=clean_connection_limit(inp("credentials-connection-limit", "20")),
    )
    if settings.temporary and not has_database_url:
        raise InputError(
            "credentials",
            "temporary needs the database-url input: its user creates (and later drops) the "
            "temporary role. Pass the internal DATABASE_URL, or use credentials: internal.",
        )
    if settings.temporary and mode == "unexpose":
        raise InputError(
            "credentials",
            "temporary applies to mode expose and connect (a role for the URLs they hand out) "
            "and sweep (drops expired ones); unexpose hands out nothing. Leave it at internal.",
        )
    return settings


# -- the role --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemporaryRole:
    """A run's role, before and after it exists on the server."""

    name: str
    password: str = field(repr=False)
    target: str
    valid_for: float
    connection_limit: int

    def valid_until(self, now: datetime) -> datetime:
        """From the server's clock, which decides when logins stop."""
        return (now + timedelta(seconds=self.valid_for)).replace(microsecond=0)


def new_role(
    settings: CredentialSettings, user: str, token: Callable[[int], str] = secrets.token_hex
) -> TemporaryRole:
    """A fresh name and password (256 random bits, URL-safe: nothing to percent-encode)."""
    return TemporaryRole(
        name=PREFIX + token(_RANDOM_HEX // 2),
        password=secrets.token_urlsafe(32),
        target=settings.target(user),
        valid_for=settings.valid_for,
        connection_limit=settings.connection_limit,
    )


def is_temporary_role(name: str) -> bool:
    """Exactly the shape `new_role` makes: a sweep never touches any other role."""
    return _NAME_RE.fullmatch(name) is not None


def temporary_conn(conn: ConnString, role: TemporaryRole) -> ConnString:
    """The internal URL with the temporary role's login in place of its own. The database
    stays the one the internal URL reaches (libpq's default is the user's name, which the
    temporary role's is not); `user` and `password` query parameters are left out."""
    kept = [
        (pair, written)
        for pair, written in zip(conn.query, conn.written_query, strict=True)
        if pair[0] not in _LOGIN_PARAMS
    ]
    return replace(
        conn,
        user=role.name,
        password=role.password,
        userinfo=f"{encode(role.name)}:{encode(role.password)}",
        database=conn.database or conn.user,
        query=tuple(pair for pair, _ in kept),
        written_query=tuple(written for _, written in kept),
        raw="",  # no one wrote this URL: the action builds it from its parts
    )


# -- SQL -------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """With standard_conforming_strings on (the session sets it), a quote is the only escape."""
    return "'" + text.replace("'", "''") + "'"


def timestamp(moment: datetime) -> str:
    """In UTC, as PostgreSQL reads a timestamptz whatever the session's TimeZone."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def create_statements(
    role: TemporaryRole, *, verifier: str, valid_until: datetime, comment: str, self_grant: bool
) -> list[str]:
    """One transaction: the role, becoming its target at login, a comment saying whose it is,
    and (for a creator that is not a superuser) the creator's membership in it, which ending
    its sessions and reassigning what it owns need. NOINHERIT: a session that leaves the target
    (`SET ROLE NONE`) holds no privilege of it, so it can hardly make objects of its own. The
    password goes as a SCRAM verifier made client-side: never in cleartext in a server log."""
    name, target = quote_ident(role.name), quote_ident(role.target)
    statements = [
        f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD {quote_literal(verifier)} "
        f"VALID UNTIL {quote_literal(timestamp(valid_until))} "
        f"CONNECTION LIMIT {role.connection_limit:d} IN ROLE {target}",
        f"ALTER ROLE {name} SET role = {quote_literal(role.target)}",
        f"COMMENT ON ROLE {name} IS {quote_literal(comment)}",
    ]
    if self_grant:
        statements.append(f"GRANT {name} TO CURRENT_USER")
    return statements


def release_statements(name: str, target: str) -> list[str]:
    """In each database where the role owns objects or holds privileges: its objects go to the
    target (nothing the job made is lost), then its privileges are revoked."""
    return [
        f"REASSIGN OWNED BY {quote_ident(name)} TO {quote_ident(target)}",
        f"DROP OWNED BY {quote_ident(name)}",
    ]


def login_role(config: list[str] | None) -> str | None:
    """The role a role becomes at login, from its `pg_db_role_setting` entries (`role=…`)."""
    for entry in config or []:
        key, _, value = entry.partition("=")
        if key == "role" and value:
            return value
    return None


def comment_for(repository: str, run_id: str, valid_until: datetime) -> str:
    run = f"{repository} run {run_id}" if repository and run_id else "a workflow run"
    return f"fly-pg-external: temporary credentials for {run}; expires {timestamp(valid_until)}"


# -- what the creator may do -----------------------------------------------------------------

PG16 = 160000  # CREATEROLE no longer grants membership in any role, only with ADMIN OPTION


@dataclass(frozen=True)
class Creator:
    """The internal URL's user as the server describes it, and the target role."""

    name: str
    superuser: bool
    createrole: bool
    server_version: int  # server_version_num
    target_exists: bool
    target_superuser: bool
    admin_of_target: bool  # holds ADMIN OPTION on the target
    target_in_creator: bool  # the target is the creator itself, or one of its members
    now: datetime  # the server's clock

    @property
    def self_grant(self) -> bool:
        """Whether it must take membership in the role it makes to end its sessions and
        reassign what it owns; a superuser needs none."""
        return not self.superuser


def refusal(creator: Creator, target: str) -> CredentialsError | None:
    """Why `creator` cannot make a role that becomes `target`, with the SQL a superuser runs
    to allow it; None when it can. Checked before anything is created."""
    c, t = quote_ident(creator.name), quote_ident(target)
    if not creator.target_exists:
        return CredentialsError(
            f"The role {target!r} the temporary role should become does not exist.",
            hint="Set credentials-role to an existing role (SELECT rolname FROM pg_roles), or "
            "leave it empty for the database-url's user.",
        )
    if creator.superuser:
        return None
    if creator.target_in_creator:
        return CredentialsError(
            f"{creator.name} is not a superuser, and the temporary role would become "
            f"{target}, which is {creator.name} itself or one of its members: no role holds "
            "ADMIN OPTION on itself (PostgreSQL 16 and later require it to grant membership), "
            f"and PostgreSQL refuses the membership loop that would let {creator.name} end the "
            "temporary role's sessions.",
            hint=f"Make a group role own the application's objects and let {creator.name} "
            "manage it; as a superuser: CREATE ROLE app_owner NOLOGIN; GRANT app_owner TO "
            f"{c} WITH ADMIN OPTION;{'' if creator.createrole else f' ALTER ROLE {c} CREATEROLE;'}"
            " then set credentials-role: app_owner (README, Temporary credentials). Or use a "
            "superuser's internal URL.",
        )
    if creator.target_superuser:
        return CredentialsError(
            f"{target} is a superuser, and only a superuser may grant membership in it; "
            f"{creator.name} is not one.",
            hint="Use a superuser's internal URL, or a credentials-role that is not a superuser.",
        )
    missing: list[str] = []
    grants: list[str] = []
    if not creator.createrole:
        missing.append("CREATEROLE (it may not create roles)")
        grants.append(f"ALTER ROLE {c} CREATEROLE;")
    if creator.server_version >= PG16 and not creator.admin_of_target:
        missing.append(
            f"ADMIN OPTION on {target} (PostgreSQL 16 and later let a CREATEROLE role grant "
            "membership only in roles it holds ADMIN OPTION on)"
        )
        grants.append(f"GRANT {t} TO {c} WITH ADMIN OPTION;")
    if not missing:
        return None
    return CredentialsError(
        f"{creator.name} cannot create the temporary role: it lacks {' and '.join(missing)}.",
        hint=f"As a superuser (fly pg connect -a <app>), run: {' '.join(grants)}",
        title="Missing privilege for temporary credentials",
    )
