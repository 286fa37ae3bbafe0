"""The verification's login: the URL it hands out, read as libpq reads it, and no password (nor
an MD5 hash of it) sent over a TLS session whose certificate it did not verify.

A tiny fake Postgres over TLS asks for what a test tells it to and records every byte the
client sends after its StartupMessage.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict
from verified import verified

from fly_pg_external.gha import Actions
from fly_pg_external.log import to_workflow
from fly_pg_external.outcome import Outcome
from fly_pg_external.settings import Settings, from_environ
from fly_pg_external.urls import ClientUrls
from fly_pg_external.verification import verify_expose
from fly_pg_external.verify import SSL_REQUEST
from flysim.proxy import CertificateAuthority, make_certificate

USER, PASSWORD, DB = "app_user", "s3cr3t pässword+1", "app_db"
SALT = b"\x01\x02\x03\x04"
# What the client could give away, in every form the tests look for.
MD5_INNER = hashlib.md5((PASSWORD + USER).encode()).hexdigest()  # noqa: S324
MD5_OUTER = "md5" + hashlib.md5(MD5_INNER.encode() + SALT).hexdigest()  # noqa: S324
LEAKS = [PASSWORD.encode(), MD5_INNER.encode(), MD5_OUTER.encode()]


@dataclass
class Seen:
    """One connection, as the server saw it."""

    startup: dict[str, str] = field(default_factory=dict)
    after_startup: bytes = b""  # every byte the client sent after its StartupMessage
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)


class FakePostgres:
    """Answers S to the SSLRequest, speaks TLS with `cert`, reads the StartupMessage, asks for
    `auth` ("cleartext", "md5" or "trust"), then accepts whatever answer comes and serves
    SELECT 1."""

    def __init__(self, auth: str, cert: tuple[str, str]) -> None:
        self.auth = auth
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.seen: list[Seen] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            seen = Seen()
            self.seen.append(seen)
            threading.Thread(target=self._serve, args=(conn, seen), daemon=True).start()

    def _serve(self, raw: socket.socket, seen: Seen) -> None:
        raw.settimeout(5)
        with contextlib.suppress(OSError), raw:
            if raw.recv(8) != SSL_REQUEST:
                return
            raw.sendall(b"S")
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self._speak(tls, seen)

    def _speak(self, tls: ssl.SSLSocket, seen: Seen) -> None:
        length = struct.unpack("!i", _exact(tls, 4))[0]
        body = _exact(tls, length - 4)[4:].rstrip(b"\0").split(b"\0")
        seen.startup = {k.decode(): v.decode() for k, v in zip(body[::2], body[1::2], strict=True)}
        if self.auth == "cleartext":
            _reply(tls, b"R", struct.pack("!i", 3))
        elif self.auth == "md5":
            _reply(tls, b"R", struct.pack("!i", 5) + SALT)
        if self.auth != "trust":
            kind, _ = _read(tls, seen)
            if kind == b"":
                return  # the client hung up instead of answering
        _reply(tls, b"R", struct.pack("!i", 0))
        _reply(tls, b"S", b"server_version\x0016.4 (fake)\0")
        _reply(tls, b"Z", b"I")
        kind, _ = _read(tls, seen)
        if kind == b"Q":
            _reply(tls, b"C", b"SELECT 1\0")
            _reply(tls, b"Z", b"I")
            _read(tls, seen)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def _exact(sock: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _read(sock: ssl.SSLSocket, seen: Seen) -> tuple[bytes, bytes]:
    """One message from the client, recorded; (b"", b"") when it closed the connection."""
    try:
        head = _exact(sock, 5)
        body = _exact(sock, struct.unpack("!i", head[1:])[0] - 4)
    except (ConnectionError, OSError):
        return b"", b""
    seen.after_startup += head + body
    seen.messages.append((head[:1], body))
    return head[:1], body


def _reply(sock: ssl.SSLSocket, kind: bytes, body: bytes) -> None:
    sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def servers(tmp_path: Path, ca: CertificateAuthority) -> Iterator[Any]:
    started: list[FakePostgres] = []

    def start(auth: str) -> FakePostgres:
        server = FakePostgres(auth, make_certificate("my-db", str(tmp_path), ca))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def settings_for(port: int, url_query: str = "", **inputs: str) -> Settings:
    internal = f"postgres://{USER}:{quote(PASSWORD, safe='')}@my-db.flycast:5432/{DB}{url_query}"
    env = {
        "INPUT_APP": "my-db",
        "INPUT_FLY-API-TOKEN": "fo1_x",
        "INPUT_HOST": "localhost",  # the certificate names it; nothing else listens there
        "INPUT_PORT": str(port),
        "INPUT_DATABASE-URL": internal,
        "FLY_PG_EXTERNAL_VERIFY_TIMEOUT": "5",
        **{f"INPUT_{k.upper()}": v for k, v in inputs.items()},
    }
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def verified_settings(port: int, ca: CertificateAuthority, tmp_path: Path, **kw: str) -> Settings:
    return settings_for(port, sslmode="verify-full", sslrootcert=ca.write(str(tmp_path)), **kw)


def run(settings: Settings) -> tuple[Outcome, list[str]]:
    """verify_expose on the hostname alone; the outcome and the workflow commands it printed."""
    facts = Outcome("my-db", "expose", "applied", True)
    out = io.StringIO()
    with to_workflow(Actions(env={}, out=out)):
        results = verify_expose(facts, settings)
    return verified(facts, results, settings.host), out.getvalue().splitlines()


def password_messages(seen: Seen) -> list[bytes]:
    return [body for kind, body in seen.messages if kind == b"p"]


# -- sslmode=require: the certificate is not verified -------------------------------------------


def test_require_never_sends_the_password_in_cleartext(servers: Any) -> None:
    server = servers("cleartext")
    outcome, log = run(settings_for(server.port))
    assert outcome.status == "failed"
    [result] = outcome.verify
    assert not result.ok and result.target == "localhost"
    assert "asked for the password in cleartext" in result.detail
    assert "did not verify (sslmode=require); not sent" in result.detail
    assert "sslmode verify-full" in result.detail and "SCRAM" in result.detail
    [seen] = server.seen  # a definite answer: not retried
    assert password_messages(seen) == []
    assert not any(leak in seen.after_startup for leak in LEAKS)
    errors = [line for line in log if line.startswith("::error")]
    assert errors and errors[0].startswith("::error title=Password not sent::Verification of")
    assert "in cleartext" in errors[0]


def test_require_never_sends_an_md5_hash(servers: Any) -> None:
    server = servers("md5")
    outcome, log = run(settings_for(server.port))
    assert outcome.status == "failed"
    [result] = outcome.verify
    assert "asked for an MD5 hash of the password" in result.detail
    assert "(sslmode=require); not sent" in result.detail
    assert "password_encryption = 'scram-sha-256'" in result.detail
    [seen] = server.seen
    assert password_messages(seen) == []
    assert not any(leak in seen.after_startup for leak in LEAKS)
    assert any(line.startswith("::error title=Password not sent::") for line in log)


# -- verify-full: the server is the one the URL names -------------------------------------------


def test_verified_tls_answers_cleartext(
    servers: Any, ca: CertificateAuthority, tmp_path: Path
) -> None:
    server = servers("cleartext")
    outcome, log = run(verified_settings(server.port, ca, tmp_path))
    assert outcome.status == "applied", outcome.verify
    [result] = outcome.verify
    assert result.ok and "in cleartext, to the verified server" in result.detail
    assert password_messages(server.seen[0]) == [PASSWORD.encode() + b"\0"]
    assert not any(line.startswith(("::error", "::warning")) for line in log)


def test_verified_tls_answers_md5_and_warns_that_the_password_is_stored_as_md5(
    servers: Any, ca: CertificateAuthority, tmp_path: Path
) -> None:
    server = servers("md5")
    outcome, log = run(verified_settings(server.port, ca, tmp_path))
    assert outcome.status == "applied", outcome.verify
    [result] = outcome.verify
    assert result.ok and "MD5 password hash (see the warning)" in result.detail
    assert password_messages(server.seen[0]) == [MD5_OUTER.encode() + b"\0"]
    [warning] = [line for line in log if line.startswith("::warning")]
    assert warning.startswith("::warning title=Password stored as MD5::")
    assert 'ALTER ROLE "app_user" PASSWORD' in warning and "scram-sha-256" in warning


# -- the login is the one the URL hands out -----------------------------------------------------


def test_the_login_is_the_handed_out_url_as_libpq_reads_it(servers: Any) -> None:
    """user, database, options, application_name and client_encoding reach the server as libpq
    would send them for the database-url output, whatever spelling that output has."""
    server = servers("trust")
    query = "?options=-c%20statement_timeout%3D5s&application_name=ci-job&client_encoding=UTF8"
    settings = settings_for(server.port, query)
    outcome, _ = run(settings)
    assert outcome.status == "applied", outcome.verify
    assert settings.urls is not None
    libpq = conninfo_to_dict(settings.urls.libpq)
    expected = {"user": libpq["user"], "database": libpq["dbname"]}
    for key in ("options", "application_name", "client_encoding"):
        expected[key] = libpq[key]
    assert server.seen[0].startup == expected


def test_without_application_name_the_probe_names_itself(servers: Any) -> None:
    server = servers("trust")
    outcome, _ = run(settings_for(server.port))
    assert outcome.status == "applied"
    assert server.seen[0].startup == {
        "user": USER,
        "database": DB,
        "application_name": "fly-pg-external",
    }


def handing_out(monkeypatch: pytest.MonkeyPatch, libpq: str) -> None:
    """Make `database-url` exactly `libpq`, as if urls.py had built it so."""
    urls = ClientUrls(libpq=libpq, node="", jdbc="", password="", redacted="")
    monkeypatch.setattr(Settings, "urls", property(lambda _self: urls))


def test_the_query_overrides_the_user_information_as_in_libpq(
    servers: Any, ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = servers("cleartext")
    settings = verified_settings(server.port, ca, tmp_path)
    root = quote(settings.sslrootcert, safe="/")
    handing_out(
        monkeypatch,
        f"postgres://{USER}:wrong@localhost:{server.port}/other?dbname={DB}"
        f"&sslmode=verify-full&sslrootcert={root}&password=right%2Bpw+1",
    )
    outcome, _ = run(settings)
    assert outcome.status == "applied", outcome.verify
    assert server.seen[0].startup["database"] == DB
    assert password_messages(server.seen[0]) == [b"right+pw+1\0"]  # %2B and + are both +


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://app_user:s3cr3t%zz@localhost:{port}/app_db?sslmode=require",
         "invalid percent-encoded token in the password"),
        ("postgres://app_user:s3 cr3t@localhost:{port}/app_db?sslmode=require", "space"),
        ("postgres://app_user:pw@localhost:{port}/app_db?sslmode=require&options=a=b",
         "second key/value separator"),
        ("postgres://app_user:pw@elsewhere:{port}/app_db?sslmode=require",
         "says 'elsewhere' for host, where this step verified 'localhost'"),
        ("postgres://app_user:pw@localhost:1/app_db?sslmode=require", "for port"),
        ("postgres://app_user:pw@localhost/app_db?sslmode=require", "says '5432' for port"),
        ("postgres://app_user:pw@localhost:{port}/app_db?sslmode=prefer", "for sslmode"),
        ("postgres://app_user:pw@localhost:{port}/app_db", "leaves it out for sslmode"),
        ("postgres://app_user:pw@localhost:{port}/app_db?sslmode=require&sslrootcert=ca.pem",
         "for sslrootcert"),
        ("postgres://app_user:pw@localhost:{port}/app_db?sslmode=require&hostaddr=10.0.0.1",
         "for hostaddr"),
        ("postgres://localhost:{port}/app_db?sslmode=require", "names no user"),
    ],
)  # fmt: skip
def test_a_url_that_means_something_else_fails_before_any_probe(
    servers: Any, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    server = servers("trust")
    settings = settings_for(server.port)
    handing_out(monkeypatch, url.format(port=server.port))
    outcome, _ = run(settings)
    assert outcome.status == "failed"
    [result] = outcome.verify
    assert result.target == "database-url" and not result.ok
    assert says in result.detail and "cr3t" not in result.detail
    assert outcome.error == result.detail
    assert server.seen == []  # no connection was made


def test_keys_libpq_does_not_know_are_a_warning_and_the_rest_is_verified(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = servers("trust")
    settings = settings_for(server.port)
    handing_out(
        monkeypatch,
        f"postgres://{USER}:pw@localhost:{server.port}/{DB}?schema=public&sslmode=require",
    )
    outcome, log = run(settings)
    assert outcome.status == "applied"
    url, host = outcome.verify
    assert (url.target, url.ok, url.warning_only) == ("database-url", False, True)
    assert "(schema)" in url.detail and "refuse the whole URL" in url.detail
    assert host.ok and server.seen[0].startup["user"] == USER
    assert any(line.startswith("::warning title=URL parameters libpq refuses::") for line in log)
