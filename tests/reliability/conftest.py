"""The reliability suite's bookkeeping: what each scenario injected, what came of it, figures.

Every test takes the `scenario` fixture and describes itself (`scenario.describe(...)`); the
figures it measured go in `scenario.figures`. Leak scans are counted automatically. When the
environment variable named by RESULTS_ENV holds a file path, one JSON line per test is appended
to it, with pytest's verdict; `scripts/reliability_report.py` turns that file into
docs/reliability.md. Without it, nothing is written and the tests run as any others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import leaks
import pytest

RESULTS_ENV = "FLY_PG_EXTERNAL_RELIABILITY_RESULTS"
_KEY = pytest.StashKey["Scenario"]()


@dataclass
class Scenario:
    nodeid: str
    group: str = ""
    name: str = ""
    injected: str = ""
    checked: str = ""
    outcome: str = ""
    # Counters the report adds up: faults_injected, faults_survived, faults_stopped_safely,
    # races, bad_inputs, injection_attempts, write_gap_s, queries_ok, ...
    figures: dict[str, Any] = field(default_factory=dict)
    leak_sources: int = 0
    leak_hits: int = 0
    verdict: str = "not run"
    xfail_reason: str = ""
    finding: int | None = None  # the FINDINGS.md entry this test guards against

    def describe(self, group: str, name: str, *, injected: str, checked: str) -> None:
        self.group, self.name, self.injected, self.checked = group, name, injected, checked

    def add(self, figure: str, amount: float = 1) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + amount


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "finding(n): regression test for bug #n of tests/reliability/FINDINGS.md"
    )


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    record = Scenario(nodeid=request.node.nodeid)
    marker = request.node.get_closest_marker("finding")
    if marker is not None:
        record.finding = int(marker.args[0])
    request.node.stash[_KEY] = record

    def count(report: leaks.LeakReport) -> None:
        record.leak_sources += report.sources
        record.leak_hits += len(report.hits)

    leaks.add_listener(count)
    try:
        yield record
    finally:
        leaks.remove_listener(count)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    record = item.stash.get(_KEY, None)
    if record is None:
        return
    if report.when == "setup" and report.outcome != "passed":
        record.verdict = report.outcome
    elif report.when == "call":
        if hasattr(report, "wasxfail"):
            record.verdict = "xfailed" if report.skipped else "xpassed"
            record.xfail_reason = str(report.wasxfail)
        else:
            record.verdict = report.outcome
        if call.excinfo is not None and not record.outcome:
            # The test stopped before describing its outcome: what it tripped on is the outcome.
            first = (str(call.excinfo.value).strip().splitlines() or [call.excinfo.typename])[0]
            record.outcome = first[:200]
    elif report.when == "teardown":
        if report.outcome == "failed":
            record.verdict = "error"
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
