from __future__ import annotations

import pytest

from fly_pg_external.errors import InputError
from fly_pg_external.settings import Settings, from_environ

TOKEN = "fo1_abcdefghijklmnop"


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": TOKEN}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})

    def read(name: str) -> str | None:
        return env.get("INPUT_" + name.upper())

    return from_environ(env, read)


def test_defaults_match_action_yml() -> None:
    s = settings()
    assert s.ip_versions == ("v4", "v6")
    assert (s.host, s.port, s.sslmode, s.sslrootcert, s.mode, s.postgres_image) == (
        "my-db.fly.dev",
        5432,
        "require",
        "system",
        "expose",
        "keep",
    )
    assert (s.connect, s.pr_number, s.allow_forks) == (False, None, False)
    assert s.lifetime == "job"  # a forgotten input closes the database at the end of the job
    assert s.verify and s.pr_comment and not s.dry_run and not s.read_only
    assert s.wait_timeout == 300
    assert s.api_base_url == "https://api.fly.io"
    assert s.flaps_base_url == "https://api.machines.dev"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("v4", ("v4",)),
        ("V6 , v4,,v4", ("v4", "v6")),
        ("v6\tv6", ("v6",)),
        (" v4 v6 ", ("v4", "v6")),
    ],
)
def test_ip_versions_parse_case_duplicates_and_separators(
    raw: str, expected: tuple[str, ...]
) -> None:
    assert settings(**{"ip-versions": raw}).ip_versions == expected


def test_shared_v4_is_refused_with_the_reason() -> None:
    with pytest.raises(InputError) as err:
        settings(**{"ip-versions": "v4,shared_v4"})
    assert 'Input "ip-versions"' in str(err.value)
    assert "shared IPv4" in str(err.value) and "pg_tls" in str(err.value)


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("ip-versions", "v5", "v4, v6"),
        ("ip-versions", " , ", "at least one"),
        ("port", "0", "1-65535"),
        ("port", "70000", "1-65535"),
        ("port", "54a", "1-65535"),
        # Digits other than ASCII ones: str.isdigit() takes them, int() crashes on the first.
        ("port", "\u00b2", "1-65535"),
        ("port", "\u0665\u0664\u0663\u0662", "1-65535"),
        ("port", "\uff15\uff14\uff13\uff12", "1-65535"),
        ("sslmode", "disable", "require, verify-ca, verify-full"),
        ("sslmode", "prefer", "require"),
        ("mode", "apply", "expose, unexpose, sweep"),
        ("mode", "plan", "dry-run: true"),
        ("postgres-image", "latest", "keep, major"),
        ("sslrootcert", "ca pem", "relative to the workspace"),
        ("require-exposed", "true", "replaced by mode: connect"),
        ("require-exposed", "false", "replaced by mode: connect"),
        ("mode", "plan", "mode: connect"),
        ("lifetime", "forever", "persistent, job"),
        ("allow-forks", "1", "true or false"),
        ("pr-number", "#12", "positive integer"),
        ("pr-number", "0", "positive integer"),
        ("pr-number", "\u00b2", "positive integer"),
        ("pr-number", "\u0661\u0662", "positive integer"),
        ("wait-timeout", "\u0663\u0660", "1-3600"),
        ("wait-timeout", "1e3", "1-3600"),
        ("max-age", "\u0667d", "1m to 366d"),
        ("wait-timeout", "0", "1-3600"),
        ("wait-timeout", "ten", "1-3600"),
        ("verify", "yes", "true or false"),
        ("pr-comment", "1", "true or false"),
        ("dry-run", "", "true or false"),
        ("host", "https://x.example.com", "hostname"),
        ("host", "db.example.com:5432", "hostname"),
        ("app", "My_DB", "lower-case"),
        ("app", "", "required"),
        ("app", "a" * 64, "1-63"),
        ("app", "db\n::add-mask::x", "control character"),
        ("database-url", "mysql://u:p@my-db.flycast/db", "postgres://"),
        ("database-url", "postgres://u:p@other-db.flycast:5432/db", "not app"),
        ("database-url", "postgres://my-db.flycast:5432/db", "no user"),
        ("database-url", "postgres://u@my-db.flycast:5432/db", "no password"),
        ("database-url", "postgres://u:p@[::1]:5432/db", "IP literal"),
        ("database-url", "postgres://u:p@my-db.flycast:99999/db", "invalid port"),
    ],
)
def test_bad_input_names_the_input_and_what_is_accepted(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(InputError) as err:
        settings(**{name: value})
    message = str(err.value)
    assert message.startswith(f'Input "{name}"')
    assert accepted in message


def test_bad_database_url_error_never_shows_the_password() -> None:
    with pytest.raises(InputError) as err:
        settings(**{"database-url": "postgres://u:s3cretpw@evil.example.com:5432/db"})
    assert "s3cretpw" not in str(err.value)


def test_missing_token_names_the_input() -> None:
    def read(name: str) -> str | None:
        return {"app": "my-db"}.get(name)

    with pytest.raises(InputError) as err:
        from_environ({}, read)
    assert 'Input "fly-api-token"' in str(err.value)


def test_token_falls_back_to_env_in_flyctls_order() -> None:
    """flyctl reads FLY_ACCESS_TOKEN first (internal/config/config.go, applyEnv)."""

    def read(name: str) -> str | None:
        return {"app": "my-db"}.get(name)

    both = {"FLY_API_TOKEN": "fo1_api", "FLY_ACCESS_TOKEN": "fo1_access"}
    assert from_environ(both, read).fly_auth.oauth == ("fo1_access",)
    assert from_environ({"FLY_API_TOKEN": "fo1_api"}, read).fly_auth.oauth == ("fo1_api",)


def test_secrets_are_not_in_repr() -> None:
    s = settings(**{"database-url": "postgres://u:pw-x1@my-db.flycast:5432/db"})
    text = repr(s)
    assert TOKEN not in text and "pw-x1" not in text


@pytest.mark.parametrize(
    ("inputs", "lifetime"),
    [
        ({}, "job"),
        ({"lifetime": "persistent"}, "persistent"),
        ({"lifetime": " JOB "}, "job"),
        ({"hold-name": "bi"}, "persistent"),  # a named hold outlives the job by nature
        ({"mode": "unexpose"}, "persistent"),
        ({"mode": "sweep"}, "persistent"),
        ({"mode": "connect"}, "persistent"),
        # Read only: nothing allocated, so the post step has nothing to close.
        ({"dry-run": "true"}, "persistent"),
        ({"dry-run": "true", "lifetime": "job"}, "persistent"),
    ],
)
def test_lifetime_resolves_to_job_only_for_a_run_that_exposes(
    inputs: dict[str, str], lifetime: str
) -> None:
    assert settings(**inputs).lifetime == lifetime


def test_connect_is_a_read_only_expose_that_hands_out() -> None:
    s = settings(mode="connect")
    assert (s.mode, s.read_only, s.connect) == ("expose", True, True)
    assert not settings(**{"dry-run": "true"}).connect


def test_dry_run_is_read_only() -> None:
    assert settings(**{"dry-run": "true"}).read_only
    assert not settings().read_only
    assert settings(mode="unexpose", **{"dry-run": "TRUE"}).read_only


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        # libpq refuses sslrootcert=system below verify-full; a public CA makes verify-ca weak.
        ({"sslmode": "verify-ca"}, "verify-full"),
        ({"sslmode": "require", "sslrootcert": "/etc/ssl/ca.pem"}, "checks no certificate"),
        ({"sslmode": "verify-full", "sslrootcert": "/tmp/a b.pem"}, "absolute"),
        ({"sslmode": "verify-full", "sslrootcert": "../ca.pem"}, "relative to the workspace"),
        ({"sslmode": "verify-full", "sslrootcert": "-ca.pem"}, "relative to the workspace"),
        ({"mode": "unexpose", "lifetime": "job"}, "applies to mode expose"),
        ({"mode": "connect", "lifetime": "job"}, "applies to mode expose"),
        ({"hold-name": "bi", "lifetime": "job"}, "lifetime is job"),
    ],
)
def test_inputs_that_cannot_work_together_are_refused(inputs: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as err:
        settings(**inputs)
    assert message in str(err.value)


def test_tls_inputs_reach_the_settings() -> None:
    s = settings(sslmode="verify-ca", sslrootcert="/etc/ssl/certs/ca-certificates.crt")
    assert (s.tls.sslmode, s.tls.sslrootcert) == ("verify-ca", "/etc/ssl/certs/ca-certificates.crt")
    assert settings(sslmode="verify-full").tls.system_roots
    assert settings(**{"pr-number": " 42 "}).pr_number == 42
    relative = settings(sslmode="verify-full", sslrootcert="certs/ca.pem")
    assert relative.urls is None and relative.tls.sslrootcert == "certs/ca.pem"


def test_every_url_form_is_a_secret_known_before_any_request() -> None:
    s = settings(**{"database-url": "postgres://u:pw-x1@my-db.flycast:5432/db"})
    urls = s.urls
    assert urls is not None
    assert urls.libpq in s.secrets and urls.node in s.secrets and "pw-x1" in s.secrets
    assert "pw-x1" not in urls.jdbc  # the JDBC URL carries no credentials


@pytest.mark.parametrize(("name", "value"), [("port", "\u00b2"), ("pr-number", "\u00b2")])
def test_the_post_step_refuses_what_the_main_step_refused_without_a_traceback(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fly_pg_external import post

    env = {
        "INPUT_APP": "my-db",
        "INPUT_FLY-API-TOKEN": TOKEN,
        "INPUT_LIFETIME": "job",
        f"INPUT_{name.upper()}": value,
    }
    assert post.main(env) == 0
    assert "inputs were refused" in capsys.readouterr().out
