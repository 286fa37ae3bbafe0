"""`lifetime: job`: the main step opens the database for the job, the post step closes what it
opened, whatever became of the job.

Every step runs as the runner runs it: `python entrypoint.py` with a GITHUB_STATE file, then
`python post.py` with the same inputs, `STATE_<name>` for what the main step saved (read back
from the file as the runner reads it) and a fresh job summary. Connections are real: the emitted
URL logs in through the simulator's pg_tls proxy while the job runs, and the addresses refuse
TCP connections once the post step is done.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster_checks import is_lease, is_update, wait_cluster_healthy, when
from exposure import (
    accepts,
    addresses,
    allocate_by_hand,
    graphql_mutations,
    job_env,
    only_record_writes,
    pr_event,
    public_ips,
    records,
    refused,
    released,
    select_one,
    the_record,
)

from flysim import Simulator

from action_run import (
    ActionResult,
    parse_file_command,
    run_inprocess,
    run_main_step,
    run_post_step,
    run_subprocess,
    step_state,
    warnings_of,
)

APP = "my-db"
REPO = "acme/infra"
HOLDER = f"{REPO}#run-4242-1-integration-"  # then the leg, random per step
PR7 = f"{REPO}#pr-7"
FAST = {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"}


def job_inputs(url: str, **more: str) -> dict[str, str]:
    # host: localhost, which the simulator serves on 127.0.0.1 (and ::1) like <app>.fly.dev, so
    # the emitted URL connects as it is.
    return {
        "app": APP,
        "lifetime": "job",
        "database-url": url,
        "host": "localhost",
        "verify": "true",
        **more,
    }


@pytest.fixture(params=[True, False], ids=["legacy", "current"])
def cluster(request: pytest.FixtureRequest, flysim: Any) -> Simulator:
    """A cluster with no public address: legacy (no pg_tls service either) or current."""
    return flysim(apps={APP: {"machines": 3, "legacy": request.param}}, postgres=True)


@pytest.fixture
def current(flysim: Any) -> Simulator:
    return flysim(apps={APP: {"machines": 2}}, postgres=True)


def database_url(sim: Simulator) -> str:
    return sim.attach_database(APP, "job_user", "job-pass-123456", "job_db")


def is_job_holder(name: str) -> bool:
    """`<repository>#run-<run>-<attempt>-<job>-<leg>`, the leg 8 random hex digits."""
    return re.fullmatch(re.escape(HOLDER) + "[0-9a-f]{8}", name) is not None


def summary_rows(result: ActionResult) -> dict[str, str]:
    """The post step's table: address → what became of it."""
    rows: dict[str, str] = {}
    for line in result.summary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def one_allocation_at_a_time(sim: Simulator) -> None:
    """Let the v6 allocation answer a moment after the v4 one, so that the main step records
    (and saves) its two allocations one after the other. Two allocations answered at the same
    instant can lose one from the step state (see
    `test_step_state_names_every_address_even_when_the_allocations_finish_together`); the other
    tests are about what the post step does with a complete state."""
    sim.faults.slow_next(1, seconds=0.3, operation="allocateIpAddress", ip_type="v6")


def instance_ids(sim: Simulator) -> dict[str, str]:
    return {m.id: m.instance_id for m in sim.app(APP).machines}


# -- the job allocated: the post step releases exactly that ----------------------------------


def test_post_step_releases_exactly_what_the_job_allocated(
    cluster: Simulator, tmp_path: Path
) -> None:
    sim = cluster
    url = database_url(sim)
    inputs = job_inputs(url)
    one_allocation_at_a_time(sim)

    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    v4, v6 = main.outputs["ipv4"], main.outputs["ipv6"]
    assert v4 and v6 and addresses(sim, APP, "v4") == [v4] and addresses(sim, APP, "v6") == [v6]
    state = step_state(main)
    assert is_job_holder(state["HOLDER"])
    assert set(state["ALLOCATED"].split(",")) == {v4, v6}
    # The record names the job's addresses and its hold, on every machine.
    record = the_record(sim, APP)
    assert set(record["ips"].values()) == {v4, v6} and set(record["holds"]) == {state["HOLDER"]}
    # During the job the URL works, as emitted.
    select_one(main.outputs["database-url"])
    assert accepts(v4)

    before = instance_ids(sim)
    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())

    assert post.code == 0, post.log
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert graphql_mutations(sim.requests) == ["releaseIpAddress", "releaseIpAddress"]
    assert only_record_writes(sim.requests), sim.mutating_requests()
    assert not [r for r in sim.requests if is_update(r)]
    # Only the lease a releasing run takes on one machine to change the record, given back.
    leased = {r.path for r in sim.requests if is_lease(r)}
    assert len(leased) <= 1 and leased == {r.path for r in sim.requests if is_lease(r, "DELETE")}
    assert instance_ids(sim) == before  # nothing restarted
    assert public_ips(sim, APP) == {}
    # The record is emptied with the addresses (never deleted: its generation stays).
    assert all(
        r is not None and not r["ips"] and not r["holds"] for r in records(sim, APP).values()
    )
    assert refused(v4) and refused(v6) and refused("127.0.0.1")
    with pytest.raises(psycopg.OperationalError):
        select_one(main.outputs["database-url"])
    assert "### 🔒 End of the job: what this job opened on `my-db` is closed" in post.summary
    assert summary_rows(post) == {v4: "released", v6: "released"}
    assert f"✓ {v4}:5432 no longer accepts connections" in post.stdout
    assert post.errors() == []


def test_post_step_releases_what_a_failed_main_step_allocated(flysim: Any, tmp_path: Path) -> None:
    sim: Simulator = flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=True,
        restart_seconds=0.1,
        check_grace_seconds=0.1,
    )
    inputs = {"app": APP, "lifetime": "job", "wait-timeout": "3", "verify": "true"}
    # The second machine of the rollout (replicas by id, the primary last) never gets healthy:
    # the run allocates, updates the first replica (so the addresses serve), then fails on the
    # second and rolls it back (healthy again once the rollback is sent).
    state_of = sim.app(APP)
    order = sorted(m.id for m in state_of.machines if m.id != state_of.primary_id)
    broken = order[1]
    sim.faults.never_healthy(broken)
    one_allocation_at_a_time(sim)
    rolled = when(
        sim,
        lambda _: state_of.machine(broken).update_count >= 2,  # type: ignore[union-attr]
        lambda: sim.faults.healthy_again(broken),
    )
    main = run_main_step(sim, tmp_path / "main", inputs, {**job_env(), **FAST})
    rolled.join(timeout=10)

    assert main.code == 1, main.log
    assert any("did not become healthy" in e for e in main.errors()), main.log
    allocated = {*addresses(sim, APP, "v4"), *addresses(sim, APP, "v6")}
    assert len(allocated) == 2
    state = step_state(main)
    assert is_job_holder(state["HOLDER"])
    assert set(state["ALLOCATED"].split(",")) == allocated
    assert wait_cluster_healthy(sim, APP)
    # The record was written before the rollout, and the rolled-back machine still carries it.
    record = the_record(sim, APP)
    assert set(record["ips"].values()) == allocated and set(record["holds"]) == {state["HOLDER"]}
    assert all(accepts(a) for a in allocated)  # the first replica serves pg_tls on them

    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env={**job_env(), **FAST})

    assert post.code == 0, post.log
    assert sorted(released(sim.requests)) == sorted(allocated)
    assert not [r for r in sim.requests if is_update(r)]
    # Only the lease a releasing run takes on one machine to change the record, given back.
    leased = {r.path for r in sim.requests if is_lease(r)}
    assert len(leased) <= 1 and leased == {r.path for r in sim.requests if is_lease(r, "DELETE")}
    assert public_ips(sim, APP) == {}
    assert all(refused(a) for a in allocated)
    assert set(summary_rows(post).values()) == {"released"}
    assert all(
        r is not None and not r["ips"] and not r["holds"] for r in records(sim, APP).values()
    )
    assert post.errors() == []


def test_post_step_never_releases_an_address_the_job_did_not_allocate(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    _, hand_v4 = allocate_by_hand(sim, APP, "v4")
    inputs = job_inputs(database_url(sim))
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    v6 = main.outputs["ipv6"]
    state = step_state(main)
    assert state["ALLOCATED"] == v6
    select_one(main.outputs["database-url"])

    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())

    assert post.code == 0, post.log
    assert released(sim.requests) == [v6]
    assert list(public_ips(sim, APP).values()) == [hand_v4]
    assert summary_rows(post) == {v6: "released"}
    assert refused(v6) and accepts(hand_v4)


# -- the job allocated nothing: the post step releases nothing, and says why -------------------


def test_job_on_an_app_the_action_already_exposed_releases_nothing(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    url = database_url(sim)
    first = run_subprocess(sim, tmp_path / "persistent", {"app": APP})
    assert first.code == 0, first.log
    before = public_ips(sim, APP)
    assert len(before) == 2

    inputs = job_inputs(url)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    state = step_state(main)
    assert state.get("ALLOCATED", "") == ""
    assert is_job_holder(state["HOLDER"])
    assert set(the_record(sim, APP)["holds"]) == {f"{REPO}#persistent", state["HOLDER"]}
    select_one(main.outputs["database-url"])

    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())

    assert post.code == 0, post.log
    assert released(sim.requests) == []
    assert public_ips(sim, APP) == before
    assert "This job allocated no address" in post.stdout
    assert "This job allocated no address (the app was already exposed)" in post.summary
    # Its own hold is gone; the persistent one stays, and so does the access.
    assert set(the_record(sim, APP)["holds"]) == {f"{REPO}#persistent"}
    select_one(main.outputs["database-url"])
    assert post.errors() == []


def test_job_on_an_app_exposed_by_hand_releases_nothing_and_says_why(
    current: Simulator, tmp_path: Path
) -> None:
    """Addresses made without the action: the job allocates nothing. It records its hold all
    the same (from outside, addresses made by hand look like another run's that are not
    recorded yet), and its post step drops that hold and releases nothing. The post step must
    say that the job allocated nothing, in the log and the job summary, not that the main step
    stopped early."""
    sim = current
    url = database_url(sim)
    allocate_by_hand(sim, APP, "v4")
    allocate_by_hand(sim, APP, "v6")
    before = public_ips(sim, APP)

    inputs = job_inputs(url)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    state = step_state(main)
    assert state.get("ALLOCATED", "") == ""
    select_one(main.outputs["database-url"])

    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())

    assert post.code == 0, post.log
    assert [r.operation_name for r in sim.mutating_requests() if r.api == "graphql"] == []
    assert public_ips(sim, APP) == before
    assert the_record(sim, APP)["holds"] == {} and the_record(sim, APP)["ips"] == {}
    assert "stopped before" not in post.stdout, post.stdout
    assert "allocated no address" in post.stdout
    assert "allocated no address" in post.summary


# -- another holder relies on what the job allocated -------------------------------------------


@dataclass
class HeldJob:
    sim: Simulator
    v4: str
    v6: str
    url: str
    post: ActionResult


@pytest.fixture
def job_then_pr_hold(current: Simulator, tmp_path: Path) -> HeldJob:
    """The job allocates; meanwhile a pull request's run exposes the same app for good (hold
    pr-7); then the job's post step runs."""
    sim = current
    inputs = job_inputs(database_url(sim))
    one_allocation_at_a_time(sim)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    v4, v6 = main.outputs["ipv4"], main.outputs["ipv6"]
    state = step_state(main)
    assert set(state["ALLOCATED"].split(",")) == {v4, v6}

    pr = run_subprocess(sim, tmp_path / "pr", {"app": APP}, pr_event(tmp_path / "pr-event", 7))
    assert pr.code == 0, pr.log
    assert pr.outputs["changed"] == "false"
    assert set(the_record(sim, APP)["holds"]) == {state["HOLDER"], PR7}

    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())
    return HeldJob(sim, v4, v6, main.outputs["database-url"], post)


def test_post_step_keeps_addresses_a_pull_request_took_a_hold_on_during_the_job(
    job_then_pr_hold: HeldJob,
) -> None:
    sim, v4, v6, post = (
        job_then_pr_hold.sim,
        job_then_pr_hold.v4,
        job_then_pr_hold.v6,
        job_then_pr_hold.post,
    )
    assert post.code == 0, post.log
    assert released(sim.requests) == []
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    assert summary_rows(post) == {
        v4: f"kept: still held by {PR7}",
        v6: f"kept: still held by {PR7}",
    }
    record = the_record(sim, APP)
    assert set(record["holds"]) == {PR7} and set(record["ips"].values()) == {v4, v6}
    select_one(job_then_pr_hold.url)  # the pull request's access still works
    assert post.errors() == []


def test_post_step_log_says_which_addresses_it_kept_and_for_whom(
    job_then_pr_hold: HeldJob,
) -> None:
    """The post step "says what it did in the log and the job summary": a kept address must be
    in the log too, not only in the summary."""
    post = job_then_pr_hold.post
    for address in (job_then_pr_hold.v4, job_then_pr_hold.v6):
        assert any(
            address in line and f"still held by {PR7}" in line for line in post.stdout.splitlines()
        ), post.stdout


def test_job_while_a_pull_request_holds_the_exposure_leaves_it_open(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    url = database_url(sim)
    pr = run_subprocess(sim, tmp_path / "pr", {"app": APP}, pr_event(tmp_path / "pr-event", 7))
    assert pr.code == 0, pr.log
    before = public_ips(sim, APP)

    inputs = job_inputs(url)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    state = step_state(main)
    assert state.get("ALLOCATED", "") == ""
    assert set(the_record(sim, APP)["holds"]) == {PR7, state["HOLDER"]}

    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())
    assert post.code == 0, post.log
    assert public_ips(sim, APP) == before
    assert set(the_record(sim, APP)["holds"]) == {PR7}
    assert "nothing to release" in post.summary or "allocated no address" in post.summary
    select_one(main.outputs["database-url"])


# -- a release that fails ----------------------------------------------------------------------


def test_post_step_whose_release_fails_names_each_open_address_and_fails(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    url = database_url(sim)
    inputs = job_inputs(url)
    one_allocation_at_a_time(sim)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    v4, v6 = main.outputs["ipv4"], main.outputs["ipv6"]
    state = step_state(main)
    assert set(state["ALLOCATED"].split(",")) == {v4, v6}

    sim.faults.fail_next(100, status=503, operation="releaseIpAddress")
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env={**job_env(), **FAST})

    assert post.code == 1, post.log
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    for address in (v4, v6):
        assert (
            f"::error::Address {address} of app {APP}, allocated by this job, is still open. "
            f"Release it with: fly ips release {address} -a {APP}"
        ) in post.errors(), post.log
        assert f"`fly ips release {address} -a {APP}`" in summary_rows(post)[address]
    assert post.error_titles().count("Address still open") == 2
    assert accepts(v4)  # it really is still open


def test_a_release_that_fails_does_not_stop_the_post_step_releasing_the_other_address(
    current: Simulator, tmp_path: Path
) -> None:
    """The post step is the job's last word: no re-run will release what it leaves. One
    address whose release fails (both tries of it) must not leave the other one open too."""
    sim = current
    inputs = job_inputs(database_url(sim))
    one_allocation_at_a_time(sim)
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    v4, v6 = main.outputs["ipv4"], main.outputs["ipv6"]
    state = step_state(main)
    assert set(state["ALLOCATED"].split(",")) == {v4, v6}

    sim.faults.fail_next(2, status=503, operation="releaseIpAddress")  # the first one's tries
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env={**job_env(), **FAST})

    assert post.code == 1, post.log
    left = set(public_ips(sim, APP).values())
    assert len(left) == 1, f"still open: {left}; release requests: {released(sim.requests)}"
    (failed,) = left
    assert post.error_titles().count("Address still open") == 1
    assert any(failed in e for e in post.errors())


# -- the post step in the cases where it has nothing to do --------------------------------------


def test_by_default_the_job_closes_what_it_opened(current: Simulator, tmp_path: Path) -> None:
    # No lifetime input: the runner passes action.yml's default, empty, which means job when
    # the run exposes, so a forgotten input never leaves the database open after the job.
    sim = current
    inputs = {"app": APP, "lifetime": ""}
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    state = step_state(main)
    assert is_job_holder(state["HOLDER"])
    assert len(public_ips(sim, APP)) == 2
    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())
    assert post.code == 0, post.log
    assert public_ips(sim, APP) == {}


def test_post_step_of_a_persistent_run_does_nothing(current: Simulator, tmp_path: Path) -> None:
    sim = current
    inputs = {"app": APP, "lifetime": "persistent"}
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    assert step_state(main) == {}
    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, step_state(main), extra_env=job_env())
    assert post.code == 0, post.log
    assert "lifetime: persistent" in post.stdout and "nothing to close" in post.stdout
    assert sim.requests == []
    assert len(public_ips(sim, APP)) == 2


def test_post_step_after_a_main_step_that_stopped_before_holding(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    inputs = {"app": "no-such-app", "lifetime": "job"}
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 1
    assert step_state(main) == {}
    sim.clear_requests()
    post = run_post_step(sim, tmp_path / "post", inputs, step_state(main), extra_env=job_env())
    assert post.code == 0, post.log
    assert "stopped before it held or allocated anything" in post.stdout
    assert sim.requests == []


def test_lifetime_job_outside_expose_is_refused_and_its_post_step_changes_nothing(
    current: Simulator, tmp_path: Path
) -> None:
    sim = current
    inputs = {"app": APP, "lifetime": "job", "mode": "unexpose"}
    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 1
    assert main.error_titles() and any("lifetime" in e for e in main.errors()), main.log
    post = run_post_step(sim, tmp_path / "post", inputs, step_state(main), extra_env=job_env())
    assert post.code == 0, post.log
    assert "inputs were refused" in post.stdout
    assert sim.requests == []
    assert warnings_of(post) == []


# -- the step state itself ---------------------------------------------------------------------


def test_step_state_names_every_address_even_when_the_allocations_finish_together(
    current: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v4 and v6 allocations run on two threads, and each one, once recorded, saves the
    list of what is allocated so far. The runner keeps the last ALLOCATED written. When the
    first thread's save reaches the state file after the second's (a slow write, or plain
    thread scheduling: it happens now and then without any help), the state keeps one address
    and the post step leaves the other open, silently.

    The main step runs in this process so that its first save can be held back until the
    second one is written; nothing else is changed."""
    from fly_pg_external.gha import Actions

    sim = current
    original = Actions.save_state
    lock = threading.Lock()
    second_written = threading.Event()
    saves: list[str] = []

    def save_state(self: Actions, name: str, value: str) -> None:
        if name != "ALLOCATED":
            return original(self, name, value)
        with lock:
            saves.append(value)
            first = len(saves) == 1
        if first:
            second_written.wait(5)
            original(self, name, value)
        else:
            original(self, name, value)
            second_written.set()
        return None

    monkeypatch.setattr(Actions, "save_state", save_state)
    state_file = tmp_path / "state"
    state_file.touch()
    inputs = {"app": APP, "lifetime": "job"}
    main = run_inprocess(
        sim, tmp_path / "main", inputs, {"GITHUB_STATE": str(state_file), **job_env()}
    )
    monkeypatch.undo()
    assert main.code == 0, main.log
    v4, v6 = main.outputs["ipv4"], main.outputs["ipv6"]
    assert len(saves) == 2, saves
    state = parse_file_command(state_file.read_text(encoding="utf-8"))

    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())
    assert post.code == 0, post.log
    left = public_ips(sim, APP)
    assert left == {}, f"the post step left {left} open; ALLOCATED saved in order: {saves}"
    assert set(state["ALLOCATED"].split(",")) == {v4, v6}


def test_post_step_makes_the_pull_request_comment_say_the_job_closed_it(
    current: Simulator, tmp_path: Path
) -> None:
    from fakegithub import FakeGitHub

    sim = current
    token = "ghs_lifetimecomment0123456789"
    with FakeGitHub(login="github-actions[bot]") as github:
        github.add_pr(REPO, 7, head_sha=f"{7:040x}")
        env = {**pr_event(tmp_path, 7), **job_env(), "GITHUB_API_URL": github.base_url}
        inputs = job_inputs(
            database_url(sim), **{"pr-comment": "true", "github-token": token, "verify": "false"}
        )
        main = run_main_step(sim, tmp_path / "main", inputs, env)
        assert main.code == 0, main.log
        [comment] = github.comments(REPO, 7)
        assert "Applied:" in comment.body and "Open for this job only" in comment.body
        state = step_state(main)
        assert state["COMMENT_URL"] == main.outputs["comment-url"]

        post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=env)
        assert post.code == 0, post.log
        [after] = github.comments(REPO, 7)
        # The first thing a reader sees is what is true now; the main step's report is folded.
        lines = after.body.splitlines()
        assert lines[0].startswith("<!-- fly-pg-external: ")
        assert lines[1] == "### 🔒 End of the job: what this job opened on `my-db` is closed"
        assert "released" in after.body
        assert after.body.index("What the main step reported") > after.body.index("released")
        assert "Applied:" in after.body  # kept, folded

        # The post step run again (a re-run of the job's last attempt) replaces its own part.
        again = run_post_step(sim, tmp_path / "again", inputs, state, extra_env=env)
        assert again.code == 0, again.log
        [final] = github.comments(REPO, 7)
        assert final.body.count("What the main step reported") == 1
        assert final.body.count("Applied:") == 1
    for result in (main, post, again):
        shown = [line for line in result.stdout.splitlines() if not line.startswith("::add-mask::")]
        assert token not in "\n".join(shown) + result.summary
