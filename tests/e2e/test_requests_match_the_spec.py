"""Every Machines API request the action sends is one Fly documents, or one whose source is named.

The action runs as the runner runs it, against the simulator, through the scenarios that between
them send every kind of request it has: a current cluster exposed (allocations, the record), a
legacy cluster's rolling update (leases, updates, waits, refreshes), one that is stopped
(a skip_launch update and its `settled` wait), a `lifetime: job` run with its post step, an
`unexpose`, and a read-only plan. Each REST request is checked against Fly's published OpenAPI
spec (`openapi_check`); what the spec lacks must be in the table of `docs/fly-behaviour.md` with
its source, and every row of that table must still be something the action sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from exposure import job_env
from openapi_check import all_deviations, deviations, documented, documented_endpoints, endpoints

from flysim import Simulator

from action_run import run_main_step, run_post_step, run_subprocess, step_state

APP = "my-db"
PASSWORD = "spec-pass-123456"


def _scenarios(flysim: Any, tmp_path: Path) -> list[Any]:
    """Run every scenario; the simulators' request logs, together."""
    records: list[Any] = []

    current: Simulator = flysim(apps={APP: {"machines": 2}})
    url = current.attach_database(APP, "spec_user", PASSWORD, "spec_db")
    job = {"app": APP, "lifetime": "job", "database-url": url, "host": "localhost"}
    main = run_main_step(current, tmp_path / "job", job, job_env())
    assert main.code == 0, main.log
    post = run_post_step(current, tmp_path / "post", job, step_state(main), extra_env=job_env())
    assert post.code == 0, post.log
    exposed = run_subprocess(current, tmp_path / "expose", {"app": APP, "verify": "false"})
    assert exposed.code == 0, exposed.log
    closed = run_subprocess(current, tmp_path / "unexpose", {"app": APP, "mode": "unexpose"})
    assert closed.code == 0, closed.log
    records += current.requests

    # Only the first simulator listens on the URL's host (localhost:5432); these need no login.
    legacy: Simulator = flysim(
        apps={APP: {"machines": 3, "legacy": True}}, hostname_on_loopback=False
    )
    planned = run_subprocess(legacy, tmp_path / "plan", {"app": APP, "dry-run": "true"})
    assert planned.code == 0, planned.log
    rolled = run_subprocess(legacy, tmp_path / "legacy", {"app": APP, "verify": "false"})
    assert rolled.code == 0, rolled.log
    records += legacy.requests

    stopped: Simulator = flysim(
        apps={APP: {"machines": 1, "legacy": True}}, hostname_on_loopback=False
    )
    with stopped.lock:
        for m in stopped.app(APP).machines:
            m.state = "stopped"
    asleep = run_subprocess(stopped, tmp_path / "stopped", {"app": APP, "verify": "false"})
    assert asleep.code == 0, asleep.log
    records += stopped.requests
    return records


def test_every_request_is_in_the_spec_or_has_a_named_source(flysim: Any, tmp_path: Path) -> None:
    records = _scenarios(flysim, tmp_path)
    assert sum(1 for r in records if r.api == "rest") > 20
    sent = endpoints(records)
    table = documented_endpoints()
    assert sorted(sent) == sorted(table), "docs/fly-behaviour.md: Requests the action sends"
    for endpoint, operation in sent.items():
        source = table[endpoint]
        # A request in the spec names its operation; one that is not names another source.
        assert (f"`{operation}`" in source) if operation else "spec" not in source, endpoint
    seen = all_deviations(records)
    sources = documented()
    missing = sorted(d for d in seen if d not in sources)
    assert missing == [], (
        "requests the spec does not document and docs/fly-behaviour.md names no source for: "
        f"{missing}"
    )
    assert all(source and source != "—" for source in sources.values()), sources
    # A row for a shape the action no longer sends would vouch for nothing.
    assert sorted(set(sources) - set(seen)) == [], "rows for shapes no longer sent"


def test_the_checker_catches_what_the_spec_lacks() -> None:
    """The checker itself: a wait state outside the enum, an unknown parameter, a body field the
    schema does not name, a path the spec does not have."""
    wait = "/v1/apps/a/machines/m/wait"
    assert deviations("GET", wait, {"state": "failed"}, None) == [
        "GET /apps/{app_name}/machines/{machine_id}/wait ?state=failed"
    ]
    assert deviations("GET", wait, {"state": "started", "timeout": "10"}, None) == []
    assert deviations("GET", wait, {"bogus": "1"}, None)[0].endswith("?bogus")
    lease = "/v1/apps/a/machines/m/lease"
    assert deviations("POST", lease, {}, {"ttl": 30}) == []
    assert deviations("POST", lease, {}, {"ttl": 30, "colour": "red"}) == [
        "POST /apps/{app_name}/machines/{machine_id}/lease body.colour"
    ]
    with pytest.raises(AssertionError, match="breaks the spec"):
        deviations("POST", lease, {}, {"ttl": "thirty"})
    assert deviations("GET", "/v1/apps/a/ip_assignments", {}, None) == [
        "GET /apps/a/ip_assignments"
    ]
