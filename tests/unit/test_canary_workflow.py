"""The live Fly canary (.github/workflows/live-fly.yml) cannot run here: no Fly account, no
network. These tests hold the invariants that keep it safe and meaningful the day it runs: it
cleans up whatever happens, the Fly token reaches only the steps that need it, it tests this
checkout with `lifetime: job` and then a legacy cluster, its tools are pinned, and actionlint and
zizmor find nothing (docs/canary.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from linters import run_tool, tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "live-fly.yml"
GATE = "gate"
SECRET = "secrets.FLY_CANARY_TOKEN"
SECRET_EXPR = "${{ secrets.FLY_CANARY_TOKEN }}"
HAS_TOKEN = "needs.gate.outputs.has-token == 'true'"
SHA_PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[^@\s]+)?@[0-9a-f]{40}$")
# A flyctl command (`fly pg create`, `$(fly machine list …)`), not `./flyctl version`.
FLY_COMMAND = re.compile(r"(?<![\w./-])fly[ \t]+[a-z]")
# A shell expansion of the token's variable: $FLY_API_TOKEN or ${FLY_API_TOKEN…}.
TOKEN_EXPANSION = re.compile(r"\$\{?(?:FLY_API_TOKEN|FLY_CANARY_TOKEN)\b")

Job = dict[str, Any]
Step = dict[str, Any]


@pytest.fixture(scope="module")
def wf() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict), f"{WORKFLOW.name} is not a YAML mapping"
    return data


def jobs(wf: dict[Any, Any]) -> dict[str, Job]:
    found = wf["jobs"]
    assert isinstance(found, dict)
    return found


def steps(job: Job) -> list[Step]:
    found = job.get("steps", [])
    assert isinstance(found, list)
    return found


def needs(job: Job) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def script(step: Step) -> str:
    """The step's shell script without its comment lines (the commands it runs)."""
    lines = str(step.get("run", "")).splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def runs_fly(step: Step) -> bool:
    return bool(FLY_COMMAND.search(script(step)))


def is_self(step: Step) -> bool:
    return step.get("uses") == "./"


def truthy(value: Any) -> bool:
    return str(value).lower() == "true"


def where(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string in the workflow that names the token secret, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from where(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from where(value, (*path, str(index)))
    elif isinstance(node, str) and SECRET in node:
        yield path, node


def test_runs_only_on_schedule_and_on_demand(wf: dict[Any, Any]) -> None:
    """The org token creates and destroys apps: no pull request (a fork's code), push or
    workflow_run event may start the canary, only the weekly schedule and a manual dispatch."""
    triggers = wf.get("on", wf.get(True))  # PyYAML reads the key `on` as the boolean true
    assert isinstance(triggers, dict)
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert triggers["schedule"] and all("cron" in entry for entry in triggers["schedule"])


def test_gate_job_exposes_has_token_and_uses_the_secret_only_to_test_it(
    wf: dict[Any, Any],
) -> None:
    """Secrets cannot appear in `if:`. The gate maps the secret into one step's env, tests that
    it is not empty and publishes `has-token`; it must do nothing else with it (no printing, no
    flyctl), and say in a notice and the job summary why the canary was skipped."""
    gate = jobs(wf)[GATE]
    assert "needs" not in gate and "if" not in gate, "the gate runs first, always"
    assert gate.get("permissions") == {}, "the gate needs no GitHub permission"
    (check,) = [s for s in steps(gate) if SECRET in str(s)]
    assert check["env"] == {"FLY_CANARY_TOKEN": SECRET_EXPR}
    assert set(check) <= {"name", "id", "env", "run"}, "a plain shell step, no action"
    run = script(check)
    expansions = TOKEN_EXPANSION.findall(run)
    tests = re.findall(r'\[ -n "\$FLY_CANARY_TOKEN" \]', run)
    assert expansions and len(expansions) == len(tests), "the token is only tested for emptiness"
    assert not runs_fly(check)
    assert "has-token=true" in run and "has-token=false" in run and "$GITHUB_OUTPUT" in run
    assert "::notice" in run and "$GITHUB_STEP_SUMMARY" in run
    assert gate["outputs"]["has-token"] == f"${{{{ steps.{check['id']}.outputs.has-token }}}}"


def test_every_live_job_is_gated_on_has_token(wf: dict[Any, Any]) -> None:
    """Without the secret nothing may touch Fly: every job but the gate needs it and runs only
    when its has-token output is 'true' (a skipped canary is then green, with a notice)."""
    for name, job in jobs(wf).items():
        if name == GATE:
            continue
        assert GATE in needs(job), f"{name} does not need the gate"
        assert HAS_TOKEN in str(job.get("if", "")), f"{name} is not gated on has-token"


def test_cleanup_runs_always_and_needs_every_job_that_creates_something(
    wf: dict[Any, Any],
) -> None:
    """A failed, cancelled or skipped job must still have its cluster destroyed: the job that
    runs `fly apps destroy` runs `if: always()` (and only with a token), after every job that
    creates an app, allocates an address (the action) or changes machines."""
    all_jobs = jobs(wf)
    destroyers = [
        name
        for name, job in all_jobs.items()
        if any("fly apps destroy" in script(s) for s in steps(job))
    ]
    assert len(destroyers) == 1, destroyers
    (cleanup_name,) = destroyers
    cleanup = all_jobs[cleanup_name]
    condition = str(cleanup.get("if", ""))
    assert "always()" in condition and HAS_TOKEN in condition
    creates = re.compile(
        r"fly\s+(?:pg|postgres)\s+create|fly\s+apps\s+create|fly\s+machine\s+update"
    )
    creators = {
        name
        for name, job in all_jobs.items()
        if any(is_self(s) or creates.search(script(s)) for s in steps(job))
    }
    assert creators, "no job creates anything?"
    assert creators <= set(needs(cleanup)), f"cleanup must need {sorted(creators)}"
    destroy = next(s for s in steps(cleanup) if "fly apps destroy" in script(s))
    assert "--yes" in script(destroy), "non-interactive: flyctl would refuse to prompt"


def test_the_cluster_name_is_unique_per_run_and_handed_on_as_a_job_output(
    wf: dict[Any, Any],
) -> None:
    """Runs must not share a cluster (cleanup destroys by name): the gate derives the name from
    the run id and attempt once, and every other job reads that job output."""
    all_jobs = jobs(wf)
    app = str(all_jobs[GATE]["outputs"]["app"])
    assert app.startswith("fpe-canary-")
    assert "github.run_id" in app and "github.run_attempt" in app
    for name, job in all_jobs.items():
        if name != GATE:
            assert job["env"]["APP"] == "${{ needs.gate.outputs.app }}", name


def test_the_token_reaches_only_the_steps_that_need_it(wf: dict[Any, Any]) -> None:
    """The Fly org token is the canary's one secret: never in workflow- or job-level env (every
    step, the checkout and apt-get included, would get it), only as FLY_API_TOKEN in the env of
    a step that runs flyctl or derives the cluster's password from it, as the action's
    fly-api-token input, or in the gate's existence check."""
    found = list(where(wf))
    assert found, "the workflow never uses the token?"
    for path, value in found:
        assert path[0] == "jobs" and len(path) == 6 and path[2] == "steps", path
        job_name, index, section, key = path[1], int(path[3]), path[4], path[5]
        step = steps(jobs(wf)[job_name])[index]
        assert value == SECRET_EXPR, f"{path}: only the bare secret, nothing built from it"
        if job_name == GATE:
            assert (section, key) == ("env", "FLY_CANARY_TOKEN"), path
        elif section == "with":
            assert is_self(step) and key == "fly-api-token", path
        else:
            assert (section, key) == ("env", "FLY_API_TOKEN"), path
            uses_it = runs_fly(step) or 'os.environ["FLY_API_TOKEN"]' in script(step)
            assert uses_it, f"{job_name}/{step.get('name')} gets the token but runs no flyctl"
    assert "secrets" not in str(wf.get("env", {}))
    for name, job in jobs(wf).items():
        assert "secrets" not in str(job.get("env", {})), f"{name}: job-level env"
        assert "secrets" not in str(job.get("outputs", {})), f"{name}: a secret as job output"
    secrets_used = set(re.findall(r"secrets\.([A-Za-z_]\w*)", WORKFLOW.read_text()))
    assert secrets_used == {"FLY_CANARY_TOKEN"}


def test_every_flyctl_step_and_every_action_run_gets_the_token(wf: dict[Any, Any]) -> None:
    """The other direction: a flyctl step without FLY_API_TOKEN would fail, and an action step
    without `fly-api-token` would fall back to whatever FLY_API_TOKEN the environment has."""
    for name, job in jobs(wf).items():
        for step in steps(job):
            if runs_fly(step):
                assert step.get("env", {}).get("FLY_API_TOKEN") == SECRET_EXPR, (
                    f"{name}/{step.get('name')}"
                )
            if is_self(step):
                assert step["with"]["fly-api-token"] == SECRET_EXPR, f"{name}/{step.get('name')}"


def test_the_token_is_never_printed(wf: dict[Any, Any]) -> None:
    """GitHub masks secrets in logs, but not every transformation of one: no script expands the
    token's variable in an echo, printf or redirection, and none turns on `set -x`."""
    for name, job in jobs(wf).items():
        for step in steps(job):
            run = script(step)
            assert "set -x" not in run and "xtrace" not in run, f"{name}/{step.get('name')}"
            for line in run.splitlines():
                if TOKEN_EXPANSION.search(line):
                    assert not re.search(r"\b(?:echo|printf|tee|cat)\b|>", line), line


def test_one_canary_at_a_time_and_never_cancelled(wf: dict[Any, Any]) -> None:
    """Two canaries at once would race on the org, and cancelling a running one could leave a
    cluster behind: one fixed concurrency group, cancel-in-progress false."""
    concurrency = wf["concurrency"]
    assert isinstance(concurrency["group"], str) and concurrency["group"]
    assert "${{" not in concurrency["group"], "one group for every run, not one per ref"
    assert concurrency["cancel-in-progress"] is False
    for name, job in jobs(wf).items():
        assert "concurrency" not in job, f"{name}: a job-level group would split the lock"


def test_permissions_are_read_only(wf: dict[Any, Any]) -> None:
    """Least privilege: nothing at the top (the project's rule, `permissions: {}`, stricter than
    `contents: read`), and a job gets at most read access (the checkout needs contents: read)."""

    def read_only(permissions: Any) -> bool:
        if isinstance(permissions, str):
            return permissions == "read-all"
        return isinstance(permissions, dict) and all(
            v in ("read", "none") for v in permissions.values()
        )

    assert "permissions" in wf and read_only(wf["permissions"])
    for name, job in jobs(wf).items():
        assert "permissions" in job and read_only(job["permissions"]), name
        if any(str(s.get("uses", "")).startswith("actions/checkout@") for s in steps(job)):
            assert job["permissions"].get("contents") == "read", name


def test_every_job_has_a_timeout(wf: dict[Any, Any]) -> None:
    """A hung flyctl or health-check wait must not hold the runner (and the cluster) for the
    default six hours."""
    for name, job in jobs(wf).items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and 0 < timeout <= 60, name


def test_the_action_runs_from_this_checkout_with_lifetime_job_and_is_checked_later(
    wf: dict[Any, Any],
) -> None:
    """The canary tests this commit (`uses: ./`) the way the first recipe uses it:
    lifetime job, verify on, no PR comment; psql connects through its `database-url` output in
    the same job (masked outputs do not cross jobs); and since the post step runs at the end of
    that job, a later job checks with `fly ips list --json` that the address is gone."""
    all_jobs = jobs(wf)
    found = [
        (name, i)
        for name, job in all_jobs.items()
        for i, s in enumerate(steps(job))
        if is_self(s) and s["with"].get("lifetime") == "job"
    ]
    assert len(found) == 1, found
    name, index = found[0]
    job_steps = steps(all_jobs[name])
    action = job_steps[index]
    assert truthy(action["with"]["verify"]) and not truthy(action["with"]["pr-comment"])
    assert action["with"].get("database-url"), "the login check and the URL outputs need it"
    checkout = [i for i, s in enumerate(job_steps) if "actions/checkout@" in str(s.get("uses"))]
    assert checkout and checkout[0] < index, "`uses: ./` needs the checkout first"
    url = f"${{{{ steps.{action['id']}.outputs.database-url }}}}"
    connects = [
        s
        for s in job_steps[index + 1 :]
        if url in s.get("env", {}).values() and "psql" in script(s) and "SELECT 1" in script(s)
    ]
    assert connects, "psql must connect through the action's database-url (via env)"
    later = [
        job
        for job in all_jobs.values()
        if name in needs(job)
        and any(re.search(r"fly ips list .*--json", script(s)) for s in steps(job))
    ]
    assert later, "a later job must check that the post step released the address"


def test_a_legacy_cluster_gets_the_rolling_update_then_unexpose(wf: dict[Any, Any]) -> None:
    """The restart path is what can break a real cluster: some job removes the machines'
    services, runs the action with lifetime persistent (which must restart the machines to add
    pg_tls), then `mode: unexpose`, then checks with `fly ips list --json` that no public
    address is left."""

    def position(job_steps: list[Step], match: Any) -> int:
        hits = [i for i, s in enumerate(job_steps) if match(s)]
        return hits[0] if hits else -1

    for job in jobs(wf).values():
        job_steps = steps(job)
        strip = position(job_steps, lambda s: "--port 5432/tcp:-" in script(s))
        persistent = position(
            job_steps, lambda s: is_self(s) and s["with"].get("lifetime") == "persistent"
        )
        unexpose = position(job_steps, lambda s: is_self(s) and s["with"].get("mode") == "unexpose")
        if -1 in (strip, persistent, unexpose):
            continue
        check = [
            i
            for i, s in enumerate(job_steps)
            if i > unexpose and re.search(r"fly ips list .*--json", script(s))
        ]
        assert strip < persistent < unexpose and check
        assert "fly machine update" in script(job_steps[strip])
        return
    pytest.fail("no job makes the cluster legacy, exposes it persistently, then unexposes")


def test_the_cluster_is_the_smallest_in_the_configured_org_and_region(
    wf: dict[Any, Any],
) -> None:
    """Cost and reach: one shared-cpu-1x node, 1 GB, in the org and region of repository
    variables with defaults; every choice a flag, so flyctl never prompts in CI."""
    creates = [
        (job, s)
        for job in jobs(wf).values()
        for s in steps(job)
        if re.search(r"fly\s+(?:pg|postgres)\s+create", script(s))
    ]
    assert len(creates) == 1
    job, step = creates[0]
    run = " ".join(script(step).replace("\\\n", " ").split())
    for flag in (
        '--name "$APP"',
        '--org "$ORG"',
        '--region "$REGION"',
        "--vm-size shared-cpu-1x",
        "--initial-cluster-size 1",
        "--volume-size 1",
        "--password",
    ):
        assert flag in run, flag
    assert job["env"]["ORG"] == "${{ vars.FLY_CANARY_ORG || 'personal' }}"
    assert re.fullmatch(
        r"\$\{\{ vars\.FLY_CANARY_REGION \|\| '[a-z]{3}' \}\}", job["env"]["REGION"]
    )


def test_flyctl_is_a_pinned_release_checked_before_use(wf: dict[Any, Any]) -> None:
    """A canary that moves with `latest` cannot tell a flyctl change from an action bug: one
    exact version, downloaded from its GitHub release (no install script piped to a shell),
    checked against the release's checksums and by `flyctl version`, before any flyctl step."""
    version = str(wf["env"]["FLYCTL_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    text = WORKFLOW.read_text()
    assert "latest" not in text.lower()
    assert not re.search(r"\|\s*(?:ba)?sh\b", text), "no curl | sh"
    assert "install.sh" not in text and "setup-flyctl" not in text
    for name, job in jobs(wf).items():
        job_steps = steps(job)
        users = [i for i, s in enumerate(job_steps) if runs_fly(s)]
        if not users:
            continue
        installs = [
            i
            for i, s in enumerate(job_steps)
            if "superfly/flyctl/releases/download/v${FLYCTL_VERSION}" in script(s)
        ]
        assert installs and installs[0] < users[0], f"{name}: install flyctl first"
        install = script(job_steps[installs[0]])
        assert "sha256sum --check" in install and "./flyctl version" in install, name
        assert "${FLYCTL_VERSION}" in install.split("./flyctl version", 1)[1], (
            f"{name}: the version check must compare with FLYCTL_VERSION"
        )


def test_third_party_actions_are_pinned_to_a_commit_sha_with_its_version(
    wf: dict[Any, Any],
) -> None:
    """A tag can be moved to other code; a 40-hex commit cannot. The `# vX.Y.Z` comment is what
    Dependabot updates and what a reader checks the SHA against."""
    for job in jobs(wf).values():
        for step in steps(job):
            uses = step.get("uses")
            if uses is None or uses == "./":
                continue
            assert SHA_PINNED.match(uses), uses
    for line in WORKFLOW.read_text().splitlines():
        m = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)", line)
        if m and m[1] != "./":
            assert re.search(r"#\s*v\d+\.\d+\.\d+", m[2]), line


def test_no_expression_is_expanded_inside_a_run_script(wf: dict[Any, Any]) -> None:
    """zizmor's template-injection rule, made strict: a `${{ }}` in a script is pasted into the
    shell before it runs, so step outputs, inputs and event fields go through `env:` instead."""
    for name, job in jobs(wf).items():
        for step in steps(job):
            run = str(step.get("run", ""))
            assert "${{" not in run, f"{name}/{step.get('name')}"
            for risky in ("github.event", "inputs.", ".outputs."):
                assert risky not in run, f"{name}/{step.get('name')}: {risky}"


def test_every_job_writes_its_result_to_the_job_summary(wf: dict[Any, Any]) -> None:
    """Whoever opens the run sees what happened without reading logs, the skip included."""
    for name, job in jobs(wf).items():
        assert any("$GITHUB_STEP_SUMMARY" in script(s) for s in steps(job)), name


def test_actionlint_finds_nothing() -> None:
    """actionlint checks the expressions, the needs graph, the inputs `uses: ./` passes against
    action.yml, and the scripts with shellcheck when it is installed."""
    run_tool(tool("actionlint"), "-no-color", WORKFLOW)


def test_zizmor_finds_nothing() -> None:
    """zizmor offline, with the project's configuration and its pedantic persona."""
    run_tool(
        tool("zizmor"),
        "--offline",
        "--no-progress",
        "--strict-collection",
        "--config",
        ROOT / ".github" / "zizmor.yml",
        "--persona",
        "pedantic",
        WORKFLOW,
    )
