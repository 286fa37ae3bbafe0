"""Prove the external endpoint works: SSLRequest → `S` → TLS, then optionally log in.

This opens the connection as libpq does (SSLRequest, then TLS checked as the URL handed out
says) and `pgwire.py` logs in on it with the `Login` the URL describes, so what passes here is
what a client will see, without shipping libpq in the image. Whether the certificate was
verified (verify-ca, verify-full) or not (require) decides which password requests the login
answers: over an unverified session only SCRAM, never the password in cleartext nor an MD5
hash of it (see pgwire.py). A server that answers `N` to the SSLRequest is a failure: pg_tls
must never fall back to plaintext, and a client with sslmode=require would refuse it anyway. It
is also a definite answer (something is listening there, and it is not pg_tls), so it is not
retried.

`probe_all` probes every target at once within one bound: the verification as a whole takes at
most that long, however many addresses there are and however they fail.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .pgwire import Conn, LoggedIn, Login, PasswordWithheld, ProbeError, login_and_query
from .poll import SYSTEM_CLOCK, Backoff, Clock, poll

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
# errno values meaning "this host has no route to that address family" (no IPv6 on the runner).
_UNROUTABLE = {101, 99, 97, 113}  # ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT, EHOSTUNREACH
# The longest any single socket operation of one attempt may wait.
ATTEMPT_TIMEOUT = 10.0
# How long after the bound `probe_all` still waits for a probe stuck where no socket timeout
# reaches (a slow DNS lookup) before reporting it as unanswered.
JOIN_GRACE = 1.0


@dataclass(frozen=True)
class ProbeResult:
    tls_version: str
    server_version: str | None = None
    auth: str | None = None  # how the login answered the server (pgwire.LoggedIn.auth)


def probe(
    host: str,
    port: int,
    *,
    server_name: str,
    sslmode: str = "require",
    sslrootcert: str = "system",
    login: Login | None = None,
    timeout: float = ATTEMPT_TIMEOUT,
    budget: float | None = None,
) -> ProbeResult:
    """One attempt: TCP, SSLRequest, TLS handshake, and a login when `login` is given.

    Each socket operation waits at most `timeout` seconds, and the whole attempt ends within
    `budget` seconds when one is given.
    """
    deadline = SYSTEM_CLOCK.now() + (budget if budget is not None else float("inf"))
    raw = _connect(host, port, deadline, timeout)
    conn = Conn(raw, deadline, timeout)
    try:
        # As libpq does: each protocol message goes out at once, not held for an ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _ssl_request(conn, raw, port)
        conn.arm()  # the handshake as a whole ends within the socket's timeout
        context = _tls_context(sslmode, sslrootcert)
        sock = context.wrap_socket(raw, server_hostname=server_name)
        try:
            tls = sock.version() or "TLS"
            if login is None:
                return ProbeResult(tls)
            # Verified: the handshake checked the certificate against the roots (it fails
            # otherwise), so the peer is the server the URL names.
            verified = context.verify_mode == ssl.CERT_REQUIRED
            done = _login(Conn(sock, deadline, timeout), login, verified)
            return ProbeResult(tls, done.server_version, done.auth)
        finally:
            sock.close()
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"TLS handshake failed: {exc}") from None
    finally:
        raw.close()


def _login(conn: Conn, login: Login, verified: bool) -> LoggedIn:
    """The login on the TLS session; every failure is one of the login stage."""
    try:
        return login_and_query(conn, login, verified=verified)
    except PasswordWithheld:
        raise  # the probe's own refusal, already worded: the server refused nothing
    except ProbeError as exc:
        raise ProbeError(f"login refused: {exc}", stage="login") from None
    except OSError as exc:
        raise ProbeError(f"login failed: {exc}", stage="login") from None


def _connect(host: str, port: int, deadline: float, timeout: float) -> socket.socket:
    try:
        left = deadline - SYSTEM_CLOCK.now()
        if left <= 0:
            raise TimeoutError("timed out")
        return socket.create_connection((host, port), timeout=min(timeout, left))
    except OSError as exc:
        raise ProbeError(
            f"TCP connection failed: {exc.strerror or exc}",
            stage="tcp",
            unroutable=getattr(exc, "errno", None) in _UNROUTABLE,
        ) from None


def _ssl_request(conn: Conn, raw: socket.socket, port: int) -> None:
    """Ask for TLS the way libpq does; only `S` lets the handshake go on."""
    try:
        conn.sendall(SSL_REQUEST)
        conn.arm()
        answer = raw.recv(1)
    except OSError as exc:
        raise ProbeError(f"no answer to SSLRequest: {exc}") from None
    if answer == b"N":
        raise ProbeError(
            f"the server refused TLS (answered N to SSLRequest): no pg_tls service on port {port}",
            definite=True,
        )
    if answer != b"S":
        raise ProbeError(f"unexpected answer to SSLRequest: {answer!r}")


def _tls_context(sslmode: str, sslrootcert: str = "system") -> ssl.SSLContext:
    """Check the certificate exactly as the URL handed out tells libpq to: `require` checks
    nothing; `verify-ca` the chain; `verify-full` the chain and the hostname. The roots are the
    system's (`sslrootcert=system`: OpenSSL's default paths, which SSL_CERT_FILE and
    SSL_CERT_DIR move, as in libpq) or only those in the named file, never both."""
    if sslmode == "require":
        # libpq's sslmode=require encrypts without checking the certificate.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif sslrootcert == "system":
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context(cafile=sslrootcert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if sslmode == "verify-ca":
        context.check_hostname = False
    return context


def has_route(address: str, port: int) -> bool:
    """Whether this machine has a route to `address`. A UDP connect sends no packet: the kernel
    only picks the route and source address, and fails at once (ENETUNREACH, EADDRNOTAVAIL)
    where there is none, as for IPv6 on GitHub-hosted runners."""
    family = socket.AF_INET6 if is_ipv6(address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((address, port))
    except OSError as exc:
        return exc.errno not in _UNROUTABLE
    return True


def is_ipv6(target: str) -> bool:
    try:
        return ipaddress.ip_address(target).version == 6
    except ValueError:
        return False


def probe_until(
    host: str,
    port: int,
    *,
    server_name: str,
    sslmode: str,
    login: Login | None,
    bound: float,
    clock: Clock = SYSTEM_CLOCK,
    sslrootcert: str = "system",
) -> ProbeResult:
    """Retry within `bound` seconds: fresh IPs and DNS records take a moment to answer.

    No attempt outlives the bound: each gets what is left of it (and `ATTEMPT_TIMEOUT` per
    socket operation). A definite answer (refused TLS, a refused login, an unroutable address
    family) will not get better by retrying and is raised at once.
    """
    deadline = clock.now() + bound

    def attempt() -> ProbeResult | None:
        try:
            return probe(
                host,
                port,
                server_name=server_name,
                sslmode=sslmode,
                sslrootcert=sslrootcert,
                login=login,
                budget=deadline - clock.now(),
            )
        except ProbeError as exc:
            if exc.definite:
                raise
            failure.append(exc)
            return None

    failure: list[ProbeError] = []
    result = poll(attempt, deadline=deadline, pauses=Backoff(0.25, 3.0), clock=clock)
    if result is None:
        raise failure[-1]
    return result


def probe_all(
    targets: Sequence[str],
    port: int,
    *,
    server_name: str,
    sslmode: str,
    login: Login | None,
    bound: float,
    sslrootcert: str = "system",
) -> list[ProbeResult | ProbeError]:
    """`probe_until` every target at once, all within one `bound` (not one each); each result,
    or the error that ended its probe, in the order of `targets`.

    The probes run in daemon threads and this thread waits with Thread.join, not in a
    ThreadPoolExecutor: a cancellation (SIGTERM/SIGINT, raised in the main thread by the
    action's signal handler) interrupts the join and leaves the probes behind, where leaving an
    executor's block (or the interpreter's exit) would wait for every one of them. A probe still
    running `JOIN_GRACE` seconds after the bound (stuck in a DNS lookup, which no socket timeout
    reaches) is reported as unanswered.
    """
    deadline = SYSTEM_CLOCK.now() + bound
    results: list[ProbeResult | ProbeError] = [
        ProbeError(f"no answer within {bound:g} s", stage="tcp") for _ in targets
    ]

    def run(index: int, target: str) -> None:
        try:
            results[index] = probe_until(
                target,
                port,
                server_name=server_name,
                sslmode=sslmode,
                sslrootcert=sslrootcert,
                login=login,
                bound=deadline - SYSTEM_CLOCK.now(),
            )
        except ProbeError as exc:
            results[index] = exc
        except Exception as exc:  # e.g. a host name the IDNA codec rejects: this target's failure
            results[index] = ProbeError(f"probe failed: {exc!r}", stage="tcp")

    threads = [
        threading.Thread(target=run, args=(i, t), name=f"probe-{t}", daemon=True)
        for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline + JOIN_GRACE - SYSTEM_CLOCK.now()))
    return list(results)  # a copy: a probe left behind writes into the old list, not this one


def still_open(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """After unexpose: does anything still accept a connection here?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
