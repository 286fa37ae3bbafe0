"""After the change: does the endpoint answer (expose), or has it closed (unexpose)?

Each check returns its targets' results, and `raise_if_failed` turns a failed check into a
`VerifyError`; the outcome is built from both afterwards (main.py). The probing itself is
`verify.py`. The login is
the one the `database-url` output hands out, read exactly as libpq reads it (`libpq_uri.py`):
its user, password and database, and the parameters a server applies at login (`options`,
`application_name`, `client_encoding`). A URL that libpq would refuse, or that names another
host, port or TLS setting than the ones probed, fails the verification before any probe: the
URL clients get must mean what was verified. Query keys libpq does not know (`?schema=` of some
ORMs) are reported in a warning and left out: libpq clients refuse such a URL, others may need
them, so the rest of it is still verified.
"""

from __future__ import annotations

import logging
import os

from .errors import VerifyError
from .libpq_uri import Conninfo, UriError, parse_uri
from .outcome import Outcome, VerifyResult
from .pgwire import APPLICATION_NAME, Login, PasswordWithheld, ProbeError
from .poll import SYSTEM_CLOCK, Backoff, poll
from .settings import Settings
from .urls import SYSTEM
from .verify import ProbeResult, has_route, is_ipv6, probe_all, still_open

log = logging.getLogger(__name__)

# How long a released address may keep accepting connections before it is reported.
UNEXPOSE_VERIFY_BOUND = 30.0
# What the verification does with each parameter of the URL; any other one is named in the
# log as not checked (what a timeout, a keepalive or a client certificate changes, it does not).
CHECKED = frozenset(
    {"user", "password", "dbname", "options", "application_name", "client_encoding"}
    | {"host", "hostaddr", "port", "sslmode", "sslrootcert"}
)
URL_OUTPUT = "database-url"
NO_ROUTE = "no route to it from this runner"


class UrlMismatch(ValueError):
    """The URL handed out does not mean, to libpq, what this step verifies."""


def verify_expose(facts: Outcome, settings: Settings) -> list[VerifyResult]:
    """Probe every public address the run leaves (`facts`) and the hostname, all at once; each
    target's result, in order."""
    unreadable = _unreadable_roots(settings)
    if unreadable is not None:
        return [VerifyResult(settings.sslrootcert, False, unreadable)]
    results: list[VerifyResult] = []
    try:
        login = url_login(results, settings)
    except UrlMismatch as exc:
        return [VerifyResult(URL_OUTPUT, False, str(exc))]
    # A family this runner has no route to is not probed: its failure would say nothing about
    # the database, and a warning on every run would be one the user cannot act on.
    unrouted = [a for a in facts.addresses("v6") if not has_route(a, settings.port)]
    results += [VerifyResult(a, False, NO_ROUTE, warning_only=True) for a in unrouted]
    routed_v6 = [a for a in facts.addresses("v6") if a not in unrouted]
    targets = [*facts.addresses("v4"), *routed_v6, settings.host]
    # All at once, within one bound for the whole step; reported in the order of `targets`.
    probes = probe_all(
        targets,
        settings.port,
        server_name=settings.host,
        sslmode=settings.sslmode,
        sslrootcert=settings.sslrootcert,
        login=login,
        bound=settings.verify_timeout,
    )
    for target, probe in zip(targets, probes, strict=True):
        if isinstance(probe, ProbeError):
            results.append(_failure(settings, target, probe))
        else:
            detail = probe.tls_version + (_login_detail(probe) if login else "")
            results.append(VerifyResult(target, True, detail, probe.server_version))
            log.info(f"✓ {target}:{settings.port} answers pg_tls ({detail})")
    _notice_unreached_v6(results, settings.port)
    if login is not None and any(isinstance(p, ProbeResult) and p.auth == "MD5" for p in probes):
        _warn_md5(login.user, settings.sslmode)
    return results


def raise_if_failed(results: list[VerifyResult], host: str) -> None:
    """A `VerifyError` when a check failed that counts (not a warning-only one): its reason
    when nothing was probed (no result for `host`, which every probing includes), else a
    pointer to the errors logged for each target."""
    failed = [v for v in results if not v.ok and not v.warning_only]
    if not failed:
        return
    if all(v.target != host for v in results):
        raise VerifyError(failed[0].detail)
    raise VerifyError("The external endpoint did not pass verification (see the errors above).")


def _failure(settings: Settings, target: str, exc: ProbeError) -> VerifyResult:
    # Only "cannot reach it" is excusable for IPv6: a v6 that answers must work.
    v6 = is_ipv6(target) and exc.stage == "tcp"
    if not v6:  # an IPv6 that did not answer is in the one notice (_notice_unreached_v6)
        withheld = isinstance(exc, PasswordWithheld)  # the probe's refusal, not the server's
        log.error(
            f"Verification of {target}:{settings.port} failed: {exc}",
            extra={"title": "Password not sent" if withheld else "Verification failed"},
        )
    return VerifyResult(target, False, str(exc), warning_only=v6)


def _notice_unreached_v6(results: list[VerifyResult], port: int) -> None:
    """One notice for every IPv6 address not checked from here: no route (GitHub-hosted
    runners have no IPv6), or no answer to TCP. Not a warning: nothing in the workflow can
    change it, and IPv4 and the hostname were checked."""
    unreached = [v for v in results if v.warning_only and is_ipv6(v.target)]
    if not unreached:
        return
    parts = "; ".join(f"{v.target} ({v.detail})" for v in unreached)
    log.info(
        f"IPv6 not checked from this runner: {parts}. Runners without IPv6 (GitHub-hosted "
        f"ones) cannot reach port {port} there; IPv4 and the hostname were checked, and "
        "clients with IPv6 reach the same service.",
        extra={"title": "IPv6 not checked", "notice": True},
    )


def _login_detail(result: ProbeResult) -> str:
    how = {
        "MD5": " with an MD5 password hash (see the warning)",
        "cleartext": " with the password in cleartext, to the verified server",
    }.get(result.auth or "", "")
    return f", logged in{how}, PostgreSQL {result.server_version}"


def _warn_md5(user: str, sslmode: str) -> None:
    role = '"' + user.replace('"', '""') + '"'
    log.warning(
        f"The server asked for an MD5 hash of {user}'s password, so the role's password is "
        f"stored as MD5. This step answered, because sslmode {sslmode} verified the server's "
        "certificate; a client with sslmode=require would answer whoever asks in the server's "
        "place, and MD5 passwords are deprecated since PostgreSQL 18. Store it as SCRAM: SET "
        f"password_encryption = 'scram-sha-256'; ALTER ROLE {role} PASSWORD '…' (the md5 "
        "method of pg_hba.conf then asks for SCRAM by itself).",
        extra={"title": "Password stored as MD5"},
    )


def url_login(results: list[VerifyResult], settings: Settings) -> Login | None:
    """The login of the `database-url` output, as libpq reads it; None without one. UrlMismatch
    when libpq would refuse the URL or take it elsewhere than this step probes. Parameters it
    leaves out are a warning-only result in `results`."""
    urls = settings.urls
    if urls is None:
        return None
    try:
        info = parse_uri(urls.libpq, unknown="skip")
    except UriError as exc:
        raise UrlMismatch(
            f"The {URL_OUTPUT} output {exc} libpq clients (psql, psycopg, Rails, Django) refuse "
            "it, so it is not handed out. Check how the password, user or database "
            "of the database-url input is percent-encoded."
        ) from None
    _check_endpoint(info, settings)
    _report_other_keys(results, info)
    user = info.get("user")
    if not user:
        raise UrlMismatch(
            f"The {URL_OUTPUT} output names no user, so clients log in as whoever runs them."
        )
    name = info.get("application_name")
    encoding = info.get("client_encoding") or ""
    return Login(
        user,
        info.get("password") or "",
        info.get("dbname") or "",
        options=info.get("options") or "",
        application_name=APPLICATION_NAME if name is None else name,
        # `auto` is resolved by each client from its own locale; the server's default stands in.
        client_encoding="" if encoding == "auto" else encoding,
    )


def _check_endpoint(info: Conninfo, settings: Settings) -> None:
    """Clients must be sent where, and be told to check TLS as, this step probes."""
    sslrootcert = settings.sslrootcert if settings.sslmode != "require" else None
    checks = (
        ("host", info.get("host"), settings.host),
        ("port", info.get("port") or "5432", str(settings.port)),  # libpq's default port
        ("hostaddr", info.get("hostaddr"), None),
        ("sslmode", info.get("sslmode"), settings.sslmode),
        ("sslrootcert", info.get("sslrootcert"), sslrootcert),
    )
    for key, got, want in checks:
        if got != want:
            said = "leaves it out" if got is None else f"says {got!r}"
            wanted = "none" if want is None else repr(want)
            raise UrlMismatch(
                f"The {URL_OUTPUT} output, read as libpq reads it, {said} for {key}, where this "
                f"step verified {wanted}: clients would not connect as verified."
            )


def _report_other_keys(results: list[VerifyResult], info: Conninfo) -> None:
    if info.skipped:
        message = (
            f"The {URL_OUTPUT} output has parameters libpq does not know "
            f"({', '.join(info.skipped)}): libpq clients (psql, psycopg, Rails, Django) refuse "
            "the whole URL. The rest of it was verified; remove them from the database-url input "
            "unless only clients that read them use the URL."
        )
        log.warning(message, extra={"title": "URL parameters libpq refuses"})
        results.append(VerifyResult(URL_OUTPUT, False, message, warning_only=True))
    unchecked = sorted(set(info.params) - CHECKED)
    if unchecked:
        log.info(f"{URL_OUTPUT} also sets {', '.join(unchecked)}: not checked by this step.")


def _unreadable_roots(settings: Settings) -> str | None:
    """Why the certificate cannot be checked here as the URL tells a client to, or None. The
    CA file the URL names is on the machine that connects; a check against other roots could
    pass where the client refuses, so this step does not pretend to have made it."""
    path = settings.sslrootcert
    if path == SYSTEM or os.access(path, os.R_OK):
        return None
    return (
        f"sslrootcert {path} cannot be read in this step, so the certificate could not be "
        "checked the way a client using the URL will check it. Name a CA file this step "
        "reads at the same path: one of the repository by its path relative to the workspace "
        "(e.g. certs/ca.pem; clients running in the workspace read it the same way), or one at "
        "the same absolute path in both places (e.g. /etc/ssl/certs/ca-certificates.crt); or "
        "set verify: false."
    )


def verify_unexpose(facts: Outcome, port: int) -> list[VerifyResult]:
    """Check that every address the run released (`facts`) stops accepting connections; each
    one's result (one still open is a warning: Fly's proxy may take a moment)."""
    released = facts.released()
    if not released:
        return []
    deadline = UNEXPOSE_VERIFY_BOUND
    pending = list(released)

    def all_closed() -> bool | None:
        nonlocal pending
        pending = [a for a in pending if still_open(a, port, timeout=1.0)]
        return True if not pending else None

    poll(
        all_closed,
        deadline=SYSTEM_CLOCK.now() + deadline,
        pauses=Backoff(0.5, 0.5),
        clock=SYSTEM_CLOCK,
    )
    results = []
    for address in released:
        ok = address not in pending
        results.append(VerifyResult(address, ok, "closed" if ok else "still accepts"))
        if ok:
            log.info(f"✓ {address}:{port} no longer accepts connections")
        else:
            log.warning(
                f"{address}:{port} still accepts connections {deadline:.0f} s after its "
                "release; Fly's proxy may take a moment to forget it.",
                extra={"title": "Released address still answers"},
            )
    return results
