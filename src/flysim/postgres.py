"""A throwaway real PostgreSQL server for the simulator to proxy to."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from flysim.pgbin import PostgresNotInstalledError, find_bindir, reachable_bindir, server_user

# The package and its callers import these from here, where they were first defined.
__all__ = ["PostgresNotInstalledError", "PostgresServer", "find_bindir"]

_PR_SET_PDEATHSIG = 1


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# Loaded in the parent so the forked child only has to make one foreign call.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """Runs in the postgres child: if the thread that started it dies (even by SIGKILL), the
    kernel sends SIGQUIT, postgres' immediate shutdown, so no server outlives its owner."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGQUIT), 0, 0, 0)


class PostgresServer:
    """A PostgreSQL server in a temporary directory, on 127.0.0.1 and a free port.

    TCP connections use scram-sha-256 passwords; the unix socket (inside the temporary directory)
    trusts local users so the server can be administered without a password. When running as root
    the server runs as the ``postgres`` user (``nobody`` where there is none), because initdb and
    postgres refuse to run as root; see ``flysim.pgbin`` for where the binaries come from.
    """

    host = "127.0.0.1"

    def __init__(self, *, bindir: str, directory: str, port: int, superuser: str, password: str):
        self.bindir = bindir
        self.directory = directory
        self.port = port
        self.superuser = superuser
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def start(cls, *, bindir: str | None = None, superuser: str = "postgres") -> PostgresServer:
        bindir = bindir or find_bindir()
        directory = tempfile.mkdtemp(prefix="flysim-pg-")
        server = cls(
            bindir=bindir,
            directory=directory,
            port=0,
            superuser=superuser,
            password=secrets.token_urlsafe(18),
        )
        try:
            server._initdb()
            server._launch()
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        return server

    @property
    def datadir(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def version(self) -> str:
        return Path(self.datadir, "PG_VERSION").read_text().strip()

    def _run_as(self) -> tuple[int, int] | None:
        """(uid, gid) to drop root to, as ``runuser -u postgres`` would, but without a wrapper
        process between us and the server (so signals reach postgres itself); None if not root."""
        return server_user()

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def _initdb(self) -> None:
        as_user = self._run_as()
        if as_user:
            os.chown(self.directory, *as_user)
            self.bindir = reachable_bindir(
                self.bindir, as_user, os.path.join(self.directory, "pginstall")
            )
        pwfile = os.path.join(self.directory, "pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if as_user:
            os.chown(pwfile, *as_user)
        result = subprocess.run(
            [
                os.path.join(self.bindir, "initdb"),
                "-D",
                self.datadir,
                "-U",
                self.superuser,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",  # a throwaway cluster does not need fsync; this halves start time
                "--no-instructions",
            ],
            capture_output=True,
            env=self._env(),
            check=False,
            user=as_user[0] if as_user else None,
            group=as_user[1] if as_user else None,
            extra_groups=[] if as_user else None,
        )
        os.unlink(pwfile)
        if result.returncode != 0:
            raise RuntimeError(
                "initdb failed: " + result.stderr.decode(errors="replace").strip()[-2000:]
            )

    def _launch(self) -> None:
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = _free_port(self.host)
            as_user = self._run_as()
            logfile = open(os.path.join(self.directory, "postgres.log"), "ab")  # noqa: SIM115
            self._process = subprocess.Popen(
                [
                    os.path.join(self.bindir, "postgres"),
                    "-D",
                    self.datadir,
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=100",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=self._env(),
                # The parent-death signal follows the *thread* that forked, so only arm it when
                # that is the main thread (a worker thread may end long before the server).
                preexec_fn=_die_with_parent  # noqa: PLW1509 - only calls prctl
                if threading.current_thread() is threading.main_thread()
                else None,
                user=as_user[0] if as_user else None,
                group=as_user[1] if as_user else None,
                extra_groups=[] if as_user else None,
            )
            logfile.close()
            if self._wait_ready(timeout=10):
                return
            last_error = Path(self.directory, "postgres.log").read_text(errors="replace")[-2000:]
            self._terminate()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        """Ready when postmaster.pid says so (its last line is the postmaster status)."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        pidfile = Path(self.datadir, "postmaster.pid")
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return True
            time.sleep(0.01)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT is postgres' "fast" shutdown: it disconnects clients instead of waiting for them.
        for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGQUIT, 2.0), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call more than once."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- administration --------------------------------------------------------------------------
    def dsn(self, user: str, password: str, dbname: str) -> str:
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def create_database(self, user: str, password: str, dbname: str) -> str:
        """Create (or update) a login role and a database it owns; returns a direct TCP DSN.

        Idempotent: an existing role gets the new password, an existing database is kept.
        """
        # \getenv keeps the values out of argv (and so out of `ps`); format() quotes them.
        script = r"""
\set ON_ERROR_STOP on
\getenv u FLYSIM_USER
\getenv p FLYSIM_PASSWORD
\getenv d FLYSIM_DBNAME
SELECT format('CREATE ROLE %I LOGIN', :'u')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'u', :'p') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'d') \gexec
"""
        env = self._env() | {
            "FLYSIM_USER": user,
            "FLYSIM_PASSWORD": password,
            "FLYSIM_DBNAME": dbname,
        }
        self.psql(script, env=env)
        return self.dsn(user, password, dbname)

    def psql(
        self, script: str, *, dbname: str = "postgres", env: dict[str, str] | None = None
    ) -> str:
        """Run SQL as the superuser over the unix socket; returns psql's output."""
        result = subprocess.run(
            [
                os.path.join(self.bindir, "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                self.directory,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                dbname,
            ],
            input=script.encode(),
            capture_output=True,
            env=env or self._env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError("psql failed: " + result.stderr.decode(errors="replace").strip())
        return result.stdout.decode()
