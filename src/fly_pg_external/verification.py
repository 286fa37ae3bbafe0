"""After the change: does the endpoint answer (expose), or has it closed (unexpose)?

Each target's result is recorded in the outcome; the probing itself is `verify.py`.
"""

from __future__ import annotations

import logging
import os

from .outcome import Outcome, VerifyResult
from .pgwire import Login, ProbeError
from .poll import SYSTEM_CLOCK, Backoff, poll
from .settings import Settings
from .urls import SYSTEM
from .verify import is_ipv6, probe_all, still_open

log = logging.getLogger(__name__)

# How long a released address may keep accepting connections before it is reported.
UNEXPOSE_VERIFY_BOUND = 30.0


def verify_expose(outcome: Outcome, settings: Settings) -> None:
    """Probe every public address and the hostname, all at once; record each result."""
    login = None
    if settings.database_url is not None:
        u = settings.database_url
        login = Login(u.user, u.password, u.database)
    targets = [*outcome.addresses("v4"), *outcome.addresses("v6"), settings.host]
    unreadable = _unreadable_roots(settings)
    if unreadable is not None:
        outcome.verify.append(VerifyResult(settings.sslrootcert, False, unreadable))
        outcome.status = "failed"
        outcome.error = unreadable  # main reports it, as every failed verification
        return
    # All at once, within one bound for the whole step; reported in the order of `targets`.
    results = probe_all(
        targets,
        settings.port,
        server_name=settings.host,
        sslmode=settings.sslmode,
        sslrootcert=settings.sslrootcert,
        login=login,
        bound=settings.verify_timeout,
    )
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, ProbeError):
            exc = result
            # Only "cannot reach it" is excusable for IPv6: a v6 that answers must work.
            v6 = is_ipv6(target) and exc.stage == "tcp"
            outcome.verify.append(VerifyResult(target, False, str(exc), warning_only=v6))
            if v6:
                log.warning(
                    f"IPv6 {target} port {settings.port} did not answer ({exc}). Runners without "
                    "IPv6 (GitHub-hosted ones) cannot reach it; IPv4 and the hostname are what "
                    "count.",
                    extra={"title": "IPv6 not reachable from here"},
                )
            else:
                log.error(
                    f"Verification of {target}:{settings.port} failed: {exc}",
                    extra={"title": "Verification failed"},
                )
            continue
        detail = result.tls_version + (
            f", logged in, PostgreSQL {result.server_version}" if login else ""
        )
        outcome.verify.append(VerifyResult(target, True, detail, result.server_version))
        log.info(f"✓ {target}:{settings.port} answers pg_tls ({detail})")
    if any(not v.ok and not v.warning_only for v in outcome.verify):
        outcome.status = "failed"
        outcome.error = "The external endpoint did not pass verification (see the errors above)."


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


def verify_unexpose(outcome: Outcome, settings: Settings) -> None:
    """Check that every released address stops accepting connections; record each."""
    released = outcome.released()
    if not released:
        return
    deadline = UNEXPOSE_VERIFY_BOUND
    pending = list(released)

    def all_closed() -> bool | None:
        nonlocal pending
        pending = [a for a in pending if still_open(a, settings.port, timeout=1.0)]
        return True if not pending else None

    poll(
        all_closed,
        deadline=SYSTEM_CLOCK.now() + deadline,
        pauses=Backoff(0.5, 0.5),
        clock=SYSTEM_CLOCK,
    )
    for address in released:
        ok = address not in pending
        outcome.verify.append(VerifyResult(address, ok, "closed" if ok else "still accepts"))
        if ok:
            log.info(f"✓ {address}:{settings.port} no longer accepts connections")
        else:
            log.warning(
                f"{address}:{settings.port} still accepts connections {deadline:.0f} s after its "
                "release; Fly's proxy may take a moment to forget it.",
                extra={"title": "Released address still answers"},
            )
