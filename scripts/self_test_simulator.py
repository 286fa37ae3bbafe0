"""Serve the Fly simulator for the self-test workflow (.github/workflows/self-test.yml).

    python scripts/self_test_simulator.py --host 172.17.0.1 --env-file sim.env --report sim.json

The runner starts a container action on Docker's default bridge network (no job container, no
services), where the host is the bridge gateway: the simulator listens there instead of on
127.0.0.1. Once it is up, `--env-file` gets the FLY_API_BASE_URL / FLY_FLAPS_BASE_URL / token lines
for $GITHUB_ENV. On SIGUSR1 and on exit, `--report` gets what a workflow step can assert on: the
mutating requests seen so far and the app's public IPs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from flysim import Simulator

APP = "my-db"
TOKEN = "fo1_selftesttoken_0123456789"


def write_report(sim: Simulator, path: Path) -> None:
    app = sim.app(APP)
    report = {
        "mutating_requests": [
            {"method": r.method, "path": r.path, "fields": r.graphql_fields}
            for r in sim.mutating_requests()
        ],
        "public_ips": {ip.type: ip.address for ip in app.ips if ip.type in ("v4", "v6")},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="address to listen on (the bridge gateway)")
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()

    stop = threading.Event()
    wanted = threading.Event()

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_report(_signum: int, _frame: FrameType | None) -> None:
        wanted.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_report)

    sim = Simulator(
        token=TOKEN,
        host=args.host,
        restart_seconds=0.2,
        check_grace_seconds=0.2,
        hostname_on_loopback=False,
    )
    sim.add_app(APP, machines=2)
    sim.start()
    try:
        write_report(sim, args.report)
        args.env_file.write_text(
            f"FLY_API_BASE_URL={sim.api_base_url}\n"
            f"FLY_FLAPS_BASE_URL={sim.flaps_base_url}\n"
            f"SIM_FLY_API_TOKEN={TOKEN}\n"
        )
        while not stop.wait(0.1):
            if wanted.is_set():
                wanted.clear()
                write_report(sim, args.report)
        write_report(sim, args.report)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
