"""Internal Fly Postgres connection strings → the external one, and its redacted form.

`fly pg create` prints `postgres://postgres:<pw>@<app>.flycast:5432` and `fly pg attach` sets
`postgres://<user>:<pw>@<app>.flycast:5432/<db>?sslmode=disable` (or a `.internal` host). Outside
Fly those hosts do not resolve and pg_tls needs TLS, so host, port and sslmode are replaced; the
user, password (kept exactly as encoded), database and every other parameter are kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .errors import ValueProblem

_URL_RE = re.compile(r"^(?P<scheme>postgres(?:ql)?)://(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_REGION_RE = re.compile(r"^[a-z]{3}$")
# Parameters whose meaning depends on the client and the TLS settings: always set afresh, never
# carried over from the internal URL (`sslmode=disable` there would break every client).
_TLS_PARAMS = frozenset({"sslmode", "sslrootcert", "uselibpqcompat", "sslfactory"})


class ConnStringError(ValueProblem):
    """The connection string does not parse; the message never quotes the password."""


@dataclass(frozen=True)
class ConnString:
    scheme: str
    user: str
    password: str = field(repr=False)
    userinfo: str = field(repr=False)  # user[:password] exactly as written (percent-encoded)
    host: str
    port: int | None
    database: str
    query: tuple[tuple[str, str], ...]
    raw: str = field(repr=False)

    def external(self, host: str, port: int, params: Sequence[tuple[str, str]]) -> str:
        """This URL at `host`:`port`, with `params` (the TLS ones) in place of those of the same
        names; every other parameter stays as it was."""
        return self._build(self.userinfo, host, port, params)

    def redacted(self, host: str, port: int, params: Sequence[tuple[str, str]]) -> str:
        user = self.userinfo.split(":", 1)[0]
        return self._build(f"{user}:***" if self.password else user, host, port, params)

    def _build(self, userinfo: str, host: str, port: int, params: Sequence[tuple[str, str]]) -> str:
        replaced = {k for k, _ in params} | _TLS_PARAMS
        query = [(k, v) for k, v in self.query if k not in replaced]
        query.extend(params)
        path = "/" + quote(self.database, safe="") if self.database else ""
        return f"{self.scheme}://{userinfo}@{host}:{port}{path}?{urlencode(query)}"

    @property
    def secrets(self) -> list[str]:
        """The password decoded and as written in the URL, and the whole internal URL."""
        out = [self.raw]
        if self.password:
            out.append(self.password)
            encoded = self.userinfo.split(":", 1)[1] if ":" in self.userinfo else ""
            if encoded:
                out.append(encoded)
        return out


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


def _host_port(hostport: str) -> tuple[str, int | None]:
    host, colon, port_text = hostport.partition(":")
    host = host.lower().rstrip(".")
    port: int | None = None
    if colon:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConnStringError(f"has an invalid port {port_text[:20]!r}.")
        port = int(port_text)
    if not host:
        raise ConnStringError("has no host.")
    return host, port


def parse_conn_string(raw: str, *, app: str, external_host: str) -> ConnString:
    """Parse and check a connection string of `app`. Error text never includes the password."""
    m = _URL_RE.match(raw)
    if not m:
        raise ConnStringError(
            "is not a postgres:// or postgresql:// URL (expected the DATABASE_URL that "
            "fly pg attach sets, e.g. postgres://user:password@<app>.flycast:5432/db)."
        )
    rest = m.group("rest")
    netloc, sep, tail = rest.partition("/")
    if not sep:
        netloc, _, query_only = rest.partition("?")
        tail = "?" + query_only if query_only else ""
    path, _, query = tail.partition("?")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or not userinfo:
        raise ConnStringError("has no user: expected postgres://user:password@host/db.")
    user_raw, colon, password_raw = userinfo.partition(":")
    if not user_raw:
        raise ConnStringError("has no user name before the password.")
    if not colon or not password_raw:
        raise ConnStringError(
            "has no password: an external connection needs one (postgres://user:password@host)."
        )
    if hostport.startswith("["):
        raise ConnStringError(
            "uses an IP literal as host; use the app's internal hostname "
            f"({app}.flycast or {app}.internal), which the action rewrites."
        )
    host, port = _host_port(hostport)
    if not _is_this_apps_host(host, app, external_host):
        raise ConnStringError(
            f"points at host {host[:80]!r}, which is not app {app!r}. Expected {app}.flycast, "
            f"{app}.internal, top2.nearest.of.{app}.internal or {external_host}; check that the "
            "app input and the connection string belong to the same Postgres app."
        )
    database = unquote(path.strip("/"))
    if "/" in database:
        raise ConnStringError("has a path with more than a database name.")
    try:
        params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ConnStringError("has a malformed query string.") from None
    return ConnString(
        scheme=m.group("scheme").lower(),
        user=unquote(user_raw),
        password=unquote(password_raw),
        userinfo=userinfo,
        host=host,
        port=port,
        database=database,
        query=params,
        raw=raw,
    )
