"""verify.probe against tiny local servers: a plaintext-only server must fail, never fall back."""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_clock import FakeClock
from verified import verified

from fly_pg_external.gha import Actions
from fly_pg_external.log import to_workflow
from fly_pg_external.outcome import IpChange, Outcome
from fly_pg_external.settings import from_environ
from fly_pg_external.verification import verify_expose
from fly_pg_external.verify import (
    SSL_REQUEST,
    ProbeError,
    ProbeResult,
    probe,
    probe_all,
    probe_until,
    still_open,
)
from flysim.proxy import make_certificate


def one_shot_server(answer: bytes) -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            seen.append(conn.recv(8))
            conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    t.join(timeout=5)
    srv.close()
    assert seen == [SSL_REQUEST]


@pytest.fixture
def plaintext_server() -> Iterator[int]:
    yield from one_shot_server(b"N")


@pytest.fixture
def garbage_server() -> Iterator[int]:
    yield from one_shot_server(b"E")


def test_server_answering_n_is_a_failure_not_a_plaintext_fallback(plaintext_server: int) -> None:
    with pytest.raises(ProbeError, match="answered N") as err:
        probe("127.0.0.1", plaintext_server, server_name="x.fly.dev")
    assert err.value.stage == "tls"


def test_unexpected_answer_is_reported(garbage_server: int) -> None:
    with pytest.raises(ProbeError, match="unexpected answer"):
        probe("127.0.0.1", garbage_server, server_name="x.fly.dev")


def test_closed_port_is_a_tcp_failure_and_retries_are_bounded() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    clock = FakeClock()
    with pytest.raises(ProbeError) as err:
        probe_until(
            "127.0.0.1",
            port,
            server_name="x",
            sslmode="require",
            login=None,
            bound=5,
            clock=clock,
        )
    assert err.value.stage == "tcp"
    assert 1 <= len(clock.sleeps) <= 5
    assert not still_open("127.0.0.1", port)


# -- one bound for the whole verification ----------------------------------------------------
# probe_all dials one port on every target: each server below listens on its own loopback
# address (all of 127/8 is local on Linux) on a shared port.


class Server:
    """A tiny server: `N` answers the SSLRequest with N, `hang` accepts and never answers, `tls`
    answers S and completes a TLS handshake. `accepted` holds when each connection came in."""

    def __init__(self, behaviour: str, host: str, port: int, cert_dir: str) -> None:
        self.behaviour = behaviour
        self.host = host
        self.listener = socket.create_server((host, port))
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[float] = []
        self.held: list[socket.socket] = []
        self.context: ssl.SSLContext | None = None
        if behaviour == "tls":
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*make_certificate("my-db", cert_dir))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(time.monotonic())
            conn.settimeout(5)
            if self.behaviour == "hang":
                self.held.append(conn)
                continue
            with contextlib.suppress(OSError):
                if conn.recv(8) != SSL_REQUEST:
                    conn.close()
                elif self.behaviour == "N":
                    conn.sendall(b"N")
                    conn.close()
                else:
                    assert self.context is not None
                    conn.sendall(b"S")
                    self.held.append(self.context.wrap_socket(conn, server_side=True))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() on Linux
        self.listener.close()
        for conn in self.held:
            conn.close()


class Servers:
    """Servers on 127.0.0.2, 127.0.0.3, ... sharing one port; `refused()` is an address on which
    nothing listens."""

    def __init__(self, cert_dir: str) -> None:
        self.cert_dir = cert_dir
        self.port = 0
        self.hosts = (f"127.0.0.{n}" for n in range(2, 255))
        self.started: list[Server] = []

    def start(self, behaviour: str) -> Server:
        server = Server(behaviour, next(self.hosts), self.port, self.cert_dir)
        self.port = server.port
        self.started.append(server)
        return server

    def refused(self) -> str:
        return next(self.hosts)

    def probe_all(self, targets: list[str], bound: float) -> list[ProbeResult | ProbeError]:
        assert self.port, "start a server first: it picks the port"
        return probe_all(
            targets,
            self.port,
            server_name="my-db.fly.dev",
            sslmode="require",
            login=None,
            bound=bound,
        )


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(str(tmp_path))
    yield s
    for server in s.started:
        server.close()


def test_an_n_answer_is_definite_and_reported_at_once(servers: Servers) -> None:
    plain = servers.start("N")
    clock = FakeClock()
    started = time.monotonic()
    with pytest.raises(ProbeError, match="refused TLS") as err:
        probe_until(
            plain.host,
            plain.port,
            server_name="x",
            sslmode="require",
            login=None,
            bound=60,
            clock=clock,
        )
    assert time.monotonic() - started < 0.5
    assert f"no pg_tls service on port {plain.port}" in str(err.value)
    assert err.value.definite and err.value.stage == "tls"
    assert (len(plain.accepted), clock.sleeps) == (1, [])  # one connection, no retry


def test_an_attempt_never_outlives_its_budget(servers: Servers) -> None:
    silent = servers.start("hang")
    started = time.monotonic()
    with pytest.raises(ProbeError, match="no answer to SSLRequest: timed out"):
        probe(silent.host, silent.port, server_name="x", budget=0.3)  # socket timeout 10 s
    assert 0.25 < time.monotonic() - started < 1.0


def count_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection attempt verify makes, by address (from any thread)."""
    attempts: list[str] = []
    real = socket.create_connection

    def counting(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)  # the module verify dials with
    return attempts


def test_dead_targets_share_one_bound_and_are_probed_at_once(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = servers.start("hang"), servers.start("hang")
    closed = servers.refused()
    attempts = count_attempts(monkeypatch)
    bound = 1.5
    started = time.monotonic()
    results = servers.probe_all([first.host, closed, second.host], bound)
    elapsed = time.monotonic() - started
    # One bound for the three, not one each: sequentially that took 3 x 1.5 s (and 30 s before
    # an attempt was cut to the bound).
    assert bound - 0.1 < elapsed < bound + 1.0
    # Each silent server saw exactly one attempt (it got the whole bound), and the two
    # overlapped: both were dialled at the start, long before either attempt could end.
    assert attempts.count(first.host) == attempts.count(second.host) == 1
    assert len(first.accepted) == len(second.accepted) == 1
    assert max(first.accepted[0], second.accepted[0]) - started < 0.3
    # A refused connection is retried within the bound (at 0, 0.25 and 0.75 s; the next pause
    # would end past the bound).
    assert attempts.count(closed) == 3
    hung1, refused, hung2 = results
    for hung in (hung1, hung2):
        assert isinstance(hung, ProbeError) and str(hung) == "no answer to SSLRequest: timed out"
        assert not hung.definite
    assert isinstance(refused, ProbeError) and refused.stage == "tcp"
    assert "refused" in str(refused) and not refused.definite


def test_results_keep_the_order_of_the_targets(servers: Servers) -> None:
    slow, tls, plain = servers.start("hang"), servers.start("tls"), servers.start("N")
    closed = servers.refused()
    # The slowest comes first and the fastest later: the order is still the targets'.
    results = servers.probe_all([slow.host, tls.host, plain.host, closed], 1.0)
    hung, ok, no_tls, refused = results
    assert isinstance(hung, ProbeError) and "timed out" in str(hung)
    assert isinstance(ok, ProbeResult) and ok.tls_version.startswith("TLSv1.")
    assert isinstance(no_tls, ProbeError) and "refused TLS" in str(no_tls)
    assert isinstance(refused, ProbeError) and refused.stage == "tcp"
    assert len(tls.accepted) == len(plain.accepted) == 1


def test_verify_expose_reports_in_order_within_one_bound(servers: Servers) -> None:
    """v4 silent, v6 not answering (a notice), hostname answering N: errors, in target order."""
    silent = servers.start("hang")  # 127.0.0.2
    plain = Server("N", "127.0.0.1", servers.port, servers.cert_dir)  # what localhost reaches
    servers.started.append(plain)
    env = {
        "INPUT_APP": "my-db",
        "INPUT_FLY-API-TOKEN": "fo1_x",
        "INPUT_HOST": "localhost",
        "INPUT_PORT": str(silent.port),
        "FLY_PG_EXTERNAL_VERIFY_TIMEOUT": "1.5",
    }
    settings = from_environ(env, lambda n: env.get("INPUT_" + n.upper()))
    ips = [IpChange("v4", "keep", (silent.host,)), IpChange("v6", "keep", ("::1",))]
    outcome = Outcome("my-db", "expose", "applied", True, ips=ips)
    out = io.StringIO()
    started = time.monotonic()
    with to_workflow(Actions(env={}, out=out)):
        results = verify_expose(outcome, settings)
    outcome = verified(outcome, results, settings.host)
    assert time.monotonic() - started < 1.5 + 1.0
    assert [(v.target, v.ok, v.warning_only) for v in outcome.verify] == [
        (silent.host, False, False),
        ("::1", False, True),
        ("localhost", False, False),
    ]
    port = silent.port
    lines = out.getvalue().splitlines()
    assert [line.split(" failed: ")[0] for line in lines[:2]] == [
        f"::error title=Verification failed::Verification of {silent.host}:{port}",
        f"::error title=Verification failed::Verification of localhost:{port}",
    ]
    # An IPv6 that does not answer TCP from here is one notice, never a warning.
    [notice] = lines[2:]
    assert notice.startswith(
        "::notice title=IPv6 not checked::IPv6 not checked from this runner: ::1 ("
    )
    assert "refused TLS" in outcome.verify[2].detail and len(plain.accepted) == 1
    assert outcome.status == "failed"


class _Cancelled(BaseException):
    pass


def test_a_signal_interrupts_the_wait_for_slow_probes(servers: Servers) -> None:
    """The action turns SIGTERM into an exception in the main thread: it must not sit out the
    probes (as leaving a ThreadPoolExecutor would)."""
    silent = servers.start("hang")

    def cancel(_signum: int, _frame: Any) -> None:
        raise _Cancelled

    previous = signal.signal(signal.SIGALRM, cancel)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_Cancelled):
            servers.probe_all([silent.host, servers.refused()], 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 1.0
