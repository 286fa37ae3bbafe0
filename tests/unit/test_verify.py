"""verify.probe against tiny local servers: a plaintext-only server must fail, never fall back."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from fly_pg_external.verify import SSL_REQUEST, ProbeError, probe, probe_until, still_open


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
    clock = iter(float(i) for i in range(100))
    sleeps: list[float] = []
    with pytest.raises(ProbeError) as err:
        probe_until(
            "127.0.0.1",
            port,
            server_name="x",
            sslmode="require",
            login=None,
            bound=5,
            clock=lambda: next(clock),
            sleep=sleeps.append,
        )
    assert err.value.stage == "tcp"
    assert 1 <= len(sleeps) <= 5
    assert not still_open("127.0.0.1", port)
