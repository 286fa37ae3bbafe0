"""Prove the external endpoint works: SSLRequest → `S` → TLS, then optionally log in.

This speaks just enough of the Postgres protocol (SSLRequest, StartupMessage, SCRAM-SHA-256 /
MD5 / cleartext auth, a simple query) to check what a client will see, without shipping libpq in
the image. A server that answers `N` to the SSLRequest is a failure: pg_tls must never fall back
to plaintext, and a client with sslmode=require would refuse it anyway. It is also a definite
answer (something is listening there, and it is not pg_tls), so it is not retried.

`probe_all` probes every target at once within one bound: the verification as a whole takes at
most that long, however many addresses there are and however they fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ActionError
from .poll import SYSTEM_CLOCK, Backoff, Clock, poll

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608
# errno values meaning "this host has no route to that address family" (no IPv6 on the runner).
_UNROUTABLE = {101, 99, 97, 113}  # ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT, EHOSTUNREACH
# The longest any single socket operation of one attempt may wait.
ATTEMPT_TIMEOUT = 10.0
# How long after the bound `probe_all` still waits for a probe stuck where no socket timeout
# reaches (a slow DNS lookup) before reporting it as unanswered.
JOIN_GRACE = 1.0


class ProbeError(ActionError):
    """One connection attempt failed. `stage` says how far the probe got: tcp, tls or login.
    `definite`: retrying cannot help (a refused login, an unroutable address family, a server
    that refuses TLS)."""

    def __init__(
        self, message: str, *, stage: str = "tls", unroutable: bool = False, definite: bool = False
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.unroutable = unroutable
        self.definite = definite or unroutable or stage == "login"


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class ProbeResult:
    tls_version: str
    server_version: str | None = None


class _Conn:
    """A socket whose every operation waits at most `timeout` seconds and ends by `deadline`
    (time.monotonic): one attempt never outlives the bound it was given."""

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout

    def arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(min(self.timeout, left))

    def sendall(self, data: bytes) -> None:
        self.arm()
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            self.arm()
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProbeError("the server closed the connection")
            buf += chunk
        return buf


def _read_message(conn: _Conn) -> tuple[bytes, bytes]:
    head = conn.recv_exact(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    return kind, conn.recv_exact(length - 4)


def _error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return fields.get(b"M", "error") + (f" ({fields[b'C']})" if b"C" in fields else "")


def _send(conn: _Conn, kind: bytes, body: bytes) -> None:
    conn.sendall(kind + struct.pack("!i", len(body) + 4) + body)


def _scram(conn: _Conn, mechanisms: bytes, login: Login) -> None:
    if b"SCRAM-SHA-256" not in mechanisms.split(b"\0"):
        raise ProbeError("the server offers no SCRAM-SHA-256 authentication")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    _send(conn, b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
    kind, body = _read_message(conn)
    if kind == b"E":
        raise ProbeError(_error_text(body))
    server_first = body[4:].decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise ProbeError("SCRAM: the server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        "sha256", login.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
    _send(conn, b"p", final)
    kind, body = _read_message(conn)
    if kind == b"E":
        raise ProbeError(_error_text(body))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
    if f"v={expected}" not in body[4:].decode(errors="replace"):
        raise ProbeError("SCRAM: the server signature is wrong")


def _login(conn: _Conn, login: Login) -> str:
    """Start up, authenticate, run SELECT 1; the server's version."""
    params = b"user\0" + login.user.encode() + b"\0"
    if login.database:
        params += b"database\0" + login.database.encode() + b"\0"
    params += b"application_name\0fly-pg-external\0\0"
    startup = struct.pack("!i", PROTOCOL_3) + params
    conn.sendall(struct.pack("!i", len(startup) + 4) + startup)
    version = ""
    while True:
        kind, body = _read_message(conn)
        if kind == b"E":
            raise ProbeError(_error_text(body))
        if kind == b"R":
            _authenticate(conn, login, struct.unpack("!i", body[:4])[0], body[4:])
        elif kind == b"S":
            name, _, value = body.rstrip(b"\0").partition(b"\0")
            if name == b"server_version":
                version = value.decode(errors="replace")
        elif kind == b"Z":
            break
    _select_one(conn)
    return version


def _select_one(conn: _Conn) -> None:
    """A query proves the login is usable, not only accepted; then say goodbye."""
    _send(conn, b"Q", b"SELECT 1\0")
    while True:
        kind, body = _read_message(conn)
        if kind == b"E":
            raise ProbeError("SELECT 1 failed: " + _error_text(body))
        if kind == b"Z":
            break
    _send(conn, b"X", b"")


def _authenticate(conn: _Conn, login: Login, code: int, data: bytes) -> None:
    """Answer one Authentication message (`code`, then its `data`)."""
    if code in (0, 11, 12):  # AuthenticationOk; SASL continue/final are handled by _scram
        return
    if code == 3:
        _send(conn, b"p", login.password.encode() + b"\0")
    elif code == 5:
        inner = hashlib.md5(  # noqa: S324 - the protocol's own MD5 scheme
            (login.password + login.user).encode()
        ).hexdigest()
        outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()  # noqa: S324
        _send(conn, b"p", b"md5" + outer.encode() + b"\0")
    elif code == 10:
        _scram(conn, data, login)
    else:
        raise ProbeError(f"unsupported authentication method {code}")


def probe(
    host: str,
    port: int,
    *,
    server_name: str,
    sslmode: str = "require",
    login: Login | None = None,
    timeout: float = ATTEMPT_TIMEOUT,
    budget: float | None = None,
) -> ProbeResult:
    """One attempt: TCP, SSLRequest, TLS handshake, and a login when `login` is given.

    Each socket operation waits at most `timeout` seconds, and the whole attempt ends within
    `budget` seconds when one is given.
    """
    deadline = time.monotonic() + (budget if budget is not None else float("inf"))
    raw = _connect(host, port, deadline, timeout)
    conn = _Conn(raw, deadline, timeout)
    try:
        # As libpq does: each protocol message goes out at once, not held for an ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _ssl_request(conn, raw, port)
        conn.arm()  # the handshake as a whole ends within the socket's timeout
        sock = _tls_context(sslmode).wrap_socket(raw, server_hostname=server_name)
        try:
            tls = sock.version() or "TLS"
            try:
                version = _login(_Conn(sock, deadline, timeout), login) if login else None
            except ProbeError as exc:
                raise ProbeError(f"login refused: {exc}", stage="login") from None
            except OSError as exc:
                raise ProbeError(f"login failed: {exc}", stage="login") from None
        finally:
            sock.close()
        return ProbeResult(tls, version)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"TLS handshake failed: {exc}") from None
    finally:
        raw.close()


def _connect(host: str, port: int, deadline: float, timeout: float) -> socket.socket:
    try:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return socket.create_connection((host, port), timeout=min(timeout, left))
    except OSError as exc:
        raise ProbeError(
            f"TCP connection failed: {exc.strerror or exc}",
            stage="tcp",
            unroutable=getattr(exc, "errno", None) in _UNROUTABLE,
        ) from None


def _ssl_request(conn: _Conn, raw: socket.socket, port: int) -> None:
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


def _tls_context(sslmode: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if sslmode == "require":
        # libpq's sslmode=require encrypts without checking the certificate.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif sslmode == "verify-ca":
        context.check_hostname = False
    return context


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
    deadline = time.monotonic() + bound
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
                login=login,
                bound=deadline - time.monotonic(),
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
        thread.join(max(0.0, deadline + JOIN_GRACE - time.monotonic()))
    return list(results)  # a copy: a probe left behind writes into the old list, not this one


def still_open(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """After unexpose: does anything still accept a connection here?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
