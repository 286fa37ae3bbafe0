"""The leak scanner, and the runs that exercise every place a secret could end up.

Every run in this suite goes through `leaks.assert_no_leaks` (tests/helpers/reliability_runs.py).
Here: proof that the scanner finds a planted secret in each form and place, a full pull-request
run (real Postgres login, PR comment on a fake GitHub) whose comment and API requests are scanned
too, and the failure paths, where error messages and tracebacks are printed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import leaks
import pytest
import workflow_log
from reliability_runs import GITHUB_TOKEN, PASSWORD, SECRETS, Background, check, checked

from fakegithub import FakeGitHub
from flysim import PostgresServer, Simulator

from action_run import TOKEN, ActionResult, run_main_step, run_post_step, step_state

GROUP = "Leak scan"
APP = "my-db"
USER, DB = "app_user", "app_db"
REPO, PR = "acme/infra", 7
HOSTILE_TITLE = "Expose db\n::set-output name=database-url::postgres://x ##[add-mask]my-db"
# Secrets in the query string of database-url: libpq's password and sslpassword, and a value the
# action cannot classify (`options` can carry any setting). They travel in database-url and
# node-database-url, masked, and nowhere else; not even in the `password` output.
QUERY_SECRETS = {
    "query password": "Qry/p@ss+w0rd%",
    "query sslpassword": "Ssl key pass:phrase&9",
    "options value": "-c app.api_key=Opt1onS3cret",
}
CARRY_QUERY_SECRETS = frozenset({"database-url", "node-database-url"})
QUERY = "".join(
    f"&{name}={quote(QUERY_SECRETS[label], safe='')}"
    for name, label in (
        ("password", "query password"),
        ("sslpassword", "query sslpassword"),
        ("options", "options value"),
    )
)


# -- the scanner finds what is there -------------------------------------------------------------


def fake_result(tmp_path: Path, **kw: Any) -> ActionResult:
    files = tmp_path / "file_commands"
    files.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = kw.pop("outputs", {})
    (files / "output").write_text(
        "".join(f"{k}<<ghadelimiter_0\n{v}\nghadelimiter_0\n" for k, v in outputs.items())
    )
    fields: dict[str, Any] = {"stdout": "", "stderr": "", "summary": "", "files": {}, **kw}
    return ActionResult(0, outputs=outputs, workdir=tmp_path, **fields)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLANTED: dict[str, Callable[[], dict[str, Any]]] = {
    "raw token in the log": lambda: {"stdout": f"using {TOKEN}\n"},
    "token in stderr traceback": lambda: {"stderr": f"Traceback\n  token='{TOKEN}'\n"},
    "percent-encoded password in an output": lambda: {
        "outputs": {"host": f"x{quote(PASSWORD, safe='')}y"}
    },
    "lower-case hex percent-encoding in fly.toml": lambda: {
        "files": {"fly.toml": quote(PASSWORD, safe="").lower()}
    },
    "base64 token in the summary": lambda: {"summary": f"auth: {b64(TOKEN)}"},
    "base64 of user:password (basic auth) in the summary": lambda: {
        "summary": f"Authorization: Basic {b64(USER + ':' + PASSWORD)}"
    },
    "base64 of a JSON blob holding the token": lambda: {
        "stdout": b64(json.dumps({"k": 1, "token": TOKEN})) + "\n"
    },
    "mask line fenced by stop-commands (shown as text)": lambda: {
        "stdout": f"::stop-commands::abc\n::add-mask::{TOKEN}\n::abc::\n"
    },
    "database-url output never masked": lambda: {
        "outputs": {"database-url": "postgres://u:***@h/db"}
    },
}


def test_scanner_finds_every_planted_leak(tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "scanner self-test",
        injected=f"{len(PLANTED)} planted leaks: raw, percent-encoded (both hex cases), base64 "
        "(alone, inside basic auth, inside an encoded blob), a fenced mask, an unmasked output",
        checked="each one is reported; a clean run with masks and the masked output is not",
    )
    missed = []
    for i, (name, plant) in enumerate(PLANTED.items()):
        _, problems = leaks.find_leaks(fake_result(tmp_path / str(i), **plant()), SECRETS)
        if not problems:
            missed.append(name)
    assert not missed, f"the scanner missed: {missed}"
    url = f"postgres://{USER}:{quote(PASSWORD, safe='')}@localhost:5432/{DB}"
    escaped = url.replace("%", "%25")  # workflow command data is escaped; the runner unescapes
    clean = fake_result(
        tmp_path / "clean",
        stdout=f"::add-mask::{TOKEN}\n::add-mask::{escaped}\nURL: postgres://{USER}:***@h\n",
        outputs={"database-url": url, "user": USER},
    )
    report, problems = leaks.find_leaks(clean, SECRETS)
    assert problems == [] and report.forms > 10
    scenario.outcome = f"{len(PLANTED)}/{len(PLANTED)} planted leaks found; 0 false positives"


QUERY_PLANTED: dict[str, Callable[[], dict[str, Any]]] = {
    "sslpassword percent-encoded in the URL line": lambda: {
        "stdout": "  URL: postgres://u:***@h/db?sslpassword="
        + quote(QUERY_SECRETS["query sslpassword"], safe="")
        + "\n"
    },
    "query password raw in the summary": lambda: {
        "summary": f"password={QUERY_SECRETS['query password']}"
    },
    "options value in the password output": lambda: {
        "outputs": {"password": QUERY_SECRETS["options value"]}
    },
}


def test_scanner_finds_query_string_secrets_outside_the_urls(tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "scanner self-test: query-string secrets",
        injected=f"{len(QUERY_PLANTED)} planted leaks of the query string's secret values "
        "(URL line, summary, the password output); masks registered after the first line",
        checked="each one is reported; the same values masked first and carried by "
        "database-url and node-database-url only are not",
    )
    missed = []
    for i, (name, plant) in enumerate(QUERY_PLANTED.items()):
        result = fake_result(tmp_path / str(i), **plant())
        _, problems = leaks.find_leaks(result, QUERY_SECRETS, excused=CARRY_QUERY_SECRETS)
        if not problems:
            missed.append(name)
    assert not missed, f"the scanner missed: {missed}"
    url = f"postgres://{USER}:{quote(PASSWORD, safe='')}@localhost:5432/{DB}?sslmode=require{QUERY}"
    masks = "".join(
        f"::add-mask::{v.replace('%', '%25')}\n" for v in (*QUERY_SECRETS.values(), PASSWORD)
    )
    outputs = {"database-url": url, "node-database-url": url, "password": PASSWORD}
    late = fake_result(tmp_path / "late", stdout=f"starting\n{masks}", outputs=outputs)
    assert leaks.masked_first(late, QUERY_SECRETS) == list(QUERY_SECRETS)
    clean = fake_result(
        tmp_path / "clean",
        stdout=f"{masks}::add-mask::{url.replace('%', '%25')}\n"
        f"URL: postgres://{USER}:***@h/{DB}?password=***&sslpassword=***&options=***\n",
        outputs=outputs,
    )
    _, problems = leaks.find_leaks(clean, QUERY_SECRETS, excused=CARRY_QUERY_SECRETS)
    assert problems == [] and leaks.masked_first(clean, QUERY_SECRETS) == []
    scenario.outcome = (
        f"{len(QUERY_PLANTED)}/{len(QUERY_PLANTED)} planted leaks and 3/3 late masks found; "
        "0 false positives"
    )


# -- a full pull-request run ---------------------------------------------------------------------


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub(
        login="github-actions[bot]", user_endpoint_forbidden=True, token=GITHUB_TOKEN
    ) as fake:
        pr = fake.add_pr(REPO, PR, head_sha="1" * 40)
        pr.title = HOSTILE_TITLE
        yield fake


def pr_env(tmp_path: Path, fake: FakeGitHub) -> dict[str, str]:
    event = {
        "action": "synchronize",
        "number": PR,
        "pull_request": {
            "number": PR,
            "title": HOSTILE_TITLE,
            "head": {"sha": "1" * 40, "repo": {"full_name": REPO}},
            "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
        },
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    return {
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_SERVER_URL": fake.server_url,
        "GITHUB_RUN_ID": "4242",
    }


@pytest.fixture
def pg_sim(flysim: Callable[..., Simulator], pg_server: PostgresServer) -> Simulator:
    sim = flysim(apps={APP: {"machines": 2, "legacy": True}})
    return sim


def test_pull_request_run_leaks_nothing_anywhere(
    pg_sim: Simulator, fake_github: FakeGitHub, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "pull-request run",
        injected="a full expose on a pull_request event: database-url with a password full of "
        "URL metacharacters, login through pg_tls, PR comment via a fake GitHub API, a PR "
        "title carrying workflow commands",
        checked="log, outputs (but database-url), summary, fly.toml, the PR comment and every "
        "request body GitHub received hold no form of the Fly token, the password or the "
        "GitHub token; database-url is masked; no command from the title",
    )
    internal = pg_sim.attach_database(APP, USER, PASSWORD, DB)
    secrets = {**SECRETS, "github token": GITHUB_TOKEN}
    run = Background(
        pg_sim,
        tmp_path,
        {
            "app": APP,
            "database-url": internal,
            "host": "localhost",
            "verify": "true",
            "pr-comment": "true",
            "github-token": GITHUB_TOKEN,
        },
        pr_env(tmp_path, fake_github),
    )
    result = run.finish(timeout=120, secrets=secrets)
    assert result.code == 0, result.log
    assert result.outputs["database-url"].startswith(f"postgres://{USER}:")
    [comment] = fake_github.comments(REPO, PR)
    assert result.outputs["comment-url"].endswith(f"#issuecomment-{comment.id}")
    assert f"postgres://{USER}:***@localhost:5432/{DB}" in comment.body
    sent = {
        f"GitHub request {i} {r.method} {r.path}": json.dumps(r.body)
        for i, r in enumerate(fake_github.requests)
    }
    report = leaks.assert_clean([("PR comment", comment.body), *sent.items()], secrets)
    assert "logged in" in result.stdout
    scenario.outcome = (
        f"0 hits in {report.sources + len(leaks.run_texts(result))} texts "
        f"({len(sent)} GitHub requests, 1 comment)"
    )
    scenario.add("injection_attempts")


def test_query_string_secrets_are_masked_first_and_shown_nowhere(
    pg_sim: Simulator, fake_github: FakeGitHub, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "query-string secrets",
        injected="an expose on a pull_request event whose database-url carries password, "
        "sslpassword and options (any setting) in its query string, next to application_name",
        checked="each value is masked before the first line; it is in database-url and "
        "node-database-url and nowhere else: log, other outputs (password too), summary, "
        "fly.toml, the PR comment, GitHub's requests; people see password=***, "
        "sslpassword=***, options=*** and the application_name",
    )
    internal = (
        pg_sim.attach_database(APP, USER, PASSWORD, DB) + QUERY + "&application_name=ci%20job"
    )
    secrets = {**SECRETS, "github token": GITHUB_TOKEN}
    run = Background(
        pg_sim,
        tmp_path,
        {
            "app": APP,
            "database-url": internal,
            "host": "localhost",
            # The login is not what is tested here; database-url's own password= would be
            # libpq's, so a verification by that URL would need it to be the role's.
            "verify": "false",
            "pr-comment": "true",
            "github-token": GITHUB_TOKEN,
        },
        pr_env(tmp_path, fake_github),
    )
    result = run.finish(timeout=120, secrets=secrets)
    assert result.code == 0, result.log
    assert leaks.masked_first(result, QUERY_SECRETS) == [], result.stdout
    for output in CARRY_QUERY_SECRETS:
        assert quote(QUERY_SECRETS["query sslpassword"], safe="") in result.outputs[output]
    [comment] = fake_github.comments(REPO, PR)
    shown = (
        f"postgres://{USER}:***@localhost:5432/{DB}?password=***&sslpassword=***&options=***"
        "&application_name=ci%20job&sslmode=require"
    )
    assert f"URL: {shown}" in result.stdout and shown in result.summary and shown in comment.body
    sent = {
        f"GitHub request {i} {r.method} {r.path}": json.dumps(r.body)
        for i, r in enumerate(fake_github.requests)
    }
    extra = {"PR comment": comment.body, **sent}
    report = leaks.assert_no_leaks(result, QUERY_SECRETS, extra=extra, excused=CARRY_QUERY_SECRETS)
    scenario.outcome = (
        f"0 hits in {report.sources} texts; {len(QUERY_SECRETS)} values masked before the "
        "first line"
    )


# -- temporary credentials ------------------------------------------------------------------------


def test_temporary_credentials_keep_the_long_lived_password_out_of_every_output(
    pg_sim: Simulator, pg_server: PostgresServer, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "temporary credentials",
        injected="a lifetime: job expose with credentials: temporary, its database-url a "
        "superuser's whose password is full of URL metacharacters; then its post step, with the "
        "state the main step saved",
        checked="the long-lived password is in nothing either step left (the log but its mask "
        "line, every output (database-url, node-database-url and password too), the summaries, "
        "fly.toml, the step state); the outputs carry the temporary role, whose password is "
        "masked and only in the masked outputs",
    )
    owner = "leak_owner"
    internal = pg_sim.attach_database(APP, owner, PASSWORD, DB)
    pg_server.psql(f'ALTER ROLE "{owner}" SUPERUSER')  # as fly pg attach makes it
    inputs = {
        "app": APP,
        "database-url": internal,
        "host": "localhost",
        "verify": "true",
        "lifetime": "job",
        "credentials": "temporary",
    }
    job = {"GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "leaks"}
    main = check(run_main_step(pg_sim, tmp_path / "main", inputs, job))
    assert main.code == 0, main.log
    assert main.outputs["user"].startswith("fpe_tmp_")
    state = (tmp_path / "main" / "file_commands" / "state").read_text(encoding="utf-8")
    everywhere = frozenset[str]()  # no output is excused: none may carry the long-lived one
    report = leaks.assert_no_leaks(main, SECRETS, extra={"step state": state}, excused=everywhere)
    assert PASSWORD in workflow_log.parse(main.stdout).masks  # masked all the same
    temporary = {"temporary password": main.outputs["password"]}
    leaks.assert_no_leaks(main, temporary, extra={"step state": state})

    post = check(run_post_step(pg_sim, tmp_path / "post", inputs, step_state(main), extra_env=job))
    assert post.code == 0, post.log
    leaks.assert_no_leaks(post, SECRETS, excused=everywhere)
    leaks.assert_no_leaks(post, temporary)
    assert f"Role `{main.outputs['user']}`: dropped" in post.summary
    scenario.outcome = (
        f"0 hits in {report.sources + len(leaks.run_texts(post))} texts of both steps; the "
        "long-lived password only in its mask line"
    )


# -- failure paths print errors and tracebacks ----------------------------------------------------


def test_failure_paths_leak_nothing(pg_sim: Simulator, tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "failure paths",
        injected="a wrong password (login refused during verification); the token given as "
        "FLY_API_TOKEN with a 'Bearer' prefix; an unwritable $GITHUB_OUTPUT (unexpected error, "
        "traceback on stderr)",
        checked="the error texts, the traceback and every output hold no form of any secret",
    )
    internal = pg_sim.attach_database(APP, USER, PASSWORD, DB)
    wrong = "Wr0ng/p@ss:w0rd+%"
    wrong_url = internal.replace(quote(PASSWORD, safe=""), quote(wrong, safe=""))
    secrets = {**SECRETS, "wrong password": wrong}

    refused = checked(
        pg_sim,
        tmp_path / "wrong-password",
        {"app": APP, "database-url": wrong_url, "host": "localhost", "verify": "true"},
        secrets=secrets,
    )
    assert refused.code == 1 and any("login refused" in e for e in refused.errors())
    assert refused.outputs["database-url"] == ""

    via_env = checked(
        pg_sim,
        tmp_path / "env-token",
        {"app": APP, "fly-api-token": ""},
        {"FLY_API_TOKEN": f"Bearer {TOKEN}"},
    )
    assert via_env.code == 0, via_env.log

    crash = Background(
        pg_sim,
        tmp_path / "crash",
        {"app": APP, "database-url": internal, "host": "localhost"},
        {"GITHUB_OUTPUT": str(tmp_path / "missing-dir" / "output")},
    ).finish(timeout=60)
    assert crash.code == 1
    assert any("Unexpected error" in e for e in crash.errors()), crash.log
    assert "Traceback" in crash.stderr
    scenario.outcome = "0 hits: login refusal, env token, unexpected-error traceback"
