"""The ownership record and the release rule, as pure functions (ownership.py, releases.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.errors import InputError, PlanError
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.intent import Intent
from fly_pg_external.ownership import (
    MAX_HOLDS,
    RECORD_KEY,
    Hold,
    Ownership,
    Unreadable,
    decode,
    encode,
    read,
)
from fly_pg_external.plan import make_plan
from fly_pg_external.releases import HOLD_RENEWAL, Holding, stale_holds
from fly_pg_external.settings import Settings, from_environ

from machines_data import machine

V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")
V6 = IpAddress("ip2", "2a09:8280:1::1", "v6", "global", "2026-01-02T00:00:00Z")
HAND_V4 = IpAddress("ip9", "137.66.9.9", "v4", "global", "2025-01-01T00:00:00Z")
NOW = 1_800_000_000


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def intent(**inputs: str) -> Intent:
    """What the planner gets from a run with these inputs."""
    return settings(**inputs).intent


def with_record(data: dict[str, Any], record: Ownership | None) -> dict[str, Any]:
    if record is not None:
        data["config"].setdefault("metadata", {})[RECORD_KEY] = encode(record)
    return data


def cluster(
    ips: tuple[IpAddress, ...], *records: Ownership | None, machines: int = 2
) -> ClusterState:
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, None)
    raw = [machine(f"m{i}", "primary" if i == 1 else "replica") for i in range(1, machines + 1)]
    for data, record in zip(raw, records, strict=False):
        with_record(data, record)
    return ClusterState.of(app, [machine_from_api(m) for m in raw])


OURS = Ownership({"ip1": V4.address, "ip2": V6.address}, {})
A = "acme/infra#"


def held(*holders: str, since: int = NOW, families: tuple[str, ...] = ("v4", "v6")) -> dict:
    return {h: Hold(since, families) for h in holders}  # type: ignore[arg-type]


def read_now(state: ClusterState) -> Ownership:
    return read(state.machines, state.app.ips, now=NOW)


# -- the record ----------------------------------------------------------------------------------


def test_the_record_round_trips_and_says_why_it_cannot_read_a_copy() -> None:
    record = Ownership({"ip1": V4.address}, held(A + "pr-7", families=("v4",)), generation=4)
    assert decode(encode(record)) == record
    assert json.loads(encode(record)) == {
        "v": 2,
        "gen": 4,
        "ips": {"ip1": V4.address},
        "holds": {A + "pr-7": {"t": NOW, "f": ["v4"]}},
    }
    for text, why in [
        ("not json", "not JSON"),
        ("[]", "no version"),
        ('{"v": 3, "gen": 9}', "format version 3"),
        ('{"v": 2, "gen": "9", "ips": {}, "holds": {}}', "generation"),
        ('{"v": 2, "gen": 1, "ips": [], "holds": {}}', "addresses"),
        ('{"v": 2, "gen": 1, "ips": {}, "holds": {"x": 5}}', "holds"),
    ]:
        with pytest.raises(Unreadable, match=why):
            decode(text)


def test_the_newest_generation_wins_and_a_stale_copy_is_ignored() -> None:
    newer = Ownership({"ip1": V4.address}, held(A + "pr-2"), generation=8)
    stale = Ownership({"ip1": V4.address}, held(A + "pr-1", A + "pr-2"), generation=7)
    state = cluster((V4,), newer, stale, None, machines=3)
    record = read_now(state)
    assert set(record.holds) == {A + "pr-2"} and record.generation == 8
    assert record.known and not record.synced  # the next write repairs m2 and m3


def test_legacy_copies_are_merged_and_outranked_by_any_new_one() -> None:
    legacy = '{"v":1,"ips":{"ip1":"137.66.1.2"},"holds":{"pr-1":1799999000}}'
    other = '{"v":1,"ips":{"ip2":"2a09:8280:1::1"},"holds":{"pr-2":1799999999}}'
    raw = [machine("m1", "primary"), machine("m2")]
    raw[0]["config"]["metadata"] = {RECORD_KEY: legacy}
    raw[1]["config"]["metadata"] = {RECORD_KEY: other}
    app = AppInfo("app1", "my-db", "postgres_cluster", (V4, V6), None)
    record = read_now(ClusterState.of(app, [machine_from_api(m) for m in raw]))
    assert set(record.addresses) == {"ip1", "ip2"} and set(record.holds) == {"pr-1", "pr-2"}
    raw[1]["config"]["metadata"] = {RECORD_KEY: encode(Ownership(generation=1))}
    record = read_now(ClusterState.of(app, [machine_from_api(m) for m in raw]))
    assert record.empty and record.generation == 1


def test_a_copy_that_cannot_be_read_makes_the_record_unknown() -> None:
    raw = [machine("m1", "primary"), machine("m2")]
    raw[0]["config"]["metadata"] = {RECORD_KEY: encode(Ownership(OURS.addresses, generation=3))}
    raw[1]["config"]["metadata"] = {RECORD_KEY: '{"v": 3, "gen": 4}'}
    app = AppInfo("app1", "my-db", "postgres_cluster", (V4, V6), None)
    state = ClusterState.of(app, [machine_from_api(m) for m in raw])
    assert read_now(state).unreadable == (
        "machine m2: format version 3, this version of the action reads 1 and 2",
    )
    plan = make_plan(intent(mode="unexpose"), state, Holding(A + "wf-x", NOW))
    assert plan.release == () and {k.ip.address for k in plan.kept} == {V4.address, V6.address}
    assert plan.warnings[0].kind == "record"
    named = make_plan(intent(mode="unexpose", addresses=V4.address), state, Holding(now=NOW))
    assert [ip.address for ip in named.release] == [V4.address]


def test_hold_times_are_clamped_to_now_and_the_oldest_give_way_past_the_bound() -> None:
    holds = {f"{A}pr-{n}": Hold(NOW - n) for n in range(MAX_HOLDS + 10)}
    holds[A + "future"] = Hold(NOW + 365 * 86400)
    state = cluster((V4,), Ownership({"ip1": V4.address}, holds, generation=1))
    record = read_now(state)
    assert len(record.holds) == MAX_HOLDS
    assert record.holds[A + "future"].since == NOW
    assert f"{A}pr-{MAX_HOLDS + 9}" not in record.holds and A + "pr-0" in record.holds
    # The writer's own hold always stays.
    mine = record.holding(A + "mine", NOW - 10**6, ("v4",))
    assert A + "mine" in mine.holds and len(mine.holds) == MAX_HOLDS


def test_an_address_recycled_under_another_id_is_not_ours() -> None:
    recycled = IpAddress("ip7", V4.address, "v4", "global", "2026-02-01T00:00:00Z")
    state = cluster((recycled,), Ownership({"ip1": V4.address}, {}, generation=1))
    assert read_now(state).addresses == {}
    plan = make_plan(intent(mode="unexpose"), state, Holding(now=NOW))
    assert plan.release == () and plan.kept[0].foreign


def test_a_recorded_attempt_claims_the_one_address_that_turned_up_in_its_window() -> None:
    at = int(datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp())
    late = IpAddress("ip5", "2a09:8280:5::1", "v6", "global", "2027-01-15T08:00:40Z")
    old = IpAddress("ip6", "2a09:8280:6::1", "v6", "global", "2027-01-14T08:00:00Z")
    attempt = Ownership({"ip1": V4.address}, held(A + "pr-1"), {"v6": at}, generation=2)
    record = read(cluster((V4, late), attempt).machines, (V4, late), now=at + 60)
    assert record.addresses == {"ip1": V4.address, "ip5": late.address}
    assert record.attempts == {}
    # An address made long before the attempt is no evidence; two candidates claim neither.
    assert "ip6" not in read(cluster((V4, old), attempt).machines, (V4, old), now=at).addresses
    twin = IpAddress("ip8", "2a09:8280:8::1", "v6", "global", "2027-01-15T08:01:00Z")
    both = read(cluster((V4, late, twin), attempt).machines, (V4, late, twin), now=at + 60)
    assert set(both.addresses) == {"ip1"} and both.attempts == {"v6": at}
    # Past its window the attempt is forgotten.
    assert read(cluster((V4,), attempt).machines, (V4,), now=at + 3600).attempts == {}


# -- expose --------------------------------------------------------------------------------------


def test_an_expose_that_allocates_holds_the_exposure_for_what_it_asked() -> None:
    plan = make_plan(
        intent(**{"ip-versions": "v4"}), cluster(()), Holding(A + "pr-3", NOW, families=("v4",))
    )
    assert plan.record == Ownership({}, held(A + "pr-3", families=("v4",)))


def test_an_expose_of_addresses_no_record_names_writes_its_hold_and_nothing_else() -> None:
    """They may be another run's, landed and not recorded yet: the hold goes in, in this run's
    turn; no address is claimed, so a release later keeps them."""
    plan = make_plan(intent(), cluster((V4, V6)), Holding(A + "pr-3", NOW))
    assert not plan.changed and plan.record is not None
    assert set(plan.record.holds) == {A + "pr-3"} and plan.record.addresses == {}
    again = Ownership({}, plan.record.holds, generation=1)
    rerun = make_plan(intent(), cluster((V4, V6), again, again), Holding(A + "pr-3", NOW + 60))
    assert rerun.record is None  # the next run of the same holder is the cheap no-op again


def test_a_second_pull_request_adds_its_hold_a_fresh_rerun_writes_nothing() -> None:
    one = Ownership(OURS.addresses, held(A + "pr-1"), generation=5)
    second = make_plan(intent(), cluster((V4, V6), one, one), Holding(A + "pr-2", NOW))
    assert second.record is not None and set(second.record.holds) == {A + "pr-1", A + "pr-2"}
    rerun = make_plan(intent(), cluster((V4, V6), one, one), Holding(A + "pr-1", NOW + 60))
    assert rerun.record is None


def test_an_old_hold_is_renewed_and_a_machine_without_the_record_gets_it() -> None:
    one = Ownership(OURS.addresses, held(A + "pr-1"), generation=5)
    later = Holding(A + "pr-1", NOW + HOLD_RENEWAL + 1)
    renewed = make_plan(intent(), cluster((V4, V6), one, one), later).record
    assert renewed is not None and renewed.holds[A + "pr-1"].since == NOW + HOLD_RENEWAL + 1
    repaired = make_plan(intent(), cluster((V4, V6), one, None), Holding(A + "pr-1", NOW + 5))
    assert repaired.record is not None and repaired.record.generation == 5


# -- unexpose ------------------------------------------------------------------------------------


def test_unexpose_releases_our_addresses_when_the_last_hold_goes() -> None:
    one = Ownership(OURS.addresses, held(A + "pr-1"))
    plan = make_plan(intent(mode="unexpose"), cluster((V4, V6), one), Holding(A + "pr-1", NOW))
    assert plan.dropped_holds == (A + "pr-1",) and len(plan.release) == 2
    assert plan.record is not None and plan.record.holds == {}


def test_unexpose_keeps_our_addresses_while_another_holder_covers_their_family() -> None:
    two = Ownership(OURS.addresses, {**held(A + "pr-1"), **held(A + "pr-2", families=("v4",))})
    plan = make_plan(intent(mode="unexpose"), cluster((V4, V6), two), Holding(A + "pr-1", NOW))
    # pr-2 asked for v4 only: it keeps the v4, not the v6 nobody relies on any more.
    assert [ip.address for ip in plan.release] == [V6.address]
    assert [(k.ip.address, k.reason) for k in plan.kept] == [(V4.address, f"still held by {A}pr-2")]


def test_same_pull_request_number_in_another_repository_is_another_holder() -> None:
    two = Ownership(OURS.addresses, {**held(A + "pr-5"), **held("acme/web#pr-5")})
    plan = make_plan(intent(mode="unexpose"), cluster((V4, V6), two), Holding(A + "pr-5", NOW))
    assert plan.release == () and plan.dropped_holds == (A + "pr-5",)


def test_a_legacy_hold_is_dropped_by_the_run_it_belonged_to() -> None:
    legacy = Ownership(OURS.addresses, {"pr-1": Hold(NOW)})
    holding = Holding(A + "pr-1", NOW, legacy=("pr-1",))
    plan = make_plan(intent(mode="unexpose"), cluster((V4, V6), legacy), holding)
    assert plan.dropped_holds == ("pr-1",) and len(plan.release) == 2


def test_unexpose_keeps_addresses_that_are_not_ours_and_warns_how_to_release_them() -> None:
    plan = make_plan(intent(mode="unexpose"), cluster((HAND_V4,)), Holding(now=NOW))
    assert plan.release == ()
    [kept] = plan.kept
    assert kept.foreign and kept.ip == HAND_V4
    assert "addresses: 137.66.9.9" in str(plan.warnings[-1])


def test_named_addresses_are_released_whoever_owns_or_holds_them() -> None:
    two = Ownership({"ip2": V6.address}, held(A + "pr-2"))
    plan = make_plan(
        intent(mode="unexpose", addresses="all"), cluster((HAND_V4, V6), two), Holding(now=NOW)
    )
    assert {ip.address for ip in plan.release} == {HAND_V4.address, V6.address}


def test_a_named_address_the_app_does_not_have_changes_nothing() -> None:
    with pytest.raises(PlanError) as err:
        make_plan(intent(mode="unexpose", addresses="192.0.2.1"), cluster((V4,), OURS))
    assert err.value.input_name == "addresses" and "192.0.2.1" in str(err.value)


def test_the_post_step_releases_every_address_no_hold_covers_and_claims_its_own() -> None:
    job = A + "run-1-1-migrate-0a1b2c3d"
    # The job allocated only the v4; the v6 is the action's own from an earlier run that left
    # no hold: the last holder closes both.
    record = Ownership(OURS.addresses, held(job))
    post = Holding(job, NOW, claims=(V4.address,))
    plan = make_plan(intent(mode="unexpose"), cluster((V4, V6), record), post)
    assert {ip.address for ip in plan.release} == {V4.address, V6.address}
    # Its own by the step state, even when the record never got written.
    unrecorded = make_plan(intent(mode="unexpose"), cluster((V4, V6)), post)
    assert [ip.address for ip in unrecorded.release] == [V4.address]
    assert unrecorded.record is not None


# -- sweep ---------------------------------------------------------------------------------------


def test_a_sweep_drops_old_holds_and_those_of_closed_pull_requests() -> None:
    record = Ownership(
        {},
        {
            **held(A + "pr-1", since=NOW - 100),
            **held(A + "pr-2", since=NOW - 10 * 86400),
            **held(A + "pr-3", since=NOW - 100),
        },
    )
    assert stale_holds(record, now=NOW, max_age=7 * 86400, gone={A + "pr-3"}) == (
        A + "pr-2",
        A + "pr-3",
    )


def test_a_sweep_releases_what_nobody_holds_any_more() -> None:
    old = Ownership(OURS.addresses, held(A + "pr-1", since=NOW - 10 * 86400))
    plan = make_plan(intent(mode="sweep"), cluster((V4, V6), old), Holding(now=NOW))
    assert plan.dropped_holds == (A + "pr-1",) and len(plan.release) == 2
    fresh = Ownership(OURS.addresses, held(A + "pr-1", since=NOW - 60))
    kept = make_plan(intent(mode="sweep"), cluster((V4, V6), fresh), Holding(now=NOW))
    assert kept.release == () and kept.record is None


# -- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        ({"lifetime": "forever"}, "lifetime"),
        ({"lifetime": "job", "mode": "unexpose"}, "lifetime"),
        ({"addresses": "not-an-ip", "mode": "unexpose"}, "addresses"),
        ({"addresses": "192.0.2.1"}, "addresses"),
        ({"max-age": "0"}, "max-age"),
        ({"max-age": "7 weeks"}, "max-age"),
        ({"max-age": "400d"}, "max-age"),
        ({"hold-name": "bi dashboard"}, "hold-name"),
        ({"hold-name": "-x"}, "hold-name"),
        ({"hold-name": "bi", "lifetime": "job"}, "hold-name"),
    ],
)
def test_bad_lifetime_inputs_name_the_input(inputs: dict[str, str], name: str) -> None:
    with pytest.raises(InputError) as err:
        settings(**inputs)
    assert err.value.input_name == name


def test_lifetime_inputs_are_read() -> None:
    s = settings(lifetime="job", **{"max-age": "12h"})
    assert (s.lifetime, s.max_age) == ("job", 12 * 3600)
    u = settings(mode="unexpose", addresses="2a09:8280:1:0::1, 137.66.1.2")
    assert u.addresses.named == ("2a09:8280:1::1", "137.66.1.2") and not u.addresses.every
    assert settings(mode="unexpose", addresses="ALL").addresses.every
