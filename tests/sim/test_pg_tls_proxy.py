"""The pg_tls proxy: exposure is observable, TLS is mandatory, a primary restart is a real gap."""

from __future__ import annotations

import errno
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography import x509

from flysim import PostgresServer, Simulator

TOKEN = "fo1_testtoken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER, PASSWORD, DB = "app_user", "p@ss w0rd/:", "app_db"


@pytest.fixture
def pg_sim(flysim: Callable[..., Simulator], pg_server: PostgresServer) -> Simulator:
    pg_server.create_database(USER, PASSWORD, DB)
    return flysim(
        apps={"my-db": {"machines": 3}},
        token=TOKEN,
        public_port_map={5432: 0, 5433: 0},
        restart_seconds=0.3,
    )


def allocate(sim: Simulator, type_: str, app: str = "my-db") -> str:
    response = httpx.post(
        f"{sim.flaps_base_url}/v1/apps/{app}/ip_assignments", json={"type": type_}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    address: str = response.json()["ip"]
    return address


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def connect(host: str, port: int, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=host,
        port=port,
        user=USER,
        password=PASSWORD,
        dbname=DB,
        connect_timeout=5,
        **{"sslmode": "require", **kwargs},  # type: ignore[arg-type]
    )


def update(sim: Simulator, machine_id: str) -> None:
    base = f"{sim.flaps_base_url}/v1/apps/my-db/machines/{machine_id}"
    machine = httpx.get(base, headers=AUTH).json()
    response = httpx.post(
        base, json={"config": machine["config"], "region": machine["region"]}, headers=AUTH
    )
    assert response.status_code == 200, response.text


def test_simulator_starts_quickly_on_the_session_postgres(pg_server: PostgresServer) -> None:
    # PostgreSQL itself is started once per session (its start-up time is printed by the
    # fixture); the CLI test proves a stop leaves no process or directory behind.
    started = time.monotonic()
    sim = Simulator(postgres=pg_server, public_port_map={5432: 0})
    sim.add_app("my-db", machines=3)
    sim.start()
    elapsed = time.monotonic() - started
    print(f"\nsimulator on PostgreSQL {pg_server.version} ready in {elapsed:.2f}s")
    sim.stop()
    assert sim.listening() == {}


def test_postgres_create_database_is_idempotent(pg_server: PostgresServer) -> None:
    pg_server.create_database("twice", "first", "twice_db")
    dsn = pg_server.create_database("twice", "second", "twice_db")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "twice",
            "twice_db",
        )


def test_nothing_listens_until_the_app_has_a_public_ip(pg_sim: Simulator) -> None:
    port = pg_sim.listen_port(5432)
    assert pg_sim.listening() == {}
    assert refused("127.0.0.1", port)

    address = allocate(pg_sim, "v4")
    assert pg_sim.listening()[(address, port)] == "my-db"
    assert pg_sim.public_endpoint("my-db") == ("127.0.0.1", port)
    with connect(address, port) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    httpx.delete(f"{pg_sim.flaps_base_url}/v1/apps/my-db/ip_assignments/{address}", headers=AUTH)
    assert pg_sim.listening() == {}
    assert refused(address, port) and refused("127.0.0.1", port)


def test_a_legacy_app_needs_the_service_too(
    flysim: Callable[..., Simulator], pg_server: PostgresServer
) -> None:
    pg_server.create_database(USER, PASSWORD, DB)
    sim = flysim(
        apps={"my-db": {"machines": 2, "legacy": True}},
        token=TOKEN,
        public_port_map={5432: 0, 5433: 0},
    )
    assert sim.app("my-db").ips == []
    allocate(sim, "v4")
    assert sim.listening() == {}
    for machine in sim.app("my-db").machines:
        base = f"{sim.flaps_base_url}/v1/apps/my-db/machines/{machine.id}"
        config = httpx.get(base, headers=AUTH).json()["config"]
        config["services"] = [
            {
                "protocol": "tcp",
                "internal_port": 5432,
                "ports": [{"port": 5432, "handlers": ["pg_tls"]}],
            }
        ]
        httpx.post(base, json={"config": config, "region": "iad"}, headers=AUTH)
    assert {port for _, port in sim.listening()} == {sim.listen_port(5432)}
    app = sim.app("my-db")
    assert sim.wait_for(lambda: all(m.healthy for m in app.machines))
    host, port = sim.public_endpoint("my-db") or ("", 0)
    with connect(host, port) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (USER,)


def test_tls_client_reaches_postgres_with_a_fly_dev_certificate(pg_sim: Simulator) -> None:
    address = allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    with connect("127.0.0.1", port) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use

    raw = socket.create_connection((address, port), timeout=5)
    raw.sendall(struct.pack("!ii", 8, 80877103))
    assert raw.recv(1) == b"S"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(raw, server_hostname="my-db.fly.dev") as tls:
        der = tls.getpeercert(binary_form=True)
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "my-db.fly.dev",
        "*.fly.dev",
        "localhost",
    }
    assert names.get_values_for_type(x509.IPAddress) == []  # 127.0.0.1 is a wrong hostname
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "my-db.fly.dev"


def test_the_certificate_is_issued_by_the_simulators_ca(pg_sim: Simulator) -> None:
    address = allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    ca = x509.load_pem_x509_certificate(Path(pg_sim.ca_cert_path).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign

    def handshake(host: str) -> x509.Certificate:
        """A TLS handshake after SSLRequest, verifying chain and hostname against the CA."""
        context = ssl.create_default_context(cafile=pg_sim.ca_cert_path)
        raw = socket.create_connection((address, port), timeout=5)
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    for host in ("localhost", "my-db.fly.dev", "other.fly.dev"):
        leaf = handshake(host)
        assert leaf.issuer == ca.subject
        leaf.verify_directly_issued_by(ca)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake("127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake("my-db.fly.io")

    # libpq checks the same: the chain against sslrootcert, the name with verify-full
    with connect("localhost", port, sslmode="verify-full", sslrootcert=pg_sim.ca_cert_path) as c:
        assert c.execute("SELECT current_user").fetchone() == (USER,)
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        connect("127.0.0.1", port, sslmode="verify-full", sslrootcert=pg_sim.ca_cert_path)


def test_every_simulator_has_a_ca_of_its_own(
    flysim: Callable[..., Simulator], pg_sim: Simulator
) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    other = flysim(apps={"other": {"machines": 1}}, public_port_map={5432: 0, 5433: 0})
    assert Path(other.ca_cert_path).read_bytes() != Path(pg_sim.ca_cert_path).read_bytes()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect("localhost", port, sslmode="verify-ca", sslrootcert=other.ca_cert_path)
    other.stop()
    with pytest.raises(RuntimeError):
        other.ca_cert_path  # noqa: B018 - removed with the simulator's directory


def test_clients_that_do_not_start_with_sslrequest_are_refused(pg_sim: Simulator) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        connect("127.0.0.1", port, sslmode="disable")

    startup = b"user\0app_user\0database\0app_db\0\0"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(struct.pack("!ii", 8 + len(startup), 196608) + startup)
        reply = plain.recv(1024)
        assert reply[:1] == b"E" and b"SSL required" in reply
        assert plain.recv(1024) == b""

    with socket.create_connection(("127.0.0.1", port), timeout=5) as gss:
        gss.sendall(struct.pack("!ii", 8, 80877104))  # GSSENCRequest
        assert gss.recv(1024) == b""


def test_a_refused_socket_option_does_not_stop_the_proxy(
    pg_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TCP_NODELAY is only a latency nicety: a socket refusing it (e.g. reset by the client right
    # after connecting) must neither end the accept loop nor drop the connection.
    address = allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    real = socket.socket.setsockopt

    def refuse_nodelay(sock: socket.socket, level: int, option: int, *value: object) -> None:
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(sock, level, option, *value)  # type: ignore[call-overload]

    # Only proxy connections below: the simulator's HTTP side sets the option too.
    monkeypatch.setattr(socket.socket, "setsockopt", refuse_nodelay)
    for _ in range(2):  # the second one needs the accept loop to have survived the first
        with connect(address, port) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_shared_v4_is_never_served_and_v6_only_skips_localhost(pg_sim: Simulator) -> None:
    port = pg_sim.listen_port(5432)
    allocate(pg_sim, "shared_v4")
    assert pg_sim.listening() == {}
    assert allocate(pg_sim, "v6") == "::1"
    # A v6 alone: reachable on ::1, but <app>.fly.dev has no A record, so not on 127.0.0.1.
    assert set(pg_sim.listening()) == {("::1", port), ("::1", pg_sim.listen_port(5433))}
    assert pg_sim.hostname_app is None
    assert refused("127.0.0.1", port)
    with connect("::1", port) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert allocate(pg_sim, "v6").startswith("2001:db8::")


def test_only_the_first_exposed_app_plays_localhost(
    flysim: Callable[..., Simulator], pg_server: PostgresServer
) -> None:
    sim = flysim(
        apps={"one": {"machines": 1}, "two": {"machines": 1}},
        token=TOKEN,
        public_port_map={5432: 0, 5433: 0},
    )
    allocate(sim, "v4", app="two")
    assert sim.hostname_app == "two"
    allocate(sim, "v4", app="one")
    assert sim.hostname_app == "one"  # the app seeded first wins once both are exposed
    assert sim.public_endpoint("two") == (
        sim.app("two").public_v4[0].address,
        sim.listen_port(5432),
    )
    disabled = flysim(
        apps={"x": {"machines": 1, "public_v4": True}},
        hostname_on_loopback=False,
        public_port_map={5432: 0, 5433: 0},
    )
    assert disabled.hostname_app is None
    assert all(host != "127.0.0.1" for host, _ in disabled.listening())


def test_primary_restart_cuts_connections_and_refuses_new_ones(pg_sim: Simulator) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    app = pg_sim.app("my-db")
    primary = app.primary
    replica = next(m for m in app.machines if m is not primary)
    assert primary is not None

    with connect("127.0.0.1", port) as survivor:
        update(pg_sim, replica.id)  # a replica restarting does not touch HAProxy's primary
        assert pg_sim.wait_for(lambda: replica.healthy)
        assert survivor.execute("SELECT 1").fetchone() == (1,)

    victim = connect("127.0.0.1", port)
    update(pg_sim, primary.id)
    assert primary.state == "replacing"
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    victim.close()
    with pytest.raises(psycopg.OperationalError):
        connect("127.0.0.1", port)
    assert pg_sim.wait_for(lambda: primary.state == "started")
    with connect("127.0.0.1", port) as after:
        assert after.execute("SELECT 1").fetchone() == (1,)


def test_failover_cuts_connections_to_the_old_primary(pg_sim: Simulator) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    app = pg_sim.app("my-db")
    old_primary = app.primary_id
    replicas = [m for m in app.machines if m.id != old_primary]
    pg_sim.faults.failover_after_updates("my-db", 1)
    with connect("127.0.0.1", port) as conn:
        update(pg_sim, replicas[0].id)
        assert pg_sim.wait_for(lambda: app.primary_id != old_primary)
        assert app.primary_id == replicas[1].id  # the machine the rollout has not reached
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    roles = {m.id: m.check("role").output for m in app.machines if m.check("role")}
    assert roles[replicas[1].id] == "primary" and roles[old_primary or ""] == "replica"


def test_a_primary_left_created_by_skip_launch_serves_nothing(pg_sim: Simulator) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    primary = pg_sim.app("my-db").primary
    assert primary is not None
    base = f"{pg_sim.flaps_base_url}/v1/apps/my-db/machines/{primary.id}"
    config = httpx.get(base, headers=AUTH).json()["config"]
    body = {"config": config, "region": "iad", "skip_launch": True}
    assert httpx.post(base, json=body, headers=AUTH).status_code == 200
    assert pg_sim.wait_for(lambda: primary.state == "created")
    with pytest.raises(psycopg.OperationalError):
        connect("127.0.0.1", port)  # only a started machine serves


def test_an_unreachable_primary_drops_connections_until_its_host_is_back(
    pg_sim: Simulator,
) -> None:
    allocate(pg_sim, "v4")
    port = pg_sim.listen_port(5432)
    primary = pg_sim.app("my-db").primary
    assert primary is not None
    with connect("127.0.0.1", port) as conn:
        pg_sim.set_host_status("my-db", primary.id, "unreachable")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        connect("127.0.0.1", port)
    assert primary.state == "started"  # it is the host that is gone, not the machine
    pg_sim.set_host_status("my-db", primary.id, "ok")
    with connect("127.0.0.1", port) as after:
        assert after.execute("SELECT 1").fetchone() == (1,)
