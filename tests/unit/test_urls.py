"""The URL forms each client gets, per sslmode and sslrootcert (urls.py). The client matrix
(tests/clients) proves each form in the real client; these pin the exact text."""

from __future__ import annotations

import pytest

from fly_pg_external.connstr import parse_conn_string
from fly_pg_external.urls import Tls, client_urls

INTERNAL = "postgres://app:p%40ss@my-db.flycast:5432/app_db?sslmode=disable&connect_timeout=5"
BASE = "postgres://app:p%40ss@my-db.fly.dev:5432/app_db?connect_timeout=5&"


def urls(sslmode: str, sslrootcert: str = "system"):  # type: ignore[no-untyped-def]
    conn = parse_conn_string(INTERNAL, app="my-db", external_host="my-db.fly.dev")
    return client_urls(conn, "my-db.fly.dev", 5432, Tls(sslmode, sslrootcert))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sslmode", "sslrootcert", "libpq", "node", "jdbc"),
    [
        (
            "require",
            "system",
            "sslmode=require",
            "sslmode=require&uselibpqcompat=true",
            "sslmode=require",
        ),
        (
            "verify-full",
            "system",
            "sslmode=verify-full&sslrootcert=system",
            "sslmode=verify-full&uselibpqcompat=true",
            "sslmode=verify-full&sslfactory=org.postgresql.ssl.DefaultJavaSSLFactory",
        ),
        (
            "verify-full",
            "/etc/ca.pem",
            "sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            "sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&uselibpqcompat=true",
            "sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        ),
        (
            "verify-ca",
            "/etc/ca.pem",
            "sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem",
            "sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&uselibpqcompat=true",
            "sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem",
        ),
    ],
)
def test_each_client_gets_its_own_spelling(
    sslmode: str, sslrootcert: str, libpq: str, node: str, jdbc: str
) -> None:
    u = urls(sslmode, sslrootcert)
    assert u.libpq == BASE + libpq
    assert u.node == BASE + node
    assert u.jdbc == "jdbc:postgresql://my-db.fly.dev:5432/app_db?" + jdbc
    assert u.redacted == BASE.replace("p%40ss", "***") + libpq
    assert u.password == "p@ss"


def test_internal_tls_parameters_never_leak_into_the_external_urls() -> None:
    conn = parse_conn_string(
        "postgres://a:b@my-db.internal/db?sslmode=disable&sslrootcert=x&uselibpqcompat=false",
        app="my-db",
        external_host="my-db.fly.dev",
    )
    u = client_urls(conn, "my-db.fly.dev", 5432, Tls("require"))
    assert u.libpq.endswith("/db?sslmode=require")
    assert u.node.endswith("/db?sslmode=require&uselibpqcompat=true")
