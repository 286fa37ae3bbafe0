"""Internal Fly Postgres connection strings → the external one, and the form shown to people.

`fly pg create` prints `postgres://postgres:<pw>@<app>.flycast:5432` and `fly pg attach` sets
`postgres://<user>:<pw>@<app>.flycast:5432/<db>?sslmode=disable` (or a `.internal` host). Outside
Fly those hosts do not resolve and pg_tls needs TLS, so host, port and sslmode are replaced; the
user, password, database and every other parameter are kept, repeated ones in their order.

Read as libpq reads a URL: percent-decoding only, so a `+` is a plus sign, never a space. Where
libpq would refuse a URL that node-postgres (what Fly apps often run) accepts, it is read as
node-postgres reads it: an unencoded `@` in the password (the host follows the last `@`), a `%`
that starts no escape (kept as written), a `=` inside a query value (the first `=` ends the name).

Written with every character but RFC 3986's unreserved ones percent-encoded (user, password,
database, query names and values), which libpq, node-postgres and pgjdbc all decode exactly;
form encoding's `+` for a space would reach libpq as a `+`. tests/clients/test_url_corpus.py
reads each output back with each client's own parser.

Shown to people (`redacted`): the password as `***`, and of the query only the values of
`SHOWN_PARAMS`; every other value is `***` and is one of `secrets`, which the action masks
before it prints anything. Error messages quote no part of the user name or password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import ValueProblem

_URL_RE = re.compile(r"^(?P<scheme>postgres(?:ql)?)://(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_REGION_RE = re.compile(r"^[a-z]{3}$")
# ASCII digits only: str.isdigit() also takes '²' and '٥', which int() then refuses or reads.
_PORT_RE = re.compile(r"[0-9]{1,5}")
MASK = "***"
# Parameters whose meaning depends on the client and the TLS settings: always set afresh, never
# carried over from the internal URL (`sslmode=disable` there would break every client).
_TLS_PARAMS = frozenset({"sslmode", "sslrootcert", "uselibpqcompat", "sslfactory"})
_ENDPOINT_PARAMS = frozenset({"host", "hostaddr", "port"})

# Query parameters whose values a person may see in the log, the summary and the PR comment.
# A value of any other parameter could be a credential (`options` can carry any setting), so it
# is shown as *** and masked.
SHOWN_PARAMS = frozenset(
    {
        # Set by the action (urls.py).
        *_TLS_PARAMS,
        # Shown in the URL anyway.
        *("host", "hostaddr", "port", "dbname", "user"),
        # Labels PostgreSQL shows to every user of the database (pg_stat_activity).
        *("application_name", "fallback_application_name"),
        # Numbers and keywords that choose libpq's behaviour.
        *("connect_timeout", "client_encoding", "target_session_attrs", "load_balance_hosts"),
        *("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"),
        *("tcp_user_timeout", "gssencmode", "gssdelegation", "gsslib", "krbsrvname"),
        *("sslnegotiation", "sslcompression", "sslsni", "channel_binding", "require_auth"),
        *("ssl_min_protocol_version", "ssl_max_protocol_version", "replication"),
        *("min_protocol_version", "max_protocol_version"),
        # Prisma's, read from the same DATABASE_URL by apps that use it.
        *("schema", "connection_limit", "pool_timeout", "pgbouncer", "statement_cache_size"),
        "socket_timeout",
    }
)
# Credentials: never shown, whatever SHOWN_PARAMS says.
SECRET_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})

_HINT = (
    "if the user name or password holds '/', '?' or '@', percent-encode it "
    "('/' as %2F, '?' as %3F, '@' as %40)"
)

Params = tuple[tuple[str, str], ...]


class ConnStringError(ValueProblem):
    """The connection string does not parse; the message never quotes the user or password."""


def shown(key: str) -> bool:
    """Whether a person may see the value of query parameter `key`."""
    return key in SHOWN_PARAMS and key not in SECRET_PARAMS


def encode(text: str, safe: str = "") -> str:
    """Percent-encoded but for RFC 3986's unreserved characters and `safe`."""
    return quote(text, safe=safe)


def _decode(text: str, part: str) -> str:
    """Percent-decoding only (libpq's; `+` stays `+`)."""
    if "%00" in text:
        raise ConnStringError(f"has %00 in its {part}: a connection parameter holds no NUL byte.")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ConnStringError(f"has a {part} whose percent-escapes are not UTF-8.") from None


@dataclass(frozen=True)
class ConnString:
    scheme: str
    user: str
    password: str = field(repr=False)
    userinfo: str = field(repr=False)  # user[:password] exactly as written (percent-encoded)
    host: str
    port: int | None
    database: str
    query: Params = field(repr=False)  # decoded, in order; of a repeated name, libpq takes the last
    written_query: Params = field(repr=False)  # the same pairs as written
    raw: str = field(repr=False)

    def external(
        self, host: str, port: int, params: Sequence[tuple[str, str]], *, path_safe: str = ""
    ) -> str:
        """This URL at `host`:`port`, with `params` (the TLS ones) in place of those of the same
        names; every other parameter stays as it was. `path_safe`: characters the client needs
        raw in the database name (node-postgres's, urls.py)."""
        query = [f"{encode(k)}={encode(v)}" for k, v in self._query(params)]
        return self._build(
            f"{encode(self.user)}:{encode(self.password)}", host, port, query, path_safe
        )

    def redacted(self, host: str, port: int, params: Sequence[tuple[str, str]]) -> str:
        """The external URL as people see it: the password and every value a person may not
        see (`shown`) as ***, the names kept."""
        query = [f"{encode(k)}={encode(v) if shown(k) else MASK}" for k, v in self._query(params)]
        return self._build(f"{encode(self.user)}:{MASK}", host, port, query, "")

    def _query(self, params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        # The internal URL's own host, address and port in its query would win over the external
        # ones (libpq and node-postgres read the query last): they are the internal endpoint, so
        # they go, with the TLS parameters set afresh.
        replaced = {k for k, _ in params} | _TLS_PARAMS | _ENDPOINT_PARAMS
        return [*((k, v) for k, v in self.query if k not in replaced), *params]

    def _build(self, userinfo: str, host: str, port: int, query: list[str], path_safe: str) -> str:
        path = "/" + encode(self.database, path_safe) if self.database else ""
        tail = "?" + "&".join(query) if query else ""
        return f"{self.scheme}://{userinfo}@{host}:{port}{path}{tail}"

    @property
    def secrets(self) -> list[str]:
        """The whole internal URL; the password and each value a person may not see, decoded,
        as written and as the action writes it."""
        out = [self.raw]
        out += [self.password, self.userinfo.partition(":")[2], encode(self.password)]
        for (key, value), (_, written) in zip(self.query, self.written_query, strict=True):
            if value and not shown(key):
                out += [value, written, encode(value)]
        return list(dict.fromkeys(s for s in out if s))


def hide_secrets(url: str) -> str:
    """Any postgres URL as people may see it: the password and each value a person may not see
    (`shown`) as ***. For text that reaches a report from elsewhere than `redacted`."""
    head, question, query = url.partition("?")
    scheme, sep, rest = head.partition("://")
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        head = f"{scheme}{sep}{userinfo.partition(':')[0]}:{MASK}@{location}"
    pairs = [segment.partition("=") for segment in query.split("&")] if question else []
    hidden = [f"{k}={v if shown(unquote(k)) else MASK}" if eq else k for k, eq, v in pairs]
    return head + question + "&".join(hidden)


def _internal_hosts(app: str) -> tuple[str, ...]:
    return (f"{app}.flycast", f"{app}.internal", f"{app}.fly.dev")


def _is_this_apps_host(host: str, app: str, external_host: str) -> bool:
    if host in (*_internal_hosts(app), external_host):
        return True
    # top2.nearest.of.<app>.internal, <region>.<app>.internal, <machine>.vm.<app>.internal
    suffix = f".{app}.internal"
    if host.endswith(suffix):
        head = host[: -len(suffix)]
        return bool(
            re.fullmatch(r"top\d+\.nearest\.of", head)
            or _REGION_RE.fullmatch(head)
            or re.fullmatch(r"[0-9a-f]{14}\.vm", head)
        )
    return False


@dataclass(frozen=True)
class _Parts:
    """The URL cut into its parts, as written. `ambiguous`: an `@` follows the cut, so a `/` or
    `?` inside the password may have cut it early, and the host or port may be a piece of the
    password: errors then quote neither."""

    userinfo: str
    hostport: str
    path: str
    query: str
    ambiguous: bool


def _split(rest: str) -> _Parts:
    netloc, slash, tail = rest.partition("/")
    if not slash:
        netloc, _, query_only = rest.partition("?")
        tail = "?" + query_only if query_only else ""
    path, _, query = tail.partition("?")
    if "@" in path:
        raise ConnStringError(
            f"has an '@' after the first '/', where the database name goes: {_HINT}; in a "
            "database name, write '@' as %40."
        )
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or not userinfo:
        hint = f"; {_HINT}" if "@" in tail else ""
        raise ConnStringError(f"has no user: expected postgres://user:password@host/db{hint}.")
    return _Parts(userinfo, hostport, path, query, ambiguous="@" in tail)


def _credentials(userinfo: str) -> tuple[str, str]:
    user_raw, colon, password_raw = userinfo.partition(":")
    if not user_raw:
        raise ConnStringError("has no user name before the password.")
    if not colon or not password_raw:
        raise ConnStringError(
            "has no password: an external connection needs one (postgres://user:password@host)."
        )
    return _decode(user_raw, "user name"), _decode(password_raw, "password")


def _host_port(parts: _Parts, app: str) -> tuple[str, int | None]:
    if parts.hostport.startswith("["):
        raise ConnStringError(
            "uses an IP literal as host; use the app's internal hostname "
            f"({app}.flycast or {app}.internal), which the action rewrites."
        )
    host, colon, port_text = parts.hostport.partition(":")
    host = host.lower().rstrip(".")
    port: int | None = None
    if colon:
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            if parts.ambiguous:
                raise ConnStringError(f"has an invalid port, or {_HINT}.")
            raise ConnStringError(f"has an invalid port {port_text[:20]!r}.")
        port = int(port_text)
    if not host:
        raise ConnStringError("has no host.")
    return host, port


def _check_host(host: str, parts: _Parts, app: str, external_host: str) -> None:
    if _is_this_apps_host(host, app, external_host):
        return
    named = "a host" if parts.ambiguous else f"host {host[:80]!r}"
    hint = f" Or: {_HINT}." if parts.ambiguous else ""
    raise ConnStringError(
        f"points at {named}, which is not app {app!r}. Expected {app}.flycast, "
        f"{app}.internal, top2.nearest.of.{app}.internal or {external_host}; check that the "
        f"app input and the connection string belong to the same Postgres app.{hint}"
    )


def _parse_query(query: str) -> tuple[Params, Params]:
    """(name, value) pairs decoded, and as written. A trailing `&` is allowed, as libpq does."""
    segments = query.split("&")
    if segments[-1] == "":
        segments.pop()
    decoded, written = [], []
    for segment in segments:
        name, eq, value = segment.partition("=")
        if not eq or not name:
            raise ConnStringError(
                "has a malformed query string: each parameter is name=value, joined by '&' "
                "(percent-encode '&' inside a value as %26)."
            )
        decoded.append((_decode(name, "query"), _decode(value, "query")))
        written.append((name, value))
    return tuple(decoded), tuple(written)


def parse_conn_string(raw: str, *, app: str, external_host: str) -> ConnString:
    """Parse and check a connection string of `app`. Error text never includes the password."""
    m = _URL_RE.match(raw)
    if not m:
        raise ConnStringError(
            "is not a postgres:// or postgresql:// URL (expected the DATABASE_URL that "
            "fly pg attach sets, e.g. postgres://user:password@<app>.flycast:5432/db)."
        )
    parts = _split(m.group("rest"))
    user, password = _credentials(parts.userinfo)
    host, port = _host_port(parts, app)
    _check_host(host, parts, app, external_host)
    path = parts.path.strip("/")
    if "/" in path:
        raise ConnStringError(
            "has a path with more than a database name (write a '/' in the name as %2F)."
        )
    query, written = _parse_query(parts.query)
    return ConnString(
        scheme=m.group("scheme").lower(),
        user=user,
        password=password,
        userinfo=parts.userinfo,
        host=host,
        port=port,
        database=_decode(path, "database name"),
        query=query,
        written_query=written,
        raw=raw,
    )
