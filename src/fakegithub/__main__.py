"""Run the fake GitHub API by itself, e.g. for the action's container running on the host network.

    python -m fakegithub --port 8900 --pr acme/db#7 --actions-token

prints the base URL to pass as GITHUB_API_URL and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from .models import ACTIONS_BOT, Identity
from .server import FakeGitHub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakegithub", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--login", default=ACTIONS_BOT, help="who the token acts as")
    parser.add_argument(
        "--actions-token",
        action="store_true",
        help="answer 403 to GET /user, like the Actions GITHUB_TOKEN",
    )
    parser.add_argument(
        "--app",
        metavar="SLUG",
        help="act as the GitHub App bot SLUG[bot] with an installation token (403 on GET /user)",
    )
    parser.add_argument("--api-prefix", default="", help="e.g. /api/v3 for GitHub Enterprise")
    parser.add_argument(
        "--pr",
        action="append",
        default=[],
        metavar="OWNER/REPO#N",
        help="a pull request to serve (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.app and args.actions_token:
        parser.error("--app and --actions-token exclude each other")
    fake = FakeGitHub(
        login=Identity.app_bot(args.app).login if args.app else args.login,
        user_endpoint_forbidden=args.actions_token or bool(args.app),
        api_prefix=args.api_prefix,
        port=args.port,
    )
    for spec in args.pr:
        repo, _, number = spec.partition("#")
        if not number.isdigit():
            parser.error(f"--pr wants OWNER/REPO#NUMBER, got {spec!r}")
        fake.add_pr(repo, int(number))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
