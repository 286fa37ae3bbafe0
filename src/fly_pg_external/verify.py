"""Prove the external endpoint works: SSLRequest → `S` → TLS, then optionally log in.

This speaks just enough of the Postgres protocol (SSLRequest, StartupMessage, SCRAM-SHA-256 /
MD5 / cleartext auth, a simple query) to check what a client will see, without shipping libpq in
the image. A server that answers `N` to the SSLRequest is a failure: pg_tls must never fall back
to plaintext, and a client with sslmode=require would refuse it anyway.
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
import time
from collections.abc import Callable
from dataclasses import dataclass

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608
# errno values meaning "this host has no route to that address family" (no IPv6 on the runner).
_UNROUTABLE = {101, 99, 97, 113}  # ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT, EHOSTUNREACH


class ProbeError(Exception):
    """`stage` says how far the probe got: tcp, tls or login."""

    def __init__(self, message: str, *, stage: str = "tls", unroutable: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.unroutable = unroutable


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class ProbeResult:
    tls_version: str
    server_version: str | None = None


def _recv_exact(sock: socket.socket | ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("the server closed the connection")
        buf += chunk
    return buf


def _read_message(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    head = _recv_exact(sock, 5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    return kind, _recv_exact(sock, length - 4)


def _error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return fields.get(b"M", "error") + (f" ({fields[b'C']})" if b"C" in fields else "")


def _send(sock: ssl.SSLSocket, kind: bytes, body: bytes) -> None:
    sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)


def _scram(sock: ssl.SSLSocket, mechanisms: bytes, login: Login) -> None:
    if b"SCRAM-SHA-256" not in mechanisms.split(b"\0"):
        raise ProbeError("the server offers no SCRAM-SHA-256 authentication")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    _send(sock, b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
    kind, body = _read_message(sock)
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
    _send(sock, b"p", final)
    kind, body = _read_message(sock)
    if kind == b"E":
        raise ProbeError(_error_text(body))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
    if f"v={expected}" not in body[4:].decode(errors="replace"):
        raise ProbeError("SCRAM: the server signature is wrong")


def _login(sock: ssl.SSLSocket, login: Login) -> str:
    params = b"user\0" + login.user.encode() + b"\0"
    if login.database:
        params += b"database\0" + login.database.encode() + b"\0"
    params += b"application_name\0fly-pg-external\0\0"
    startup = struct.pack("!i", PROTOCOL_3) + params
    sock.sendall(struct.pack("!i", len(startup) + 4) + startup)
    version = ""
    while True:
        kind, body = _read_message(sock)
        if kind == b"E":
            raise ProbeError(_error_text(body))
        if kind == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 0:
                continue
            if code == 3:
                _send(sock, b"p", login.password.encode() + b"\0")
            elif code == 5:
                inner = hashlib.md5(  # noqa: S324 - the protocol's own MD5 scheme
                    (login.password + login.user).encode()
                ).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()  # noqa: S324
                _send(sock, b"p", b"md5" + outer.encode() + b"\0")
            elif code == 10:
                _scram(sock, body[4:], login)
            elif code in (11, 12):
                continue
            else:
                raise ProbeError(f"unsupported authentication method {code}")
        elif kind == b"S":
            name, _, value = body.rstrip(b"\0").partition(b"\0")
            if name == b"server_version":
                version = value.decode(errors="replace")
        elif kind == b"Z":
            break
    _send(sock, b"Q", b"SELECT 1\0")
    while True:
        kind, body = _read_message(sock)
        if kind == b"E":
            raise ProbeError("SELECT 1 failed: " + _error_text(body))
        if kind == b"Z":
            break
    _send(sock, b"X", b"")
    return version


def probe(
    host: str,
    port: int,
    *,
    server_name: str,
    sslmode: str = "require",
    login: Login | None = None,
    timeout: float = 10.0,
) -> ProbeResult:
    """One attempt: TCP, SSLRequest, TLS handshake, and a login when `login` is given."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(
            f"TCP connection failed: {exc.strerror or exc}",
            stage="tcp",
            unroutable=getattr(exc, "errno", None) in _UNROUTABLE,
        ) from None
    try:
        # As libpq does: each protocol message goes out at once, not held for an ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.sendall(SSL_REQUEST)
        answer = raw.recv(1)
        if answer == b"N":
            raise ProbeError("the server refused TLS (answered N to SSLRequest): no pg_tls here")
        if answer != b"S":
            raise ProbeError(f"unexpected answer to SSLRequest: {answer!r}")
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if sslmode == "require":
            # libpq's sslmode=require encrypts without checking the certificate.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif sslmode == "verify-ca":
            context.check_hostname = False
        sock = context.wrap_socket(raw, server_hostname=server_name)
        try:
            tls = sock.version() or "TLS"
            try:
                version = _login(sock, login) if login else None
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
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeResult:
    """Retry within `bound` seconds: fresh IPs and DNS records take a moment to answer."""
    deadline = clock() + bound
    pause = 0.25
    while True:
        try:
            return probe(host, port, server_name=server_name, sslmode=sslmode, login=login)
        except ProbeError as exc:
            # A refused login will not get better by retrying; an unroutable family neither.
            if exc.unroutable or exc.stage == "login" or clock() + pause > deadline:
                raise
        sleep(pause)
        pause = min(3.0, pause * 2)


def still_open(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """After unexpose: does anything still accept a connection here?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
