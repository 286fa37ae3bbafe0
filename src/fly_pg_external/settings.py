"""Inputs and environment → validated, typed Settings. Nothing here talks to the network.

Every problem is an `InputError` whose message names the input and says what is accepted, so the
run can stop before its first request (the cleaners of single inputs are in `inputs.py`; here
are the rules between inputs). Secrets are `repr=False`: a Settings printed in a traceback or a
debug line shows no token and no password.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .connstr import ConnString
from .credentials import CredentialSettings, clean_credential_inputs
from .domain import (
    IMAGE_POLICIES,
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
from .flytoken import FlyAuth
from .inputs import (
    Addresses,
    clean_addresses,
    clean_app,
    clean_base_url,
    clean_bool,
    clean_choice,
    clean_database_url,
    clean_fly_token,
    clean_hold_name,
    clean_host,
    clean_ip_versions,
    clean_max_age,
    clean_port,
    clean_pr_number,
    clean_sslrootcert,
    clean_text,
    clean_wait_timeout,
    env_seconds,
)
from .intent import Intent
from .urls import SYSTEM, ClientUrls, Tls, client_urls

DEFAULT_API_BASE_URL = "https://api.fly.io"
DEFAULT_FLAPS_BASE_URL = "https://api.machines.dev"


@dataclass(frozen=True)
class Settings:
    app: str
    ip_versions: tuple[IpFamily, ...]
    host: str
    port: int
    sslmode: SslMode
    mode: Mode
    dry_run: bool
    postgres_image: ImagePolicy
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
    lifetime: Lifetime = "persistent"  # resolved: empty means job
    addresses: Addresses = field(default_factory=Addresses)
    max_age: float = 7 * 86400.0
    # Where clients find the CA roots (urls.py); `mode: connect`, a read-only expose that hands
    # out the URLs and fails when the database is unreachable (exposure.py); the pull request a
    # run belongs to when its event names none; and whether a privileged run triggered from a
    # fork may change anything (forks.py).
    sslrootcert: str = SYSTEM
    connect: bool = False
    pr_number: int | None = None
    allow_forks: bool = False
    # What a persistent run's hold is called (holders.py); empty: after the workflow's file.
    hold_name: str = ""
    # Whose login the URLs carry: the internal URL's, or a role made for the run that expires
    # by itself (credentials.py).
    credentials: CredentialSettings = field(default_factory=CredentialSettings)

    @property
    def read_only(self) -> bool:
        """A dry run of expose/unexpose/sweep: no lease, no allocation, no update."""
        return self.dry_run

    @property
    def tls(self) -> Tls:
        return Tls(self.sslmode, self.sslrootcert)

    @property
    def urls(self) -> ClientUrls | None:
        """The connection outputs; None without a `database-url` input."""
        if self.database_url is None:
            return None
        return client_urls(self.database_url, self.host, self.port, self.tls)

    @property
    def intent(self) -> Intent:
        """What the planner gets: the run's request, without tokens or passwords."""
        urls = self.urls
        return Intent(
            app=self.app,
            mode=self.mode,
            families=self.ip_versions,
            host=self.host,
            port=self.port,
            read_only=self.read_only,
            image_policy=self.postgres_image,
            shown_url=urls.redacted if urls is not None and not self.releasing else None,
            addresses=self.addresses,
            max_age=self.max_age,
        )

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
        urls = self.urls
        if self.database_url is not None and urls is not None:
            out.extend(self.database_url.secrets)
            # Known before any request, so they are masked before anything is printed.
            out.extend(urls.secrets)
        return out


def clean_lifetime_inputs(
    inp: Callable[[str, str], str],
    mode: Mode,
    *,
    read_only: bool,
    hold_name: str,
    connect: bool = False,
) -> tuple[Lifetime, Addresses, float]:
    """`lifetime`, `addresses` and `max-age`, each refused where its mode cannot use it.

    Empty `lifetime` (the default) is `job` for a run that exposes, so a forgotten input closes
    the database at the end of the job instead of leaving it open; a named hold (`hold-name`)
    is persistent by nature. A read-only run allocates nothing, so it has nothing to close."""
    raw = clean_text("lifetime", inp("lifetime", "")).strip()
    if raw:
        lifetime = clean_choice("lifetime", raw, LIFETIMES, " Empty means job when exposing.")
    else:
        exposing = mode == "expose" and not read_only
        lifetime = "job" if exposing and not hold_name else "persistent"
    if lifetime == "job" and (mode != "expose" or connect):
        raise InputError(
            "lifetime",
            f"job applies to mode expose (the post step releases what it allocated); mode "
            f"{'connect' if connect else mode} allocates nothing. Leave lifetime empty.",
        )
    if lifetime == "job" and hold_name:
        raise InputError(
            "hold-name",
            "names a persistent hold, but lifetime is job: each job's hold is its own and ends "
            "with the job. Leave hold-name empty, or use lifetime: persistent.",
        )
    addresses = clean_addresses(inp("addresses", ""))
    if (addresses.named or addresses.every) and mode != "unexpose":
        raise InputError(
            "addresses",
            f"names addresses to release, which only mode unexpose does (mode is {mode}).",
        )
    return ("persistent" if read_only else lifetime), addresses, clean_max_age(inp("max-age", "7d"))


def clean_tls_inputs(inp: Callable[[str, str], str]) -> tuple[SslMode, str]:
    """`sslmode` and `sslrootcert`: libpq's rules between the two (inputs.py)."""
    sslmode = clean_choice(
        "sslmode",
        inp("sslmode", "require"),
        SSL_MODES,
        " pg_tls only accepts TLS, so disable/allow/prefer cannot work.",
    )
    return sslmode, clean_sslrootcert(inp("sslrootcert", SYSTEM), sslmode)


# Inputs renamed before v1: given, they are refused with the new spelling, not ignored.
RENAMED_INPUTS = {
    "require-exposed": (
        "was replaced by mode: connect, a read-only run that hands out the connection outputs "
        "and fails, saying what is missing, when the database is not reachable from outside Fly."
    ),
}


def clean_mode_inputs(
    inp: Callable[[str, str], str], read_input: Callable[[str], str | None]
) -> tuple[Mode, bool, bool]:
    """`mode` and `dry-run`: the planning mode, whether the run is read only, and whether it
    is `connect` (read only, hands out the URLs, fails when the database is not reachable)."""
    for name, why in RENAMED_INPUTS.items():
        if read_input(name) is not None:
            raise InputError(name, why)
    raw_mode = clean_choice(
        "mode",
        inp("mode", "expose"),
        (*MODES, "connect"),
        " For a read-only run that reports what would change, set dry-run: true; for one that "
        "hands out the URLs of an exposed database, mode: connect.",
    )
    dry_run = clean_bool("dry-run", inp("dry-run", "false"))
    if raw_mode == "connect":
        return "expose", True, True
    mode: Mode = raw_mode  # type: ignore[assignment]  # "connect" is handled above
    return mode, dry_run, False


class _Environment(NamedTuple):
    """The knobs that are not inputs: Fly's endpoints, and timeouts for slow networks."""

    api_base_url: str
    flaps_base_url: str
    http_timeout: float
    verify_timeout: float
    lease_wait: float

    @classmethod
    def read(cls, env: Mapping[str, str]) -> _Environment:
        return cls(
            clean_base_url("FLY_API_BASE_URL", env.get("FLY_API_BASE_URL") or DEFAULT_API_BASE_URL),
            clean_base_url(
                "FLY_FLAPS_BASE_URL", env.get("FLY_FLAPS_BASE_URL") or DEFAULT_FLAPS_BASE_URL
            ),
            env_seconds(env, "FLY_PG_EXTERNAL_HTTP_TIMEOUT", 30.0),
            env_seconds(env, "FLY_PG_EXTERNAL_VERIFY_TIMEOUT", 60.0),
            env_seconds(env, "FLY_PG_EXTERNAL_LEASE_WAIT", 40.0),
        )


def from_environ(env: Mapping[str, str], read_input: Callable[[str], str | None]) -> Settings:
    """Build Settings from the runner's environment. Raises InputError on the first bad value."""

    def inp(name: str, default: str = "") -> str:
        value = read_input(name)
        return default if value is None else value

    app = clean_app(inp("app"))
    ip_versions = clean_ip_versions(inp("ip-versions", "v4,v6"))
    host = clean_host(inp("host"), app)
    port = clean_port(inp("port", "5432"))
    sslmode, sslrootcert = clean_tls_inputs(inp)
    mode, dry_run, connect = clean_mode_inputs(inp, read_input)
    postgres_image = clean_choice("postgres-image", inp("postgres-image", "keep"), IMAGE_POLICIES)
    wait_timeout = clean_wait_timeout(inp("wait-timeout", "300"))
    verify = clean_bool("verify", inp("verify", "true"))
    pr_comment = clean_bool("pr-comment", inp("pr-comment", "true"))
    github_token = clean_text("github-token", inp("github-token"))
    database_url = clean_database_url(inp("database-url"), app=app, host=host)
    fly_auth = clean_fly_token(inp("fly-api-token"), env)
    hold_name = clean_hold_name(inp("hold-name"))
    lifetime, addresses, max_age = clean_lifetime_inputs(
        inp, mode, read_only=dry_run, hold_name=hold_name, connect=connect
    )
    return Settings(
        app=app,
        ip_versions=ip_versions,
        host=host,
        port=port,
        sslmode=sslmode,
        mode=mode,
        dry_run=dry_run,
        postgres_image=postgres_image,
        wait_timeout=wait_timeout,
        verify=verify,
        pr_comment=pr_comment,
        fly_auth=fly_auth,
        github_token=github_token,
        database_url=database_url,
        lifetime=lifetime,
        addresses=addresses,
        max_age=max_age,
        sslrootcert=sslrootcert,
        connect=connect,
        pr_number=clean_pr_number(inp("pr-number")),
        allow_forks=clean_bool("allow-forks", inp("allow-forks", "false")),
        hold_name=hold_name,
        credentials=clean_credential_inputs(
            inp, mode=mode, has_database_url=database_url is not None
        ),
        **_Environment.read(env)._asdict(),
    )
