"""Mechanisms written once. One clock and one retry policy: `poll.Clock` is the only way the
action reads time or waits (the HTTP client's retries, the rate limiter, leases, holds and the
verification all take one), so a test can run any of them on a fake clock, and
`poll.RetryPolicy` is the only retry schedule. And the two steps share modules, not each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fly_pg_external.flyapi import FlyApi

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fly_pg_external"
CLOCK_MODULE = PACKAGE / "poll.py"


def _imports_time(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name == "time" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "time" and not node.level:
            return True
    return False


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if p != CLOCK_MODULE],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_clock_reads_time(path: Path) -> None:
    assert not _imports_time(path), f"{path.name} reads time itself: take a poll.Clock"


def test_the_fly_protocol_carries_no_transport_policy() -> None:
    """How the client retries is the client's (its RetryPolicy), not part of what the core may
    ask of Fly."""
    assert not hasattr(FlyApi, "retry_delay")


def test_the_http_client_and_its_limiter_share_the_retry_policys_clock() -> None:
    from fake_clock import FakeClock

    from fly_pg_external.fly.http import FlyHttp
    from fly_pg_external.poll import RetryPolicy

    clock = FakeClock()
    http = FlyHttp(retry=RetryPolicy(clock=clock))
    try:
        assert http.limiter._clock is clock
    finally:
        http.close()


def test_the_post_step_does_not_import_the_main_step() -> None:
    """What both steps share lives in `steps.py` and `step_state.py`: the post step runs at the
    end of the job with nothing of the main step's module but its saved state."""
    tree = ast.parse((PACKAGE / "post.py").read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not names & {"main", "fly_pg_external.main"}


@pytest.mark.parametrize("name", ["plan.py", "releases.py"])
def test_the_planner_and_the_release_rule_take_only_the_intent(name: str) -> None:
    """They read what the run asks for (`Intent`), never the settings with their tokens and
    passwords, and never the time (it comes in with the `Holding`)."""
    tree = ast.parse((PACKAGE / name).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not modules & {"settings", "fly_pg_external.settings", "time"}
