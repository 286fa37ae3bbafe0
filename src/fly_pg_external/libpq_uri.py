"""A connection URI read exactly as libpq reads it (`conninfo_uri_parse` in fe-connect.c):

    postgresql://[user[:password]@][host][:port][,host[:port]...][/dbname][?keyword=value&...]

so the verification logs in with what the `database-url` output means to a client, not with what
this action meant to put in it. libpq's rules, each one kept here:

- Only percent-encoding is decoded: `%XX` is one byte, and a `+` stays a `+` (it is not a space
  as in a form). A `%` not followed by two hex digits, and `%00`, make the URI invalid. Raw
  spaces around a part are dropped and one inside it is an error (libpq 18; a space is `%20`).
- The user information ends at the first `@` before any `/` (a `?` does not end it), the user
  name at its first `:`; an empty user name or password is as good as none.
- Hosts end at `:`, `/`, `?` or `,`; `[...]` holds an IPv6 address; several hosts are kept as
  libpq keeps them, joined by commas (their ports likewise, an empty one for each host without).
- An empty database name is as good as none.
- Query parameters are `keyword=value` pairs split on `&`; a pair without `=` or with a second one
  is an error; later pairs override earlier ones and the parts before them (`?user=…`);
  `ssl=true` means `sslmode=require` and `requiressl` is read as libpq reads it.
- libpq refuses the whole URI when a keyword is not one of its connection parameters (the
  keywords of libpq 18, `KEYWORDS`). `unknown="skip"` leaves such pairs out and names them in
  `Conninfo.skipped` instead, for a caller that reports them rather than fail on them.

Values are `str`; bytes a percent-escape produces that are not UTF-8 are kept as surrogates
(`surrogateescape`), so `value.encode("utf-8", "surrogateescape")` gives libpq's bytes back.
Error messages name the part that is wrong, never its value: the password may be in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ValueProblem

PREFIXES = (b"postgresql://", b"postgres://")
# libpq 18's connection parameters (PQconndefaults); a URI naming any other one is refused.
KEYWORDS = frozenset(
    {
        "service", "user", "password", "passfile", "channel_binding", "connect_timeout",
        "dbname", "host", "hostaddr", "port", "client_encoding", "options", "application_name",
        "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "sslmode", "sslnegotiation", "sslcompression",
        "sslcert", "sslkey", "sslcertmode", "sslpassword", "sslrootcert", "sslcrl", "sslcrldir",
        "sslsni", "requirepeer", "require_auth", "min_protocol_version", "max_protocol_version",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode", "krbsrvname",
        "gsslib", "gssdelegation", "replication", "target_session_attrs", "load_balance_hosts",
        "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id",
        "oauth_client_secret", "oauth_scope", "sslkeylogfile",
    }
)  # fmt: skip
_HEX = frozenset(b"0123456789abcdefABCDEF")
Unknown = Literal["reject", "skip"]


class UriError(ValueProblem):
    """libpq would refuse this URI; the message names the part, never its value."""


@dataclass(frozen=True)
class Conninfo:
    """What PQconninfoParse returns for a URI: each parameter it sets (no defaults)."""

    params: dict[str, str] = field(repr=False)  # the password is among them
    skipped: tuple[str, ...] = ()  # keywords libpq does not know (with unknown="skip")

    def get(self, keyword: str) -> str | None:
        return self.params.get(keyword)


def parse_uri(uri: str, *, unknown: Unknown = "reject") -> Conninfo:
    """`uri` as libpq parses it; UriError where libpq reports an error."""
    raw = uri.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        # libpq reads a C string, which ends at the first NUL: what follows would be lost.
        raise UriError("contains a NUL character.")
    prefix = next((p for p in PREFIXES if raw.startswith(p)), None)
    if prefix is None:
        raise UriError("does not start with postgresql:// or postgres://.")
    params: dict[str, str] = {}
    rest = _userinfo(raw[len(prefix) :], params)
    rest = _netlocs(rest, params)
    skipped: list[str] = []
    if rest.startswith(b"/"):
        dbname, question, query = rest[1:].partition(b"?")
        if dbname:
            params["dbname"] = _decode(dbname, "the database name")
        rest = question + query
    if rest.startswith(b"?"):
        _query(rest[1:], params, unknown, skipped)
    return Conninfo(params, tuple(skipped))


def _userinfo(rest: bytes, params: dict[str, str]) -> bytes:
    """`user[:password]@` when an `@` comes before any `/`; what follows it."""
    end = _scan(rest, 0, b"@/")
    if rest[end : end + 1] != b"@":
        return rest
    user, colon, password = rest[:end].partition(b":")
    if user:
        params["user"] = _decode(user, "the user name")
    if colon and password:
        params["password"] = _decode(password, "the password")
    return rest[end + 1 :]


def _netlocs(rest: bytes, params: dict[str, str]) -> bytes:
    """`host[:port]`, comma-separated; what follows the last one (`/…`, `?…` or nothing)."""
    hosts: list[bytes] = []
    ports: list[bytes] = []
    pos = 0
    while True:
        host, pos = _host(rest, pos)
        hosts.append(host)
        port = b""
        if rest[pos : pos + 1] == b":":
            end = _scan(rest, pos + 1, b"/?,")
            port, pos = rest[pos + 1 : end], end
        ports.append(port)
        if rest[pos : pos + 1] != b",":
            break
        pos += 1
    # libpq joins them first and decodes the whole, storing each only when it is not empty.
    for keyword, parts in (("host", hosts), ("port", ports)):
        joined = b",".join(parts)
        if joined:
            params[keyword] = _decode(joined, f"the {keyword}")
    return rest[pos:]


def _host(rest: bytes, pos: int) -> tuple[bytes, int]:
    """One host at `pos` (an IPv6 address without its brackets); the position after it."""
    if rest[pos : pos + 1] != b"[":
        end = _scan(rest, pos, b":/?,")
        return rest[pos:end], end
    close = rest.find(b"]", pos + 1)
    if close < 0:
        raise UriError("has an IPv6 host address without its closing ].")
    if close == pos + 1:
        raise UriError("has an empty IPv6 host address [].")
    after = rest[close + 1 : close + 2]
    if after and after not in (b":", b"/", b"?", b","):
        raise UriError("has a character other than : / ? or , after an IPv6 host address.")
    return rest[pos + 1 : close], close + 1


def _query(query: bytes, params: dict[str, str], unknown: Unknown, skipped: list[str]) -> None:
    """`keyword=value&…` into `params`, each overriding what came before."""
    pairs = query.split(b"&")
    if not pairs[-1]:
        pairs.pop()  # the end of the URI, or one `&` there, ends the last pair (not `&&`)
    for pair in pairs:
        raw_keyword, equals, raw_value = pair.partition(b"=")
        if not equals:
            raise UriError("has a query parameter without a key/value separator =.")
        if b"=" in raw_value:
            raise UriError("has a query parameter with a second key/value separator =.")
        keyword = _decode(raw_keyword, "a query parameter's name")
        value = _decode(raw_value, f"the value of query parameter {_shown(keyword)}")
        if keyword == "ssl" and value == "true":  # libpq's nod to JDBC URLs
            keyword, value = "sslmode", "require"
        elif keyword == "requiressl":  # the old spelling, read as libpq still reads it
            keyword, value = "sslmode", "require" if value.startswith("1") else "prefer"
        if keyword in KEYWORDS:
            params[keyword] = value
        elif unknown == "skip":
            skipped.append(keyword)
        else:
            raise UriError(
                f"has query parameter {_shown(keyword)}, which is not a libpq connection "
                "parameter (libpq refuses the whole URI)."
            )


def _scan(data: bytes, pos: int, stops: bytes) -> int:
    """The index of the first byte of `stops` at or after `pos`, else len(data)."""
    while pos < len(data) and data[pos] not in stops:
        pos += 1
    return pos


def _decode(data: bytes, what: str) -> str:
    """libpq's percent-decoding (conninfo_uri_decode): `%XX` only, never `+`, never `%00`; raw
    spaces around the part are dropped, and one inside it is an error."""
    out = bytearray()
    pos = len(data) - len(data.lstrip(b" "))
    while pos < len(data) and data[pos] != 0x20:
        if data[pos] != 0x25:  # %
            out.append(data[pos])
            pos += 1
            continue
        digits = data[pos + 1 : pos + 3]
        if len(digits) < 2 or not all(d in _HEX for d in digits):
            raise UriError(f"has an invalid percent-encoded token in {what}.")
        if digits == b"00":
            raise UriError(f"has the forbidden value %00 in {what}.")
        out.append(int(digits, 16))
        pos += 3
    if data[pos:].strip(b" "):
        raise UriError(f"has a space in {what}; a space there must be written %20.")
    return out.decode("utf-8", "surrogateescape")


def _shown(keyword: str) -> str:
    """A query keyword for a message: keywords are not secret, but keep them short."""
    return repr(keyword[:40] + ("…" if len(keyword) > 40 else ""))
