"""A fake OCI registry that answers pulls the way GHCR does, on a real HTTP server on 127.0.0.1.

Enough of the distribution API for a pull check (https://distribution.github.io/distribution/spec/api/,
https://github.com/opencontainers/distribution-spec/blob/main/spec.md):

- `GET /v2/` and `GET|HEAD /v2/<name>/manifests/<reference>` without a token answer 401 with
  `WWW-Authenticate: Bearer realm="http://127.0.0.1:<port>/token",service="fake-registry",
  scope="repository:<name>:pull"`, as GHCR does even for a public package;
- `GET /token?service=…&scope=repository:<name>:pull` hands out a token without credentials
  (anonymous) for a public repository;
- with that token the manifest is served by tag or by digest, with `Docker-Content-Digest` and
  its media type, if the `Accept` header allows it (GHCR answers an OCI index to a client that
  does not accept one with 404 MANIFEST_UNKNOWN "OCI index found, but Accept header does not
  support OCI indexes").

A private repository (`visibility="private"`) refuses anonymous pulls at one of the two stages
GHCR has been seen to use: the token request itself (`private_stage="token"`: 403 DENIED), or the
manifest request made with an anonymous token (`private_stage="manifest"`: 403 DENIED).

Images are "pushed" by the test (`push_index`), not through the push API. Every request is logged
with its time (`requests`), and `fail_next` makes the next manifest requests fail (a 404 as right
after a push, or a 5xx).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SERVICE = "fake-registry"

Visibility = Literal["public", "private"]
PrivateStage = Literal["token", "manifest"]


@dataclass(frozen=True)
class RegistryRequest:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    accept: str
    status: int
    at_ns: int  # time.monotonic_ns(), to order it among other fakes' logs


@dataclass
class _Manifest:
    media_type: str
    body: bytes


@dataclass
class _Repository:
    visibility: Visibility = "public"
    manifests: dict[str, _Manifest] = field(default_factory=dict)  # digest -> manifest
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeRegistry:
    def __init__(
        self, *, private_stage: PrivateStage = "token", default_visibility: Visibility = "private"
    ) -> None:
        # GHCR creates a package private on its first push: so does the fake, by default.
        self.private_stage: PrivateStage = private_stage
        self.default_visibility: Visibility = default_visibility
        self._lock = threading.Lock()
        self._repos: dict[str, _Repository] = {}
        self._tokens: dict[str, set[str]] = {}  # token -> repositories it may pull
        self._requests: list[RegistryRequest] = []
        self._failures: list[int] = []  # statuses for the next manifest requests
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The registry part of an image name: `127.0.0.1:<port>`."""
        if self._server is None:
            raise RuntimeError("FakeRegistry is not started")
        return f"127.0.0.1:{self._server.server_address[1]}"

    # -- programming and inspecting -------------------------------------------------------
    def push_index(
        self, name: str, platforms: list[str], *, tag: str | None = None, attestations: bool = True
    ) -> str:
        """Push a multi-arch image (an OCI index of one manifest per platform, plus buildx's
        attestation manifests); returns the index digest."""
        entries = []
        for platform in platforms:
            os_, _, arch = platform.partition("/")
            config = json.dumps({"architecture": arch, "os": os_, "nonce": secrets.token_hex(8)})
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"digest": digest_of(config.encode()), "size": len(config)},
                    "layers": [],
                }
            ).encode()
            digest = self._store(name, OCI_MANIFEST, manifest)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": os_},
                }
            )
            if attestations:
                entries.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_of(manifest + b"attestation"),
                        "size": 1,
                        "platform": {"architecture": "unknown", "os": "unknown"},
                        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                    }
                )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
        ).encode()
        digest = self._store(name, OCI_INDEX, index)
        if tag is not None:
            with self._lock:
                self._repos[name].tags[tag] = digest
        return digest

    def set_visibility(self, name: str, visibility: Visibility) -> None:
        with self._lock:
            self._repos.setdefault(
                name, _Repository(self.default_visibility)
            ).visibility = visibility

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next `times` manifest requests answer `status` (404: not there yet, 5xx: down)."""
        with self._lock:
            self._failures.extend([status] * times)

    @property
    def requests(self) -> list[RegistryRequest]:
        with self._lock:
            return list(self._requests)

    def _store(self, name: str, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        with self._lock:
            repo = self._repos.setdefault(name, _Repository(self.default_visibility))
            repo.manifests[digest] = _Manifest(media_type, body)
        return digest

    # -- protocol (called by the handler) -------------------------------------------------
    def _challenge(self, host: str, name: str | None) -> dict[str, str]:
        value = f'Bearer realm="http://{host}/token",service="{SERVICE}"'
        if name is not None:
            value += f',scope="repository:{name}:pull"'
        return {"WWW-Authenticate": value}

    def _token(self, query: dict[str, str], authorization: str | None) -> tuple[int, Any]:
        if query.get("service") != SERVICE:
            return 400, _errors("UNSUPPORTED", "unknown service")
        m = re.fullmatch(r"repository:(?P<name>[^:]+):pull", query.get("scope", ""))
        if m is None:
            return 400, _errors("UNSUPPORTED", "scope must be repository:<name>:pull")
        if authorization is not None:
            return 401, _errors("UNAUTHORIZED", "this fake hands out anonymous tokens only")
        repo = self._repos.get(m["name"])
        private = repo is None or repo.visibility == "private"
        if private and self.private_stage == "token":
            return 403, _errors("DENIED", "requested access to the resource is denied")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = set() if private else {m["name"]}
        return 200, {"token": token, "access_token": token, "expires_in": 300}

    def _manifest(
        self, name: str, reference: str, authorization: str | None, accept: str, host: str
    ) -> tuple[int, Any, dict[str, str]]:
        token = (authorization or "").removeprefix("Bearer ")
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or token not in self._tokens
        ):
            return (
                401,
                _errors("UNAUTHORIZED", "authentication required"),
                self._challenge(host, name),
            )
        if name not in self._tokens[token]:
            return 403, _errors("DENIED", "requested access to the resource is denied"), {}
        if self._failures:
            status = self._failures.pop(0)
            return status, _errors("MANIFEST_UNKNOWN", f"injected {status}"), {}
        repo = self._repos.get(name)
        digest = reference if reference.startswith("sha256:") else None
        if repo is not None and digest is None:
            digest = repo.tags.get(reference)
        manifest = repo.manifests.get(digest or "") if repo is not None else None
        if manifest is None or digest is None:
            return 404, _errors("MANIFEST_UNKNOWN", "manifest unknown"), {}
        accepted = {part.split(";")[0].strip() for part in accept.split(",")}
        if manifest.media_type not in accepted:
            return (
                404,
                _errors(
                    "MANIFEST_UNKNOWN",
                    "OCI index found, but Accept header does not support OCI indexes",
                ),
                {},
            )
        headers = {"Content-Type": manifest.media_type, "Docker-Content-Digest": digest}
        return 200, manifest.body, headers


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _make_handler(fake: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_HEAD(self) -> None:
            self._handle("HEAD")

        def _handle(self, method: str) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            auth = self.headers.get("Authorization")
            accept = self.headers.get("Accept") or ""
            host = self.headers.get("Host") or fake.host
            headers: dict[str, str] = {}
            with fake._lock:
                if split.path == "/token":
                    status, payload = fake._token(query, auth)
                elif split.path == "/v2/":
                    status, payload, headers = (
                        401,
                        _errors("UNAUTHORIZED", "authentication required"),
                        fake._challenge(host, None),
                    )
                elif m := re.fullmatch(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)", split.path):
                    status, payload, headers = fake._manifest(
                        m["name"], m["ref"], auth, accept, host
                    )
                else:
                    status, payload = 404, _errors("NAME_UNKNOWN", "unknown path")
                fake._requests.append(
                    RegistryRequest(
                        method, split.path, query, auth, accept, status, time.monotonic_ns()
                    )
                )
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers.setdefault("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

    return Handler
