"""Temporary credentials, the pure part: inputs, the role, its SQL, and the privilege rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from fly_pg_external import step_state
from fly_pg_external.connstr import parse_conn_string
from fly_pg_external.credentials import (
    PG16,
    Creator,
    CredentialSettings,
    clean_credential_inputs,
    create_statements,
    is_temporary_role,
    login_role,
    new_role,
    quote_ident,
    quote_literal,
    refusal,
    release_statements,
    temporary_conn,
)
from fly_pg_external.errors import InputError
from fly_pg_external.settings import from_environ
from fly_pg_external.urls import Tls, client_urls

APP = "my-db"
LONG_LIVED = "Long-lived/p@ss:w0rd"
INTERNAL = (
    f"postgres://app_user:Long-lived%2Fp%40ss%3Aw0rd@{APP}.flycast:5432/app_db?sslmode=disable"
)
NOW = datetime(2031, 5, 4, 12, 0, 0, 123456, tzinfo=UTC)


def clean(mode: str = "expose", has_url: bool = True, **given: str) -> CredentialSettings:
    def inp(name: str, default: str = "") -> str:
        return given.get(name.replace("-", "_"), default)

    return clean_credential_inputs(inp, mode=mode, has_database_url=has_url)  # type: ignore[arg-type]


# -- inputs ----------------------------------------------------------------------------------


def test_defaults_keep_the_internal_credentials() -> None:
    settings = clean()
    assert settings == CredentialSettings()
    assert not settings.temporary
    assert (settings.valid_for, settings.connection_limit, settings.role) == (6 * 3600, 20, "")


def test_temporary_with_every_shaping_input() -> None:
    settings = clean(
        credentials="temporary",
        credentials_valid_for="45m",
        credentials_role="App_Owner",
        credentials_connection_limit="5",
    )
    assert settings.temporary
    assert (settings.valid_for, settings.role, settings.connection_limit) == (2700, "App_Owner", 5)
    assert settings.target("app_user") == "App_Owner"
    assert CredentialSettings().target("app_user") == "app_user"


@pytest.mark.parametrize(
    ("raw", "seconds"), [("1m", 60), ("60", 60), ("6h", 21600), ("7d", 604800), ("90 s", 90)]
)
def test_validity_from_one_minute_to_a_week(raw: str, seconds: float) -> None:
    assert clean(credentials_valid_for=raw).valid_for == seconds


@pytest.mark.parametrize(
    ("given", "name", "says"),
    [
        ({"credentials": "ephemeral"}, "credentials", "use one of: internal, temporary"),
        ({"credentials_valid_for": "59s"}, "credentials-valid-for", "from 1m to 7d"),
        ({"credentials_valid_for": "8d"}, "credentials-valid-for", "from 1m to 7d"),
        ({"credentials_valid_for": "6 hours"}, "credentials-valid-for", "from 1m to 7d"),
        ({"credentials_valid_for": "\u00b2h"}, "credentials-valid-for", "from 1m to 7d"),
        ({"credentials_connection_limit": "0"}, "credentials-connection-limit", "1 to 1000"),
        ({"credentials_connection_limit": "1001"}, "credentials-connection-limit", "1 to 1000"),
        ({"credentials_connection_limit": "-1"}, "credentials-connection-limit", "1 to 1000"),
        ({"credentials_role": "pg_monitor"}, "credentials-role", "PostgreSQL reserves"),
        ({"credentials_role": "PUBLIC"}, "credentials-role", "PostgreSQL reserves"),
        ({"credentials_role": "fpe_tmp_0123456789abcdef"}, "credentials-role", "prefix"),
        ({"credentials_role": "é" * 32}, "credentials-role", "longer than 63 bytes"),
        ({"credentials_role": "a\nb"}, "credentials-role", "control character"),
    ],
)
def test_a_bad_value_names_its_input_and_what_is_accepted(
    given: dict[str, str], name: str, says: str
) -> None:
    with pytest.raises(InputError) as caught:
        clean(**given)
    assert caught.value.input_name == name
    assert says in str(caught.value)


def test_temporary_needs_the_internal_url_whose_user_makes_the_role() -> None:
    with pytest.raises(InputError, match='Input "credentials": temporary needs the database-url'):
        clean(credentials="temporary", has_url=False)
    assert not clean(has_url=False).temporary


def test_temporary_is_refused_where_nothing_is_handed_out() -> None:
    with pytest.raises(InputError, match="unexpose hands out nothing"):
        clean(mode="unexpose", credentials="temporary")
    assert clean(mode="sweep", credentials="temporary").temporary


def test_settings_read_the_inputs_as_the_runner_names_them() -> None:
    env = {
        "INPUT_APP": APP,
        "INPUT_FLY-API-TOKEN": "fo1_simulatortoken_0123456789",
        "INPUT_DATABASE-URL": INTERNAL,
        "INPUT_CREDENTIALS": "temporary",
        "INPUT_CREDENTIALS-VALID-FOR": "2h",
    }
    settings = from_environ(env, lambda name: env.get(f"INPUT_{name.upper()}"))
    assert settings.credentials == CredentialSettings("temporary", 7200.0, "", 20)
    env["INPUT_CREDENTIALS-CONNECTION-LIMIT"] = "many"
    with pytest.raises(InputError, match='"credentials-connection-limit"'):
        from_environ(env, lambda name: env.get(f"INPUT_{name.upper()}"))


# -- the role and its URLs -------------------------------------------------------------------


def test_a_new_role_has_the_prefix_a_random_name_and_a_long_url_safe_password() -> None:
    one, two = (new_role(CredentialSettings("temporary"), "app_user") for _ in range(2))
    assert is_temporary_role(one.name) and is_temporary_role(two.name)
    assert one.name != two.name and one.password != two.password
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", one.password)
    assert "password" not in repr(one) and one.password not in repr(one)
    assert one.target == "app_user"
    assert one.valid_until(NOW) == datetime(2031, 5, 4, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    [
        "fpe_tmp_",
        "fpe_tmp_0123456789abcde",
        "fpe_tmp_0123456789ABCDEF",
        "xfpe_tmp_0123456789abcdef",
        "fpe_tmp_0123456789abcdef0",
        "fpe_tmp_manual",
        "app_user",
    ],
)
def test_only_names_the_action_makes_count_as_temporary_roles(name: str) -> None:
    assert not is_temporary_role(name)


def conn_of(url: str) -> Any:
    return parse_conn_string(url, app=APP, external_host=f"{APP}.fly.dev")


def test_the_temporary_urls_carry_the_role_and_nothing_of_the_long_lived_login() -> None:
    internal = conn_of(INTERNAL + "&user=app_user&password=Other%20secret&application_name=ci")
    role = new_role(CredentialSettings("temporary"), internal.user)
    conn = temporary_conn(internal, role)
    urls = client_urls(conn, f"{APP}.fly.dev", 5432, Tls())

    assert (conn.user, conn.password, conn.database) == (role.name, role.password, "app_db")
    assert urls.libpq == (
        f"postgres://{role.name}:{role.password}@{APP}.fly.dev:5432/app_db"
        "?application_name=ci&sslmode=require"
    )
    assert urls.password == role.password
    assert f"user={role.name}" not in urls.jdbc and "app_user" not in urls.jdbc
    everything = " ".join([urls.libpq, urls.node, urls.jdbc, urls.password, *conn.secrets])
    for secret in (LONG_LIVED, "Long-lived%2Fp%40ss%3Aw0rd", "Other secret", "Other%20secret"):
        assert secret not in everything
    assert role.password in conn.secrets


def test_without_a_database_in_the_url_the_temporary_one_names_the_users() -> None:
    """libpq would otherwise look for a database named after the temporary role."""
    internal = conn_of(f"postgres://postgres:pw@{APP}.flycast:5432")
    conn = temporary_conn(internal, new_role(CredentialSettings("temporary"), "postgres"))
    assert conn.database == "postgres"


# -- SQL -------------------------------------------------------------------------------------


def test_quoting_as_postgresql_quotes() -> None:
    assert quote_ident('We"ird role') == '"We""ird role"'
    assert quote_literal("it's") == "'it''s'"


def role_for(target: str) -> Any:
    return new_role(CredentialSettings("temporary", 3600.0, target, 7), "app_user")


def test_create_statements_make_a_role_that_becomes_its_target() -> None:
    role = role_for('Own"er')
    until = role.valid_until(NOW)
    statements = create_statements(
        role,
        verifier="SCRAM-SHA-256$4096:c2FsdA==$a:b",
        valid_until=until,
        comment="c'",
        self_grant=True,
    )
    name = f'"{role.name}"'
    assert statements == [
        f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b' "
        f'VALID UNTIL \'2031-05-04 13:00:00+00\' CONNECTION LIMIT 7 IN ROLE "Own""er"',
        f"ALTER ROLE {name} SET role = 'Own\"er'",
        f"COMMENT ON ROLE {name} IS 'c'''",
        f"GRANT {name} TO CURRENT_USER",
    ]
    assert (
        len(create_statements(role, verifier="v", valid_until=until, comment="", self_grant=False))
        == 3
    )


def test_release_reassigns_before_it_drops_what_is_owned() -> None:
    assert release_statements("fpe_tmp_x", "app_owner") == [
        'REASSIGN OWNED BY "fpe_tmp_x" TO "app_owner"',
        'DROP OWNED BY "fpe_tmp_x"',
    ]


def test_the_login_role_is_read_from_the_roles_settings() -> None:
    assert login_role(["search_path=x", "role=app_owner"]) == "app_owner"
    assert login_role(None) is None and login_role(["role="]) is None


# -- privileges ------------------------------------------------------------------------------


def creator(**facts: Any) -> Creator:
    base: dict[str, Any] = {
        "name": "ci_roles",
        "superuser": False,
        "createrole": True,
        "server_version": 170002,
        "target_exists": True,
        "target_superuser": False,
        "admin_of_target": True,
        "target_in_creator": False,
        "now": NOW,
    }
    return Creator(**{**base, **facts})


def test_a_superuser_may_do_everything_and_needs_no_membership() -> None:
    who = creator(superuser=True, createrole=False, admin_of_target=False, target_in_creator=True)
    assert refusal(who, "postgres") is None
    assert not who.self_grant and creator().self_grant


def test_the_least_privilege_setup_is_enough() -> None:
    assert refusal(creator(), "app_owner") is None
    # Before PostgreSQL 16, CREATEROLE alone granted membership in any role that is not a
    # superuser.
    assert refusal(creator(server_version=150008, admin_of_target=False), "app_owner") is None


def test_without_createrole_the_error_gives_the_sql_that_grants_it() -> None:
    error = refusal(creator(createrole=False, server_version=150008), "app_owner")
    assert error is not None
    assert (
        error.message
        == "ci_roles cannot create the temporary role: it lacks CREATEROLE (it may not create "
        "roles)."
    )
    assert (
        error.hint
        == 'As a superuser (fly pg connect -a <app>), run: ALTER ROLE "ci_roles" CREATEROLE;'
    )


def test_postgresql_16_asks_for_admin_option_on_the_target() -> None:
    error = refusal(creator(createrole=False, admin_of_target=False, server_version=PG16), "App")
    assert error is not None
    assert "CREATEROLE (it may not create roles) and ADMIN OPTION on App" in error.message
    assert error.hint is not None
    assert error.hint.endswith(
        'ALTER ROLE "ci_roles" CREATEROLE; GRANT "App" TO "ci_roles" WITH ADMIN OPTION;'
    )
    assert error.title == "Missing privilege for temporary credentials"


def test_a_role_that_would_become_itself_is_sent_to_a_group_role() -> None:
    error = refusal(creator(name="app_user", target_in_creator=True), "app_user")
    assert error is not None
    assert (
        "app_user is not a superuser, and the temporary role would become app_user" in error.message
    )
    assert (
        error.hint is not None and 'GRANT app_owner TO "app_user" WITH ADMIN OPTION;' in error.hint
    )


def test_membership_in_a_superuser_is_only_a_superusers_to_give() -> None:
    error = refusal(creator(target_superuser=True), "postgres")
    assert error is not None and "postgres is a superuser" in error.message


def test_a_target_that_does_not_exist_is_named() -> None:
    error = refusal(creator(superuser=True, target_exists=False), "app_ownr")
    assert error is not None
    assert error.message == "The role 'app_ownr' the temporary role should become does not exist."


def test_the_post_step_finds_the_role_where_the_main_step_saved_it() -> None:
    saved = {"STATE_TEMP_ROLE": "fpe_tmp_0123456789abcdef", "STATE_HOLDER": "h"}
    assert step_state.load(saved).temp_role == "fpe_tmp_0123456789abcdef"
    assert step_state.load({}).temp_role == ""
