"""Inputs and environment → validated, typed Settings. Nothing here talks to the network.

Every problem is an `InputError` whose message names the input and says what is accepted, so the
run can stop before its first request. Secrets are `repr=False`: a Settings printed in a
traceback or a debug line shows no token and no password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from .connstr import ConnString, ConnStringError, parse_conn_string
from .domain import (
    IMAGE_POLICIES,
    IP_FAMILIES,
    LIFETIMES,
    MODES,
    SSL_MODES,
    ImagePolicy,
    IpFamily,
    Lifetime,
    Mode,
    SslMode,
)
from .errors import InputError
from .flytoken import FlyAuth, TokenError, parse_token

DEFAULT_API_BASE_URL = "https://api.fly.io"
DEFAULT_FLAPS_BASE_URL = "https://api.machines.dev"

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


@dataclass(frozen=True)
class Settings:
    app: str
    ip_versions: tuple[IpFamily, ...]
    host: str
    port: int
    sslmode: SslMode
    mode: Mode
    dry_run: bool
    image: ImagePolicy
    wait_timeout: float
    verify: bool
    pr_comment: bool
    api_base_url: str
    flaps_base_url: str
    fly_auth: FlyAuth = field(repr=False)
    # Environment knobs for slow networks (and for fault tests): seconds per Fly request, and
    # how long the verification may retry a fresh address.
    http_timeout: float = 30.0
    verify_timeout: float = 60.0
    # How long a machine lease held by someone else is waited for before giving up.
    lease_wait: float = 40.0
    github_token: str = field(repr=False, default="")
    database_url: ConnString | None = field(repr=False, default=None)
    # Who exposes for how long (ownership.py): `job` releases at the end of the job what the
    # run allocated; `addresses` names addresses unexpose may release although they are not the
    # action's own ("all" for every one); sweep drops holds older than `max_age` seconds.
    lifetime: Lifetime = "persistent"
    addresses: Addresses = field(default_factory=Addresses)
    max_age: float = 7 * 86400.0

    @property
    def read_only(self) -> bool:
        """plan, or a dry run of expose/unexpose/sweep: no lease, no allocation, no update."""
        return self.mode == "plan" or self.dry_run

    @property
    def releasing(self) -> bool:
        """unexpose or sweep: the run may release addresses, never allocates or restarts."""
        return self.mode in ("unexpose", "sweep")

    @property
    def secrets(self) -> list[str]:
        """Every value that must be masked, in the spellings the runner and our redactor need."""
        out = [*self.fly_auth.secrets]
        if self.github_token:
            out.append(self.github_token)
        if self.database_url is not None:
            out.extend(self.database_url.secrets)
            # Known before any request, so it is masked before anything is printed.
            out.append(self.database_url.external(self.host, self.port, self.sslmode))
        return out


def _clean_text(name: str, raw: str, *, whitespace_ok: bool = False) -> str:
    if len(raw) > _MAX_INPUT_LEN:
        raise InputError(name, f"is {len(raw)} characters long; at most {_MAX_INPUT_LEN} accepted.")
    value = raw.strip()
    allowed = "\t\n\r" if whitespace_ok else ""
    if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
        raise InputError(name, "contains a control character (e.g. a newline); not accepted.")
    return value


def clean_app(raw: str) -> str:
    value = _clean_text("app", raw)
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
    value = _clean_text("ip-versions", raw, whitespace_ok=True)
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
    value = _clean_text("host", raw).lower().rstrip(".")
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


def clean_port(raw: str) -> int:
    value = _clean_text("port", raw)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InputError(
            "port", f"{value[:40]!r} is not a port number; use 1-65535 (default 5432)."
        )
    return int(value)


def clean_choice(name: str, raw: str, choices: tuple[_Choice, ...], why: str = "") -> _Choice:
    value = _clean_text(name, raw).lower()
    for choice in choices:
        if value == choice:
            return choice
    accepted = ", ".join(choices)
    raise InputError(name, f"{value[:40]!r} is not accepted; use one of: {accepted}.{why}")


def clean_bool(name: str, raw: str) -> bool:
    value = _clean_text(name, raw).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(name, f"{value[:40]!r} is not a boolean; use true or false.")


def clean_addresses(raw: str) -> Addresses:
    value = _clean_text("addresses", raw).strip()
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


_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def clean_max_age(raw: str) -> float:
    value = _clean_text("max-age", raw).strip().lower()
    match = _AGE_RE.match(value)
    seconds = float(match.group(1)) * _AGE_UNITS[match.group(2)] if match else -1.0
    if not 60 <= seconds <= 366 * 86400:
        raise InputError(
            "max-age",
            f"{value[:40]!r} is not accepted; use a duration from 1m to 366d, e.g. 12h or 7d.",
        )
    return seconds


def clean_wait_timeout(raw: str) -> float:
    value = _clean_text("wait-timeout", raw)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 3600:
        raise InputError(
            "wait-timeout", f"{value[:40]!r} is not accepted; use a number of seconds, 1-3600."
        )
    return seconds


def clean_base_url(name: str, raw: str) -> str:
    value = _clean_text(name, raw).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(name, f"{value[:80]!r} is not an http(s) URL.")
    return value


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise InputError(name, f"{raw[:20]!r} is not accepted; use a number of seconds, 0-3600.")
    return value


def clean_database_url(raw: str, *, app: str, host: str) -> ConnString | None:
    raw_url = _clean_text("database-url", raw)
    if not raw_url:
        return None
    try:
        return parse_conn_string(raw_url, app=app, external_host=host)
    except ConnStringError as exc:
        raise InputError("database-url", str(exc)) from None


def clean_fly_token(raw_token: str, env: Mapping[str, str]) -> FlyAuth:
    """The input, else FLY_API_TOKEN or FLY_ACCESS_TOKEN (flyctl's names); errors name the
    one the token came from, never the token."""
    token_name = "fly-api-token"
    if not raw_token.strip():
        for var in ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN"):
            if env.get(var, "").strip():
                raw_token, token_name = env[var], var
                break
    if not raw_token.strip():
        raise InputError(
            "fly-api-token",
            "no Fly API token: set the fly-api-token input (or the FLY_API_TOKEN environment "
            "variable) from a secret holding a deploy token for the Postgres app "
            "(fly tokens create deploy -a <app>).",
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


def clean_lifetime_inputs(
    inp: Callable[[str, str], str], mode: Mode
) -> tuple[Lifetime, Addresses, float]:
    """`lifetime`, `addresses` and `max-age`, each refused where its mode cannot use it."""
    lifetime = clean_choice("lifetime", inp("lifetime", "persistent"), LIFETIMES)
    if lifetime == "job" and mode != "expose":
        raise InputError(
            "lifetime",
            f"job applies to mode expose (the post step releases what it allocated); mode "
            f"{mode} allocates nothing. Leave lifetime at persistent.",
        )
    addresses = clean_addresses(inp("addresses", ""))
    if (addresses.named or addresses.every) and mode != "unexpose":
        raise InputError(
            "addresses",
            f"names addresses to release, which only mode unexpose does (mode is {mode}).",
        )
    return lifetime, addresses, clean_max_age(inp("max-age", "7d"))


def from_environ(env: Mapping[str, str], read_input: Callable[[str], str | None]) -> Settings:
    """Build Settings from the runner's environment. Raises InputError on the first bad value."""

    def inp(name: str, default: str = "") -> str:
        value = read_input(name)
        return default if value is None else value

    app = clean_app(inp("app"))
    ip_versions = clean_ip_versions(inp("ip-versions", "v4,v6"))
    host = clean_host(inp("host"), app)
    port = clean_port(inp("port", "5432"))
    sslmode = clean_choice(
        "sslmode",
        inp("sslmode", "require"),
        SSL_MODES,
        " pg_tls only accepts TLS, so disable/allow/prefer cannot work.",
    )
    mode = clean_choice("mode", inp("mode", "expose"), MODES)
    dry_run = clean_bool("dry-run", inp("dry-run", "false"))
    image = clean_choice("image", inp("image", "keep"), IMAGE_POLICIES)
    wait_timeout = clean_wait_timeout(inp("wait-timeout", "300"))
    verify = clean_bool("verify", inp("verify", "true"))
    pr_comment = clean_bool("pr-comment", inp("pr-comment", "true"))
    github_token = _clean_text("github-token", inp("github-token"))

    database_url = clean_database_url(inp("database-url"), app=app, host=host)
    fly_auth = clean_fly_token(inp("fly-api-token"), env)
    lifetime, addresses, max_age = clean_lifetime_inputs(inp, mode)

    return Settings(
        app=app,
        ip_versions=ip_versions,
        host=host,
        port=port,
        sslmode=sslmode,
        mode=mode,
        dry_run=dry_run,
        image=image,
        wait_timeout=wait_timeout,
        verify=verify,
        pr_comment=pr_comment,
        api_base_url=clean_base_url(
            "FLY_API_BASE_URL", env.get("FLY_API_BASE_URL") or DEFAULT_API_BASE_URL
        ),
        flaps_base_url=clean_base_url(
            "FLY_FLAPS_BASE_URL", env.get("FLY_FLAPS_BASE_URL") or DEFAULT_FLAPS_BASE_URL
        ),
        fly_auth=fly_auth,
        http_timeout=_env_seconds(env, "FLY_PG_EXTERNAL_HTTP_TIMEOUT", 30.0),
        verify_timeout=_env_seconds(env, "FLY_PG_EXTERNAL_VERIFY_TIMEOUT", 60.0),
        lease_wait=_env_seconds(env, "FLY_PG_EXTERNAL_LEASE_WAIT", 40.0),
        github_token=github_token,
        database_url=database_url,
        lifetime=lifetime,
        addresses=addresses,
        max_age=max_age,
    )
