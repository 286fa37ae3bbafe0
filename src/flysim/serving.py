"""What serves a simulator while it runs: the two HTTP servers (Fly's GraphQL API and the
Machines API), the pg_tls proxy with the test CA's certificate in a temporary directory, and the
scheduler's thread. Started together, stopped together, whatever failed in between.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable

from flysim.certs import CertificateAuthority
from flysim.proxy import Backend, ProxyManager
from flysim.server import ApiServer
from flysim.state import State


class Serving:
    """The servers, listeners, files and thread of one simulator, on its state core."""

    def __init__(
        self,
        state: State,
        *,
        host: str,
        ports: tuple[int, int],
        backend: Callable[[], Backend | None],
    ) -> None:
        self._state = state
        self._host = host
        self._ports = ports
        self._backend = backend
        self._ca = CertificateAuthority()
        self._servers: list[ApiServer] = []
        self._tmpdir: str | None = None
        self.ca_path: str | None = None

    def start(self) -> None:
        """Open everything; the caller stops what did open if this raises."""
        state = self._state
        self._tmpdir = tempfile.mkdtemp(prefix="flysim-")
        self.ca_path = self._ca.write(self._tmpdir)
        state.proxy = ProxyManager(
            lock=state.lock,
            route=state.route,
            backend=self._backend,
            cert_dir=self._tmpdir,
            ca=self._ca,
        )
        state.scheduler.start()
        self._servers.append(ApiServer(state, "graphql", self._host, self._ports[0]))
        self._servers.append(ApiServer(state, "rest", self._host, self._ports[1]))
        state.after_change()

    def stop(self) -> None:
        """Close the HTTP servers, the listeners and the timers; remove the files."""
        for server in self._servers:
            server.close()
        with self._state.lock:
            if self._state.proxy is not None:
                self._state.proxy.close()
        self._state.scheduler.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    @property
    def api_base_url(self) -> str:
        return self._servers[0].base_url

    @property
    def flaps_base_url(self) -> str:
        return self._servers[1].base_url
