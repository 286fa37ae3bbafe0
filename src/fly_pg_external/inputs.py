"""Reading one input: each cleaner checks a raw value and returns it typed, or raises an
`InputError` that names the input and says what is accepted. Nothing here talks to the network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from .connstr import ConnString, ConnStringError, parse_conn_string
from .domain import IP_FAMILIES, IpFamily
from .errors import InputError
from .flytoken import FlyAuth, TokenError, parse_token

# Fly app names are DNS labels: lower-case letters, digits and hyphens.
_APP_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_INPUT_LEN = 4096
_MAX_TOKEN_LEN = 16384
_Choice = TypeVar("_Choice", bound=str)
_TRUE = {"true"}
_FALSE = {"false"}


@dataclass(frozen=True)
class Addresses:
    """The `addresses` input: public addresses named for release besides the action's own."""

    named: tuple[str, ...] = ()
    every: bool = False  # `all`

    def names(self, address: str) -> bool:
        return self.every or address in self.named


def clean_text(name: str, raw: str, *, whitespace_ok: bool = False) -> str:
    if len(raw) > _MAX_INPUT_LEN:
        raise InputError(name, f"is {len(raw)} characters long; at most {_MAX_INPUT_LEN} accepted.")
    value = raw.strip()
    allowed = "\t\n\r" if whitespace_ok else ""
    if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
        raise InputError(name, "contains a control character (e.g. a newline); not accepted.")
    return value


def clean_app(raw: str) -> str:
    value = clean_text("app", raw)
    if not value:
        raise InputError("app", "is required: the name of the Fly Postgres app (fly pg create).")
    if not _APP_RE.match(value):
        raise InputError(
            "app",
            f"{value[:80]!r} is not a Fly app name: lower-case letters, digits and hyphens, "
            "1-63 characters, not starting or ending with a hyphen.",
        )
    return value


def clean_ip_versions(raw: str) -> tuple[IpFamily, ...]:
    # A YAML block scalar gives newlines between items: they are separators here.
    value = clean_text("ip-versions", raw, whitespace_ok=True)
    items = [i.lower() for i in re.split(r"[,\s]+", value) if i]
    out: list[IpFamily] = []
    for item in items:
        if item in ("shared-v4", "shared_v4", "sharedv4"):
            raise InputError(
                "ip-versions",
                f"{item!r} is not accepted: a shared IPv4 routes by TLS SNI or HTTP Host and "
                "cannot carry raw TCP or pg_tls. Use v4 (a dedicated IPv4, billed by Fly) "
                "and/or v6.",
            )
        family = next((f for f in IP_FAMILIES if f == item), None)
        if family is None:
            raise InputError(
                "ip-versions", f"{item[:40]!r} is not accepted; use v4, v6 or both (e.g. v4,v6)."
            )
        if family not in out:
            out.append(family)
    if not out:
        raise InputError("ip-versions", "is empty; name at least one of v4, v6.")
    return tuple(sorted(out))


def clean_host(raw: str, app: str) -> str:
    value = clean_text("host", raw).lower().rstrip(".")
    if not value:
        return f"{app}.fly.dev"
    labels = value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL_RE.match(label) for label in labels):
        raise InputError(
            "host",
            f"{value[:80]!r} is not a hostname: dot-separated labels of letters, digits and "
            "hyphens (no scheme, port or path). Empty means <app>.fly.dev.",
        )
    return value


# ASCII digits only: str.isdigit() and int() also take "²" or "٣", which no user means and
# which crash int() or pass a lookalike through to Fly.
_INTEGER_RE = re.compile(r"[0-9]{1,10}")
_NUMBER_RE = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")


def _integer(value: str) -> int:
    """`value` as an int when it is 1-10 ASCII digits, else -1 (never a valid count here)."""
    return int(value) if _INTEGER_RE.fullmatch(value) else -1


def _number(value: str) -> float:
    """`value` as a float when it is ASCII digits with an optional fraction, else -1."""
    return float(value) if _NUMBER_RE.fullmatch(value) else -1.0


def clean_port(raw: str) -> int:
    value = clean_text("port", raw)
    if not 1 <= _integer(value) <= 65535:
        raise InputError(
            "port", f"{value[:40]!r} is not a port number; use 1-65535 (default 5432)."
        )
    return int(value)


def clean_choice(name: str, raw: str, choices: tuple[_Choice, ...], why: str = "") -> _Choice:
    value = clean_text(name, raw).lower()
    for choice in choices:
        if value == choice:
            return choice
    accepted = ", ".join(choices)
    raise InputError(name, f"{value[:40]!r} is not accepted; use one of: {accepted}.{why}")


def clean_bool(name: str, raw: str) -> bool:
    value = clean_text(name, raw).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(name, f"{value[:40]!r} is not a boolean; use true or false.")


def clean_addresses(raw: str) -> Addresses:
    value = clean_text("addresses", raw).strip()
    if not value:
        return Addresses()
    if value.lower() == "all":
        return Addresses(every=True)
    named: list[str] = []
    for item in value.replace(",", " ").split():
        try:
            named.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise InputError(
                "addresses",
                f"{item[:60]!r} is not an IP address; use all, or a comma-separated list of the "
                "app's public addresses (fly ips list -a <app>).",
            ) from None
    return Addresses(named=tuple(dict.fromkeys(named)))


_AGE_RE = re.compile(r"^([0-9]{1,10}(?:\.[0-9]{1,6})?)[ \t]*([smhd]?)$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def clean_max_age(raw: str) -> float:
    value = clean_text("max-age", raw).strip().lower()
    match = _AGE_RE.match(value)
    seconds = float(match.group(1)) * _AGE_UNITS[match.group(2)] if match else -1.0
    if not 60 <= seconds <= 366 * 86400:
        raise InputError(
            "max-age",
            f"{value[:40]!r} is not accepted; use a duration from 1m to 366d, e.g. 12h or 7d.",
        )
    return seconds


def clean_wait_timeout(raw: str) -> float:
    value = clean_text("wait-timeout", raw)
    seconds = _number(value)
    if not 1 <= seconds <= 3600:
        raise InputError(
            "wait-timeout", f"{value[:40]!r} is not accepted; use a number of seconds, 1-3600."
        )
    return seconds


def clean_base_url(name: str, raw: str) -> str:
    value = clean_text(name, raw).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(name, f"{value[:80]!r} is not an http(s) URL.")
    return value


def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = _number(raw)
    if not 0 < value <= 3600:
        raise InputError(name, f"{raw[:20]!r} is not accepted; use a number of seconds, 0-3600.")
    return value


def clean_database_url(raw: str, *, app: str, host: str) -> ConnString | None:
    raw_url = clean_text("database-url", raw)
    if not raw_url:
        return None
    try:
        return parse_conn_string(raw_url, app=app, external_host=host)
    except ConnStringError as exc:
        raise InputError("database-url", str(exc)) from None


def clean_fly_token(raw_token: str, env: Mapping[str, str]) -> FlyAuth:
    """The input, else FLY_ACCESS_TOKEN, then FLY_API_TOKEN: flyctl's names, in flyctl's
    order (internal/config/config.go, applyEnv: env.First(AccessTokenEnvKey, APITokenEnvKey)),
    so a job that sets both gets the token `fly` would use. Errors name the one the token came
    from, never the token."""
    token_name = "fly-api-token"
    if not raw_token.strip():
        for var in ("FLY_ACCESS_TOKEN", "FLY_API_TOKEN"):
            if env.get(var, "").strip():
                raw_token, token_name = env[var], var
                break
    if not raw_token.strip():
        raise InputError(
            "fly-api-token",
            "no Fly API token: set the fly-api-token input (or the FLY_ACCESS_TOKEN or "
            "FLY_API_TOKEN environment variable) from a secret holding a deploy token for the "
            "Postgres app (fly tokens create deploy -a <app>).",
        )
    if len(raw_token) > _MAX_TOKEN_LEN:
        # Checked here: sent as a header, an oversized token only earns an HTTP 431 page.
        raise InputError(
            token_name,
            f"is {len(raw_token)} characters long; at most {_MAX_TOKEN_LEN} accepted (Fly "
            "tokens are a few kilobytes at most).",
        )
    try:
        return parse_token(raw_token)
    except TokenError as exc:
        raise InputError(token_name, str(exc)) from None


_RELATIVE_PATH_RE = re.compile(r"^(?!-)[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")


def clean_sslrootcert(raw: str, sslmode: str) -> str:
    """`system`, or the path of a PEM file on the machine that connects: absolute, or relative to
    the workspace (clients run there by default, and so does this step's container, where an
    absolute path of the runner's is not to be found). libpq takes `sslrootcert=system` only
    with verify-full, and with `require` a root file would make it verify after all, so both
    are refused here rather than handed out in a URL that fails."""
    value = clean_text("sslrootcert", raw)
    if not value or value == "system":
        if sslmode == "verify-ca":
            raise InputError(
                "sslrootcert",
                "is system, which libpq accepts only with sslmode verify-full (any certificate "
                "a public CA issued would pass verify-ca). Use sslmode: verify-full, or set "
                "sslrootcert to the path of your CA file, e.g. /etc/ssl/certs/ca-certificates.crt.",
            )
        return "system"
    absolute = value.startswith("/") and not any(c in value for c in "&?#% ")
    relative = bool(_RELATIVE_PATH_RE.match(value)) and ".." not in value.split("/")
    if not (absolute or relative):
        raise InputError(
            "sslrootcert",
            f"{value[:80]!r} is not accepted; use system, or the path of a PEM CA file: absolute "
            "(no spaces or &?#%), e.g. /etc/ssl/certs/ca-certificates.crt, or relative to the "
            "workspace (letters, digits, ._-/ and no ..), e.g. certs/ca.pem.",
        )
    if sslmode == "require":
        raise InputError(
            "sslrootcert",
            "names a CA file, but sslmode require checks no certificate. Use sslmode verify-ca "
            "or verify-full with it, or leave sslrootcert at system.",
        )
    return value


def clean_pr_number(raw: str) -> int | None:
    value = clean_text("pr-number", raw)
    if not value:
        return None
    if not 0 < _integer(value) < 2**31:
        raise InputError(
            "pr-number",
            f"{value[:40]!r} is not a pull request number; use a positive integer (the pull "
            "request the run belongs to), or leave it empty.",
        )
    return int(value)


_HOLD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")


def clean_hold_name(raw: str) -> str:
    """The name of a persistent run's hold (holders.py); empty: the workflow's file name."""
    value = clean_text("hold-name", raw)
    if value and not _HOLD_NAME_RE.match(value):
        raise InputError(
            "hold-name",
            f"{value[:60]!r} is not accepted: 1-60 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (e.g. bi-dashboard), or leave it empty for the workflow's "
            "file name.",
        )
    return value
