"""Just enough of the Postgres wire protocol to log in over an established TLS socket:
StartupMessage, SCRAM-SHA-256 / MD5 / cleartext authentication, and a simple query.

`verify.py` opens the connection and the TLS session; this module speaks on it. The login is the
one the `database-url` output describes (`verification.py` reads it as libpq does): its user,
password and database, and the startup parameters a server applies at login (`options`,
`application_name`, `client_encoding`), so a value that makes a client's login fail makes this
one fail too.

What the probe answers depends on whether this step verified the server's certificate:

- SCRAM-SHA-256 always: it proves the password without revealing it, and the peer learns
  nothing it can log in with later. (Channel binding would also tie the exchange to the TLS
  session, but behind pg_tls the TLS session is Fly's proxy's, so the server offers none.)
- Cleartext and MD5 only when the certificate was verified (sslmode verify-ca or verify-full):
  then the peer is the server the URL names. Over an unverified session (sslmode=require)
  anyone in the path could be answering: a cleartext answer would hand them the password, and an
  MD5 answer, salted with a salt they choose, lets them log in once by relaying it and test
  password guesses offline at two MD5s a guess (SCRAM makes each guess cost thousands of
  iterations). MD5 is refused there like cleartext, with `PasswordWithheld` saying what the
  server asked for and what to change: a step that runs unattended on every exposure must not
  hand a peer it has not authenticated anything it can log in with. (The clients given the URL
  make their own choice, with libpq's `require_auth`.) Over a verified session MD5 is answered,
  and the verification adds a warning: the role's password is stored as MD5.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import stringprep
import struct
import unicodedata
from dataclasses import dataclass, field

from .errors import ActionError
from .poll import SYSTEM_CLOCK, Clock

PROTOCOL_3 = 196608
# What the probe calls itself on the server (pg_stat_activity) unless the URL names a name.
APPLICATION_NAME = "fly-pg-external"
# Authentication request codes (AuthenticationXXX messages) and what the probe calls them.
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10
METHODS = {AUTH_CLEARTEXT: "cleartext", AUTH_MD5: "MD5", AUTH_SASL: "SCRAM-SHA-256"}


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


class PasswordWithheld(ProbeError):
    """The server asked for the password in a form this probe does not send over a TLS session
    whose certificate it did not verify; nothing was sent. A failure of the login stage."""

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="login")


@dataclass(frozen=True)
class Login:
    """Who logs in, and the startup parameters the server applies at login. `application_name`
    None sends none (a URL that sets it empty, as libpq does)."""

    user: str
    password: str = field(repr=False)
    database: str
    options: str = ""
    application_name: str | None = APPLICATION_NAME
    client_encoding: str = ""

    def startup_parameters(self) -> list[tuple[str, str]]:
        """In libpq's order, each only when set (libpq sends no empty ones either)."""
        params = [("user", self.user)]
        for name, value in (
            ("database", self.database),
            ("options", self.options),
            ("application_name", self.application_name),
            ("client_encoding", self.client_encoding),
        ):
            if value:
                params.append((name, value))
        return params


@dataclass(frozen=True)
class LoggedIn:
    server_version: str
    auth: str  # SCRAM-SHA-256, MD5, cleartext, or none (the server asked for no password)


class Conn:
    """A socket whose every operation waits at most `timeout` seconds and ends by `deadline`
    (a time on `clock`): one attempt never outlives the bound it was given."""

    def __init__(
        self, sock: socket.socket, deadline: float, timeout: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.clock = clock
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout

    def arm(self) -> None:
        left = self.deadline - self.clock.now()
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
        "sha256", _bytes(saslprep(login.password)), base64.b64decode(attrs["s"]), int(attrs["i"])
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


def saslprep(password: str) -> str:
    """The password as libpq prepares it for SCRAM (pg_saslprep, RFC 4013), and as the server
    prepared it when the password was set: non-ASCII spaces become spaces, characters "mapped to
    nothing" go, then NFKC. A password that is not UTF-8, would come out empty, or holds a
    prohibited or misordered right-to-left character is used as it is, by both sides alike.
    (libpq checks the characters before normalizing, not after; so does this.)"""
    if password.isascii():
        return password
    try:
        password.encode("utf-8")  # not UTF-8: bytes the URL's percent-escapes made
    except UnicodeEncodeError:
        return password
    # In libpq's order: U+200B is in both tables, and a space it becomes.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else "" if stringprep.in_table_b1(c) else c
        for c in password
    )
    if not mapped or any(_prohibited(c) for c in mapped) or not _bidi_ok(mapped):
        return password
    return unicodedata.normalize("NFKC", mapped)


def _prohibited(c: str) -> bool:
    """SASLprep's prohibited output (C.1.2 to C.9) or a code point unassigned in Unicode 3.2."""
    tables = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    return any(table(c) for table in tables)


def _bidi_ok(text: str) -> bool:
    """With any right-to-left character: none left-to-right, and one at each end."""
    if not any(stringprep.in_table_d1(c) for c in text):
        return True
    if any(stringprep.in_table_d2(c) for c in text):
        return False
    return stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])


def _bytes(text: str) -> bytes:
    """What libpq sends for a value of the URL: its bytes (see libpq_uri: surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def login_and_query(conn: Conn, login: Login, *, verified: bool) -> LoggedIn:
    """Start up, authenticate, run SELECT 1. `verified`: this step checked the server's
    certificate, so a cleartext or MD5 request may be answered."""
    params = b"".join(_bytes(k) + b"\0" + _bytes(v) + b"\0" for k, v in login.startup_parameters())
    startup = struct.pack("!i", PROTOCOL_3) + params + b"\0"
    conn.sendall(struct.pack("!i", len(startup) + 4) + startup)
    version = ""
    auth = "none"
    while True:
        kind, body = read_message(conn)
        if kind == b"E":
            raise ProbeError(error_text(body))
        if kind == b"R":
            code = struct.unpack("!i", body[:4])[0]
            auth = authenticate(conn, login, code, body[4:], verified=verified) or auth
        elif kind == b"S":
            name, _, value = body.rstrip(b"\0").partition(b"\0")
            if name == b"server_version":
                version = value.decode(errors="replace")
        elif kind == b"Z":
            break
    select_one(conn)
    return LoggedIn(version, auth)


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


def authenticate(conn: Conn, login: Login, code: int, data: bytes, *, verified: bool) -> str | None:
    """Answer one Authentication message (`code`, then its `data`); the method answered."""
    if code in (AUTH_OK, 11, 12):  # AuthenticationOk; SASL continue/final are scram()'s
        return None
    if code not in METHODS:
        raise ProbeError(f"unsupported authentication method {code}")
    if code != AUTH_SASL and not verified:
        raise PasswordWithheld(withheld(code, login.user))
    if not login.password:
        raise ProbeError(f"the server asked for a password ({METHODS[code]}), and the URL has none")
    if code == AUTH_CLEARTEXT:
        send(conn, b"p", _bytes(login.password) + b"\0")
    elif code == AUTH_MD5:
        inner = hashlib.md5(  # noqa: S324 - the protocol's own MD5 scheme
            _bytes(login.password) + _bytes(login.user)
        ).hexdigest()
        outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()  # noqa: S324
        send(conn, b"p", b"md5" + outer.encode() + b"\0")
    else:
        scram(conn, data, login)
    return METHODS[code]


def withheld(code: int, user: str) -> str:
    """Why the probe did not answer a cleartext or MD5 request, and what to change."""
    role = '"' + user.replace('"', '""') + '"'
    scram_instead = f"SET password_encryption = 'scram-sha-256'; ALTER ROLE {role} PASSWORD '…'"
    unverified = (
        "over a TLS session whose certificate this step did not verify (sslmode=require); not sent"
    )
    if code == AUTH_CLEARTEXT:
        return (
            f"the server asked for the password in cleartext {unverified}: whoever answers in "
            "the server's place would have it. Use sslmode verify-full (the certificate and "
            "the host name are then checked before any password goes out), or switch the role "
            f"to SCRAM ({scram_instead}, and scram-sha-256 as its pg_hba.conf method)."
        )
    return (
        f"the server asked for an MD5 hash of the password {unverified}: whoever answers in the "
        "server's place could log in with it once and test password guesses against it "
        "offline, cheaply. Use sslmode verify-full, or store the role's password as SCRAM "
        f"({scram_instead}); the server then asks for SCRAM instead."
    )
