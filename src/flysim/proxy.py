"""A stand-in for Fly's edge proxy with the ``pg_tls`` handler, in front of a real PostgreSQL.

Per connection it does what fly-api.md §7.1 describes: read the client's 8-byte SSLRequest,
answer ``S``, complete TLS with a ``*.fly.dev`` certificate, then forward the plaintext Postgres
stream. The certificates are issued by the simulator's test CA (:mod:`flysim.certs`), which a
test trusts the way a user's system store trusts Fly's. Routing follows postgres-flex: a
service on internal port 5432 is HAProxy, which only reaches the primary, so while the primary is
not ``started`` new connections are refused and existing ones are cut.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from flysim.certs import CertificateAuthority, make_certificate

# The certificates are issued in flysim.certs; tests have always imported them from here.
__all__ = [
    "HAPROXY_PORT",
    "Backend",
    "CertificateAuthority",
    "ProxiedConnection",
    "ProxyManager",
    "Route",
    "error_response",
    "make_certificate",
]

log = logging.getLogger("flysim.proxy")

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
PROTOCOL_3 = 196608
HAPROXY_PORT = 5432  # postgres-flex: HAProxy on 5432 sends every connection to the primary


class Backend(Protocol):
    """Where proxied connections end up (a :class:`~flysim.PostgresServer`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Route:
    app: str
    backend_machine: str  # the machine whose Postgres serves the connection
    via_machine: str  # the machine the proxy handed the connection to
    haproxy: bool


@dataclass(eq=False)  # identity semantics: kept in a set
class ProxiedConnection:
    route: Route
    client: socket.socket
    backend: socket.socket | None = None
    cut_event: threading.Event = field(default_factory=threading.Event)

    def cut(self) -> None:
        """Drop the connection as a restarting machine would (no TLS close_notify)."""
        self.cut_event.set()
        for sock in (self.backend, self.client):
            if sock is not None:
                # socket.socket.shutdown on the raw fd is safe from another thread, unlike any
                # call into the SSL object the pump thread is using.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def error_response(message: str, code: str = "08P01") -> bytes:
    """A Postgres ErrorResponse message (severity FATAL)."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class _Listener:
    def __init__(
        self,
        manager: ProxyManager,
        host: str,
        port: int,
        app: str,
        service_port: int,
    ) -> None:
        self.host, self.port, self.app, self.service_port = host, port, app, service_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self._manager = manager
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"flysim-pg-{host}:{port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            # A relay forwards each small protocol message as it comes; with Nagle on, a reply
            # could wait for a delayed ACK (40 ms) that no real proxy adds. Only a latency
            # nicety: a socket that refuses it (already reset by the client) must not end
            # this loop, which would leave the port open but never accepting again.
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._manager._serve,
                args=(client, self.app, self.service_port),
                name=f"flysim-pg-conn-{self.app}",
                daemon=True,
            ).start()

    def close(self) -> None:
        self._closed.set()
        # shutdown wakes a thread blocked in accept(); close frees the port immediately.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=1)


class ProxyManager:
    """Opens and closes loopback listeners as exposure changes, and pumps proxied connections.

    ``route`` is called (under the simulator's lock, via ``lock``) to decide whether a new
    connection may go through; ``None`` refuses it.
    """

    def __init__(
        self,
        *,
        lock: threading.RLock,
        route: Callable[[str, int], Route | None],
        backend: Callable[[], Backend | None],
        cert_dir: str,
        ca: CertificateAuthority,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._lock = lock
        self._route = route
        self._backend = backend
        self._cert_dir = cert_dir
        self._ca = ca
        self._handshake_timeout = handshake_timeout
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._connections: set[ProxiedConnection] = set()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.errors: list[str] = []

    # -- listeners -------------------------------------------------------------------------------
    def reconcile(self, desired: dict[tuple[str, int], tuple[str, int]]) -> None:
        """Make the open listeners exactly ``desired``: (host, port) -> (app, service port)."""
        for key, listener in list(self._listeners.items()):
            if desired.get(key) != (listener.app, listener.service_port):
                listener.close()
                del self._listeners[key]
        for (host, port), (app, service_port) in desired.items():
            if (host, port) in self._listeners:
                continue
            try:
                self._listeners[(host, port)] = _Listener(self, host, port, app, service_port)
            except OSError as exc:
                message = f"cannot listen on {host}:{port} for {app}: {exc}"
                if message not in self.errors:
                    self.errors.append(message)
                    log.warning("%s", message)

    def listening(self) -> dict[tuple[str, int], str]:
        return {key: listener.app for key, listener in self._listeners.items()}

    def cut(self, predicate: Callable[[Route], bool]) -> int:
        """Cut every proxied connection whose route matches; returns how many."""
        victims = [conn for conn in self._connections if predicate(conn.route)]
        for conn in victims:
            conn.cut()
        return len(victims)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        self.reconcile({})
        self.cut(lambda _route: True)

    # -- connections -----------------------------------------------------------------------------
    def _context(self, app: str) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(app)
            if context is None:
                cert, key = make_certificate(app, self._cert_dir, self._ca)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(cert, key)
                self._contexts[app] = context
            return context

    def _serve(self, client: socket.socket, app: str, service_port: int) -> None:
        conn: ProxiedConnection | None = None
        try:
            client.settimeout(self._handshake_timeout)
            if not _ssl_requested(client):
                return
            with self._lock:
                route = self._route(app, service_port)
                if route is None:
                    # No started primary behind HAProxy: close before answering, as a client
                    # would see while the primary is being replaced.
                    return
                conn = ProxiedConnection(route, client)
                self._connections.add(conn)
            self._relay(conn, app)
        except (OSError, ValueError):
            pass
        finally:
            if conn is not None:
                with self._lock:
                    self._connections.discard(conn)
                if conn.backend is not None:
                    conn.backend.close()
                conn.client.close()
            client.close()

    def _relay(self, conn: ProxiedConnection, app: str) -> None:
        """Accept the SSLRequest, complete TLS, then forward the plaintext stream both ways
        until either side ends or the connection is cut."""
        conn.client.sendall(b"S")
        tls = self._context(app).wrap_socket(conn.client, server_side=True)
        conn.client = tls
        if conn.cut_event.is_set():
            return
        backend_info = self._backend()
        if backend_info is None:
            tls.sendall(error_response("no PostgreSQL server is attached to the simulator"))
            return
        backend = socket.create_connection((backend_info.host, backend_info.port), timeout=5)
        conn.backend = backend  # first, so that _serve closes it whatever happens next
        with contextlib.suppress(OSError):  # a latency nicety, as for the client socket
            backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if conn.cut_event.is_set():
            return
        _pump(tls, backend, conn.cut_event)


def _ssl_requested(client: socket.socket) -> bool:
    """Whether the client's first message is an SSLRequest; any other is refused."""
    head = _recv_exact(client, 8)
    if head is None:
        return False
    length, code = struct.unpack("!ii", head)
    if length == 8 and code == SSL_REQUEST_CODE:
        return True
    if code == PROTOCOL_3:
        # A plaintext StartupMessage: pg_tls never passes plaintext through. (Whether Fly
        # answers with an error or just closes is UNCONFIRMED; an error is friendlier.)
        # Read the rest of the packet first: closing with unread data would be a RST
        # that can destroy the error before the client reads it.
        if 8 < length <= 10_000:
            _recv_exact(client, length - 8)
        client.sendall(error_response("SSL required: this port only accepts TLS", "28000"))
        client.shutdown(socket.SHUT_WR)
    # Otherwise a GSSENCRequest, CancelRequest or a direct TLS ClientHello (PG17
    # sslnegotiation=direct): support is UNCONFIRMED, so refuse (strict reading).
    return False


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _pump(tls: ssl.SSLSocket, backend: socket.socket, cut: threading.Event) -> None:
    """Copy bytes both ways from one thread (an SSL object must not be shared across threads)."""
    tls.settimeout(30)
    backend.settimeout(30)
    while not cut.is_set():
        if tls.pending():
            readable: list[socket.socket] = [tls]
        else:
            readable, _, _ = select.select([tls, backend], [], [], 0.5)
        for sock in readable:
            if sock is tls:
                try:
                    data = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if not data:
                    return
                backend.sendall(data)
            else:
                data = backend.recv(65536)
                if not data:
                    return
                tls.sendall(data)
