from __future__ import annotations

from typing import Any

import pytest

from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.errors import PlanError
from fly_pg_external.fly.machines import machine_from_api, update_body
from fly_pg_external.intent import Intent
from fly_pg_external.outcome import build_outcome
from fly_pg_external.plan import major_image, make_plan
from fly_pg_external.settings import Settings, from_environ

from machines_data import IMAGE, machine, owning


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def intent(**inputs: str) -> Intent:
    """What the planner gets from a run with these inputs."""
    return settings(**inputs).intent


def cluster(machines: list[dict[str, Any]], ips: tuple[IpAddress, ...] = ()) -> ClusterState:
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, None)
    return ClusterState.of(app, [machine_from_api(m) for m in machines])


FLYCAST = IpAddress("ip0", "fdaa:0:1::3", "private_v6", "iad", "2026-01-01T00:00:00Z")
V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")
V6 = IpAddress("ip2", "2a09:8280:1::1", "v6", "global", "2026-01-02T00:00:00Z")


def test_current_cluster_needs_only_ips_and_restarts_nothing() -> None:
    plan = make_plan(intent(), cluster([machine("m1", "primary"), machine("m2")], (FLYCAST,)))
    assert plan.allocate == ("v4", "v6")
    assert plan.updates == ()
    assert plan.config_diff == ""
    assert plan.changed


def test_exposed_cluster_is_a_no_op() -> None:
    plan = make_plan(intent(), cluster([machine("m1", "primary")], (FLYCAST, V4, V6)))
    assert not plan.changed
    assert build_outcome(plan).status == "no-change"
    assert build_outcome(plan).addresses("v4") == ["137.66.1.2"]


def test_private_v6_and_shared_v4_do_not_count_as_public() -> None:
    app = AppInfo("a", "my-db", "postgres_cluster", (FLYCAST,), "66.241.1.1")
    plan = make_plan(intent(), ClusterState.of(app, [machine_from_api(machine("m1", "primary"))]))
    assert plan.allocate == ("v4", "v6")
    assert any(w.kind == "shared-ipv4" and "shared IPv4" in w.text for w in plan.warnings)


def test_legacy_cluster_updates_replicas_first_primary_last() -> None:
    machines = [
        machine("m1", "primary", legacy=True),
        machine("m2", "replica", legacy=True),
        machine("m3", "replica", legacy=True, role_status="critical"),
    ]
    plan = make_plan(intent(), cluster(machines))
    assert [u.machine.id for u in plan.updates] == ["m3", "m2", "m1"]
    for u in plan.updates:
        assert u.new_config["image"] == IMAGE  # image: keep
        svc = u.new_config["services"]
        assert svc == [
            {
                "protocol": "tcp",
                "internal_port": 5432,
                "autostart": False,
                "ports": [{"port": 5432, "handlers": ["pg_tls"]}],
                "concurrency": {"type": "connections", "hard_limit": 1000, "soft_limit": 1000},
            }
        ]
        # every other field is kept as it was
        rest = {k: v for k, v in u.new_config.items() if k != "services"}
        assert rest == u.machine.config
    assert "+[[services]]" in plan.config_diff
    assert "pg_tls" in plan.config_diff


def test_update_sends_the_whole_config_and_skip_launch_for_stopped() -> None:
    plan = make_plan(intent(), cluster([machine("m1", "primary", legacy=True, state="stopped")]))
    body = update_body(plan.updates[0].request())
    assert body["skip_launch"] is True
    assert body["region"] == "iad"
    assert body["config"]["mounts"] and body["config"]["checks"]


def test_other_services_are_kept_and_port_entry_added() -> None:
    m = machine("m1", "primary")
    plan = make_plan(intent(port="15432"), cluster([m]))
    cfg = plan.updates[0].new_config
    assert cfg["services"][1] == m["config"]["services"][1]  # 5433 untouched
    assert {"port": 15432, "handlers": ["pg_tls"]} in cfg["services"][0]["ports"]
    assert {"port": 5432, "handlers": ["pg_tls"]} in cfg["services"][0]["ports"]


def test_port_used_by_another_service_is_refused() -> None:
    with pytest.raises(PlanError) as err:
        make_plan(intent(port="5433"), cluster([machine("m1", "primary")]))
    assert 'Input "port"' in str(err.value)


def test_image_major_moves_to_major_tag_only() -> None:
    assert major_image(IMAGE) == "flyio/postgres-flex:16"
    assert major_image("registry-1.docker.io/flyio/postgres-flex:15.3") == (
        "registry-1.docker.io/flyio/postgres-flex:15"
    )
    with pytest.raises(PlanError):
        major_image("flyio/postgres-flex@sha256:" + "0" * 64)
    plan = make_plan(intent(**{"postgres-image": "major"}), cluster([machine("m1", "primary")]))
    assert plan.updates[0].image_after == "flyio/postgres-flex:16"
    assert not plan.updates[0].services_change


def test_unexpose_releases_only_public_ips_of_requested_families() -> None:
    # Every address is the action's own (its record names them, the Flycast one included),
    # and no hold is left: only the requested family's public address is released.
    record = {ip.id: ip.address for ip in (FLYCAST, V4, V6)}
    plan = make_plan(
        intent(mode="unexpose", **{"ip-versions": "v4"}),
        cluster([owning(machine("m1", "primary"), record)], (FLYCAST, V4, V6)),
    )
    assert [ip.address for ip in plan.release] == ["137.66.1.2"]
    assert plan.kept == ()
    assert plan.updates == ()
    out = build_outcome(plan)
    assert out.addresses("v4") == ["137.66.1.2"]  # not released yet
    assert out.addresses("v6") == ["2a09:8280:1::1"]


def test_url_is_rewritten_and_redacted() -> None:
    s = settings(**{"database-url": "postgres://u:pw1234@my-db.flycast:5432/db?sslmode=disable"})
    plan = make_plan(s.intent, cluster([machine("m1", "primary")]))
    assert plan.redacted_url == "postgres://u:***@my-db.fly.dev:5432/db?sslmode=require"
    assert "pw1234" not in repr(plan)


def test_release_command_and_destroyed_machines_are_ignored() -> None:
    rc = machine("m9", legacy=True)
    rc["config"]["metadata"]["fly_process_group"] = "fly_app_release_command"
    gone = machine("m8", legacy=True, state="destroyed")
    plan = make_plan(intent(), cluster([machine("m1", "primary"), rc, gone]))
    assert plan.updates == ()


def test_no_machines_is_an_error() -> None:
    with pytest.raises(PlanError, match="no active machines"):
        make_plan(intent(), cluster([]))
