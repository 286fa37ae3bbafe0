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


def test_the_internal_endpoint_in_the_query_does_not_follow_the_url_outside() -> None:
    # libpq reads the query after the authority: a host or port there would send every client
    # back to the internal endpoint, which does not resolve outside Fly.
    c = parse_conn_string(
        "postgres://u:pw-1234@my-db.flycast:5432/db?host=my-db.internal&hostaddr=fdaa::3"
        "&port=5433&application_name=ci",
        app="my-db",
        external_host="my-db.fly.dev",
    )
    assert c.external("my-db.fly.dev", 5432, [("sslmode", "require")]) == (
        "postgres://u:pw-1234@my-db.fly.dev:5432/db?application_name=ci&sslmode=require"
    )


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


# -- the query string: what is shown, what is secret ----------------------------------------------

QUERY_SECRETS_URL = (
    "postgres://app:pw1234@my-db.flycast:5432/db?sslmode=disable&password=Qp%2Bw0rd%2F9"
    "&sslpassword=Kf7%20key&application_name=ci%20job&options=-c%20search_path%3Dapp"
    "&connect_timeout=5&x_api_key=Zz0p9&target_session_attrs=read-write"
)


def test_secret_and_unknown_query_values_are_hidden_from_people_and_masked() -> None:
    c = parse_conn_string(QUERY_SECRETS_URL, app="my-db", external_host="h.dev")
    shown = c.redacted("h.dev", 5432, [("sslmode", "require")])
    assert shown == (
        "postgres://app:***@h.dev:5432/db?password=***&sslpassword=***"
        "&application_name=ci%20job&options=***&connect_timeout=5&x_api_key=***"
        "&target_session_attrs=read-write&sslmode=require"
    )
    for value in ("Qp+w0rd/9", "Kf7 key", "-c search_path=app", "Zz0p9"):
        assert value not in shown
        # raw, as written and percent-encoded, for the runner's masks (exact strings)
        assert value in c.secrets
    assert {"Qp%2Bw0rd%2F9", "Kf7%20key", "-c%20search_path%3Dapp"} <= set(c.secrets)
    # what can be shown is not masked: masking "5" would hide every 5 in the log
    assert "5" not in c.secrets and "ci job" not in c.secrets and "read-write" not in c.secrets
    assert "Qp+w0rd/9" not in repr(c) and "Kf7" not in repr(c)


def test_settings_secrets_hold_the_query_secrets() -> None:
    from fly_pg_external.settings import from_environ

    env = {
        "INPUT_APP": "my-db",
        "INPUT_FLY-API-TOKEN": "fo1_x",
        "INPUT_DATABASE-URL": QUERY_SECRETS_URL,
    }
    s = from_environ(env, lambda n: env.get("INPUT_" + n.upper()))
    assert {"Qp+w0rd/9", "Qp%2Bw0rd%2F9", "Kf7 key", "-c search_path=app", "Zz0p9"} <= set(
        s.secrets
    )


# -- percent-encoding as libpq reads it ------------------------------------------------------------


def test_plus_is_a_plus_and_spaces_are_percent_20() -> None:
    c = parse_conn_string(
        "postgres://a+b:p+w@my-db.flycast/d+b?application_name=a+b&options=-c%20search_path%3Dapp",
        app="my-db",
        external_host="h.dev",
    )
    assert (c.user, c.password, c.database) == ("a+b", "p+w", "d+b")
    assert dict(c.query) == {"application_name": "a+b", "options": "-c search_path=app"}
    assert c.external("h.dev", 5432, [("sslmode", "require")]) == (
        "postgres://a%2Bb:p%2Bw@h.dev:5432/d%2Bb?application_name=a%2Bb"
        "&options=-c%20search_path%3Dapp&sslmode=require"
    )


def test_userinfo_is_re_encoded_so_clients_split_it_where_it_was_meant() -> None:
    # An unencoded '@' in the password: libpq would cut at the first '@'; the external URL
    # encodes it, so every client reads the password whole.
    c = parse_conn_string("postgres://u:p@ss:w@my-db.flycast/db", app="my-db", external_host="h")
    assert c.password == "p@ss:w"
    assert c.external("h", 5432, []).startswith("postgres://u:p%40ss%3Aw@h:5432/db")
    assert {"p@ss:w", "p%40ss%3Aw"} <= set(c.secrets)


def test_a_query_value_with_an_unencoded_equals_sign_is_kept_whole() -> None:
    c = parse_conn_string(
        "postgres://u:p@my-db.flycast/db?options=-c search_path=app&",
        app="my-db",
        external_host="h",
    )
    assert c.query == (("options", "-c search_path=app"),)


@pytest.mark.parametrize("query", ["sslmode", "a=1&&b=2", "=x"])
def test_a_malformed_query_string_is_refused(query: str) -> None:
    with pytest.raises(ConnStringError, match="query"):
        parse_conn_string(
            f"postgres://u:p@my-db.flycast/db?{query}", app="my-db", external_host="h"
        )


@pytest.mark.parametrize("port", ["²", "5432²", "٥٤٣٢", "+5432", " 5432"])
def test_a_port_is_ascii_digits(port: str) -> None:
    with pytest.raises(ConnStringError, match="invalid port"):
        parse_conn_string(f"postgres://u:p@my-db.flycast:{port}/db", app="my-db", external_host="h")


# -- errors never quote the userinfo ---------------------------------------------------------------

# Each puts a piece of the password where a host, a port or a database name would be read.
BROKEN_PASSWORDS = [
    "Xq7@Zkw9/Wv",
    "Zq9@hx7:Kvw8/2",
    "K8/wQz@Jmx",
    "Wv3/Zq7k",
    "Jm4?Xq@h8w/Zk",
    "Qz5@Kxq/7:99",
    "Hv2@[Qz8]/k",
]


@pytest.mark.parametrize("password", BROKEN_PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "postgres://app_user:{pw}@my-db.flycast:5432/app_db",
        "postgres://app_user:{pw}@my-db.flycast/app_db?sslmode=disable",
        "postgres://app_user:{pw}@my-db.flycast:5432",
        "postgres://{pw}@my-db.flycast:5432/app_db",
    ],
)
def test_errors_about_a_password_with_unencoded_delimiters_quote_none_of_it(
    template: str, password: str
) -> None:
    url = template.format(pw=password)
    with pytest.raises(ConnStringError) as err:
        parse_conn_string(url, app="my-db", external_host="my-db.fly.dev")
    message = str(err.value).lower()  # the host is quoted lower-cased
    pieces = {password[i : i + 3].lower() for i in range(len(password) - 2)}
    assert not [p for p in pieces if p in message], message
    assert "percent-encode" in message, message
