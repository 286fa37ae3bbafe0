"""The HTTP side: one threaded server per API, request logging and fault injection.

Each request goes through the same pipeline: the armed faults that answer instead of the API
(:mod:`flysim.faultrules`), the API's own answer (:mod:`flysim.graphql_api` or
:mod:`flysim.rest_api`, on the state core), then the faults that shape that answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from flysim import _ids, graphql_api, leases, malformed, rest_api
from flysim.faultrules import DEADLINE_EXCEEDED, FaultRule
from flysim.requestlog import Api, RequestRecord

if TYPE_CHECKING:
    from graphql import GraphQLSchema

    from flysim.state import State

log = logging.getLogger("flysim.server")


class ApiServer(ThreadingHTTPServer):
    """Serves one API (``graphql`` or ``rest``) on its own port, in a background thread.

    The two APIs deliberately live on different ports, like api.fly.io and api.machines.dev, so
    a client that mixes up its base URLs gets 404s here too.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: State, api: Api, host: str, port: int) -> None:
        self.state = state
        self.api: Api = api
        # Fly's schema with its resolvers bound to this state (the GraphQL server's only).
        self.schema: GraphQLSchema | None = graphql_api.build(state) if api == "graphql" else None
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"flysim-{api}",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        # Kept-alive client connections would otherwise outlive the simulator.
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)


@dataclass
class _Incoming:
    """A request as read off the wire, before any fault or API sees it."""

    record: RequestRecord
    query: dict[str, list[str]]
    parsed: graphql_api.ParsedRequest | None = None  # a POST to /graphql
    json_body: Any = None
    json_error: bool = False
    nonce: str | None = None


@dataclass
class _Answer:
    """What the API answers; a ``refused`` request (auth, path, method, body) skips the faults
    that shape an answer: it was never processed."""

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    succeeded: bool = False
    refused: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use it
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux), a stall no real API server adds to every response.
    disable_nagle_algorithm = True
    server_version = "Fly/flysim"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this

    # -- plumbing --------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are recorded in ``Simulator.requests``; no stderr noise."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- the pipeline ----------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        incoming = self._read(method, url.path, url.query)
        try:
            self._pipeline(incoming)
        except Exception as exc:
            log.exception("flysim failed on %s %s", method, url.path)
            if incoming.record.ended is None:  # nothing sent yet: say so, not a dropped line
                self._respond(incoming.record, 500, {"error": f"simulator error: {exc}"})
        finally:
            self._finish_record(incoming.record)

    def _read(self, method: str, path: str, query: str) -> _Incoming:
        started = time.monotonic()
        query_multi = parse_qs(query, keep_blank_values=True)
        body = self._read_body()
        auth = self.headers.get("Authorization")
        nonce = self.headers.get(leases.NONCE_HEADER)
        record = RequestRecord(
            request_id=_ids.request_id(),
            api=self.server.api,
            method=method,
            path=path,
            query={k: ",".join(v) for k, v in query_multi.items()},
            auth_scheme=auth.strip().split(" ", 1)[0] if auth and auth.strip() else None,
            has_lease_nonce=nonce is not None,
            content_type=self.headers.get("Content-Type"),
            user_agent=self.headers.get("User-Agent"),
            started=started,
        )
        incoming = _Incoming(record, query_multi, nonce=nonce)
        if self.server.api == "graphql" and path == "/graphql" and method == "POST":
            parsed = incoming.parsed = graphql_api.parse_request(body)
            record.operation_name = parsed.operation_name
            record.operation_type = parsed.operation_type
            record.graphql_fields = list(parsed.fields)
            record.graphql_variables = parsed.variables
        elif body:
            try:
                incoming.json_body = record.json = json.loads(body)
            except ValueError:
                incoming.json_error = True
        return incoming

    def _pipeline(self, incoming: _Incoming) -> None:
        state, record = self.server.state, incoming.record
        latency = state.armed.latency
        if latency:
            time.sleep(latency)
        before = state.armed.take_before(record)
        if before is not None:
            record.fault = before.label
            if self._answered_instead(record, before):
                return
        authorized = state.authorized(self.headers.get("Authorization"))
        if self.server.api == "graphql":
            answer = self._graphql(incoming, authorized)
        else:
            answer = self._rest(incoming, authorized)
        if answer.refused:
            self._respond(record, answer.status, answer.payload)
            return
        after = state.armed.take_after(record, succeeded=answer.succeeded)
        if after is None:
            self._respond(record, answer.status, answer.payload, answer.headers)
            return
        record.fault = after.label
        self._shape_answer(record, after, answer)

    def _answered_instead(self, record: RequestRecord, rule: FaultRule) -> bool:
        """Answer as a fault armed before processing says; False when the request still goes to
        the API (a slow answer)."""
        if rule.kind == "reset":
            self._reset(record)
        elif rule.kind == "fail":
            self._respond(record, rule.status, {"error": _reason(rule.status)})
        elif rule.kind == "rate_limit":
            retry: dict[str, str] = {}
            if rule.retry_after is not None:
                retry["Retry-After"] = _seconds(rule.retry_after)
            self._respond(record, 429, {"error": "rate limit exceeded"}, retry)
        elif rule.kind == "timeout":
            # Not processed: flaps gave up before flyd did anything.
            time.sleep(rule.seconds)
            self._respond(record, 408, {"error": DEADLINE_EXCEEDED})
        else:  # slow: late, then processed as usual
            time.sleep(rule.seconds)
            return False
        return True

    def _graphql(self, incoming: _Incoming, authorized: bool) -> _Answer:
        if not authorized:
            return _Answer(401, graphql_api.UNAUTHENTICATED_BODY, refused=True)
        if incoming.record.path != "/graphql":
            return _Answer(404, {"errors": [{"message": "not found"}]}, refused=True)
        if incoming.parsed is None:
            return _Answer(405, {"errors": [{"message": "use POST for /graphql"}]}, refused=True)
        assert self.server.schema is not None
        status, payload = graphql_api.execute(self.server.schema, incoming.parsed)
        return _Answer(status, payload, succeeded=status == 200 and not payload.get("errors"))

    def _rest(self, incoming: _Incoming, authorized: bool) -> _Answer:
        if not authorized:
            return _Answer(401, rest_api.REST_UNAUTHENTICATED, refused=True)
        if incoming.json_error:
            return _Answer(400, {"error": "request body is not valid JSON"}, refused=True)
        request = rest_api.Request(
            incoming.record, incoming.query, incoming.json_body, incoming.nonce
        )
        response = rest_api.dispatch(self.server.state, request)
        return _Answer(
            response.status,
            response.body,
            response.headers,
            succeeded=200 <= response.status < 300,
        )

    def _shape_answer(self, record: RequestRecord, rule: FaultRule, answer: _Answer) -> None:
        """Answer as a fault armed after processing says: the change has landed."""
        if rule.kind == "malformed":
            data, record.response = malformed.body(answer.payload, rule.at, rule.value)
            self._send(record, answer.status, data, answer.headers)
        elif rule.kind == "timeout":
            # The change landed, the client is told it timed out: the ambiguous 408.
            time.sleep(rule.seconds)
            self._respond(record, 408, {"error": DEADLINE_EXCEEDED})
        else:
            self._reset(record)

    def _respond(
        self,
        record: RequestRecord,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        record.response = payload
        data = b"" if payload is None else json.dumps(payload).encode()
        self._send(record, status, data, headers)

    def _send(
        self, record: RequestRecord, status: int, data: bytes, headers: dict[str, str] | None
    ) -> None:
        self.send_response(status)
        self.send_header("fly-request-id", record.request_id)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        record.status = status
        # Logged before the client can see the answer, so a test that reads the log right after
        # its request returns always finds it there.
        self._finish_record(record)
        self.end_headers()
        if data and record.method != "HEAD":
            self.wfile.write(data)

    def _finish_record(self, record: RequestRecord) -> None:
        if record.ended is None:
            record.ended = time.monotonic()
            self.server.state.log_request(record)

    def _reset(self, record: RequestRecord) -> None:
        """Abort the TCP connection (RST) without sending anything."""
        record.status = None
        self._finish_record(record)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()


def _reason(status: int) -> str:
    return {
        502: "bad gateway",
        503: "service unavailable",
        504: "gateway timeout",
    }.get(status, "internal server error")


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
