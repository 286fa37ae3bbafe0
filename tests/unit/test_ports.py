"""Every port a public address opens is named: 5433 of `fly pg create` as well as the URL's 5432."""

from __future__ import annotations

import logging

import pytest

from fly_pg_external.describe import describe_plan
from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.outcome import build_outcome
from fly_pg_external.plan import make_plan
from fly_pg_external.ports import OpenPort, open_ports
from fly_pg_external.report import comment_body, summary_markdown
from fly_pg_external.settings import Settings, from_environ

from machines_data import machine

V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x", "INPUT_IP-VERSIONS": "v4"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def cluster(*, legacy: bool, ips: tuple[IpAddress, ...] = ()) -> ClusterState:
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, None)
    raw = [machine("m1", "primary", legacy=legacy), machine("m2", "replica", legacy=legacy)]
    return ClusterState.of(app, [machine_from_api(m) for m in raw])


def test_a_fly_pg_create_cluster_opens_5432_and_5433() -> None:
    plan = make_plan(settings().intent, cluster(legacy=False))
    assert [p.port for p in plan.open_ports] == [5432, 5433]
    assert "primary, read-write, through HAProxy" in plan.open_ports[0].what
    assert "each node directly, replicas too" in plan.open_ports[1].what


def test_a_legacy_cluster_opens_only_the_service_the_action_adds() -> None:
    plan = make_plan(settings().intent, cluster(legacy=True))
    assert [p.port for p in plan.open_ports] == [5432]


def test_other_services_are_named_by_their_internal_port() -> None:
    config = {"services": [{"internal_port": 8080, "ports": [{"port": 443, "handlers": ["tls"]}]}]}
    assert open_ports([config]) == (OpenPort(443, 8080, ("tls",)),)
    assert "internal port 8080 (tls)" in open_ports([config])[0].what


@pytest.mark.parametrize("legacy", [False, True])
def test_the_log_the_summary_and_the_comment_name_every_open_port(
    legacy: bool, caplog: pytest.LogCaptureFixture
) -> None:
    plan = make_plan(settings().intent, cluster(legacy=legacy))
    with caplog.at_level(logging.INFO):
        describe_plan(plan)
    outcome = build_outcome(plan)
    summary = summary_markdown(outcome, commit=None, run_url=None)
    comment = comment_body(outcome, commit=None, run_url=None)
    for text in (caplog.text, summary, comment):
        assert "5432" in text and "the primary, read-write" in text
        assert ("5433" in text) is not legacy, text
        if not legacy:
            assert "Closing it takes a new config, so a restart of every machine" in text


def test_nothing_is_said_about_ports_when_no_address_opens_them() -> None:
    unexpose = make_plan(settings(mode="unexpose").intent, cluster(legacy=False, ips=(V4,)))
    assert not unexpose.opens and build_outcome(unexpose).open_ports == ()
    assert "Open on every public address" not in summary_markdown(
        build_outcome(unexpose), commit=None, run_url=None
    )
