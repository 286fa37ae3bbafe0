from __future__ import annotations

import pytest

from fly_pg_external.connstr import ConnStringError, parse_conn_string


@pytest.mark.parametrize(
    "host",
    [
        "my-db.flycast",
        "my-db.internal",
        "top2.nearest.of.my-db.internal",
        "iad.my-db.internal",
        "0123456789abcd.vm.my-db.internal",
        "my-db.fly.dev",
    ],
)
def test_internal_hosts_of_the_app_are_accepted(host: str) -> None:
    c = parse_conn_string(f"postgres://u:p@{host}:5432/db", app="my-db", external_host="x.dev")
    assert c.host == host


def test_attach_url_is_rewritten_to_external_host_port_and_sslmode() -> None:
    c = parse_conn_string(
        "postgres://app_user:p%40ss%3Aword@my-db.flycast:5432/app_db?sslmode=disable&connect_timeout=5",
        app="my-db",
        external_host="my-db.fly.dev",
    )
    assert c.password == "p@ss:word"
    assert (
        c.external("my-db.fly.dev", 5432, [("sslmode", "require")])
        == "postgres://app_user:p%40ss%3Aword@my-db.fly.dev:5432/app_db?connect_timeout=5&sslmode=require"
    )
    assert c.redacted("my-db.fly.dev", 5432, [("sslmode", "require")]) == (
        "postgres://app_user:***@my-db.fly.dev:5432/app_db?connect_timeout=5&sslmode=require"
    )
    assert "p%40ss%3Aword" in c.secrets and "p@ss:word" in c.secrets


def test_create_url_without_database_keeps_no_path() -> None:
    c = parse_conn_string(
        "postgresql://postgres:pw@my-db.internal:5432", app="my-db", external_host="h.dev"
    )
    assert c.database == ""
    tls = [("sslmode", "verify-full"), ("sslrootcert", "system")]
    assert c.external("h.dev", 15432, tls) == (
        "postgresql://postgres:pw@h.dev:15432?sslmode=verify-full&sslrootcert=system"
    )


def test_other_apps_host_is_refused() -> None:
    with pytest.raises(ConnStringError, match="not app"):
        parse_conn_string("postgres://u:p@my-db2.flycast/db", app="my-db", external_host="h")
