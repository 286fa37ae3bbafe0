"""Holds and owned addresses in the situations real workflows make: matrix legs, overlapping
jobs, a failed or cancelled allocation, two repositories on one app, races, a stale copy of
the record, a bad record, a cancelled post step.

The promise under test: the action closes what it opened, and never what someone else still
holds. Every step runs as the runner runs it (`python entrypoint.py`, `python post.py` with the
state the main step saved) against the simulator, with real PostgreSQL behind its pg_tls proxy;
"open" and "closed" are real connections.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_checks import is_lease
from exposure import (
    RECORD_KEY,
    accepts,
    job_env,
    pr_event,
    public_ips,
    records,
    refused,
    released,
    select_one,
    set_metadata,
    the_record,
    write_record_everywhere,
)
from reliability_runs import Background

from fakegithub import FakeGitHub
from fly_pg_external.ownership import MAX_HOLDS
from flysim import Simulator

from action_run import (
    POST_ENTRYPOINT,
    ActionResult,
    run_main_step,
    run_post_step,
    run_subprocess,
    step_state,
    warnings_of,
)

APP = "my-db"
REPO = "acme/infra"
OTHER_REPO = "acme/web"
GH_TOKEN = "ghs_Holds0Concurrency0Fake0Token0xyz"
PASSWORD = "holds-pass-123456"
FAST = {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"}


@pytest.fixture
def sim(flysim: Any) -> Simulator:
    made: Simulator = flysim(apps={APP: {"machines": 3}}, postgres=True)
    return made


@pytest.fixture
def url(sim: Simulator) -> str:
    return sim.attach_database(APP, "holds_user", PASSWORD, "holds_db")


def job_inputs(url: str) -> dict[str, str]:
    return {"app": APP, "lifetime": "job", "database-url": url, "host": "localhost"}


def expose_inputs(url: str, **more: str) -> dict[str, str]:
    return {"app": APP, "database-url": url, "host": "localhost", "verify": "true", **more}


def holders(sim: Simulator) -> set[str]:
    return set(the_record(sim, APP)["holds"])


def owned(sim: Simulator) -> set[str]:
    return set(the_record(sim, APP)["ips"].values())


def closed(addresses: set[str] | list[str]) -> bool:
    return all(refused(a) for a in addresses)


def in_parallel(*runs: Any) -> list[ActionResult]:
    """Call each of `runs` (no arguments) on a thread of its own; their results in order."""
    results: list[Any] = [None] * len(runs)

    def one(i: int) -> None:
        results[i] = runs[i]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert all(r is not None for r in results), "a run did not finish"
    return results


# -- 1. matrix legs share run, attempt and job -------------------------------------------------


def test_matrix_legs_each_hold_their_own_and_the_last_leg_closes(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    env = job_env("777", "1", "test")  # what every leg of `strategy.matrix` sees
    legs = in_parallel(
        lambda: run_main_step(sim, tmp_path / "leg-a", job_inputs(url), env),
        lambda: run_main_step(sim, tmp_path / "leg-b", job_inputs(url), env),
    )
    assert all(leg.code == 0 for leg in legs), [leg.log for leg in legs]
    a, b = (step_state(leg) for leg in legs)
    assert a["HOLDER"] != b["HOLDER"]
    assert holders(sim) == {a["HOLDER"], b["HOLDER"]}
    addresses = set(public_ips(sim, APP).values())
    assert len(addresses) == 2 and owned(sim) == addresses

    first = run_post_step(sim, tmp_path / "post-a", job_inputs(url), a, extra_env=env)
    assert first.code == 0, first.log
    assert public_ips(sim, APP) and holders(sim) == {b["HOLDER"]}
    select_one(legs[1].outputs["database-url"])  # the other leg still connects

    last = run_post_step(sim, tmp_path / "post-b", job_inputs(url), b, extra_env=env)
    assert last.code == 0, last.log
    assert public_ips(sim, APP) == {} and closed(addresses)


def test_a_leg_that_sees_the_addresses_before_their_record_still_holds(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    """The window the parallel legs above hit only now and then, made certain: leg A has its
    turn, its addresses have landed and its record is not written yet when leg B reads. B must
    not take them for addresses made by hand (and hold nothing): it writes its hold in its own
    turn, after A's record."""
    turn = min(m.id for m in sim.app(APP).machines)
    sim.hold_lease(APP, turn, owner="leg-a", ttl=30)
    landed = {
        ip.id: ip.address
        for family in ("v4", "v6")
        if (ip := sim.allocate_ip(sim.app(APP), family, "")) is not None
    }
    leg_a = "acme/infra#run-777-1-test-aaaaaaaa"

    def leg_a_records_and_ends_its_turn() -> None:
        record = {
            "v": 2,
            "gen": 1,
            "ips": landed,
            "holds": {leg_a: {"t": int(time.time()), "f": ["v4", "v6"]}},
            "attempts": {},
        }
        write_record_everywhere(sim, APP, record)
        sim.clear_lease(APP, turn)

    timer = threading.Timer(3.0, leg_a_records_and_ends_its_turn)
    timer.start()
    try:
        leg_b = run_main_step(sim, tmp_path / "leg-b", job_inputs(url), job_env("777", "1", "test"))
    finally:
        timer.join()
    assert leg_b.code == 0, leg_b.log
    assert holders(sim) == {leg_a, step_state(leg_b)["HOLDER"]}

    env = job_env("777", "1", "test")
    post_b = run_post_step(
        sim, tmp_path / "post-b", job_inputs(url), step_state(leg_b), extra_env=env
    )
    assert post_b.code == 0, post_b.log
    assert public_ips(sim, APP) == landed and holders(sim) == {leg_a}  # A still holds
    select_one(leg_b.outputs["database-url"])


# -- 2. two lifetime: job jobs that overlap ------------------------------------------------------


def test_overlapping_jobs_the_second_to_end_closes_what_the_first_opened(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    job_a = run_main_step(sim, tmp_path / "a", job_inputs(url), job_env("1", "1", "migrate"))
    assert job_a.code == 0, job_a.log
    job_b = run_main_step(sim, tmp_path / "b", job_inputs(url), job_env("2", "1", "e2e"))
    assert job_b.code == 0, job_b.log
    state_a, state_b = step_state(job_a), step_state(job_b)
    addresses = set(public_ips(sim, APP).values())
    assert set(state_a["ALLOCATED"].split(",")) == addresses and not state_b.get("ALLOCATED")

    post_a = run_post_step(
        sim, tmp_path / "pa", job_inputs(url), state_a, extra_env=job_env("1", "1", "migrate")
    )
    assert post_a.code == 0, post_a.log
    assert set(public_ips(sim, APP).values()) == addresses  # job B still holds
    select_one(job_b.outputs["database-url"])

    post_b = run_post_step(
        sim, tmp_path / "pb", job_inputs(url), state_b, extra_env=job_env("2", "1", "e2e")
    )
    assert post_b.code == 0, post_b.log
    assert public_ips(sim, APP) == {} and closed(addresses)
    assert the_record(sim, APP)["holds"] == {}
    assert "released (no run holds it any more)" in post_b.summary
    assert "nothing to release" not in post_b.summary


# -- 3. a partial allocation, or a cancellation in the middle of one ------------------------------


def test_an_address_that_landed_before_the_other_failed_is_recorded_and_later_released(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    sim.faults.fail_next(50, status=503, operation="allocateIpAddress", ip_type="v6")
    failed = run_subprocess(sim, tmp_path / "fail", expose_inputs(url), FAST)
    assert failed.code == 1, failed.log
    [v4] = public_ips(sim, APP).values()
    assert owned(sim) == {v4}  # recorded although the run failed
    sim.faults.clear()

    rerun = run_subprocess(sim, tmp_path / "rerun", expose_inputs(url))
    assert rerun.code == 0 and rerun.outputs["changed"] == "true", rerun.log
    everything = set(public_ips(sim, APP).values())
    assert owned(sim) == everything and len(everything) == 2

    closing = run_subprocess(sim, tmp_path / "close", {"app": APP, "mode": "unexpose"})
    assert closing.code == 0, closing.log
    assert public_ips(sim, APP) == {} and closed(everything)


def test_an_allocation_that_lands_after_a_cancel_is_claimed_on_the_recorded_attempt(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    sim.faults.slow_next(1, seconds=4, operation="allocateIpAddress", ip_type="v6")
    run = Background(sim, tmp_path / "cancelled", expose_inputs(url))
    try:
        assert sim.wait_for(lambda: bool(public_ips(sim, APP)) and not sim.faults.pending, 30)
        time.sleep(0.3)  # the v4 answer is back; the v6 one is held by the simulator
        run.signal(signal.SIGTERM)
        result = run.finish(timeout=60)
    finally:
        run.kill()
    assert result.code == 1 and any("Cancelled (SIGTERM)" in e for e in result.errors())
    record = the_record(sim, APP)
    assert len(record["ips"]) == 1 and "v6" in record.get("attempts", {}), record
    # The v6 request lands after the run is gone: in no record but the attempt's.
    assert sim.wait_for(lambda: len(public_ips(sim, APP)) == 2, 15)
    everything = set(public_ips(sim, APP).values())

    closing = run_subprocess(sim, tmp_path / "close", {"app": APP, "mode": "unexpose"})
    assert closing.code == 0, closing.log
    assert sorted(released(sim.requests)) == sorted(everything)
    assert public_ips(sim, APP) == {} and closed(everything)


# -- 4. two repositories on one app ---------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GH_TOKEN) as fake:
        yield fake


def pr_of(tmp_path: Path, repo: str, number: int, action: str = "synchronize") -> dict[str, str]:
    return {**pr_event(tmp_path / repo, number, action), "GITHUB_REPOSITORY": repo}


def test_two_repositories_with_the_same_pull_request_number_hold_apart(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    mine = github.add_pr(REPO, 5)
    github.add_pr(OTHER_REPO, 5)  # open
    for repo in (REPO, OTHER_REPO):
        opened = run_subprocess(
            sim, tmp_path / repo / "open", expose_inputs(url), pr_of(tmp_path, repo, 5)
        )
        assert opened.code == 0, opened.log
    assert holders(sim) == {f"{REPO}#pr-5", f"{OTHER_REPO}#pr-5"}
    addresses = set(public_ips(sim, APP).values())

    # acme/infra's #5 closes: acme/web's #5 keeps its access.
    mine.state = "closed"
    close = run_subprocess(
        sim,
        tmp_path / "close",
        {"app": APP, "mode": "unexpose"},
        pr_of(tmp_path, REPO, 5, "closed"),
    )
    assert close.code == 0, close.log
    assert set(public_ips(sim, APP).values()) == addresses
    assert holders(sim) == {f"{OTHER_REPO}#pr-5"}

    # acme/infra's nightly sweep: its GitHub says its #5 is closed; the other repository's #5
    # is not its to judge.
    sweep = run_subprocess(
        sim,
        tmp_path / "sweep",
        {"app": APP, "mode": "sweep", "github-token": GH_TOKEN},
        {
            "GITHUB_EVENT_NAME": "schedule",
            "GITHUB_API_URL": github.base_url,
            "GITHUB_SERVER_URL": github.server_url,
            "GITHUB_REPOSITORY": REPO,
        },
    )
    assert sweep.code == 0, sweep.log
    assert holders(sim) == {f"{OTHER_REPO}#pr-5"}
    assert all(accepts(a) for a in addresses)


# -- 5. races ---------------------------------------------------------------------------------


def test_two_exposes_at_once_keep_both_holds(sim: Simulator, url: str, tmp_path: Path) -> None:
    first = run_subprocess(sim, tmp_path / "first", expose_inputs(url), pr_event(tmp_path, 1))
    assert first.code == 0, first.log
    # Record writes answer slowly, so that the two runs overlap between read and write.
    sim.faults.slow_next(6, seconds=0.5, path_contains=f"/metadata/{RECORD_KEY}", method="POST")
    results = in_parallel(
        lambda: run_subprocess(sim, tmp_path / "pr2", expose_inputs(url), pr_event(tmp_path, 2)),
        lambda: run_subprocess(sim, tmp_path / "pr3", expose_inputs(url), pr_event(tmp_path, 3)),
    )
    assert all(r.code == 0 for r in results), [r.log for r in results]
    assert holders(sim) == {f"{REPO}#pr-1", f"{REPO}#pr-2", f"{REPO}#pr-3"}


def test_an_expose_racing_an_unexpose_never_hands_out_a_released_address(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    first = run_subprocess(sim, tmp_path / "pr1", expose_inputs(url), pr_event(tmp_path, 1))
    assert first.code == 0, first.log
    sim.faults.slow_next(2, seconds=1.5, operation="releaseIpAddress")
    close = Background(
        sim, tmp_path / "close", {"app": APP, "mode": "unexpose"}, pr_event(tmp_path, 1, "closed")
    )
    try:
        assert sim.wait_for(lambda: not sim.faults.pending or _releasing(sim), 30)
        second = run_subprocess(sim, tmp_path / "pr2", expose_inputs(url), pr_event(tmp_path, 2))
        closing = close.finish(timeout=120)
    finally:
        close.kill()
    assert closing.code == 0, closing.log
    assert second.code == 0, second.log
    assert second.outputs["exposed"] == "true"
    handed_out = {second.outputs["ipv4"], second.outputs["ipv6"]}
    assert handed_out <= set(public_ips(sim, APP).values())
    assert holders(sim) == {f"{REPO}#pr-2"}
    select_one(second.outputs["database-url"])


def _releasing(sim: Simulator) -> bool:
    return any("releaseIpAddress" in r.graphql_fields for r in sim.requests)


# -- 6. a stale copy of the record -----------------------------------------------------------------


def test_a_copy_left_stale_by_a_failed_write_does_not_bring_a_dropped_hold_back(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    for n in (1, 2):
        run = run_subprocess(sim, tmp_path / f"pr{n}", expose_inputs(url), pr_event(tmp_path, n))
        assert run.code == 0, run.log
    addresses = set(public_ips(sim, APP).values())
    stale_one = sorted(m.id for m in sim.app(APP).machines)[-1]
    sim.faults.fail_next(50, status=500, path_contains=f"/machines/{stale_one}/metadata")
    close1 = run_subprocess(
        sim,
        tmp_path / "close1",
        {"app": APP, "mode": "unexpose"},
        {**pr_event(tmp_path, 1, "closed"), **FAST},
    )
    assert close1.code == 0, close1.log
    assert any("Ownership record not written" in w or stale_one in w for w in warnings_of(close1))
    sim.faults.clear()
    copies = records(sim, APP)
    assert f"{REPO}#pr-1" in copies[stale_one]["holds"]  # type: ignore[index]

    close2 = run_subprocess(
        sim, tmp_path / "close2", {"app": APP, "mode": "unexpose"}, pr_event(tmp_path, 2, "closed")
    )
    assert close2.code == 0, close2.log
    assert public_ips(sim, APP) == {} and closed(addresses)
    assert the_record(sim, APP)["holds"] == {}  # the stale copy was replaced


# -- 7. a bad record ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["not json", '{"v": 9, "gen": 3, "ips": {}, "holds": {}}'],
    ids=["not-json", "future-version"],
)
def test_a_bad_record_is_a_warning_keeps_everything_and_the_next_writer_repairs_it(
    sim: Simulator, url: str, tmp_path: Path, bad: str
) -> None:
    first = run_subprocess(sim, tmp_path / "expose", expose_inputs(url))
    assert first.code == 0, first.log
    addresses = set(public_ips(sim, APP).values())
    victim = sorted(m.id for m in sim.app(APP).machines)[0]
    set_metadata(sim, APP, victim, RECORD_KEY, bad)

    close = run_subprocess(sim, tmp_path / "close", {"app": APP, "mode": "unexpose"})
    assert close.code == 0, close.log
    assert any("ownership record could not be read" in w for w in warnings_of(close)), close.log
    assert set(public_ips(sim, APP).values()) == addresses  # nothing released

    again = run_subprocess(sim, tmp_path / "again", expose_inputs(url), pr_event(tmp_path, 4))
    assert again.code == 0, again.log
    record = the_record(sim, APP)  # every copy readable and the same again
    assert f"{REPO}#pr-4" in record["holds"]


def test_hold_times_ahead_are_clamped_and_a_huge_record_is_cut_to_its_bound(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    first = run_subprocess(sim, tmp_path / "expose", expose_inputs(url))
    assert first.code == 0, first.log
    record = the_record(sim, APP)
    year_ahead = int(time.time()) + 365 * 86400
    record["holds"] = {
        f"{OTHER_REPO}#pr-{n}": {"t": year_ahead - n, "f": ["v4"]} for n in range(20_000)
    }
    record["gen"] += 1
    text = json.dumps(record, separators=(",", ":"))
    for m in sim.app(APP).machines:
        set_metadata(sim, APP, m.id, RECORD_KEY, text)

    again = run_subprocess(sim, tmp_path / "again", expose_inputs(url), pr_event(tmp_path, 9))
    assert again.code == 0, again.log
    repaired = the_record(sim, APP)
    assert len(repaired["holds"]) == MAX_HOLDS and f"{REPO}#pr-9" in repaired["holds"]
    assert all(h["t"] <= time.time() for h in repaired["holds"].values())


# -- 8. the post step cancelled ------------------------------------------------------------------


def test_a_cancelled_post_step_gives_back_its_lease_and_names_every_open_address(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    main = run_main_step(sim, tmp_path / "main", job_inputs(url), job_env())
    assert main.code == 0, main.log
    state = step_state(main)
    addresses = set(public_ips(sim, APP).values())
    sim.faults.slow_next(2, seconds=6, operation="releaseIpAddress")
    post = Background(
        sim,
        tmp_path / "post",
        job_inputs(url),
        {**job_env(), **{f"STATE_{k}": v for k, v in state.items()}},
        script=POST_ENTRYPOINT,
    )
    try:
        assert sim.wait_for(lambda: _releasing(sim), 30)
        post.signal(signal.SIGTERM)
        result = post.finish(timeout=60)
    finally:
        post.kill()
    assert result.code == 1, result.log
    assert any("Cancelled (SIGTERM)" in e for e in result.errors()), result.log
    still_open = set(public_ips(sim, APP).values())
    assert still_open, "the release was held back: something is still open"
    for address in still_open:
        assert any(
            address in e and f"fly ips release {address} -a {APP}" in e for e in result.errors()
        ), result.log
    assert "**Cancelled**" in result.summary and "still open" in result.summary
    # Its lease was given back: every lease taken was released.
    taken = [r.path for r in sim.requests if is_lease(r, "POST") and r.status in (200, 201)]
    given = [r.path for r in sim.requests if is_lease(r, "DELETE")]
    assert sorted(taken) == sorted(given)
    assert addresses >= still_open
