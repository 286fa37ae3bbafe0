"""The cluster keeps serving while the action restarts its machines.

A psycopg client connected through the simulator's public pg_tls endpoint (TLS, then the real
PostgreSQL behind it) writes and reads in a loop, reconnecting whenever its connection drops,
while the action rolls a new image out to a 3-machine cluster. The longest stretch without a
successful write is reported; the assertions are functional only (the client writes again after
the rollout, and the gap is shorter than the run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cluster_checks import assert_cluster_serving, rollout_order, updates
from reliability_runs import PASSWORD, checked
from write_gap import WriteLoop, create_table

from flysim import PostgresServer, Simulator

GROUP = "Serving during a rollout"
APP = "my-db"
USER, DB = "app_user", "app_db"
RESTART_SECONDS = 1.0
CHECK_GRACE_SECONDS = 0.5


def test_client_keeps_writing_through_a_rolling_update(
    flysim: Callable[..., Simulator], pg_server: PostgresServer, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "write gap",
        injected=f"rolling image update of 3 machines (each restart {RESTART_SECONDS:g} s, "
        f"checks {CHECK_GRACE_SECONDS:g} s later) under a client writing through pg_tls",
        checked="the client writes again after the rollout; gap < run time; ≤ 1 machine down; "
        "primary last; the action's own verification logs in through every address",
    )
    sim = flysim(
        apps={APP: {"machines": 3, "public_v4": True, "public_v6": True}},
        restart_seconds=RESTART_SECONDS,
        check_grace_seconds=CHECK_GRACE_SECONDS,
    )
    internal = sim.attach_database(APP, USER, PASSWORD, DB)
    create_table(pg_server.dsn(USER, PASSWORD, DB))
    endpoint = sim.public_endpoint(APP)
    assert endpoint is not None, "the cluster is not reachable before the rollout"
    host, port = endpoint
    loop = WriteLoop(
        f"postgresql://{USER}:{quote(PASSWORD, safe='')}@{host}:{port}/{DB}?sslmode=require"
    ).start()
    try:
        assert loop.wait_for_successes(20), f"the client never wrote: {loop.report.errors}"
        start = time.monotonic()
        result = checked(
            sim,
            tmp_path,
            {
                "app": APP,
                "postgres-image": "major",
                "database-url": internal,
                "host": "localhost",
                "verify": "true",
            },
        )
        end = time.monotonic()
        assert loop.wait_for_successes(len(loop.report.successes) + 20, timeout=30)
    finally:
        report = loop.stop()

    assert result.code == 0, result.log
    assert result.outputs["changed"] == "true"
    order = rollout_order(sim, APP)
    assert [r.path.rsplit("/", 1)[1] for r in updates(sim, APP)] == order
    assert sim.max_machines_down(APP) <= 1
    assert_cluster_serving(sim, APP)
    assert "logged in" in result.stdout

    gap = report.longest_gap(start, end)
    run_seconds = end - start
    print(
        f"\nlongest write gap during the rollout: {gap:.2f} s (run {run_seconds:.1f} s, "
        f"{report.succeeded_between(start, end)} writes during the run, {report.failures} failed "
        f"attempts, {report.connections} connections)"
    )
    assert gap < run_seconds, "the client could not write for the whole run"
    scenario.outcome = (
        f"longest write gap {gap:.2f} s in a {run_seconds:.1f} s run; "
        f"{report.succeeded_between(start, end)} writes succeeded meanwhile, "
        f"{report.failures} attempts failed, {report.connections - 1} reconnect(s)"
    )
    scenario.figures.update(
        write_gap_s=round(gap, 2),
        rollout_run_s=round(run_seconds, 1),
        writes_during_run=report.succeeded_between(start, end),
        failed_attempts=report.failures,
        reconnects=report.connections - 1,
        restart_seconds=RESTART_SECONDS,
    )
