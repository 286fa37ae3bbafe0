"""The repository's REST API as the release uses it: git data, refs, releases."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx

from fly_pg_external.gha import Actions

from .config import DRY_SHA, Config, Sleep
from .errors import ReleaseError
from .versions import Version


class GitHub:
    """The repository's REST API. A request is retried on a transport error or a 5xx, except a
    POST, which could have landed. In a dry run writes are printed instead of made."""

    def __init__(
        self,
        cfg: Config,
        gha: Actions,
        sleep: Sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "fly-pg-external-release",
        }
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token}"
        self.dry_run = cfg.dry_run
        self.gha = gha
        self.sleep = sleep
        self.http = httpx.Client(
            base_url=f"{cfg.api_url.rstrip('/')}/repos/{cfg.repository}/",
            headers=headers,
            timeout=30,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(4):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if method == "POST" or attempt == 3:
                    raise ReleaseError("GitHub API", f"{method} {path}: {e}") from e
            else:
                if response.status_code < 500 or method == "POST" or attempt == 3:
                    return response
            self.sleep(2.0 * 2**attempt)
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.is_success:
            return None if response.status_code == 204 else response.json()
        try:
            detail = response.json().get("message", "")
        except ValueError:
            detail = response.text[:200]
        raise ReleaseError("GitHub API", f"{method} {path}: HTTP {response.status_code} {detail}")

    def get(self, path: str, **params: str) -> Any:
        return self._json("GET", path, self._send("GET", path, params=params))

    def find(self, path: str) -> Any | None:
        """GET, or None on 404."""
        response = self._send("GET", path)
        return None if response.status_code == 404 else self._json("GET", path, response)

    def get_all(self, path: str) -> list[Any]:
        items: list[Any] = []
        response = self._send("GET", path, params={"per_page": "100"})
        while True:
            page = self._json("GET", path, response)
            items.extend(page)
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return items
            response = self._send("GET", nxt)

    def write(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        if self.dry_run:
            shown = {
                k: v if len(json.dumps(v)) <= 100 else f"<{len(json.dumps(v))} bytes>"
                for k, v in body.items()
            }
            self.gha.info(f"[dry-run] {method} {path} {json.dumps(shown, default=str)}")
            return {"sha": DRY_SHA, "id": 0, "html_url": ""}
        return self._json(method, path, self._send(method, path, json=dict(body)))

    # -- reads built on the above --
    def peel(self, obj: Mapping[str, Any]) -> str:
        """The commit a ref's object names, through annotated tag objects."""
        while obj["type"] == "tag":
            obj = self.get(f"git/tags/{obj['sha']}")["object"]
        return str(obj["sha"])

    def ref_commit(self, ref: str) -> str | None:
        found = self.find(f"git/ref/{ref}")
        return None if found is None else self.peel(found["object"])

    def version_tags(self) -> dict[Version, str]:
        """Every vX.Y.Z tag: version -> the commit it names."""
        tags: dict[Version, str] = {}
        for ref in self.get_all("git/matching-refs/tags/v"):
            version = Version.parse(ref["ref"].removeprefix("refs/tags/"))
            if version is not None and ref["ref"] == f"refs/tags/{version.tag}":
                tags[version] = self.peel(ref["object"])
        return tags

    def commit(self, sha: str) -> dict[str, Any]:
        return dict(self.get(f"git/commits/{sha}"))

    def file_at(self, commit_sha: str, path: str) -> str:
        tree = self.commit(commit_sha)["tree"]["sha"]
        entries = self.get(f"git/trees/{tree}", recursive="1")["tree"]
        blob = next((e["sha"] for e in entries if e["path"] == path and e["type"] == "blob"), None)
        if blob is None:
            raise ReleaseError("GitHub API", f"{path} is not in commit {commit_sha}")
        return base64.b64decode(self.get(f"git/blobs/{blob}")["content"]).decode("utf-8")
