"""The ownership record and the release rule, as pure functions (ownership.py, releases.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.errors import InputError, PlanError
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.outcome import build_outcome
from fly_pg_external.ownership import RECORD_KEY, Ownership, decode, encode, read
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


# -- the record ----------------------------------------------------------------------------------


def test_the_record_round_trips_and_refuses_what_it_cannot_read() -> None:
    record = Ownership({"ip1": V4.address}, {"pr-7": NOW})
    assert decode(encode(record)) == record
    assert encode(record) == encode(Ownership({"ip1": V4.address}, {"pr-7": NOW}))
    for bad in ("", "{", '{"v":2,"ips":{},"holds":{}}', '{"v":1,"ips":[],"holds":{}}', "[]"):
        assert decode(bad) is None


def test_reading_takes_the_union_over_machines_and_the_latest_hold() -> None:
    one = Ownership({"ip1": V4.address}, {"pr-1": NOW - 10})
    two = Ownership({"ip2": V6.address}, {"pr-1": NOW, "pr-2": NOW - 5})
    state = cluster((V4, V6), one, two)
    assert read(state.machines, state.app.ips) == Ownership(
        {"ip1": V4.address, "ip2": V6.address}, {"pr-1": NOW, "pr-2": NOW - 5}
    )


def test_a_record_on_one_machine_is_enough() -> None:
    state = cluster((V4, V6), None, OURS, machines=3)
    assert read(state.machines, state.app.ips).owns(V4)


def test_an_address_recycled_under_another_id_is_not_ours() -> None:
    recycled = IpAddress("ip77", V4.address, "v4", "global", "2026-02-01T00:00:00Z")
    state = cluster((recycled,), OURS)
    record = read(state.machines, state.app.ips)
    assert not record.owns(recycled) and record.addresses == {}


# -- expose --------------------------------------------------------------------------------------


def test_an_expose_that_allocates_holds_the_exposure() -> None:
    plan = make_plan(settings(), cluster(()), Holding("pr-3", NOW))
    assert plan.allocate == ("v4", "v6")
    assert plan.record == Ownership({}, {"pr-3": NOW})


def test_an_expose_of_addresses_that_are_not_ours_writes_nothing() -> None:
    plan = make_plan(settings(), cluster((HAND_V4, V6)), Holding("pr-3", NOW))
    assert not plan.changed and plan.record is None


def test_a_second_pull_request_adds_its_hold_a_fresh_rerun_writes_nothing() -> None:
    held = Ownership(OURS.addresses, {"pr-1": NOW})
    second = make_plan(settings(), cluster((V4, V6), held, held), Holding("pr-2", NOW))
    assert second.record == Ownership(OURS.addresses, {"pr-1": NOW, "pr-2": NOW})
    rerun = make_plan(settings(), cluster((V4, V6), held, held), Holding("pr-1", NOW + 60))
    assert rerun.record is None


def test_an_old_hold_is_renewed_and_a_machine_without_the_record_gets_it() -> None:
    held = Ownership(OURS.addresses, {"pr-1": NOW})
    later = Holding("pr-1", NOW + HOLD_RENEWAL + 1)
    assert make_plan(settings(), cluster((V4, V6), held, held), later).record == Ownership(
        OURS.addresses, {"pr-1": later.now}
    )
    replaced = make_plan(settings(), cluster((V4, V6), held, None), Holding("pr-1", NOW + 60))
    assert replaced.record == held


# -- unexpose ------------------------------------------------------------------------------------


def test_unexpose_releases_our_addresses_when_the_last_hold_goes() -> None:
    held = Ownership(OURS.addresses, {"pr-1": NOW})
    plan = make_plan(settings(mode="unexpose"), cluster((V4, V6), held), Holding("pr-1", NOW))
    assert [ip.address for ip in plan.release] == [V4.address, V6.address]
    assert plan.dropped_holds == ("pr-1",) and plan.record == Ownership(OURS.addresses, {})


def test_unexpose_keeps_our_addresses_while_another_pull_request_holds_them() -> None:
    held = Ownership(OURS.addresses, {"pr-1": NOW, "pr-2": NOW})
    plan = make_plan(settings(mode="unexpose"), cluster((V4, V6), held), Holding("pr-1", NOW))
    assert plan.release == ()
    assert [(k.ip.address, k.reason, k.foreign) for k in plan.kept] == [
        (V4.address, "still held by pr-2", False),
        (V6.address, "still held by pr-2", False),
    ]
    assert plan.record == Ownership(OURS.addresses, {"pr-2": NOW})
    assert not any(w.kind == "kept" for w in plan.warnings)


def test_unexpose_keeps_addresses_that_are_not_ours_and_warns_how_to_release_them() -> None:
    plan = make_plan(settings(mode="unexpose"), cluster((HAND_V4, V6), OURS))
    assert [ip.address for ip in plan.release] == [V6.address]
    [warning] = [w.text for w in plan.warnings if w.kind == "kept"]
    assert HAND_V4.address in warning and "addresses: all" in warning
    assert f"fly ips release {HAND_V4.address} -a my-db" in warning
    out = build_outcome(plan)
    assert [(i.action, i.addresses, bool(i.note)) for i in out.ips] == [
        ("release", (V6.address,), False),
        ("keep", (HAND_V4.address,), True),
    ]


def test_named_addresses_are_released_whoever_owns_or_holds_them() -> None:
    held = Ownership({"ip2": V6.address}, {"pr-2": NOW})
    one = make_plan(
        settings(mode="unexpose", addresses=HAND_V4.address), cluster((HAND_V4, V6), held)
    )
    assert [ip.address for ip in one.release] == [HAND_V4.address]
    every = make_plan(settings(mode="unexpose", addresses="all"), cluster((HAND_V4, V6), held))
    assert [ip.address for ip in every.release] == [HAND_V4.address, V6.address]


def test_a_named_address_the_app_does_not_have_changes_nothing() -> None:
    with pytest.raises(PlanError) as err:
        make_plan(settings(mode="unexpose", addresses="192.0.2.1"), cluster((V4,), OURS))
    assert err.value.input_name == "addresses" and "192.0.2.1" in str(err.value)


def test_the_post_step_releases_only_what_its_job_allocated() -> None:
    held = Ownership({"ip1": V4.address, "ip2": V6.address}, {"run-1-1-migrate": NOW})
    only_v4 = Holding("run-1-1-migrate", NOW, only=(V4.address,))
    plan = make_plan(settings(mode="unexpose"), cluster((V4, V6), held), only_v4)
    assert [ip.address for ip in plan.release] == [V4.address]
    # Its own by the step state, even when the record never got written.
    unrecorded = make_plan(settings(mode="unexpose"), cluster((V4, V6)), only_v4)
    assert [ip.address for ip in unrecorded.release] == [V4.address]


# -- sweep ---------------------------------------------------------------------------------------


def test_a_sweep_drops_old_holds_and_those_of_closed_pull_requests() -> None:
    record = Ownership({}, {"pr-1": NOW - 100, "pr-2": NOW - 10 * 86400, "pr-3": NOW - 100})
    assert stale_holds(record, now=NOW, max_age=7 * 86400, gone={"pr-3"}) == ("pr-2", "pr-3")


def test_a_sweep_releases_what_nobody_holds_any_more() -> None:
    held = Ownership(OURS.addresses, {"pr-1": NOW - 10 * 86400})
    plan = make_plan(settings(mode="sweep"), cluster((V4, V6), held), Holding(now=NOW))
    assert plan.dropped_holds == ("pr-1",) and len(plan.release) == 2
    fresh = Ownership(OURS.addresses, {"pr-1": NOW - 60})
    kept = make_plan(settings(mode="sweep"), cluster((V4, V6), fresh), Holding(now=NOW))
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
