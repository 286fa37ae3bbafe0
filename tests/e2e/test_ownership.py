"""Whose addresses they are, and who still needs them: the ownership record end to end.

- addresses made without the action are never released unless the `addresses` input names them;
- two pull requests share one exposure: closing the first keeps it, closing the last releases;
- `mode: sweep` drops the holds of closed pull requests and holds older than `max-age`;
- the record lives in every machine's metadata, and one machine that still has it is enough.

Every run is `python entrypoint.py` against the simulator (real PostgreSQL behind a real pg_tls
proxy); pull request state comes from a fake GitHub API. Connections are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster_checks import is_lease, is_update
from exposure import (
    RECORD_KEY,
    REPO,
    accepts,
    allocate_by_hand,
    delete_metadata,
    graphql_mutations,
    only_record_writes,
    pr_event,
    public_ips,
    records,
    refused,
    released,
    rewrite_config_without,
    select_one,
    the_record,
    write_record_everywhere,
)

from fakegithub import FakeGitHub
from flysim import Simulator

from action_run import ActionResult, run_subprocess, warnings_of

APP = "my-db"
GH_TOKEN = "ghs_Ownership0Tests0Fake0Token0xyz"
FOREIGN = (
    "it is not this action's own (no record of the action allocating it: made by hand, by "
    "another tool, or before the action kept records)"
)


def kept_warning(family: str, address: str) -> str:
    return (
        f"::warning::Kept {family} {address}: {FOREIGN}. To release it, name it in the addresses "
        f"input (addresses: {address}, or addresses: all), or run fly ips release {address} "
        f"-a {APP}."
    )


@pytest.fixture
def sim(flysim: Any) -> Simulator:
    """A current 3-machine cluster (pg_tls services in place) with no public address."""
    made: Simulator = flysim(apps={APP: {"machines": 3}}, postgres=True)
    return made


@pytest.fixture
def url(sim: Simulator) -> str:
    return sim.attach_database(APP, "own_user", "own-pass-123456", "own_db")


def expose(sim: Simulator, where: Path, url: str, **env: str) -> ActionResult:
    inputs = {"app": APP, "database-url": url, "host": "localhost", "verify": "true"}
    return run_subprocess(sim, where, inputs, dict(env))


def unexpose(
    sim: Simulator, where: Path, env: dict[str, str] | None = None, **inputs: str
) -> ActionResult:
    return run_subprocess(
        sim, where, {"app": APP, "mode": "unexpose", "verify": "true", **inputs}, env
    )


def holds(sim: Simulator) -> set[str]:
    """The holders on the record, without the repository every one of this file's names."""
    names = set(the_record(sim, APP)["holds"])
    assert all(n.startswith(f"{REPO}#") for n in names), names
    return {n.removeprefix(f"{REPO}#") for n in names}


def no_record(sim: Simulator) -> bool:
    """Nothing recorded: every copy empty (a record is emptied, never deleted)."""
    return all(not r or (not r["ips"] and not r["holds"]) for r in records(sim, APP).values())


# -- addresses made without the action ---------------------------------------------------------


@pytest.fixture
def hand_made(sim: Simulator) -> tuple[str, str]:
    """A public v4 and v6 allocated through Fly's GraphQL API, not by the action."""
    _, v4 = allocate_by_hand(sim, APP, "v4")
    _, v6 = allocate_by_hand(sim, APP, "v6")
    assert accepts(v4) and accepts(v6)
    sim.clear_requests()
    return v4, v6


def test_unexpose_keeps_addresses_made_by_hand_and_says_how_to_release_them(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path)

    assert result.code == 0, result.log
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    assert sim.mutating_requests() == []
    assert kept_warning("v4", v4) in warnings_of(result), result.log
    assert kept_warning("v6", v6) in warnings_of(result), result.log
    assert result.outputs["changed"] == "false"
    assert f"kept: {FOREIGN}" in result.summary
    assert accepts(v4) and accepts(v6)
    assert result.errors() == []


def test_unexpose_dry_run_lists_the_addresses_it_would_keep(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path, **{"dry-run": "true"})

    assert result.code == 0, result.log
    assert sim.mutating_requests() == []
    assert result.outputs["changed"] == "false"
    for family, address in (("v4", v4), ("v6", v6)):
        assert any(address in w and "fly ips release" in w for w in warnings_of(result)), family
        assert any(address in line and "kept:" in line for line in result.summary.splitlines())
    assert set(public_ips(sim, APP).values()) == {v4, v6}


def test_unexpose_with_addresses_all_releases_addresses_made_by_hand(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path, addresses="all")

    assert result.code == 0, result.log
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert public_ips(sim, APP) == {}
    assert warnings_of(result) == []
    assert refused(v4) and refused(v6)
    assert not [r for r in sim.requests if is_update(r)]
    # Only the lease a releasing run takes on one machine to change the record, given back.
    leased = {r.path for r in sim.requests if is_lease(r)}
    assert len(leased) <= 1 and leased == {r.path for r in sim.requests if is_lease(r, "DELETE")}


def test_unexpose_with_one_address_named_releases_only_that_one(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path, addresses=v4)

    assert result.code == 0, result.log
    assert released(sim.requests) == [v4]
    assert list(public_ips(sim, APP).values()) == [v6]
    assert warnings_of(result) == [kept_warning("v6", v6)]
    assert refused(v4) and accepts(v6)


def test_unexpose_naming_an_address_the_app_does_not_have_changes_nothing(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path, addresses=f"{v4}, 192.0.2.77")

    assert result.code == 1
    assert any("192.0.2.77" in e and "addresses" in e for e in result.errors()), result.log
    assert sim.mutating_requests() == []
    assert set(public_ips(sim, APP).values()) == {v4, v6}


def test_unexpose_releases_its_own_address_and_keeps_one_made_by_hand(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    first = run_subprocess(sim, tmp_path / "expose", {"app": APP, "ip-versions": "v4"})
    assert first.code == 0, first.log
    own_v4 = first.outputs["ipv4"]
    _, hand_v6 = allocate_by_hand(sim, APP, "v6")
    assert set(the_record(sim, APP)["ips"].values()) == {own_v4}

    sim.clear_requests()
    result = unexpose(sim, tmp_path / "unexpose")

    assert result.code == 0, result.log
    assert released(sim.requests) == [own_v4]
    assert list(public_ips(sim, APP).values()) == [hand_v6]
    assert warnings_of(result) == [kept_warning("v6", hand_v6)]
    assert no_record(sim)
    assert refused(own_v4) and accepts(hand_v6)


def title(result: ActionResult) -> str:
    return next(line for line in result.summary.splitlines() if line.startswith("### "))


def test_report_of_an_unexpose_that_kept_addresses_made_by_hand_does_not_say_closed(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    result = unexpose(sim, tmp_path)
    assert result.code == 0, result.log
    assert len(public_ips(sim, APP)) == 2 and accepts(hand_made[0])
    assert "closed to external connections" not in title(result), title(result)


def test_report_of_an_unexpose_that_released_one_of_two_addresses_does_not_say_closed(
    sim: Simulator, hand_made: tuple[str, str], tmp_path: Path
) -> None:
    v4, v6 = hand_made
    result = unexpose(sim, tmp_path, addresses=v4)
    assert result.code == 0, result.log
    assert accepts(v6)
    assert "closed to external connections" not in title(result), title(result)


def test_report_of_a_pull_request_closing_while_another_holds_does_not_say_closed(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    """What PR 1's comment and summary say when it closes: the app stays open for PR 2."""
    assert expose(sim, tmp_path / "pr1", url, **pr_event(tmp_path, 1)).code == 0
    pr2 = expose(sim, tmp_path / "pr2", url, **pr_event(tmp_path, 2))
    assert pr2.code == 0, pr2.log
    closed1 = unexpose(sim, tmp_path / "close1", pr_event(tmp_path, 1, "closed"))
    assert closed1.code == 0, closed1.log
    select_one(pr2.outputs["database-url"])
    assert "closed to external connections" not in title(closed1), title(closed1)


# -- two pull requests share one exposure ------------------------------------------------------


def test_two_pull_requests_share_the_exposure_until_the_last_one_closes(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    # PR 1 exposes: it allocates, and holds.
    pr1 = expose(sim, tmp_path / "pr1", url, **pr_event(tmp_path, 1))
    assert pr1.code == 0, pr1.log
    v4, v6 = pr1.outputs["ipv4"], pr1.outputs["ipv6"]
    assert v4 and v6
    record = the_record(sim, APP)
    assert set(record["ips"].values()) == {v4, v6} and set(record["holds"]) == {f"{REPO}#pr-1"}
    assert set(record["ips"]) == set(public_ips(sim, APP))  # by IP id

    # PR 2 exposes: nothing to allocate, it adds its hold.
    sim.clear_requests()
    pr2 = expose(sim, tmp_path / "pr2", url, **pr_event(tmp_path, 2))
    assert pr2.code == 0, pr2.log
    assert pr2.outputs["changed"] == "false"
    assert "allocateIpAddress" not in graphql_mutations(sim.requests)
    assert only_record_writes(sim.requests)
    assert holds(sim) == {"pr-1", "pr-2"}
    assert (pr2.outputs["ipv4"], pr2.outputs["ipv6"]) == (v4, v6)

    # PR 1 closes: its hold goes, the addresses stay for PR 2.
    sim.clear_requests()
    closed1 = unexpose(sim, tmp_path / "close1", pr_event(tmp_path, 1, "closed"))
    assert closed1.code == 0, closed1.log
    assert released(sim.requests) == []
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    assert f"- will keep v4 {v4}: still held by acme/infra#pr-2" in closed1.stdout
    assert f"- will keep v6 {v6}: still held by acme/infra#pr-2" in closed1.stdout
    assert "kept: still held by acme/infra#pr-2" in closed1.summary
    assert warnings_of(closed1) == []
    assert holds(sim) == {"pr-2"}
    select_one(pr2.outputs["database-url"])

    # PR 2 closes: nobody holds the exposure any more; both addresses are released.
    sim.clear_requests()
    closed2 = unexpose(sim, tmp_path / "close2", pr_event(tmp_path, 2, "closed"))
    assert closed2.code == 0, closed2.log
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert public_ips(sim, APP) == {}
    assert no_record(sim)
    assert refused(v4) and refused(v6) and refused("127.0.0.1")
    with pytest.raises(psycopg.OperationalError):
        select_one(pr2.outputs["database-url"])


def test_a_rerun_of_the_same_pull_request_writes_nothing(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    assert expose(sim, tmp_path / "first", url, **pr_event(tmp_path, 1)).code == 0
    before = the_record(sim, APP)
    sim.clear_requests()
    again = expose(sim, tmp_path / "again", url, **pr_event(tmp_path, 1))
    assert again.code == 0, again.log
    assert sim.mutating_requests() == []
    assert the_record(sim, APP) == before
    select_one(again.outputs["database-url"])


def test_holds_do_not_outlive_the_addresses_released_with_addresses_all(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    """PR 1 exposes; an operator closes everything with `addresses: all`. PR 1's hold was on
    addresses that are gone: it must not come back to guard the addresses PR 2 allocates later,
    or closing PR 2 keeps them open for a pull request that never used them."""
    assert expose(sim, tmp_path / "pr1", url, **pr_event(tmp_path, 1)).code == 0
    closed_all = unexpose(sim, tmp_path / "all", addresses="all")
    assert closed_all.code == 0, closed_all.log
    assert public_ips(sim, APP) == {}

    pr2 = expose(sim, tmp_path / "pr2", url, **pr_event(tmp_path, 2))
    assert pr2.code == 0, pr2.log
    v4, v6 = pr2.outputs["ipv4"], pr2.outputs["ipv6"]
    assert v4 and v6
    assert holds(sim) == {"pr-2"}, the_record(sim, APP)

    sim.clear_requests()
    closed2 = unexpose(sim, tmp_path / "close2", pr_event(tmp_path, 2, "closed"))
    assert closed2.code == 0, closed2.log
    assert sorted(released(sim.requests)) == sorted([v4, v6]), closed2.stdout
    assert public_ips(sim, APP) == {}


def test_two_pull_requests_closing_at_the_same_moment_release_the_addresses(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    """PR 1 and PR 2 close together (a stack merged at once): each unexpose reads the record
    while the other still holds, so each keeps the addresses for the other and writes the record
    without its own hold. Whatever the order, once both have run nobody holds the exposure and
    it must be closed. The record writes are slowed down (as a busy Machines API would) so that
    both runs read before either writes."""
    for n in (1, 2):
        assert expose(sim, tmp_path / f"pr{n}", url, **pr_event(tmp_path, n)).code == 0
    assert holds(sim) == {"pr-1", "pr-2"}
    sim.clear_requests()
    sim.faults.slow_next(6, seconds=2.0, method="POST", path_contains=f"/metadata/{RECORD_KEY}")

    results: dict[int, ActionResult] = {}

    def close(n: int) -> None:
        results[n] = unexpose(sim, tmp_path / f"close{n}", pr_event(tmp_path, n, "closed"))

    threads = [threading.Thread(target=close, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r.code == 0 for r in results.values()), [r.log for r in results.values()]

    left = records(sim, APP)
    assert public_ips(sim, APP) == {}, f"still open; records now: {left}"
    assert no_record(sim)


# -- sweep ---------------------------------------------------------------------------------------
# -- sweep ---------------------------------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GH_TOKEN) as fake:
        yield fake


def sweep(
    sim: Simulator, github: FakeGitHub, where: Path, token: str = GH_TOKEN, **inputs: str
) -> ActionResult:
    env = {
        "GITHUB_EVENT_NAME": "schedule",
        "GITHUB_API_URL": github.base_url,
        "GITHUB_SERVER_URL": github.server_url,
        "GITHUB_REPOSITORY": REPO,
    }
    return run_subprocess(
        sim,
        where,
        {"app": APP, "mode": "sweep", "verify": "true", "github-token": token, **inputs},
        env,
    )


def pull_lookups(github: FakeGitHub) -> list[str]:
    return [r.path for r in github.requests if r.method == "GET" and "/pulls/" in r.path]


def test_sweep_releases_what_a_closed_pull_request_left_open(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    pr = github.add_pr(REPO, 1)
    exposed = expose(sim, tmp_path / "pr1", url, **pr_event(tmp_path, 1))
    assert exposed.code == 0, exposed.log
    v4, v6 = exposed.outputs["ipv4"], exposed.outputs["ipv6"]
    pr.state = "closed"  # closed on GitHub; its unexpose never ran

    sim.clear_requests()
    result = sweep(sim, github, tmp_path / "sweep")

    assert result.code == 0, result.log
    assert pull_lookups(github) == [f"/repos/{REPO}/pulls/1"]
    assert "drop the hold of acme/infra#pr-1" in result.stdout
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert public_ips(sim, APP) == {}
    assert no_record(sim)
    assert refused(v4) and refused(v6)
    assert result.outputs["database-url"] == ""


def test_sweep_drops_a_hold_older_than_max_age(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_pr(REPO, 3)  # still open
    exposed = expose(sim, tmp_path / "pr3", url, **pr_event(tmp_path, 3))
    assert exposed.code == 0, exposed.log
    v4, v6 = exposed.outputs["ipv4"], exposed.outputs["ipv6"]
    record = the_record(sim, APP)
    # Taken two hours ago; written one generation up, as the action would.
    record["holds"] = {f"{REPO}#pr-3": {"t": int(time.time()) - 2 * 3600, "f": ["v4", "v6"]}}
    record["gen"] += 1
    write_record_everywhere(sim, APP, record)

    sim.clear_requests()
    result = sweep(sim, github, tmp_path / "sweep", **{"max-age": "1h"})

    assert result.code == 0, result.log
    assert "drop the hold of acme/infra#pr-3" in result.stdout
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert public_ips(sim, APP) == {}
    assert refused(v4) and refused(v6)


def test_sweep_keeps_the_hold_of_an_open_pull_request_younger_than_max_age(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_pr(REPO, 4)
    exposed = expose(sim, tmp_path / "pr4", url, **pr_event(tmp_path, 4))
    assert exposed.code == 0, exposed.log
    v4, v6 = exposed.outputs["ipv4"], exposed.outputs["ipv6"]
    before = the_record(sim, APP)

    sim.clear_requests()
    result = sweep(sim, github, tmp_path / "sweep", **{"max-age": "1h"})

    assert result.code == 0, result.log
    assert pull_lookups(github) == [f"/repos/{REPO}/pulls/4"]
    assert sim.mutating_requests() == []
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    assert f"- will keep v4 {v4}: still held by acme/infra#pr-4" in result.stdout
    assert the_record(sim, APP) == before
    select_one(exposed.outputs["database-url"])


def test_sweep_drops_only_the_closed_pull_request_and_keeps_what_the_open_one_holds(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    closed = github.add_pr(REPO, 5)
    github.add_pr(REPO, 6)
    assert expose(sim, tmp_path / "pr5", url, **pr_event(tmp_path, 5)).code == 0
    six = expose(sim, tmp_path / "pr6", url, **pr_event(tmp_path, 6))
    assert six.code == 0, six.log
    assert holds(sim) == {"pr-5", "pr-6"}
    closed.state = "closed"

    sim.clear_requests()
    result = sweep(sim, github, tmp_path / "sweep")

    assert result.code == 0, result.log
    assert sorted(pull_lookups(github)) == [f"/repos/{REPO}/pulls/5", f"/repos/{REPO}/pulls/6"]
    assert released(sim.requests) == []
    assert holds(sim) == {"pr-6"}
    assert len(public_ips(sim, APP)) == 2
    select_one(six.outputs["database-url"])


def test_sweep_drops_a_closed_pull_request_even_when_another_is_unknown_to_github(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    """PR 1's hold cannot be looked up (GitHub answers 404: a pull request of another
    repository sharing the app, or a repository renamed): it is kept, as unknown. That must not
    keep the sweep from dropping PR 2, which GitHub says is closed."""
    github.add_pr(REPO, 2, state="closed")
    for n in (1, 2):
        assert expose(sim, tmp_path / f"pr{n}", url, **pr_event(tmp_path, n)).code == 0
    assert holds(sim) == {"pr-1", "pr-2"}

    result = sweep(sim, github, tmp_path / "sweep")

    assert result.code == 0, result.log
    assert f"/repos/{REPO}/pulls/2" in pull_lookups(github), pull_lookups(github)
    assert holds(sim) == {"pr-1"}
    assert len(public_ips(sim, APP)) == 2


def test_sweep_without_a_github_token_keeps_pull_request_holds(
    sim: Simulator, url: str, github: FakeGitHub, tmp_path: Path
) -> None:
    pr = github.add_pr(REPO, 8)
    exposed = expose(sim, tmp_path / "pr8", url, **pr_event(tmp_path, 8))
    assert exposed.code == 0, exposed.log
    pr.state = "closed"

    sim.clear_requests()
    result = sweep(sim, github, tmp_path / "sweep", token="")

    assert result.code == 0, result.log
    assert any("Cannot ask GitHub whether pull request(s) 8" in w for w in warnings_of(result))
    assert github.requests == []
    assert sim.mutating_requests() == []
    assert holds(sim) == {"pr-8"}
    assert len(public_ips(sim, APP)) == 2


# -- the record outlives machines that lost it -------------------------------------------------


def test_record_survives_machines_that_lost_it_while_one_still_has_it(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    first = expose(sim, tmp_path / "expose", url)
    assert first.code == 0, first.log
    v4, v6 = first.outputs["ipv4"], first.outputs["ipv6"]
    a, b, c = sorted(m.id for m in sim.app(APP).machines)
    # A: someone updated its config without the record; B: the key was deleted. C keeps it.
    rewrite_config_without(sim, APP, a, RECORD_KEY)
    delete_metadata(sim, APP, b, RECORD_KEY)
    left = records(sim, APP)
    assert left[a] is None and left[b] is None and left[c] is not None

    sim.clear_requests()
    result = unexpose(sim, tmp_path / "unexpose")

    assert result.code == 0, result.log
    assert sorted(released(sim.requests)) == sorted([v4, v6])
    assert warnings_of(result) == []
    assert public_ips(sim, APP) == {}
    assert no_record(sim)
    assert refused(v4) and refused(v6)


def test_a_later_expose_writes_the_record_back_on_machines_that_lost_it(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    first = expose(sim, tmp_path / "expose", url)
    assert first.code == 0, first.log
    record = the_record(sim, APP)
    a, b, _ = sorted(m.id for m in sim.app(APP).machines)
    rewrite_config_without(sim, APP, a, RECORD_KEY)
    delete_metadata(sim, APP, b, RECORD_KEY)

    sim.clear_requests()
    again = expose(sim, tmp_path / "again", url)

    assert again.code == 0, again.log
    assert "allocateIpAddress" not in graphql_mutations(sim.requests)
    assert only_record_writes(sim.requests)
    again_record = the_record(sim, APP)
    assert again_record["ips"] == record["ips"] and set(again_record["holds"]) == set(
        record["holds"]
    )
    assert again_record["gen"] == record["gen"] + 1


def test_without_the_record_on_any_machine_unexpose_keeps_the_addresses(
    sim: Simulator, url: str, tmp_path: Path
) -> None:
    """The counterpart of the survival test: the record, nothing else, makes them its own."""
    first = expose(sim, tmp_path / "expose", url)
    assert first.code == 0, first.log
    v4, v6 = first.outputs["ipv4"], first.outputs["ipv6"]
    for m in sim.app(APP).machines:
        delete_metadata(sim, APP, m.id, RECORD_KEY)

    sim.clear_requests()
    result = unexpose(sim, tmp_path / "unexpose")

    assert result.code == 0, result.log
    assert released(sim.requests) == []
    assert sorted(warnings_of(result)) == sorted([kept_warning("v4", v4), kept_warning("v6", v6)])
    assert set(public_ips(sim, APP).values()) == {v4, v6}
    assert accepts(v4)
