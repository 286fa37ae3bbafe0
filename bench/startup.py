"""Process start and import time of the action's entrypoint, in fresh interpreters."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.measure import median

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint.py"
_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s+(\S.*)$")


@dataclass(frozen=True)
class Startup:
    interpreter: float  # `python -c pass`
    import_main: float  # `python -c "import fly_pg_external.main"`
    import_self: float  # -X importtime: cumulative import of fly_pg_external.main
    entrypoint: float  # `python entrypoint.py` with an invalid input: start, import, validate, exit
    entrypoint_exit: int
    python: str


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "FLY_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _timed(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def import_time(env: dict[str, str], cwd: str) -> float:
    """Seconds `fly_pg_external.main` takes to import, by Python's own -X importtime."""
    _, _, err = _timed(
        [sys.executable, "-X", "importtime", "-c", "import fly_pg_external.main"], env, cwd
    )
    for line in err.splitlines():
        m = _IMPORTTIME.match(line.strip())
        if m and m.group(3).strip() == "fly_pg_external.main":
            return int(m.group(2)) / 1e6
    return float("nan")


def measure_startup(runs: int = 5) -> Startup:
    env = _env()
    bad = {**env, "INPUT_APP": "Not_A_Valid_App_Name", "INPUT_FLY-API-TOKEN": "fo1_x"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        # One warm-up of each, so .pyc files exist as they do in the image.
        _timed([py, "-c", "import fly_pg_external.main"], env, cwd)
        _timed([py, str(ENTRYPOINT)], bad, cwd)
        interp = [_timed([py, "-c", "pass"], env, cwd)[0] for _ in range(runs)]
        imp = [_timed([py, "-c", "import fly_pg_external.main"], env, cwd)[0] for _ in range(runs)]
        self_import = [import_time(env, cwd) for _ in range(runs)]
        entry = [_timed([py, str(ENTRYPOINT)], bad, cwd) for _ in range(runs)]
    return Startup(
        interpreter=median(interp),
        import_main=median(imp),
        import_self=median(self_import),
        entrypoint=median([e[0] for e in entry]),
        entrypoint_exit=entry[-1][1],
        python=sys.version.split()[0],
    )
