"""Holds and ownership under random interleavings: a model-based test (Hypothesis stateful).

Several holders in two repositories (pull requests that expose and close, `lifetime: job` jobs
with their main and post steps, two matrix legs of one job among them) act on one app in a
random order, with injected faults: a record write that fails on one machine (a stale copy), a
503 on an allocation or a release, a cancellation (the `Cancelled` a SIGTERM raises) before any
one of a run's Fly calls, a nightly sweep, an address made by hand. Every run is the action's
own entry point against the simulator (real HTTP, real pg_tls proxy, real PostgreSQL). After
every step:

- an address the action did not allocate is never released (nobody named it);
- every address handed out to a live holder (its run succeeded, it has not closed) is still
  there and takes a login (the URL's user and password, through pg_tls);
- once a releasing run succeeds with no live holder left (nor one whose state a failed run left
  unknown), no address of the action's own is left open.

Against the code before holders named their repository and leg, it finds a sweep of one
repository dropping the other's pull request #2 (and a cancelled post step escaping as an
exception) within a few minutes. Runs are sequential here: the races between two runs at once
are made certain, one by one, in tests/e2e/test_holds_under_concurrency.py.
"""

from __future__ import annotations

import io
import itertools
import threading
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from exposure import accepts, pr_event
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fakegithub import FakeGitHub
from fly_pg_external import main as action_main
from fly_pg_external import post as action_post
from fly_pg_external.steps import Cancelled
from flysim import RateLimits, Simulator

from action_run import action_env, parse_file_command, parse_outputs

APP = "my-db"
REPOS = ("acme/infra", "acme/web")
GH_TOKEN = "ghs_Model0Holds0Fake0Token0xyz0123"
PASSWORD = "model-pass-123456"
FIGURES: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    FIGURES[name] = FIGURES.get(name, 0) + n


class CancelAt:
    """A Fly client that raises `Cancelled` before its `at`-th call made on the main thread
    (where the runner's SIGTERM lands), and passes every call through otherwise."""

    def __init__(self, inner: Any, at: int) -> None:
        self._inner, self._at, self._calls = inner, at, 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name in ("close", "request_timeout"):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                self._calls += 1
                if self._calls == self._at:
                    count("cancellations")
                    raise Cancelled("SIGTERM")
            return value(*args, **kwargs)

        return call


def handed(outputs: dict[str, str], inputs: dict[str, str]) -> set[str]:
    """The addresses a run's holder relies on: those of the families it asked for (the outputs
    name every public address; one of a family it did not ask for is held by others or none)."""
    families = inputs.get("ip-versions", "v4,v6").split(",")
    return {outputs[f"ip{f}"] for f in families if outputs.get(f"ip{f}")}


class HoldsModel(RuleBasedStateMachine):
    pg_server: Any = None
    workdir: Path = Path()

    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulator(
            postgres=self.pg_server,
            token="fo1_simulatortoken_0123456789",
            restart_seconds=0.05,
            check_grace_seconds=0.05,
            # Runs follow each other within the second, and Fly's limits would cost most of
            # them a 429 and a second's wait: time this test spends on interleavings instead
            # (429s have tests of their own).
            rate_limits=RateLimits.off(),
        )
        self.sim.add_app(APP, machines=3)
        self.sim.start()
        self.url = self.sim.attach_database(APP, "model_user", PASSWORD, "model_db")
        self.github = FakeGitHub(token=GH_TOKEN)
        self.github.__enter__()
        for repo in REPOS:
            for n in (1, 2):
                self.github.add_pr(repo, n)
        self.runs = itertools.count()
        self.foreign: set[str] = set()
        self.live: dict[str, set[str]] = {}  # holder -> addresses handed out to it
        self.unknown: set[str] = set()  # a failed run left its hold in an unknown state
        self.jobs: dict[str, dict[str, str]] = {}  # job -> the state its main step saved
        self.cancel_at: int | None = None
        self.last_release_ok = False
        self.closed_prs: set[str] = set()

    def teardown(self) -> None:
        self.github.__exit__(None, None, None)
        self.sim.stop()

    # -- running the action ----------------------------------------------------------------

    def _env(self, inputs: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
        where = self.workdir / f"run-{next(self.runs)}"
        env = action_env(self.sim, where, inputs)
        (where / "file_commands" / "state").touch()
        env.update(
            {
                "GITHUB_STATE": str(where / "file_commands" / "state"),
                "GITHUB_API_URL": self.github.base_url,
                "GITHUB_SERVER_URL": self.github.server_url,
                "FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2",
                "FLY_PG_EXTERNAL_LEASE_WAIT": "5",
                **extra,
            }
        )
        return env

    def _run(self, module: Any, env: dict[str, str]) -> tuple[int, dict[str, str]]:
        at, self.cancel_at = self.cancel_at, None
        make = action_main.make_fly
        if at is not None:
            module.make_fly = lambda s: CancelAt(make(s), at)
        try:
            with redirect_stdout(io.StringIO()):
                code = module.main(env)
        finally:
            module.make_fly = make
            self.sim.faults.clear()
        count("runs")
        return code, parse_outputs(Path(env["GITHUB_OUTPUT"]).read_text())

    def _expose(self, holder: str, inputs: dict[str, str], extra: dict[str, str]) -> None:
        code, out = self._run(action_main, self._env(inputs, extra))
        if code == 0 and out.get("exposed") == "true":
            self.live[holder] = handed(out, inputs)
            self.unknown.discard(holder)
        else:
            self.live.pop(holder, None)
            self.unknown.add(holder)

    def _released(self, holder: str, code: int) -> None:
        self.live.pop(holder, None)
        if code == 0:
            self.unknown.discard(holder)
        else:
            self.unknown.add(holder)
        self.last_release_ok = code == 0

    # -- faults ------------------------------------------------------------------------------

    @rule(at=st.integers(1, 12))
    def cancel_the_next_run(self, at: int) -> None:
        self.cancel_at = at

    @rule(machine=st.integers(0, 2))
    def a_record_write_fails_on_one_machine(self, machine: int) -> None:
        mid = sorted(m.id for m in self.sim.app(APP).machines)[machine]
        self.sim.faults.fail_next(20, status=500, path_contains=f"/machines/{mid}/metadata/")
        count("stale_copy_faults")

    @rule(what=st.sampled_from(["allocateIpAddress", "releaseIpAddress"]))
    def the_next_call_of_a_kind_fails(self, what: str) -> None:
        self.sim.faults.fail_next(1, status=503, operation=what)
        count("server_error_faults")

    @precondition(lambda self: not self.foreign and not self._public_of("v4"))
    @rule()
    def someone_allocates_an_address_by_hand(self) -> None:
        # Straight through the simulator, past any fault armed for the next run's calls.
        ip = self.sim.allocate_ip(self.sim.app(APP), "v4", "")
        assert ip is not None
        self.foreign.add(ip.address)

    # -- holders ------------------------------------------------------------------------------

    @rule(repo=st.sampled_from(REPOS), n=st.sampled_from([1, 2]), v6=st.booleans())
    def a_pull_request_exposes(self, repo: str, n: int, v6: bool) -> None:
        inputs = {"app": APP, "database-url": self.url, "host": "localhost", "verify": "false"}
        inputs["ip-versions"] = "v4,v6" if v6 else "v4"
        extra = {**pr_event(self.workdir / repo, n), "GITHUB_REPOSITORY": repo}
        # A pull request's runs come while it is open: one closed before is reopened.
        self.github.add_pr(repo, n, state="open")
        self.closed_prs.discard(f"{repo}#pr-{n}")
        self._expose(f"{repo}#pr-{n}", inputs, extra)

    @rule(repo=st.sampled_from(REPOS), n=st.sampled_from([1, 2]))
    def a_pull_request_closes(self, repo: str, n: int) -> None:
        extra = {**pr_event(self.workdir / repo, n, "closed"), "GITHUB_REPOSITORY": repo}
        code, _ = self._run(action_main, self._env({"app": APP, "mode": "unexpose"}, extra))
        self._released(f"{repo}#pr-{n}", code)

    @rule(repo=st.sampled_from(REPOS), job=st.sampled_from(["a", "b"]), leg=st.integers(1, 2))
    def a_job_starts(self, repo: str, job: str, leg: int) -> None:
        """`leg`: a matrix leg (or a reusable workflow's call): the runner gives every leg of a
        job the same run id, attempt and job name."""
        key = f"{repo}/{job}/{leg}"
        if key in self.jobs:
            return
        inputs = {"app": APP, "lifetime": "job", "database-url": self.url, "host": "localhost"}
        names = {"GITHUB_REPOSITORY": repo, "GITHUB_JOB": job, "GITHUB_RUN_ID": "7"}
        env = self._env(inputs, {**names, "GITHUB_RUN_ATTEMPT": "1"})
        code, out = self._run(action_main, env)
        state = parse_file_command(Path(env["GITHUB_STATE"]).read_text())
        self.jobs[key] = {**state, "repo": repo, "job": job}
        if code == 0 and out.get("exposed") == "true":
            self.live[key] = handed(out, inputs)
        else:
            self.unknown.add(key)

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def a_job_ends(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.jobs)))
        job = self.jobs.pop(key)
        inputs = {"app": APP, "lifetime": "job", "database-url": self.url, "host": "localhost"}
        state = {f"STATE_{k}": v for k, v in job.items() if k in ("HOLDER", "ALLOCATED")}
        names = {"GITHUB_REPOSITORY": job["repo"], "GITHUB_JOB": job["job"], "GITHUB_RUN_ID": "7"}
        env = self._env(inputs, {**names, "GITHUB_RUN_ATTEMPT": "1", **state})
        code, _ = self._run(action_post, env)
        self._released(key, code)

    @rule(repo=st.sampled_from(REPOS), n=st.sampled_from([1, 2]))
    def a_pull_request_closes_on_github_only(self, repo: str, n: int) -> None:
        """Closed without its `closed` run (cancelled, skipped): only a sweep can tell."""
        self.github.add_pr(repo, n, state="closed")
        holder = f"{repo}#pr-{n}"
        self.closed_prs.add(holder)
        if holder in self.live:
            self.live.pop(holder)
            self.unknown.add(holder)  # until a sweep of its repository drops it

    @rule(repo=st.sampled_from(REPOS))
    def a_nightly_sweep(self, repo: str) -> None:
        extra = {"GITHUB_EVENT_NAME": "schedule", "GITHUB_REPOSITORY": repo}
        inputs = {"app": APP, "mode": "sweep", "github-token": GH_TOKEN}
        code, _ = self._run(action_main, self._env(inputs, extra))
        if code == 0:
            self.unknown -= {h for h in self.closed_prs if h.startswith(f"{repo}#")}
        self.last_release_ok = code == 0
        count("sweeps")

    # -- what must hold after every step ---------------------------------------------------------

    def _public_of(self, family: str) -> set[str]:
        with self.sim.lock:
            return {ip.address for ip in self.sim.app(APP).ips if ip.type == family}

    def _public(self) -> set[str]:
        with self.sim.lock:
            return {ip.address for ip in self.sim.app(APP).ips if ip.type in ("v4", "v6")}

    @invariant()
    def an_address_made_by_hand_is_never_released(self) -> None:
        assert self.foreign <= self._public()

    @invariant()
    def every_live_holder_still_connects(self) -> None:
        public = self._public()
        for holder, handed in self.live.items():
            assert handed <= public, f"{holder} was handed {handed}; the app has {public}"
            for address in handed:
                assert accepts(address), f"{address} of {holder} refuses connections"
            address = sorted(handed)[0] if handed else None
            if address is not None:
                with psycopg.connect(self.url_to(address), connect_timeout=5) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                count("logins")
        count("invariant_checks")

    @invariant()
    def nothing_of_its_own_stays_open_once_nobody_holds_it(self) -> None:
        if not self.last_release_ok or self.live or self.unknown or self.jobs:
            return
        owned_open = self._public() - self.foreign
        assert owned_open == set(), f"nobody holds {owned_open}, yet it is open"
        count("closed_checks")

    def url_to(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"postgresql://model_user:{PASSWORD}@{host}:5432/model_db?sslmode=require"


@pytest.mark.timeout(1200)  # a failure is shrunk to its shortest story, which takes minutes
def test_holds_stay_true_under_random_interleavings(
    pg_server: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        "Holds",
        "random interleavings (model-based)",
        injected="expose, close, job main and post steps (matrix legs of one job among them), "
        "sweeps from holders in two repositories; stale copies (a record write failing on one "
        "machine), 503s on allocations and releases, a cancellation before any Fly call of a "
        "run, an address made by hand",
        checked="after every step: a hand-made address is never released; every address handed "
        "to a live holder is there and takes a login; once a releasing run succeeds with no "
        "holder left, nothing of the action's own is open",
    )
    FIGURES.clear()
    HoldsModel.pg_server = pg_server
    HoldsModel.workdir = tmp_path
    runner = HoldsModel.TestCase()
    runner.settings = settings(
        max_examples=60,
        stateful_step_count=15,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    runner.runTest()
    scenario.figures.update(FIGURES)
    scenario.outcome = (
        f"{FIGURES.get('runs', 0)} runs, {FIGURES.get('cancellations', 0)} cancelled, "
        f"{FIGURES.get('stale_copy_faults', 0)} stale-copy faults, "
        f"{FIGURES.get('logins', 0)} logins checked: every invariant held"
    )
    assert FIGURES.get("runs", 0) > 0
