"""The HTTP side of the fake GitHub: a threaded server on 127.0.0.1 whose handler reads each
request, logs it, answers it under the store's lock (the API prefix, the armed failures, a
read-only token, then the route) and sends GitHub's JSON.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import routes
from .context import DOCS, Answer, Ctx, Reply
from .gitdata import GitError
from .models import Request
from .store import Store


class Server(ThreadingHTTPServer):
    """Serves one store; each request on a thread of its own."""

    daemon_threads = True

    def __init__(self, store: Store, port: int) -> None:
        self.store = store
        super().__init__(("127.0.0.1", port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Server
    # Keep-alive like GitHub: PyGithub reuses its connection pool.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each response would wait for the
    # client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "FakeGitHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `fake.requests`; stderr noise would drown test output

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        store = self.server.store
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, bad_json = raw.decode("utf-8", "replace"), True
        auth = self.headers.get("Authorization")
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        with store.lock:
            store.requests.append(
                Request(method, split.path, query, body, auth, time.monotonic_ns())
            )
            status, payload, headers = self._answer(
                store,
                method,
                split.path,
                query=query,
                body=body,
                bad_json=bad_json,
                auth=auth,
                host=host,
            )
        self._send(status, payload, headers)

    def _answer(
        self,
        store: Store,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        body: Any,
        bad_json: bool,
        auth: str | None,
        host: str,
    ) -> Answer:
        route_path = _route_path(path, store.api_prefix)
        if route_path is None:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        try:
            identity = store.identity(auth)
            if identity is None:
                raise Reply(401, "Bad credentials")
            ctx = Ctx(
                store=store,
                identity=identity,
                method=method,
                path=route_path,
                query=query,
                body=body,
                api=f"http://{host}{store.api_prefix}",
                web=f"http://{host}",
            )
            return _routed(ctx, bad_json=bad_json)
        except GitError as e:
            extra = {"errors": e.errors} if e.errors else None
            return e.status, Reply(e.status, str(e), extra).payload, {}
        except Reply as r:
            return r.status, r.payload, {}

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)


def _route_path(path: str, prefix: str) -> str | None:
    """The path the routes match (without the API prefix); None for one outside the API."""
    # GraphQL sits next to the REST API: /graphql, or /api/graphql on GHES (/api/v3).
    if path == prefix.removesuffix("/v3") + "/graphql":
        return "/graphql"
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        return None
    return path[len(prefix) :] or "/"


def _routed(ctx: Ctx, *, bad_json: bool) -> Answer:
    """The route's answer, unless an armed failure, a bad body or a read-only token comes first
    (or an armed failure takes the answer's place after the route had its effect)."""
    failure = ctx.store.take_failure(ctx.method, ctx.path)
    if failure is not None and not failure.after:
        raise Reply(failure.status, failure.message)
    if bad_json:
        raise Reply(400, "Problems parsing JSON")
    # A GraphQL query is a POST but reads nothing but the answer.
    writing = ctx.method != "GET" and ctx.path != "/graphql"
    if writing and ctx.store.writes_forbidden is not None:
        raise Reply(403, ctx.store.writes_forbidden)
    answer = routes.answer(ctx)
    if failure is not None:
        raise Reply(failure.status, failure.message)
    return answer
