"""The command line: which steps to run (in release order), the configuration from the arguments
and the runner's environment, and the run of the steps, each in a log group, a `ReleaseError`
shown as an `::error::` that stops the release."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from fly_pg_external.gha import Actions

from . import __doc__ as package_doc
from .commit import release_commit
from .config import IMAGE_NAME, PLATFORMS, SCRIPTS, Config, Docker, Sleep, State
from .context import Context
from .errors import ReleaseError
from .github import GitHub
from .image import build, docker_runner, push
from .preflight import preflight
from .publish import publish
from .registry import check_public
from .run import run_by_digest
from .tags import move_tags
from .versions import Version

# The steps in release order, the only order they run in.
STEP_FUNCTIONS: dict[str, Callable[[Context], None]] = {
    "preflight": preflight,
    "build": build,
    "push": push,
    "check-public": check_public,
    "run": run_by_digest,
    "commit": release_commit,
    "tag": move_tags,
    "publish": publish,
}
STEPS = tuple(STEP_FUNCTIONS)


def main(
    argv: Sequence[str] | None = None,
    *,
    docker: Docker | None = None,
    env: Mapping[str, str] | None = None,
    sleep: Sleep = time.sleep,
    github_transport: httpx.BaseTransport | None = None,
    registry_transport: httpx.BaseTransport | None = None,
) -> int:
    env = os.environ if env is None else env
    cfg, state, steps = parse_args(sys.argv[1:] if argv is None else argv, env)
    gha = Actions(env)
    gh = GitHub(cfg, gha, sleep, github_transport)
    ctx = Context(
        cfg, state, gha, docker or docker_runner(cfg.dry_run, gha), gh, sleep, registry_transport
    )
    try:
        for step in steps:
            with gha.group(step):
                STEP_FUNCTIONS[step](ctx)
            state.done.append(step)
    except ReleaseError as e:
        gha.error(str(e), title=e.title)
        return 1
    finally:
        gh.close()
    return 0


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Config, State, list[str]]:
    parser = _parser(env)
    args = parser.parse_args(argv)
    steps = list(STEPS) if args.steps == ["all"] else args.steps
    unknown = [s for s in steps if s not in STEPS]
    if unknown or steps != sorted(steps, key=STEPS.index) or len(set(steps)) != len(steps):
        parser.error(
            f"steps are all, or some of {' '.join(STEPS)} in that order "
            f"(got {' '.join(args.steps)})"
        )
    version = Version.parse(args.version)
    if version is None:
        parser.error(f"--version must be X.Y.Z, got {args.version!r}")
    if not args.repository or not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repository):
        parser.error("--repository OWNER/NAME (or GITHUB_REPOSITORY) is required")
    if not args.sha or not re.fullmatch(r"[0-9a-f]{40}", args.sha):
        parser.error("--sha (or GITHUB_SHA) must be the 40-hex source commit")
    image = args.image or f"ghcr.io/{args.repository.split('/')[0].lower()}/{IMAGE_NAME}"
    if args.digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", args.digest):
        parser.error("--digest must be sha256:<64 hex>")
    cfg = Config(
        root=args.root.resolve(),
        version=version,
        repository=args.repository,
        source_sha=args.sha,
        image=image,
        platforms=tuple(p for p in args.platforms.split(",") if p),
        api_url=env.get("GITHUB_API_URL", "https://api.github.com"),
        server_url=env.get("GITHUB_SERVER_URL", "https://github.com"),
        token=env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None,
        dry_run=args.dry_run,
        simulator_python=args.simulator_python,
        output=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
    )
    return cfg, State(digest=args.digest, release_sha=args.release_commit), steps


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="release.py",
        description=(package_doc or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "steps",
        nargs="+",
        metavar="STEP",
        help=f"all, or some of: {' '.join(STEPS)} (in that order)",
    )
    parser.add_argument(
        "--version", required=True, help="X.Y.Z (or vX.Y.Z): the version to release"
    )
    parser.add_argument("--repository", default=env.get("GITHUB_REPOSITORY"), help="OWNER/NAME")
    parser.add_argument("--sha", default=env.get("GITHUB_SHA"), help="the source commit")
    parser.add_argument(
        "--image", help=f"registry/owner/name (default ghcr.io/<owner>/{IMAGE_NAME})"
    )
    parser.add_argument("--digest", help="the pushed image's digest, for steps after `push`")
    parser.add_argument("--release-commit", help="the release commit, for steps after `commit`")
    parser.add_argument("--platforms", default=",".join(PLATFORMS))
    parser.add_argument("--root", type=Path, default=SCRIPTS.parent, help="the source checkout")
    parser.add_argument("--simulator-python", default=sys.executable)
    parser.add_argument("--dry-run", action="store_true")
    return parser
