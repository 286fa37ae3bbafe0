"""Just enough of the Postgres wire protocol to log in over an established TLS socket:
StartupMessage, SCRAM-SHA-256 / MD5 / cleartext authentication, and a simple query.

`verify.py` opens the connection and the TLS session; this module speaks on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass

from .errors import ActionError

PROTOCOL_3 = 196608


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


class Conn:
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


def read_message(conn: Conn) -> tuple[bytes, bytes]:
    head = conn.recv_exact(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    return kind, conn.recv_exact(length - 4)


def error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return fields.get(b"M", "error") + (f" ({fields[b'C']})" if b"C" in fields else "")


def send(conn: Conn, kind: bytes, body: bytes) -> None:
    conn.sendall(kind + struct.pack("!i", len(body) + 4) + body)


def scram(conn: Conn, mechanisms: bytes, login: Login) -> None:
    if b"SCRAM-SHA-256" not in mechanisms.split(b"\0"):
        raise ProbeError("the server offers no SCRAM-SHA-256 authentication")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    send(conn, b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
    kind, body = read_message(conn)
    if kind == b"E":
        raise ProbeError(error_text(body))
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
    send(conn, b"p", final)
    kind, body = read_message(conn)
    if kind == b"E":
        raise ProbeError(error_text(body))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
    if f"v={expected}" not in body[4:].decode(errors="replace"):
        raise ProbeError("SCRAM: the server signature is wrong")


def login_and_query(conn: Conn, login: Login) -> str:
    """Start up, authenticate, run SELECT 1; the server's version."""
    params = b"user\0" + login.user.encode() + b"\0"
    if login.database:
        params += b"database\0" + login.database.encode() + b"\0"
    params += b"application_name\0fly-pg-external\0\0"
    startup = struct.pack("!i", PROTOCOL_3) + params
    conn.sendall(struct.pack("!i", len(startup) + 4) + startup)
    version = ""
    while True:
        kind, body = read_message(conn)
        if kind == b"E":
            raise ProbeError(error_text(body))
        if kind == b"R":
            authenticate(conn, login, struct.unpack("!i", body[:4])[0], body[4:])
        elif kind == b"S":
            name, _, value = body.rstrip(b"\0").partition(b"\0")
            if name == b"server_version":
                version = value.decode(errors="replace")
        elif kind == b"Z":
            break
    select_one(conn)
    return version


def select_one(conn: Conn) -> None:
    """A query proves the login is usable, not only accepted; then say goodbye."""
    send(conn, b"Q", b"SELECT 1\0")
    while True:
        kind, body = read_message(conn)
        if kind == b"E":
            raise ProbeError("SELECT 1 failed: " + error_text(body))
        if kind == b"Z":
            break
    send(conn, b"X", b"")


def authenticate(conn: Conn, login: Login, code: int, data: bytes) -> None:
    """Answer one Authentication message (`code`, then its `data`)."""
    if code in (0, 11, 12):  # AuthenticationOk; SASL continue/final are handled by _scram
        return
    if code == 3:
        send(conn, b"p", login.password.encode() + b"\0")
    elif code == 5:
        inner = hashlib.md5(  # noqa: S324 - the protocol's own MD5 scheme
            (login.password + login.user).encode()
        ).hexdigest()
        outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()  # noqa: S324
        send(conn, b"p", b"md5" + outer.encode() + b"\0")
    elif code == 10:
        scram(conn, data, login)
    else:
        raise ProbeError(f"unsupported authentication method {code}")
