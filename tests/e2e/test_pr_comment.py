"""`publish.publish` end to end: PyGithub talking HTTP to a local fake GitHub API.

Each test builds the runner's environment (event JSON, GITHUB_* variables, a step summary file),
hands `publish` a hand-built Outcome and checks what the fake server saw and stored, and what
was logged (the package log, sent to a recording writer as a run sends it to the runner). The
last section runs the whole action against the Fly simulator and reads the comment it left.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from fakegithub import FakeGitHub, Identity
from fly_pg_external.comment_marker import GITHUB_COMMENT_LIMIT, parse_marker
from fly_pg_external.domain import PlanWarning
from fly_pg_external.event import RunContext
from fly_pg_external.github import ClientTuning
from fly_pg_external.log import to_workflow
from fly_pg_external.outcome import IpChange, MachineChange, Outcome, redacted
from fly_pg_external.publish import publish
from fly_pg_external.redact import Redactor
from fly_pg_external.report import SUMMARY_MAX_BYTES, comment_body

from action_run import run_inprocess

REPO = "acme/db"
PR = 7
HEAD_SHA = "1111111111111111111111111111111111111111"
MERGE_SHA = "2222222222222222222222222222222222222222"
TOKEN = "ghs_Fake0Token0For0Tests0Only0xyz"
PASSWORD = "s3cr3t p@ss/wörd+%"
FULL_URL = f"postgres://postgres:{quote(PASSWORD, safe='')}@my-pg.fly.dev:5432/postgres"
REDACTED_URL = "postgres://postgres:***@my-pg.fly.dev:5432/postgres?sslmode=require"
IMG = "flyio/postgres-flex:16.4"


# -- doubles and builders ---------------------------------------------------------------------


@dataclass
class RecordingGha:
    """The job summary `publish` writes, and the log lines it writes (through `log.to_workflow`),
    recorded."""

    summary_path: Path
    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str, title: str | None = None) -> None:
        self.warnings.append(message)

    def error(self, message: str, title: str | None = None) -> None:
        self.errors.append(message)

    def append_summary(self, markdown: str) -> None:
        with self.summary_path.open("a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")

    @property
    def summary(self) -> str:
        return self.summary_path.read_text(encoding="utf-8") if self.summary_path.exists() else ""


def outcome(app: str = "my-pg", status: str = "plan", **kw: Any) -> Outcome:
    done = status == "applied"
    result = "updated" if done else ("untouched" if status == "no-change" else "pending")
    services = status != "no-change"
    base = Outcome(
        app=app,
        mode="expose",
        status=status,  # type: ignore[arg-type]
        changed=done,
        ips=[
            IpChange(
                "v4",
                "keep" if status == "no-change" else "allocate",
                ("137.66.1.2",) if done else (),
                done,
            ),
        ],
        machines=[
            MachineChange("m-replica", "fra", "replica", "started", services, IMG, IMG, result),  # type: ignore[arg-type]
            MachineChange("m-primary", "fra", "primary", "started", services, IMG, IMG, result),  # type: ignore[arg-type]
        ],
        config_diff="" if status == "no-change" else "--- a\n+++ b\n+[[services]]\n",
        fly_toml_after="app = 'x'\n",
        redacted_url=REDACTED_URL,
    )
    return replace(base, **kw)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(login="github-actions[bot]", user_endpoint_forbidden=True, token=TOKEN) as f:
        f.add_pr(REPO, PR, head_sha=HEAD_SHA)
        yield f


@pytest.fixture
def gha(tmp_path: Path) -> RecordingGha:
    return RecordingGha(tmp_path / "summary.md")


def make_env(
    tmp_path: Path,
    fake: FakeGitHub,
    *,
    event: str = "pull_request",
    payload: dict[str, Any] | None = None,
    sha: str = "9" * 40,
    run_id: str = "100",
) -> dict[str, str]:
    if payload is None:
        payload = pr_payload()
    event_path = tmp_path / f"event-{event}-{run_id}.json"
    event_path.write_text(json.dumps(payload), encoding="utf-8")
    return {
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_SERVER_URL": fake.server_url,
        "GITHUB_RUN_ID": run_id,
        "GITHUB_SHA": sha,
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }


def pr_payload(number: int = PR, head_repo: str = REPO) -> dict[str, Any]:
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"sha": HEAD_SHA, "repo": {"full_name": head_repo}},
            "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
        },
    }


def run(
    o: Outcome,
    env: dict[str, str],
    gha: RecordingGha,
    *,
    pr_comment: bool = True,
    token: str = TOKEN,
    per_page: int = 100,
    tuning: ClientTuning | None = None,
) -> str:
    """`publish` as main calls it, with its log lines going to `gha`."""
    with to_workflow(gha):
        return publish(
            o,
            token=token,
            pr_comment=pr_comment,
            ctx=RunContext.from_env(env),
            summary=gha,
            tuning=tuning or ClientTuning.fast(per_page=per_page),
        )


def writes(fake: FakeGitHub) -> list[tuple[str, str]]:
    # A GraphQL query is a POST that changes nothing.
    return [
        (r.method, r.path)
        for r in fake.requests
        if r.method != "GET" and not r.path.endswith("/graphql")
    ]


def our_comments(fake: FakeGitHub, login: str = "github-actions[bot]") -> list[Any]:
    return [c for c in fake.comments(REPO, PR) if c.login == login]


# -- create, edit, leave alone ----------------------------------------------------------------


def test_first_run_creates_the_comment(fake: FakeGitHub, gha: RecordingGha, tmp_path: Path) -> None:
    url = run(outcome(), make_env(tmp_path, fake), gha)

    [comment] = fake.comments(REPO, PR)
    assert comment.login == "github-actions[bot]"
    assert url == f"{fake.server_url}/{REPO}/pull/{PR}#issuecomment-{comment.id}"
    marker = parse_marker(comment.body)
    assert marker is not None and marker.app == "my-pg"
    assert "Plan: open `my-pg` to external connections" in comment.body
    assert f"[workflow run]({fake.server_url}/{REPO}/actions/runs/100)" in comment.body
    # The footer names the PR head, not the merge commit GITHUB_SHA points to.
    assert "commit 1111111" in comment.body
    assert writes(fake) == [("POST", f"/repos/{REPO}/issues/{PR}/comments")]
    assert any("created on pull request #7" in m for m in gha.infos)
    assert gha.warnings == []


def test_rerun_with_a_new_result_edits_the_same_comment(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    first = run(outcome(status="plan"), make_env(tmp_path, fake, run_id="1"), gha)
    fake.clear_requests()
    second = run(outcome(status="applied"), make_env(tmp_path, fake, run_id="2"), gha)

    [comment] = fake.comments(REPO, PR)
    assert first == second
    assert "Applied: `my-pg` is open" in comment.body
    assert "/actions/runs/2)" in comment.body
    assert writes(fake) == [("PATCH", f"/repos/{REPO}/issues/comments/{comment.id}")]


def test_rerun_with_the_same_content_does_not_edit(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    first = run(outcome(), make_env(tmp_path, fake, run_id="1"), gha)
    before = fake.comments(REPO, PR)[0]
    fake.clear_requests()
    # Another run id changes the footer only, which the digest does not cover.
    second = run(outcome(), make_env(tmp_path, fake, run_id="2"), gha)

    assert second == first
    assert writes(fake) == []
    assert fake.comments(REPO, PR)[0] == before
    assert any("already up to date" in m for m in gha.infos)


def test_a_run_that_changed_nothing_leaves_the_last_report(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(status="applied"), make_env(tmp_path, fake, run_id="1"), gha)
    fake.clear_requests()
    url = run(outcome(status="no-change"), make_env(tmp_path, fake, run_id="2"), gha)

    [comment] = fake.comments(REPO, PR)
    assert url.endswith(f"#issuecomment-{comment.id}")
    assert "Applied:" in comment.body
    assert writes(fake) == []
    assert any("left as is" in m for m in gha.infos)


def test_no_change_without_a_comment_creates_one(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(status="no-change"), make_env(tmp_path, fake), gha)
    [comment] = fake.comments(REPO, PR)
    assert "No change: `my-pg` is already open" in comment.body


def test_two_apps_get_two_comments(fake: FakeGitHub, gha: RecordingGha, tmp_path: Path) -> None:
    env = make_env(tmp_path, fake)
    run(outcome(app="pg-eu"), env, gha)
    run(outcome(app="pg-us"), env, gha)
    run(outcome(app="pg-eu", status="applied"), env, gha)

    comments = fake.comments(REPO, PR)
    apps = [parse_marker(c.body).app for c in comments]  # type: ignore[union-attr]
    assert apps == ["pg-eu", "pg-us"]
    assert "Applied:" in comments[0].body
    assert "Plan:" in comments[1].body


def test_someone_elses_comment_with_our_marker_is_never_edited(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    quoted = comment_body(outcome(), commit=None, run_url=None)
    foreign = fake.add_comment(REPO, PR, quoted, login="mallory")

    run(outcome(status="applied"), make_env(tmp_path, fake), gha)

    assert fake.comment(foreign.id).body == quoted
    assert [c.login for c in fake.comments(REPO, PR)] == ["mallory", "github-actions[bot]"]
    assert all(r.path != f"/repos/{REPO}/issues/comments/{foreign.id}" for r in fake.requests)


def test_our_own_comment_quoting_the_marker_below_the_first_line_is_not_ours(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    quoting = "> earlier report:\n" + comment_body(outcome(), commit=None, run_url=None)
    other = fake.add_comment(REPO, PR, quoting, login="github-actions[bot]")
    run(outcome(), make_env(tmp_path, fake), gha)
    assert fake.comment(other.id).body == quoting
    assert len(fake.comments(REPO, PR)) == 2


def test_comment_on_a_later_page_is_found(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    for i in range(130):
        fake.add_comment(REPO, PR, f"review comment {i}", login="reviewer")
    ours = fake.add_comment(
        REPO, PR, comment_body(outcome(), commit=None, run_url=None), login="github-actions[bot]"
    )
    fake.clear_requests()

    url = run(outcome(status="applied"), make_env(tmp_path, fake), gha)

    assert url.endswith(f"#issuecomment-{ours.id}")
    assert "Applied:" in fake.comment(ours.id).body
    pages = [
        r.query.get("page", "1") for r in fake.requests if r.path.endswith(f"/issues/{PR}/comments")
    ]
    assert pages == ["1", "2"]
    assert writes(fake) == [("PATCH", f"/repos/{REPO}/issues/comments/{ours.id}")]


def test_small_pages_are_all_read(fake: FakeGitHub, gha: RecordingGha, tmp_path: Path) -> None:
    for i in range(7):
        fake.add_comment(REPO, PR, f"note {i}", login="reviewer")
    ours = fake.add_comment(
        REPO, PR, comment_body(outcome(), commit=None, run_url=None), login="github-actions[bot]"
    )
    run(outcome(status="applied"), make_env(tmp_path, fake), gha, per_page=3)
    assert "Applied:" in fake.comment(ours.id).body
    assert len(fake.comments(REPO, PR)) == 8


def test_a_persons_token_edits_only_its_own_comment(tmp_path: Path, gha: RecordingGha) -> None:
    with FakeGitHub(login="deploy-bot", token=TOKEN) as fake:
        fake.add_pr(REPO, PR, head_sha=HEAD_SHA)
        # Written by the Actions bot in another workflow: not this token's comment.
        actions = fake.add_comment(
            REPO,
            PR,
            comment_body(outcome(), commit=None, run_url=None),
            login="github-actions[bot]",
        )
        run(outcome(status="applied"), make_env(tmp_path, fake), gha)

        assert fake.comment(actions.id).body.count("Plan:") == 1
        [mine] = our_comments(fake, login="deploy-bot")
        assert "Applied:" in mine.body
        # GraphQL told which comment is the token's; no login was needed.
        assert ("POST", "/graphql") in [(r.method, r.path) for r in fake.requests]


# -- integration tokens: the Actions bot and GitHub App bots ---------------------------------
#
# An installation token (the Actions GITHUB_TOKEN, or one from a GitHub App) gets 403 from
# GET /user, and nothing in the REST API gives it its bot login; a GitHub App's comments are by
# `<slug>[bot]`, not github-actions[bot]. GitHub lets any account with write access edit anyone's
# comment, so only the client can keep off comments that are not its own: it asks GraphQL
# (`viewerDidAuthor`) which ones are.

APP_TOKEN = "ghs_Fake0App0Installation0Token0abc"
PAT = "github_pat_Fake0Personal0Token0For0Tests"
APP_BOT = "my-deployer[bot]"


@pytest.fixture
def multi() -> Iterator[FakeGitHub]:
    """One PR, three tokens: the Actions token, a GitHub App's token and a person's PAT."""
    tokens = {
        TOKEN: Identity.actions_bot(),
        APP_TOKEN: Identity.app_bot("my-deployer"),
        PAT: Identity.user("octo-dev"),
    }
    with FakeGitHub(tokens=tokens) as f:
        f.add_pr(REPO, PR, head_sha=HEAD_SHA)
        yield f


def report(status: str = "plan") -> str:
    return comment_body(outcome(status=status), commit=None, run_url=None)


def graphql_queries(fake: FakeGitHub) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith("/graphql"))


def test_app_token_updates_its_own_comment_on_the_second_run(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    first = run(outcome(status="plan"), make_env(tmp_path, multi, run_id="1"), gha, token=APP_TOKEN)
    [mine] = multi.comments(REPO, PR)
    assert mine.login == APP_BOT
    multi.clear_requests()

    second = run(
        outcome(status="applied"), make_env(tmp_path, multi, run_id="2"), gha, token=APP_TOKEN
    )

    assert second == first
    [comment] = multi.comments(REPO, PR)
    assert comment.id == mine.id
    assert "Applied: `my-pg` is open" in comment.body
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{mine.id}")]
    assert graphql_queries(multi) == 1
    assert ("GET", "/user") not in [(r.method, r.path) for r in multi.requests]
    assert gha.warnings == []


def test_app_token_shortcuts_leave_its_comment_alone(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(status="applied"), make_env(tmp_path, multi, run_id="1"), gha, token=APP_TOKEN)
    before = multi.comments(REPO, PR)
    multi.clear_requests()

    same = run(
        outcome(status="applied"), make_env(tmp_path, multi, run_id="2"), gha, token=APP_TOKEN
    )
    quiet = run(
        outcome(status="no-change"), make_env(tmp_path, multi, run_id="3"), gha, token=APP_TOKEN
    )

    assert same == quiet == f"{multi.server_url}/{REPO}/pull/{PR}#issuecomment-{before[0].id}"
    assert multi.comments(REPO, PR) == before
    assert writes(multi) == []
    assert any("already up to date" in m for m in gha.infos)
    assert any("left as is" in m for m in gha.infos)


def test_app_token_leaves_the_actions_bots_and_a_persons_comment_alone(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    human = multi.add_comment(REPO, PR, report(), login="alice")
    # An earlier workflow, before the switch to the App's token, commented as the Actions bot.
    run(outcome(status="plan"), make_env(tmp_path, multi, run_id="1"), gha, token=TOKEN)
    [_, actions] = multi.comments(REPO, PR)
    assert actions.login == "github-actions[bot]"
    multi.clear_requests()

    url = run(
        outcome(status="applied"), make_env(tmp_path, multi, run_id="2"), gha, token=APP_TOKEN
    )

    [h, a, mine] = multi.comments(REPO, PR)
    assert (h, a) == (human, actions)  # untouched, although the fake would allow the edit
    assert mine.login == APP_BOT
    assert "Applied:" in mine.body
    assert url.endswith(f"#issuecomment-{mine.id}")
    assert writes(multi) == [("POST", f"/repos/{REPO}/issues/{PR}/comments")]

    # The next run edits its own comment, and only that one.
    multi.clear_requests()
    run(outcome(status="failed"), make_env(tmp_path, multi, run_id="3"), gha, token=APP_TOKEN)
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{mine.id}")]
    assert "Failed" in multi.comment(mine.id).body
    assert multi.comments(REPO, PR)[:2] == [human, actions]
    assert gha.warnings == []


def test_a_persons_copy_of_the_report_never_counts(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    # A person's comment is not this token's, so neither shortcut may stop at it: not "already
    # up to date" (PR 7: word for word what the run would post) and not "left as is" on a run
    # that changed nothing (PR 8).
    multi.add_pr(REPO, 8, head_sha=HEAD_SHA)
    same = multi.add_comment(
        REPO, PR, comment_body(outcome(), commit=HEAD_SHA, run_url=None), login="alice"
    )
    last = multi.add_comment(REPO, 8, report(status="applied"), login="alice")

    run(outcome(), make_env(tmp_path, multi), gha, token=APP_TOKEN)
    pr8 = make_env(tmp_path, multi, payload=pr_payload(number=8), run_id="8")
    run(outcome(status="no-change"), pr8, gha, token=TOKEN)

    assert [c.login for c in multi.comments(REPO, PR)] == ["alice", APP_BOT]
    assert [c.login for c in multi.comments(REPO, 8)] == ["alice", "github-actions[bot]"]
    assert (multi.comment(same.id), multi.comment(last.id)) == (same, last)
    assert [m for m, _ in writes(multi)] == ["POST", "POST"]
    assert not any("already up to date" in m or "left as is" in m for m in gha.infos)


def test_actions_token_finds_its_own_comment_after_an_app_bots(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    app_comment = multi.add_comment(REPO, PR, report(), login=APP_BOT)  # older
    ours = multi.add_comment(REPO, PR, report(), login="github-actions[bot]")
    multi.clear_requests()

    url = run(outcome(status="applied"), make_env(tmp_path, multi), gha, token=TOKEN)

    assert url.endswith(f"#issuecomment-{ours.id}")
    assert "Applied:" in multi.comment(ours.id).body
    assert multi.comment(app_comment.id) == app_comment
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{ours.id}")]


def test_a_pat_edits_only_its_own_comment(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    others = [
        multi.add_comment(REPO, PR, report(), login=login)
        for login in ("github-actions[bot]", APP_BOT, "alice")
    ]
    run(outcome(status="applied"), make_env(tmp_path, multi, run_id="1"), gha, token=PAT)
    [mine] = [c for c in multi.comments(REPO, PR) if c.login == "octo-dev"]
    multi.clear_requests()

    run(outcome(status="failed"), make_env(tmp_path, multi, run_id="2"), gha, token=PAT)

    assert [multi.comment(c.id) for c in others] == others
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{mine.id}")]
    assert "Failed" in multi.comment(mine.id).body
    assert gha.warnings == []


def test_app_token_push_updates_its_own_comment(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(status="plan"), make_env(tmp_path, multi, run_id="1"), gha, token=APP_TOKEN)
    [mine] = multi.comments(REPO, PR)
    multi.add_pr(REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True)
    multi.clear_requests()

    push = make_env(tmp_path, multi, event="push", payload={}, sha=MERGE_SHA, run_id="2")
    url = run(outcome(status="applied"), push, gha, token=APP_TOKEN)

    assert url.endswith(f"#issuecomment-{mine.id}")
    assert "Applied:" in multi.comment(mine.id).body
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{mine.id}")]


def test_push_with_only_another_bots_comment_posts_nothing(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    multi.add_pr(REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True)
    actions = multi.add_comment(REPO, PR, report(), login="github-actions[bot]")
    push = make_env(tmp_path, multi, event="push", payload={}, sha=MERGE_SHA)

    assert run(outcome(status="applied"), push, gha, token=APP_TOKEN) == ""

    assert multi.comments(REPO, PR) == [actions]
    assert writes(multi) == []
    assert gha.warnings == []
    assert any("has no comment for app my-pg to update" in m for m in gha.infos)


def test_app_token_without_write_permission_gets_the_edit_warning(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(), make_env(tmp_path, multi), gha, token=APP_TOKEN)
    multi.forbid_writes()
    assert run(outcome(status="applied"), make_env(tmp_path, multi), gha, token=APP_TOKEN) == ""
    assert [m for m, _ in writes(multi)] == ["POST", "PATCH"]
    [warning] = gha.warnings
    assert "could not edit the comment of app my-pg on pull request #7" in warning
    assert "403" in warning
    assert "pull-requests: write" in warning
    assert len(multi.comments(REPO, PR)) == 1


@pytest.mark.parametrize("status", [404, 403])
def test_without_graphql_the_token_login_decides(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path, status: int
) -> None:
    # GraphQL not there (an old GHES, a REST-only proxy): the Actions token still finds its own
    # comment as github-actions[bot], and a PAT by its login from GET /user.
    multi.fail_next("POST", "/graphql", status=status, times=None)
    actions = multi.add_comment(REPO, PR, report(), login="github-actions[bot]")
    alice = multi.add_comment(REPO, PR, report(), login="alice")

    run(outcome(status="applied"), make_env(tmp_path, multi, run_id="1"), gha, token=TOKEN)
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{actions.id}")]
    assert "Applied:" in multi.comment(actions.id).body

    before = multi.comment(actions.id)
    multi.clear_requests()
    run(outcome(status="plan"), make_env(tmp_path, multi, run_id="2"), gha, token=PAT)
    assert (multi.comment(actions.id), multi.comment(alice.id)) == (before, alice)
    assert writes(multi) == [("POST", f"/repos/{REPO}/issues/{PR}/comments")]
    assert ("GET", "/user") in [(r.method, r.path) for r in multi.requests]
    assert gha.warnings == []


def test_graphql_server_error_is_a_warning_and_touches_nothing(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    actions = multi.add_comment(REPO, PR, report(), login="github-actions[bot]")
    multi.fail_next("POST", "/graphql", status=502, times=None)
    assert run(outcome(status="applied"), make_env(tmp_path, multi), gha, token=APP_TOKEN) == ""
    assert writes(multi) == []
    assert multi.comments(REPO, PR) == [actions]
    [warning] = gha.warnings
    assert "502" in warning


def test_more_than_a_hundred_reports_are_asked_about_in_pages(
    multi: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    for _ in range(120):
        multi.add_comment(REPO, PR, report(), login="github-actions[bot]")
    mine = multi.add_comment(REPO, PR, report(), login=APP_BOT)
    multi.clear_requests()
    run(outcome(status="applied"), make_env(tmp_path, multi), gha, token=APP_TOKEN)
    assert graphql_queries(multi) == 2
    assert writes(multi) == [("PATCH", f"/repos/{REPO}/issues/comments/{mine.id}")]


def test_fake_github_identities_and_graphql(multi: FakeGitHub) -> None:
    from github import Auth, Github, GithubException

    def client(token: str) -> Github:
        return Github(auth=Auth.Token(token), base_url=multi.base_url, lazy=True, retry=None)

    actions_c = multi.add_comment(REPO, PR, "by the Actions bot", "github-actions[bot]")
    app_c = multi.add_comment(REPO, PR, "by the App", APP_BOT)
    query = (
        "query($ids: [ID!]!) { nodes(ids: $ids) { ... on IssueComment { id viewerDidAuthor } } }"
    )
    ids = [f"IC_{actions_c.id}", f"IC_{app_c.id}", "IC_0"]
    for token, login in ((TOKEN, "github-actions[bot]"), (APP_TOKEN, APP_BOT)):
        gh = client(token)
        with pytest.raises(GithubException) as err:
            _ = gh.get_user().login
        assert err.value.status == 403
        _, data = gh.requester.graphql_query(query, {"ids": ids})
        nodes = data["data"]["nodes"]
        assert nodes[2] is None
        assert [n["viewerDidAuthor"] for n in nodes[:2]] == [
            login == "github-actions[bot]",
            login == APP_BOT,
        ]
    # Like GitHub, an account with write access may edit anyone's comment.
    client(APP_TOKEN).get_repo(REPO).get_issue(PR).get_comments()[0].edit("a maintainer's edit")
    assert multi.comment(actions_c.id).body == "a maintainer's edit"
    me = client(PAT).get_user()
    assert (me.login, me.type) == ("octo-dev", "User")
    with pytest.raises(GithubException) as err:
        _ = client("ghs_unknown").get_user().login
    assert err.value.status == 401


# -- push after merge ------------------------------------------------------------------------


def test_push_after_merge_updates_the_pr_comment_to_applied(
    tmp_path: Path, gha: RecordingGha
) -> None:
    with FakeGitHub(user_endpoint_forbidden=True, token=TOKEN) as fake:
        fake.add_pr(REPO, 5, merge_commit_sha="3" * 40, merged=True)  # an older PR, not this one
        fake.add_pr(REPO, PR, head_sha=HEAD_SHA)
        run(outcome(status="plan"), make_env(tmp_path, fake, run_id="1"), gha)
        fake.add_pr(REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True)
        fake.clear_requests()

        url = run(
            outcome(status="applied"),
            make_env(
                tmp_path,
                fake,
                event="push",
                payload={"after": MERGE_SHA},
                sha=MERGE_SHA,
                run_id="2",
            ),
            gha,
        )

        [comment] = fake.comments(REPO, PR)
        assert url.endswith(f"#issuecomment-{comment.id}")
        assert "Applied: `my-pg` is open" in comment.body
        assert "commit 2222222" in comment.body
        assert (
            "GET",
            f"/repos/{REPO}/commits/{MERGE_SHA}/pulls",
        ) in [(r.method, r.path) for r in fake.requests]
        assert writes(fake) == [("PATCH", f"/repos/{REPO}/issues/comments/{comment.id}")]


def test_push_never_creates_a_comment(fake: FakeGitHub, gha: RecordingGha, tmp_path: Path) -> None:
    fake.add_pr(REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True)
    url = run(
        outcome(status="applied"),
        make_env(tmp_path, fake, event="push", payload={}, sha=MERGE_SHA),
        gha,
    )
    assert url == ""
    assert fake.comments(REPO, PR) == []
    assert writes(fake) == []
    assert any("does not start one" in m for m in gha.infos)


def test_push_of_a_commit_without_a_merged_pr(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    url = run(
        outcome(status="applied"),
        make_env(tmp_path, fake, event="push", payload={}, sha="4" * 40),
        gha,
    )
    assert url == ""
    assert writes(fake) == []
    assert any("no merged pull request" in m for m in gha.infos)
    assert gha.warnings == []


def test_push_prefers_the_pr_whose_merge_commit_is_the_sha(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    # PR 6 is still open and contains the commit as its head; PR 8 merged it.
    fake.add_pr(REPO, 6, head_sha=MERGE_SHA)
    fake.add_pr(REPO, 8, merge_commit_sha=MERGE_SHA, merged=True)
    ours = fake.add_comment(
        REPO, 8, comment_body(outcome(), commit=None, run_url=None), "github-actions[bot]"
    )
    run(
        outcome(status="applied"),
        make_env(tmp_path, fake, event="push", payload={}, sha=MERGE_SHA),
        gha,
    )
    assert "Applied:" in fake.comment(ours.id).body


# -- permissions and errors ------------------------------------------------------------------


def test_forbidden_write_is_a_warning_with_the_fix(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.forbid_writes()
    url = run(outcome(), make_env(tmp_path, fake), gha)

    assert url == ""
    [warning] = gha.warnings
    assert "403" in warning
    assert "Resource not accessible by integration" in warning
    assert "permissions: pull-requests: write" in warning
    assert "step's result is unchanged" in warning
    assert "fork" not in warning
    assert "Plan:" in gha.summary  # the report still reached the job summary


def test_fork_pr_warning_points_to_the_workflow_run_pattern(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.forbid_writes()
    env = make_env(tmp_path, fake, payload=pr_payload(head_repo="someone/db"))
    assert run(outcome(), env, gha) == ""
    [warning] = gha.warnings
    assert "fork someone/db" in warning
    assert "workflow_run" in warning
    assert "https://" in warning


def test_forbidden_edit_is_a_warning_too(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    run(outcome(), make_env(tmp_path, fake), gha)
    fake.forbid_writes()
    assert run(outcome(status="applied"), make_env(tmp_path, fake), gha) == ""
    [warning] = gha.warnings
    assert "could not edit the comment of app my-pg on pull request #7" in warning
    assert "pull-requests: write" in warning


def test_pr_that_cannot_be_read_is_a_warning(gha: RecordingGha, tmp_path: Path) -> None:
    with FakeGitHub(user_endpoint_forbidden=True) as fake:
        fake.add_repo(REPO)  # no PR 7
        assert run(outcome(), make_env(tmp_path, fake), gha) == ""
        [warning] = gha.warnings
        assert "could not read the comments of pull request #7" in warning
        assert "404" in warning


def test_server_error_is_a_warning_not_a_crash(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.fail_next("GET", rf"/repos/{REPO}/issues/{PR}/comments", status=502, message="Bad Gateway")
    assert run(outcome(), make_env(tmp_path, fake), gha) == ""
    [warning] = gha.warnings
    assert "502" in warning
    assert "step's result is unchanged" in warning
    assert fake.comments(REPO, PR) == []


def test_bad_token_is_a_warning(fake: FakeGitHub, gha: RecordingGha, tmp_path: Path) -> None:
    assert run(outcome(), make_env(tmp_path, fake), gha, token="ghs_wrong_token_value") == ""
    [warning] = gha.warnings
    assert "401" in warning
    assert "github-token" in warning
    assert "ghs_wrong_token_value" not in warning


def test_unreachable_api_is_a_warning(gha: RecordingGha, tmp_path: Path) -> None:
    fake = FakeGitHub().start()
    env = make_env(tmp_path, fake)
    fake.stop()  # nothing listens on that port any more
    assert run(outcome(), env, gha) == ""
    [warning] = gha.warnings
    assert "could not" in warning
    assert "job summary" in warning


# -- size limit ------------------------------------------------------------------------------


def test_oversized_report_is_cut_for_the_comment_and_kept_whole_in_the_summary(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    diff = "--- a\n+++ b\n" + "".join(f"+line_{i:06d} = {'x' * 40}\n" for i in range(5000))
    assert len(diff) > GITHUB_COMMENT_LIMIT * 3

    url = run(outcome(config_diff=diff), make_env(tmp_path, fake), gha)

    assert url
    [comment] = fake.comments(REPO, PR)
    assert len(comment.body) <= GITHUB_COMMENT_LIMIT
    assert "✂️ The diff is cut after line" in comment.body
    assert "job summary" in comment.body
    assert "+line_004999" not in comment.body
    assert "+line_004999" in gha.summary
    assert "✂️" not in gha.summary


def test_fake_rejects_a_body_over_the_limit_like_github(fake: FakeGitHub) -> None:
    from github import Auth, Github, GithubException

    gh = Github(auth=Auth.Token(TOKEN), base_url=fake.base_url, lazy=True, retry=None)
    with pytest.raises(GithubException) as err:
        gh.get_repo(REPO).get_issue(PR).create_comment("x" * (GITHUB_COMMENT_LIMIT + 1))
    assert err.value.status == 422
    assert "Body is too long (maximum is 65536 characters)" in json.dumps(err.value.data)


# -- when there is no comment ----------------------------------------------------------------


def test_no_pr_number_means_no_comment_and_one_info_line(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    env = make_env(tmp_path, fake, payload={"action": "opened"})
    assert run(outcome(), env, gha) == ""
    assert fake.requests == []
    assert len(gha.infos) == 1
    assert "no pull request number" in gha.infos[0]
    assert "Plan:" in gha.summary


@pytest.mark.parametrize("event", ["workflow_dispatch", "schedule"])
def test_other_events_write_the_summary_only(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path, event: str
) -> None:
    assert run(outcome(), make_env(tmp_path, fake, event=event, payload={}), gha) == ""
    assert fake.requests == []
    assert "Plan: open `my-pg`" in gha.summary
    assert len(gha.infos) == 1
    assert event in gha.infos[0]


def test_pr_comment_false_writes_the_summary_only(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    assert run(outcome(), make_env(tmp_path, fake), gha, pr_comment=False) == ""
    assert fake.requests == []
    assert fake.comments(REPO, PR) == []
    assert "Plan: open `my-pg`" in gha.summary


def test_summary_is_written_on_every_path(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.forbid_writes()
    run(outcome(app="a1"), make_env(tmp_path, fake), gha)  # 403
    run(outcome(app="a2"), make_env(tmp_path, fake, event="push", payload={}), gha)  # no PR
    run(outcome(app="a3"), make_env(tmp_path, fake), gha, pr_comment=False)
    assert all(f"`{app}`" in gha.summary for app in ("a1", "a2", "a3"))


def test_pull_request_target_comments_too(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    assert run(outcome(), make_env(tmp_path, fake, event="pull_request_target"), gha)
    assert len(fake.comments(REPO, PR)) == 1


# -- redaction -------------------------------------------------------------------------------


def secret_spellings(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return forms


def test_token_password_and_url_never_reach_the_comment_or_summary(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    secrets = [TOKEN, PASSWORD, FULL_URL]
    leaks = [f"{form}" for s in secrets for form in sorted(secret_spellings(s))]
    noisy = outcome(
        status="failed",
        warnings=[PlanWarning("unreachable-host", f"flyctl printed: {leak}") for leak in leaks],
        error="connect failed: " + " | ".join(leaks),
        config_diff="--- a\n+++ b\n" + "".join(f"+# {leak}\n" for leak in leaks),
        redacted_url=FULL_URL,  # even a wrongly unredacted URL must not get through
    )
    # Redacted once, where main builds the Outcome; nothing after that redacts again.
    run(redacted(noisy, Redactor(secrets)), make_env(tmp_path, fake), gha)

    [comment] = fake.comments(REPO, PR)
    for text in (comment.body, gha.summary):
        for s in secrets:
            for form in secret_spellings(s):
                assert form not in text, f"{form!r} leaked"
        assert "***" in text
    # The requests themselves carried the token only in the Authorization header.
    for r in fake.requests:
        assert TOKEN not in json.dumps(r.body)


def test_warnings_are_redacted(tmp_path: Path) -> None:
    # Text from GitHub (an error's message) enters through the log, whose writer redacts it.
    from fly_pg_external.gha import Actions

    out = io.StringIO()
    with FakeGitHub(user_endpoint_forbidden=True) as fake:
        fake.add_pr(REPO, PR)
        fake.fail_next(
            "POST", rf"/repos/{REPO}/issues/{PR}/comments", status=403, message=f"nope {PASSWORD}"
        )
        env = make_env(tmp_path, fake)
        actions = Actions(env=env, out=out, redactor=Redactor([TOKEN, PASSWORD]))
        with to_workflow(actions):
            publish(
                outcome(),
                token=TOKEN,
                pr_comment=True,
                ctx=RunContext.from_env(env),
                summary=actions,
                tuning=ClientTuning.fast(),
            )
    [warning] = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert warning.startswith("::warning title=PR comment not written::")
    for form in secret_spellings(PASSWORD):
        assert form not in out.getvalue()
    assert "nope ***" in warning


# -- GitHub Enterprise Server ----------------------------------------------------------------


def test_ghes_api_prefix(gha: RecordingGha, tmp_path: Path) -> None:
    with FakeGitHub(user_endpoint_forbidden=True, api_prefix="/api/v3", token=TOKEN) as fake:
        fake.add_pr(REPO, PR, head_sha=HEAD_SHA)
        env = make_env(tmp_path, fake)
        assert env["GITHUB_API_URL"].endswith("/api/v3")
        url = run(outcome(), env, gha)
        run(outcome(status="applied"), env, gha)

        [comment] = fake.comments(REPO, PR)
        assert url.endswith(f"#issuecomment-{comment.id}")
        assert "Applied:" in comment.body
        assert fake.requests
        # REST under /api/v3, GraphQL at /api/graphql, as on GitHub Enterprise Server.
        assert all(r.path.startswith("/api/v3/") or r.path == "/api/graphql" for r in fake.requests)
        assert any(r.path == "/api/graphql" for r in fake.requests)


# -- the real workflow-command implementation fits -------------------------------------------


def test_publish_works_with_the_real_actions_writer(fake: FakeGitHub, tmp_path: Path) -> None:
    from fly_pg_external.gha import Actions

    env = make_env(tmp_path, fake)
    out = io.StringIO()
    actions = Actions(env=env, out=out, redactor=Redactor([TOKEN]))
    fake.forbid_writes()

    with to_workflow(actions):
        url = publish(
            outcome(),
            token=TOKEN,
            pr_comment=True,
            ctx=RunContext.from_env(env),
            summary=actions,
            tuning=ClientTuning.fast(),
        )

    assert url == ""
    assert (
        "::warning title=PR comment not written::PR comment: could not comment on pull request #7"
        in out.getvalue()
    )
    assert "Plan: open `my-pg`" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_summary_over_the_runner_limit_is_cut_with_a_notice(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    # Multi-byte characters: the runner's limit is in bytes, not characters.
    diff = "--- a\n+++ b\n" + "".join(f"+é_{i:07d} = {'ü' * 60}\n" for i in range(12_000))
    assert len(diff.encode()) > 1024 * 1024

    run(outcome(config_diff=diff), make_env(tmp_path, fake), gha, pr_comment=False)

    assert len(gha.summary.encode()) <= SUMMARY_MAX_BYTES + 1
    assert "✂️ The diff is cut after line" in gha.summary
    assert "holds at most 1 MiB" in gha.summary
    assert gha.summary.rstrip().endswith("</sub>")


# -- a create whose answer is lost -----------------------------------------------------------

RETRYING = ClientTuning(
    retry_total=1, backoff_factor=0, seconds_between_requests=None, seconds_between_writes=None
)


def test_failed_create_is_retried_as_a_whole_upsert(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.fail_next("POST", rf"/repos/{REPO}/issues/{PR}/comments", status=502)
    url = run(outcome(), make_env(tmp_path, fake), gha, tuning=RETRYING)
    [comment] = fake.comments(REPO, PR)
    assert url.endswith(f"#issuecomment-{comment.id}")
    assert gha.warnings == []


def test_create_that_worked_but_lost_its_answer_is_not_posted_twice(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.fail_next("POST", rf"/repos/{REPO}/issues/{PR}/comments", status=504, after_effect=True)
    url = run(outcome(), make_env(tmp_path, fake), gha, tuning=RETRYING)
    [comment] = fake.comments(REPO, PR)
    assert url.endswith(f"#issuecomment-{comment.id}")
    assert [m for m, _ in writes(fake)] == ["POST"]
    assert gha.warnings == []


def test_create_failing_twice_is_one_warning(
    fake: FakeGitHub, gha: RecordingGha, tmp_path: Path
) -> None:
    fake.fail_next("POST", rf"/repos/{REPO}/issues/{PR}/comments", status=500, times=None)
    url = run(outcome(), make_env(tmp_path, fake), gha, tuning=RETRYING)
    assert url == ""
    [warning] = gha.warnings
    assert "could not comment on pull request #7" in warning
    assert "500" in warning
    assert [m for m, _ in writes(fake)] == ["POST", "POST"]


# -- the whole action, on a legacy cluster ---------------------------------------------------


def action_env(
    fake: FakeGitHub, where: Path, event: str, payload: dict[str, Any]
) -> dict[str, str]:
    """The runner's variables for publishing (the rest comes from `action_run`)."""
    where.mkdir(parents=True, exist_ok=True)
    event_path = where / "event.json"
    event_path.write_text(json.dumps(payload), encoding="utf-8")
    return {
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_SERVER_URL": fake.server_url,
        "GITHUB_RUN_ID": "300",
        "GITHUB_SHA": payload.get("after", HEAD_SHA),
    }


def test_a_legacy_cluster_gets_a_plan_comment_then_its_result(
    flysim: Any, fake: FakeGitHub, tmp_path: Path
) -> None:
    """The comment a reviewer reads, from a real run: where to connect first, each fact once, the
    restarts in the tense of the run, nothing that only exists on the runner."""
    sim = flysim({"my-db": {"machines": 3, "legacy": True}}, postgres=False)
    inputs = {
        "app": "my-db",
        "database-url": "postgres://app:pw@my-db.flycast:5432/app",
        "pr-comment": "true",
        "github-token": TOKEN,
    }
    plan_dir = tmp_path / "plan"
    env = action_env(fake, plan_dir, "pull_request", pr_payload())
    planned = run_inprocess(sim, plan_dir, {**inputs, "dry-run": "true"}, env)
    assert planned.code == 0, planned.log
    [comment] = fake.comments(REPO, PR)
    plan = comment.body

    fake.add_pr(REPO, PR, head_sha=HEAD_SHA, merge_commit_sha=MERGE_SHA, merged=True)
    apply_dir = tmp_path / "apply"
    env = action_env(fake, apply_dir, "push", {"after": MERGE_SHA})
    applied = run_inprocess(sim, apply_dir, inputs, env)
    assert applied.code == 0, applied.log
    assert [c.id for c in fake.comments(REPO, PR)] == [comment.id]  # edited, not a second one
    result = fake.comment(comment.id).body

    assert "### 📋 Plan: open `my-db` to external connections" in plan
    assert "re-run without `dry-run: true`" in plan
    assert "⚠️ **Applying will restart 3 of 3 machines**" in plan
    assert "### ✅ Applied: `my-db` is open to external connections" in result
    assert "**Restarted 3 of 3 machines**" in result
    assert "will restart" not in result
    for body in (plan, result):
        # The plan's own log warnings are said once, in the report's words.
        assert "machine(s)" not in body
        assert body.count("one at a time") == 1
        assert body.count("\\$2/month") == 1
        assert "**Connect" in body.split("| Before |")[0]  # where to connect, before the table
        assert str(tmp_path) not in body  # RUNNER_TEMP, where fly.toml was written
        assert "fly.toml" in body.split("<details>")[1]  # the diff, folded
        image = re.search(r"flyio/postgres-flex:[0-9.]+@sha256:[0-9a-f]{64}", body)
        assert image is not None
        assert body.count(image[0]) == 1
        assert body.index(image[0]) > body.index("<details>")
