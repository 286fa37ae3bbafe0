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


def test_spaces_are_percent_20_in_every_url() -> None:
    """libpq and pg-connection-string read `+` as a plus sign in a path, and libpq in a query
    too: a space written as `+` would reach the server as `+`."""
    conn = parse_conn_string(
        "postgres://a:b@my-db.internal/my%20db?application_name=ci%20job",
        app="my-db",
        external_host="h",
    )
    u = client_urls(conn, "h", 5432, Tls("verify-full", "/etc/my ca.pem"))
    for url in (u.libpq, u.node, u.jdbc, u.redacted):
        assert "+" not in url and "my%20ca.pem" in url, url
    assert u.libpq == (
        "postgres://a:b@h:5432/my%20db?application_name=ci%20job"
        "&sslmode=verify-full&sslrootcert=%2Fetc%2Fmy%20ca.pem"
    )


def test_node_postgres_gets_the_database_name_decodeuri_reads_back() -> None:
    """pg-connection-string decodes the path with decodeURI, which leaves the escapes of
    `;/:@&=+$,` as they are: those characters are written raw there (tests/clients proves it)."""
    conn = parse_conn_string(
        "postgres://a:b@my-db.internal/a%2Bb%26c%3Bd%40e%25f?x=1", app="my-db", external_host="h"
    )
    u = client_urls(conn, "h", 5432, Tls("require"))
    assert u.node.startswith("postgres://a:b@h:5432/a+b&c;d@e%25f?x=1&")
    assert u.libpq.startswith("postgres://a:b@h:5432/a%2Bb%26c%3Bd%40e%25f?x=1&")
    assert u.jdbc.startswith("jdbc:postgresql://h:5432/a%2Bb%26c%3Bd%40e%25f?")
