"""What `make test` needs beyond Python and make, checked before any test runs.

Each missing piece is named with the Debian/Ubuntu command that installs it, and the check fails:
a test that finds its tool missing fails too (under CI it never skips), but far from the cause.
It installs nothing itself; `.ci/run` installs all of it, starts the Docker daemon and builds the
stand-in base image.

    python scripts/check_test_prereqs.py      # exit 0: all there; 1: the list of what is not
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flysim.postgres import PostgresNotInstalledError, find_bindir  # noqa: E402

PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
STANDIN_IMAGE = "fly-pg-external-standin-base:py3-bookworm"


@dataclass(frozen=True)
class Missing:
    what: str
    why: str
    fix: str  # a shell command; {sudo} stands for `sudo ` where not root
    apt: tuple[str, ...] = ()  # the Debian packages `fix` installs, for the one-line summary


def missing_tools() -> list[Missing]:
    found: list[Missing] = []
    groups = (
        (("node", "npm"), "Node.js", "the client matrix runs node-postgres", ("nodejs", "npm")),
        (
            ("java", "keytool"),
            "a JVM",
            "the client matrix runs pgjdbc, with a trust store made by keytool",
            ("default-jre-headless",),
        ),
    )
    for tools, name, why, packages in groups:
        absent = [f"`{tool}`" for tool in tools if shutil.which(tool) is None]
        if absent:
            fix = "{sudo}apt-get install " + " ".join(packages)
            found.append(Missing(f"{name} ({', '.join(absent)})", why, fix, packages))
    if not PGJDBC_JAR.is_file():
        found.append(
            Missing(
                str(PGJDBC_JAR),
                "pgjdbc, the client matrix's JDBC driver",
                "{sudo}apt-get install libpostgresql-jdbc-java",
                ("libpostgresql-jdbc-java",),
            )
        )
    return found


def missing_postgres() -> list[Missing]:
    try:
        find_bindir()
    except PostgresNotInstalledError:
        # Not the demo's wheel (`pip install -e '.[demo-pg]'`): the client matrix needs Debian's
        # psql too, which this package brings.
        return [
            Missing(
                "PostgreSQL (initdb, postgres, psql)",
                "the simulator runs a real PostgreSQL; the client matrix connects with psql",
                "{sudo}apt-get install postgresql",
                ("postgresql",),
            )
        ]
    if shutil.which("psql") is None:
        return [
            Missing(
                "`psql`",
                "the client matrix connects with Debian's psql and libpq",
                "{sudo}apt-get install postgresql-client",
                ("postgresql-client",),
            )
        ]
    return []


def missing_docker() -> list[Missing]:
    daemon = "as root: (setsid dockerd >/tmp/dockerd.log 2>&1 &), or systemctl start docker"
    why = "the container tests build and run the action's image, and run `make demo` in one"
    if shutil.which("docker") is None:
        return [
            Missing(
                "Docker", why, "{sudo}apt-get install docker.io, then " + daemon, ("docker.io",)
            ),
            *missing_standin(image_present=False),
        ]
    info = subprocess.run(
        ["docker", "info"], capture_output=True, text=True, timeout=60, check=False
    )
    if info.returncode != 0:
        # The daemon's own words tell a stopped daemon from a socket this user may not open.
        said = (info.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        what = f"a Docker daemon that answers (`docker info`: {said})"
        return [Missing(what, why, daemon), *missing_standin(False)]
    image = subprocess.run(
        ["docker", "image", "inspect", STANDIN_IMAGE], capture_output=True, timeout=60, check=False
    )
    return missing_standin(image_present=image.returncode == 0)


def missing_standin(image_present: bool) -> list[Missing]:
    """The base the container tests build on, unless another is chosen: made once (then reused)
    by scripts/build-standin-base.sh with debootstrap, as root."""
    if os.environ.get("FLY_PG_EXTERNAL_BASE_IMAGE", "standin") != "standin" or image_present:
        return []
    if shutil.which("debootstrap") and os.geteuid() == 0:
        return []
    return [
        Missing(
            f"the stand-in base image {STANDIN_IMAGE}",
            "the container tests build on it, since no image registry is assumed reachable",
            "{sudo}apt-get install debootstrap, then: {sudo}make standin-base",
            ("debootstrap",),
        )
    ]


def report(missing: list[Missing]) -> str:
    sudo = "" if os.geteuid() == 0 else "sudo "
    lines = ["`make test` needs what this machine does not have:"]
    for item in missing:
        lines += [f"  - {item.what}: {item.why}", f"      {item.fix.format(sudo=sudo)}"]
    packages = list(dict.fromkeys(p for item in missing for p in item.apt))
    if packages:
        lines += [
            "All the packages at once (Debian/Ubuntu):",
            f"  {sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends "
            + " ".join(packages),
        ]
    lines.append(
        "Or run .ci/run (as root), which installs all of it, starts the Docker daemon, builds the "
        "stand-in image, then runs `make test` and `make demo`."
    )
    return "\n".join(lines)


def main() -> int:
    missing = missing_tools() + missing_postgres() + missing_docker()
    if missing:
        print(report(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
