"""``python -m flysim``: run the simulator until Ctrl-C / SIGTERM.

Prints the environment a client needs (base URLs, token) and, with Postgres, an internal
``DATABASE_URL`` as `fly pg attach` would have set it. Fly's Machines API rate limits are on
unless ``--no-rate-limits`` is given.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from flysim import malformed
from flysim.faults import Faults
from flysim.postgres import PostgresServer
from flysim.ratelimit import RateLimits
from flysim.simulator import Simulator

# What add_argument_group returns: argparse has no public name for it.
_Group = argparse._ArgumentGroup


def _port_pair(text: str) -> tuple[int, int]:
    public, _, local = text.partition(":")
    try:
        return int(public), int(local)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PUBLIC:LOCAL, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flysim",
        description="Local Fly.io simulator (GraphQL + Machines API + pg_tls proxy).",
    )
    _seed_options(parser.add_argument_group("seed"))
    _server_options(parser.add_argument_group("server"))
    faults = parser.add_argument_group("faults")
    _request_fault_options(faults)
    _platform_fault_options(faults)
    return parser


def _seed_options(seed: _Group) -> None:
    seed.add_argument("--app", action="append", help="app to seed (repeatable; default my-db)")
    seed.add_argument("--machines", type=int, default=3, help="machines per app (default 3)")
    seed.add_argument("--legacy", action="store_true", help="no pg_tls services, no IPs")
    seed.add_argument("--region", default="iad")
    seed.add_argument("--public-v4", action="store_true", help="seed a dedicated IPv4 already")
    seed.add_argument("--public-v6", action="store_true", help="seed a dedicated IPv6 already")
    seed.add_argument("--shared-v4", action="store_true", help="seed a shared IPv4")
    seed.add_argument("--seed", type=int, help="random seed for deterministic IDs")


def _server_options(server: _Group) -> None:
    server.add_argument("--token", default="fo1_testtoken", help="accepted API token")
    server.add_argument(
        "--port", type=int, default=0, help="GraphQL port; the Machines API uses port+1 (0: free)"
    )
    server.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start a real PostgreSQL behind the pg_tls proxy (default: yes)",
    )
    server.add_argument("--restart-seconds", type=float, default=1.0)
    server.add_argument("--check-grace-seconds", type=float, default=1.0)
    server.add_argument(
        "--public-port-map",
        type=_port_pair,
        action="append",
        default=[],
        metavar="PUBLIC:LOCAL",
        help="listen for a public service port on another local port (0: a free one)",
    )
    server.add_argument(
        "--hostname-on-loopback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the first exposed app on 127.0.0.1 as its <app>.fly.dev (default: yes)",
    )
    server.add_argument(
        "--rate-limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Fly's Machines API rate limits: 1/s with bursts of 3 per action and machine or "
        "app, Get Machine 5/s with bursts of 10; 429 with Retry-After (default: yes)",
    )
    server.add_argument(
        "--stale-version-status",
        type=int,
        default=400,
        metavar="STATUS",
        help="status of an update whose current_version is stale (unconfirmed; default 400)",
    )


def _request_fault_options(faults: _Group) -> None:
    """Faults that shape the next matching requests (``Simulator.faults``)."""
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--fail-next", type=int, default=0, metavar="N")
    faults.add_argument("--fail-status", type=int, default=503, choices=(502, 503, 504))
    faults.add_argument("--fail-path", metavar="SUBSTRING", help="only requests whose path has it")
    faults.add_argument("--fail-method", metavar="METHOD")
    faults.add_argument("--rate-limit-next", type=int, default=0, metavar="N")
    faults.add_argument("--retry-after", type=float, default=1.0)
    faults.add_argument("--wait-timeout-next", type=int, default=0, metavar="N")
    faults.add_argument(
        "--timeout-next", type=int, default=0, metavar="N", help="answer 408 deadline_exceeded"
    )
    faults.add_argument("--timeout-path", metavar="SUBSTRING")
    faults.add_argument("--timeout-method", metavar="METHOD")
    faults.add_argument(
        "--timeout-after-commit",
        action="store_true",
        help="process the request first, so its change lands, then answer 408",
    )
    faults.add_argument("--reset-next", type=int, default=0, metavar="N")
    faults.add_argument("--reset-path", metavar="SUBSTRING")
    faults.add_argument("--slow-next", type=int, default=0, metavar="N")
    faults.add_argument("--slow-seconds", type=float, default=5.0)
    faults.add_argument("--lose-allocation-response", type=int, default=0, metavar="N")
    faults.add_argument(
        "--malformed-next",
        type=int,
        default=0,
        metavar="N",
        help="carry out the next N matching requests, then answer 200 with a malformed body",
    )
    faults.add_argument("--malformed-path", metavar="SUBSTRING")
    faults.add_argument("--malformed-method", metavar="METHOD")
    faults.add_argument(
        "--malformed-at", default="", metavar="DOTTED", help="where in the answer, e.g. 0.config"
    )
    faults.add_argument(
        "--malformed-value",
        type=malformed.parse_value,
        default=malformed.NOT_JSON,
        metavar="JSON",
        help="the value put there: JSON text, `absent`, or `not-json` (default: the whole body "
        "is JSON cut short)",
    )


def _platform_fault_options(faults: _Group) -> None:
    """Faults of the first app's machines: checks, starts, failover, leases, hosts."""
    faults.add_argument(
        "--never-healthy",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="machine index (of the first app) whose checks stay critical after an update",
    )
    faults.add_argument(
        "--fails-to-start",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="machine index (of the first app) whose next update ends in `failed`",
    )
    faults.add_argument("--failover-after-updates", type=int, metavar="K")
    faults.add_argument(
        "--hold-lease",
        action="append",
        default=[],
        metavar="INDEX[:OWNER[:TTL]]",
        help="someone else holds this machine's lease (first app)",
    )
    faults.add_argument(
        "--unreachable",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="machine index (of the first app) whose host is unreachable",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apps = args.app or ["my-db"]
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    pg: PostgresServer | None = None
    sim: Simulator | None = None
    try:
        if args.postgres:
            started = time.monotonic()
            pg = PostgresServer.start()
            print(
                f"# PostgreSQL {pg.version} on {pg.host}:{pg.port} "
                f"(started in {time.monotonic() - started:.2f}s)"
            )
        sim = _seeded_simulator(args, apps, pg)
        sim.start()
        _arm_request_faults(sim.faults, args)
        _arm_platform_faults(sim, args, apps[0])
        _print_environment(sim, args.token, apps, with_databases=pg is not None)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        if sim is not None:
            sim.stop()
        if pg is not None:
            pg.stop()


def _seeded_simulator(
    args: argparse.Namespace, apps: list[str], pg: PostgresServer | None
) -> Simulator:
    sim = Simulator(
        token=args.token,
        postgres=pg,
        restart_seconds=args.restart_seconds,
        check_grace_seconds=args.check_grace_seconds,
        hostname_on_loopback=args.hostname_on_loopback,
        api_port=args.port,
        flaps_port=args.port + 1 if args.port else 0,
        public_port_map=dict(args.public_port_map),
        seed=args.seed,
        rate_limits=RateLimits.fly() if args.rate_limits else RateLimits.off(),
        stale_version_status=args.stale_version_status,
    )
    for name in apps:
        sim.add_app(
            name,
            machines=args.machines,
            legacy=args.legacy,
            region=args.region,
            public_v4=args.public_v4,
            public_v6=args.public_v6,
            shared_v4=args.shared_v4,
        )
    return sim


def _print_environment(
    sim: Simulator, token: str, apps: list[str], *, with_databases: bool
) -> None:
    """What a client needs, as lines to paste into a shell or an env file."""
    print(f"FLY_API_BASE_URL={sim.api_base_url}")
    print(f"FLY_FLAPS_BASE_URL={sim.flaps_base_url}")
    print(f"FLY_API_TOKEN={token}")
    for name in apps:
        app = sim.app(name)
        for index, machine in enumerate(app.machines):
            print(f"# {name} machine[{index}] {machine.id} {machine.state} {machine.role}")
        if with_databases:
            user = name.replace("-", "_")
            url = sim.attach_database(name, user, secrets.token_urlsafe(12), user)
            print(f"# {name} internal DATABASE_URL (as `fly pg attach` sets it):")
            print(f"DATABASE_URL={url}")
    print("# pg_tls is served once an app has a dedicated IPv4 and a pg_tls service;")
    print("# the first such app is also on 127.0.0.1 (standing in for <app>.fly.dev).")
    print("# Ctrl-C or SIGTERM to stop.", flush=True)


def _arm_request_faults(faults: Faults, args: argparse.Namespace) -> None:
    faults.latency = args.latency
    if args.fail_next:
        faults.fail_next(
            args.fail_next,
            status=args.fail_status,
            path_contains=args.fail_path,
            method=args.fail_method,
        )
    if args.rate_limit_next:
        faults.rate_limit_next(args.rate_limit_next, retry_after=args.retry_after)
    if args.wait_timeout_next:
        faults.wait_timeout_next(args.wait_timeout_next)
    if args.timeout_next:
        faults.timeout_next(
            args.timeout_next,
            path_contains=args.timeout_path,
            method=args.timeout_method,
            after_commit=args.timeout_after_commit,
        )
    if args.reset_next:
        faults.reset_next(args.reset_next, path_contains=args.reset_path)
    if args.slow_next:
        faults.slow_next(args.slow_next, seconds=args.slow_seconds)
    if args.lose_allocation_response:
        faults.lose_allocation_response(args.lose_allocation_response)
    if args.malformed_next:
        faults.malformed_next(
            args.malformed_next,
            at=args.malformed_at,
            value=args.malformed_value,
            path_contains=args.malformed_path,
            method=args.malformed_method,
        )


def _arm_platform_faults(sim: Simulator, args: argparse.Namespace, first_app: str) -> None:
    machines = sim.app(first_app).machines
    for index in args.never_healthy:
        sim.faults.never_healthy(machines[index].id)
    for index in args.fails_to_start:
        sim.faults.fails_to_start(machines[index].id)
    if args.failover_after_updates:
        sim.faults.failover_after_updates(first_app, args.failover_after_updates)
    for index in args.unreachable:
        sim.set_host_status(first_app, machines[index].id, "unreachable")
    for spec in args.hold_lease:
        index, _, rest = spec.partition(":")
        owner, _, ttl = rest.partition(":")
        sim.hold_lease(
            first_app,
            machines[int(index)].id,
            owner=owner or "someone@example.com",
            ttl=float(ttl or 60),
        )


if __name__ == "__main__":
    sys.exit(main())
