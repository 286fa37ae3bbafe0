"""A later job's hand-off (`mode: connect`, the `exposed` and client outputs), a dry run's,
privileged runs triggered from forks, and `pr-number`, end to end against the simulator and the
fake GitHub API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from exposure import REPO, allocate_by_hand, select_one

from fakegithub import FakeGitHub
from flysim import Simulator

from action_run import ActionResult, run_inprocess

APP = "my-db"
PASSWORD = "s3cret-handoff-pw"
GH_TOKEN = "ghs_handofftoken0123456789"


@pytest.fixture
def sim(flysim: Any) -> Simulator:
    simulator: Simulator = flysim(apps={APP: {"machines": 2}})
    return simulator


@pytest.fixture
def legacy(flysim: Any) -> Simulator:
    simulator: Simulator = flysim(apps={APP: {"machines": 2, "legacy": True}})
    return simulator


def internal_url(sim: Simulator) -> str:
    return sim.attach_database(APP, "app_user", PASSWORD, "app_db")


def later_job(sim: Simulator, tmp_path: Path, **extra: str) -> ActionResult:
    """The later-job recipe: read the URL back without changing anything, failing when the
    database is not reachable."""
    inputs = {
        "app": APP,
        "host": "localhost",
        "mode": "connect",
        **extra,
    }
    if "database-url" not in inputs:
        inputs["database-url"] = internal_url(sim)
    return run_inprocess(sim, tmp_path, inputs)


def unmasked(result: ActionResult) -> str:
    """What a reader sees: the log without the `::add-mask::` commands, and the summary."""
    lines = [line for line in result.log.splitlines() if not line.startswith("::add-mask::")]
    return "\n".join(lines) + result.summary


# -- the later job ---------------------------------------------------------------------------


def test_later_job_fails_at_once_on_an_app_never_exposed(sim: Simulator, tmp_path: Path) -> None:
    result = later_job(sim, tmp_path)
    assert result.code == 1
    assert result.error_titles() == ["Database not exposed"]
    [error] = result.errors()
    assert "no dedicated IPv4 (v4)" in error and "no public IPv6 (v6)" in error
    assert "with mode: expose first" in error
    assert result.outputs["exposed"] == "false"
    for name in ("database-url", "node-database-url", "jdbc-url", "password"):
        assert result.outputs[name] == "", name
    assert sim.mutating_requests() == []
    assert PASSWORD not in unmasked(result)


def test_later_job_names_machines_without_the_pg_tls_service(
    legacy: Simulator, tmp_path: Path
) -> None:
    allocate_by_hand(legacy, APP, "v4")
    allocate_by_hand(legacy, APP, "v6")
    result = later_job(legacy, tmp_path)
    assert result.code == 1
    [error] = result.errors()
    machines = sorted(m.id for m in legacy.app(APP).machines)
    assert f"machine(s) {', '.join(machines)} serve no pg_tls service on port 5432" in error
    assert "IPv4" not in error


def test_later_job_gets_every_connection_output_once_exposed(
    sim: Simulator, tmp_path: Path
) -> None:
    url = internal_url(sim)
    first = run_inprocess(sim, tmp_path / "expose", {"app": APP, "host": "localhost"})
    assert first.code == 0, first.log
    assert first.outputs["exposed"] == "true"
    writes = len(sim.mutating_requests())
    result = later_job(sim, tmp_path / "later")
    assert result.code == 0, result.log
    out = result.outputs
    assert out["exposed"] == "true" and out["changed"] == "false"
    assert out["password"] == PASSWORD
    assert out["database-url"].endswith("@localhost:5432/app_db?sslmode=require")
    assert out["node-database-url"].endswith("/app_db?sslmode=require&uselibpqcompat=true")
    assert out["jdbc-url"] == "jdbc:postgresql://localhost:5432/app_db?sslmode=require"
    select_one(out["database-url"])
    # The runner masks what the action registered: the password and each secret URL form.
    masks = {line[len("::add-mask::") :] for line in result.log.splitlines() if "add-mask" in line}
    assert {PASSWORD, out["database-url"], out["node-database-url"]} <= masks
    assert out["jdbc-url"] not in masks
    assert url not in unmasked(result) and PASSWORD not in unmasked(result)
    assert len(sim.mutating_requests()) == writes


def test_later_job_proves_its_url_logs_in_and_fails_when_it_does_not(
    sim: Simulator, tmp_path: Path
) -> None:
    url = internal_url(sim)
    first = run_inprocess(sim, tmp_path / "expose", {"app": APP, "host": "localhost"})
    assert first.code == 0, first.log
    later = later_job(sim, tmp_path / "later", verify="true")
    assert later.code == 0, later.log
    assert "logged in" in later.log and later.outputs["exposed"] == "true"
    # The password was rotated since the secret was saved: the URL cannot log in, so the step
    # fails here instead of handing it to the next step.
    stale = url.replace(PASSWORD, "an-old-password")
    result = later_job(sim, tmp_path / "stale", verify="true", **{"database-url": stale})
    assert result.code == 1
    assert "Verification failed" in result.error_titles()
    assert any("password authentication failed" in e for e in result.errors()), result.errors()
    assert result.outputs["exposed"] == "false" and result.outputs["database-url"] == ""


def test_a_dry_run_hands_out_no_url_and_points_at_connect(sim: Simulator, tmp_path: Path) -> None:
    first = run_inprocess(sim, tmp_path / "expose", {"app": APP, "host": "localhost"})
    assert first.code == 0, first.log
    inputs = {"app": APP, "host": "localhost", "dry-run": "true"}
    result = run_inprocess(sim, tmp_path / "dry", {**inputs, "database-url": internal_url(sim)})
    assert result.code == 0, result.log
    assert result.outputs["exposed"] == "true"
    for name in ("database-url", "node-database-url", "jdbc-url", "password"):
        assert result.outputs[name] == "", name
    notices = [line for line in result.log.splitlines() if line.startswith("::notice")]
    assert any("use mode: connect" in n for n in notices), notices


def test_the_renamed_require_exposed_input_is_refused_with_its_new_name(
    sim: Simulator, tmp_path: Path
) -> None:
    inputs = {"app": APP, "dry-run": "true", "require-exposed": "true"}
    result = run_inprocess(sim, tmp_path, inputs)
    assert result.code == 1
    [error] = result.errors()
    assert '"require-exposed"' in error and "mode: connect" in error
    assert sim.requests == []


# -- privileged runs triggered from forks ----------------------------------------------------


def event(tmp_path: Path, name: str, payload: dict[str, Any], **extra: str) -> dict[str, str]:
    path = tmp_path / f"event-{name}.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return {
        "GITHUB_EVENT_NAME": name,
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": REPO,
        **extra,
    }


def pull_request_target(tmp_path: Path, head_repo: str) -> dict[str, str]:
    return event(
        tmp_path,
        "pull_request_target",
        {
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"sha": "7" * 40, "repo": {"full_name": head_repo}},
                "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
            },
        },
    )


def workflow_run(tmp_path: Path, head_repo: str) -> dict[str, str]:
    return event(
        tmp_path,
        "workflow_run",
        {
            "workflow_run": {
                "event": "pull_request",
                "head_sha": "8" * 40,
                "head_repository": {"full_name": head_repo},
                "pull_requests": [],
            },
            "repository": {"full_name": REPO},
        },
    )


@pytest.mark.parametrize("make_event", [pull_request_target, workflow_run])
def test_a_fork_triggered_privileged_run_changes_nothing(
    sim: Simulator, tmp_path: Path, make_event: Any
) -> None:
    env = make_event(tmp_path, "mallory/infra")
    result = run_inprocess(sim, tmp_path, {"app": APP, "database-url": internal_url(sim)}, env)
    assert result.code == 1
    assert result.error_titles() == ["Fork run refused"]
    [error] = result.errors()
    assert "mallory/infra" in error and "allow-forks: true" in error and "dry-run" in error
    assert sim.requests == [], "nothing may reach Fly"
    # Every output is set all the same, so a later step's condition reads what it means.
    assert result.outputs["exposed"] == "false" and result.outputs["changed"] == "false"
    assert result.outputs["database-url"] == "" and result.outputs["host"] == "my-db.fly.dev"


def deleted_fork(tmp_path: Path, name: str) -> dict[str, str]:
    """GitHub sends no head repository once the fork is deleted; its code is still there."""
    if name == "pull_request_target":
        payload: dict[str, Any] = {
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"sha": "7" * 40, "repo": None},
                "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
            },
        }
    else:
        payload = {
            "workflow_run": {"head_sha": "8" * 40, "head_repository": None},
            "repository": {"full_name": REPO},
        }
    return event(tmp_path, name, payload)


@pytest.mark.parametrize("name", ["pull_request_target", "workflow_run"])
def test_a_run_from_a_deleted_fork_is_refused_too(
    sim: Simulator, tmp_path: Path, name: str
) -> None:
    result = run_inprocess(sim, tmp_path, {"app": APP}, deleted_fork(tmp_path, name))
    assert result.code == 1
    assert result.error_titles() == ["Fork run refused"]
    assert "a deleted or unknown repository" in result.errors()[0]
    assert sim.requests == []


def test_an_issue_comment_acting_for_a_fork_pull_request_by_number_is_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    # "/expose 9" on a plain issue: the payload names no pull request, pr-number does.
    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True) as github:
        github.add_pr(REPO, 9, head_sha="9" * 40, head_repo="mallory/infra")
        env = event(
            tmp_path,
            "issue_comment",
            {"issue": {"number": 3}, "comment": {"body": "/expose 9"}},
            GITHUB_API_URL=github.base_url,
        )
        inputs = {"app": APP, "github-token": GH_TOKEN, "pr-number": "9"}
        result = run_inprocess(sim, tmp_path, inputs, env)
    assert result.code == 1 and result.error_titles() == ["Fork run refused"]
    assert sim.requests == []


def test_a_fork_triggered_dry_run_still_reports(sim: Simulator, tmp_path: Path) -> None:
    env = pull_request_target(tmp_path, "mallory/infra")
    result = run_inprocess(sim, tmp_path, {"app": APP, "dry-run": "true"}, env)
    assert result.code == 0, result.log
    assert sim.mutating_requests() == []


@pytest.mark.parametrize("make_event", [pull_request_target, workflow_run])
def test_a_fork_triggered_dry_run_hands_out_no_url(
    sim: Simulator, tmp_path: Path, make_event: Any
) -> None:
    # The database is open; a later job's hand-off (mode: connect) would get a URL
    # that logs in from outside Fly, which is what the fork guard exists to keep from a fork.
    first = run_inprocess(sim, tmp_path / "expose", {"app": APP, "host": "localhost"})
    assert first.code == 0, first.log
    writes = len(sim.mutating_requests())
    env = make_event(tmp_path, "mallory/infra")
    inputs = {
        "app": APP,
        "host": "localhost",
        "mode": "connect",
        "database-url": internal_url(sim),
    }
    result = run_inprocess(sim, tmp_path / "fork", inputs, env)
    assert result.code == 0, result.log
    for name in ("database-url", "node-database-url", "jdbc-url", "password"):
        assert result.outputs[name] == "", name
    assert result.outputs["exposed"] == "true"  # what is true of the database stays readable
    notices = [line for line in result.log.splitlines() if line.startswith("::notice")]
    assert any("mallory/infra" in n and "allow-forks: true" in n for n in notices), notices
    assert PASSWORD not in unmasked(result)
    assert len(sim.mutating_requests()) == writes
    # The same run allowed hands the URL out.
    allowed = run_inprocess(sim, tmp_path / "allowed", {**inputs, "allow-forks": "true"}, env)
    assert allowed.code == 0, allowed.log
    assert allowed.outputs["database-url"].endswith("@localhost:5432/app_db?sslmode=require")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="empty-payload"),
        pytest.param({"number": 7}, id="no-pull-request"),
        pytest.param({"pull_request": {"number": 7}}, id="no-head"),
        pytest.param({"pull_request": "7"}, id="pull-request-not-an-object"),
    ],
)
def test_a_privileged_run_whose_payload_names_no_head_repository_is_refused(
    sim: Simulator, tmp_path: Path, payload: dict[str, Any]
) -> None:
    env = event(tmp_path, "pull_request_target", payload)
    result = run_inprocess(sim, tmp_path, {"app": APP}, env)
    assert result.code == 1, result.log
    assert result.error_titles() == ["Fork run refused"]
    assert sim.requests == []


def test_an_unreadable_event_payload_of_a_privileged_run_is_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    env = {
        "GITHUB_EVENT_NAME": "pull_request_target",
        "GITHUB_EVENT_PATH": str(tmp_path / "missing.json"),
        "GITHUB_REPOSITORY": REPO,
    }
    result = run_inprocess(sim, tmp_path, {"app": APP}, env)
    assert result.code == 1, result.log
    assert result.error_titles() == ["Fork run refused"]
    assert sim.requests == []


def test_allow_forks_lets_the_run_change_things(sim: Simulator, tmp_path: Path) -> None:
    env = workflow_run(tmp_path, "mallory/infra")
    result = run_inprocess(sim, tmp_path, {"app": APP, "allow-forks": "true"}, env)
    assert result.code == 0, result.log
    assert result.outputs["exposed"] == "true"


def test_the_repositorys_own_privileged_runs_are_not_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    env = pull_request_target(tmp_path, REPO)
    result = run_inprocess(sim, tmp_path, {"app": APP}, env)
    assert result.code == 0, result.log


@pytest.mark.parametrize(("head_repo", "refused"), [("mallory/infra", True), (None, False)])
def test_an_issue_comment_asks_github_where_the_pull_request_comes_from(
    sim: Simulator, tmp_path: Path, head_repo: str | None, refused: bool
) -> None:
    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True) as github:
        github.add_pr(REPO, 9, head_sha="9" * 40, head_repo=head_repo)
        env = event(
            tmp_path,
            "issue_comment",
            {"issue": {"number": 9, "pull_request": {"url": "x"}}, "comment": {"body": "/expose"}},
            GITHUB_API_URL=github.base_url,
        )
        inputs = {"app": APP, "github-token": GH_TOKEN}
        result = run_inprocess(sim, tmp_path, inputs, env)
    assert (result.code == 1) is refused, result.log
    assert (result.error_titles() == ["Fork run refused"]) is refused


# -- pr-number -------------------------------------------------------------------------------


def test_pr_number_puts_a_workflow_run_report_on_its_pull_request(
    sim: Simulator, tmp_path: Path
) -> None:
    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True) as github:
        github.add_pr(REPO, 12, head_sha="c" * 40, head_repo="alice/infra")
        env = workflow_run(tmp_path, "alice/infra")
        env["GITHUB_API_URL"] = github.base_url
        inputs = {
            "app": APP,
            "dry-run": "true",
            "pr-number": "12",
            "pr-comment": "true",
            "github-token": GH_TOKEN,
        }
        result = run_inprocess(sim, tmp_path, inputs, env)
        comments = github.comments(REPO, 12)
    assert result.code == 0, result.log
    assert len(comments) == 1 and APP in comments[0].body
    assert result.outputs["comment-url"].endswith(f"#issuecomment-{comments[0].id}")


def test_pr_number_on_a_push_comments_on_that_pull_request(sim: Simulator, tmp_path: Path) -> None:
    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True) as github:
        github.add_pr(REPO, 14, head_sha="d" * 40)
        env = {
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_API_URL": github.base_url,
            "GITHUB_SHA": "e" * 40,
        }
        inputs = {
            "app": APP,
            "dry-run": "true",
            "pr-number": "14",
            "pr-comment": "true",
            "github-token": GH_TOKEN,
        }
        result = run_inprocess(sim, tmp_path, inputs, env)
        comments = github.comments(REPO, 14)
    assert result.code == 0, result.log
    assert len(comments) == 1


# -- verification as the URL says -------------------------------------------------------------


def verify_full(sim: Simulator, sslrootcert: str) -> dict[str, str]:
    """An expose with verification on, checking the certificate as verify-full clients do."""
    return {
        "app": APP,
        "host": "localhost",
        "verify": "true",
        "sslmode": "verify-full",
        "sslrootcert": sslrootcert,
        "database-url": internal_url(sim),
    }


def test_a_ca_file_this_step_cannot_read_fails_the_verification(
    sim: Simulator, tmp_path: Path
) -> None:
    result = run_inprocess(sim, tmp_path, verify_full(sim, "/nonexistent/ca.pem"))
    assert result.code == 1
    [error] = result.errors()
    assert "sslrootcert /nonexistent/ca.pem cannot be read in this step" in error
    assert result.outputs["exposed"] == "false"
    assert result.outputs["database-url"] == ""


def test_verify_full_passes_with_the_simulators_ca_as_the_file(
    sim: Simulator, tmp_path: Path
) -> None:
    result = run_inprocess(sim, tmp_path, verify_full(sim, sim.ca_cert_path))
    assert result.code == 0, result.log
    assert result.outputs["exposed"] == "true"
    assert "logged in" in result.log


def test_verify_full_with_system_roots_refuses_a_ca_the_system_does_not_trust(
    sim: Simulator, tmp_path: Path
) -> None:
    # The simulator's CA is in no system store: libpq with sslrootcert=system would refuse
    # the server, so the verification must fail too, and the outputs say not exposed.
    inputs = verify_full(sim, "system")
    result = run_inprocess(sim, tmp_path, inputs, {"SSL_CERT_FILE": "/nonexistent"})
    assert result.code == 1
    assert any("certificate verify failed" in e for e in result.errors()), result.errors()
    assert result.outputs["exposed"] == "false"


def test_a_ca_file_of_the_workspace_is_named_relative_to_it(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step runs in the workspace (/github/workspace in its container) as the clients do:
    # a relative sslrootcert reads the same file on both sides.
    workspace = tmp_path / "workspace"
    (workspace / "certs").mkdir(parents=True)
    shutil.copy(sim.ca_cert_path, workspace / "certs" / "ca.pem")
    monkeypatch.chdir(workspace)
    result = run_inprocess(sim, tmp_path / "run", verify_full(sim, "certs/ca.pem"))
    assert result.code == 0, result.log
    assert result.outputs["database-url"].endswith("sslmode=verify-full&sslrootcert=certs%2Fca.pem")
    select_one(result.outputs["database-url"])  # psycopg, from the workspace as well


def test_a_comment_found_without_graphql_logs_no_refused_request(
    sim: Simulator, tmp_path: Path
) -> None:
    # The Actions token may not read GET /user (403); where GraphQL is not there the action
    # falls back to it. PyGithub reports the 403 on its own logger: none of that may reach the
    # step's log as a line the user can do nothing about.
    from action_run import run_subprocess

    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True) as github:
        github.add_pr(REPO, 7, head_sha="7" * 40)
        github.fail_next("POST", "/graphql", status=403, times=None)
        env = pull_request_target(tmp_path, REPO)
        env["GITHUB_API_URL"] = github.base_url
        inputs = {"app": APP, "pr-comment": "true", "github-token": GH_TOKEN}
        first = run_subprocess(sim, tmp_path / "first", {**inputs, "dry-run": "true"}, env)
        second = run_subprocess(sim, tmp_path / "second", inputs, env)
        requests = [(r.method, r.path) for r in github.requests]
    assert first.code == 0 and second.code == 0, second.log
    assert ("GET", "/user") in requests
    for result in (first, second):
        both = result.stdout + result.stderr
        assert "failed with 403" not in both and "Forbidden" not in both, both[-2000:]
