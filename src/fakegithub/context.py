"""One request as a route sees it: who it acts as, its path, query and body, and the absolute URLs
its client sees; with GitHub's JSON shapes and the rules every route shares (a repository or pull
request that must exist, a comment's body, pagination).

Two GitHub behaviours matter to PyGithub and are reproduced exactly: every `url` in a response,
and every `Link` header, is absolute and built from the request's own `Host` header (PyGithub
refuses to follow a URL on another host or port); and the `Link` header has GitHub's exact shape
(`<url>; rel="next", <url>; rel="last"`), because PyGithub's parser splits on ", " and "; ".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from .gitdata import GitStore, iso
from .models import Comment, Identity, Json, PullRequest
from .store import Store

DOCS = "https://docs.github.com/rest"
NOT_INTEGRATION_ACCESSIBLE = "Resource not accessible by integration"
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

Answer = tuple[int, Any, dict[str, str]]


class Reply(Exception):
    """Raised by a route to answer with an error status and GitHub's error JSON."""

    def __init__(self, status: int, message: str, extra: Json | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.payload: Json = {"message": message, "documentation_url": DOCS, **(extra or {})}


@dataclass
class Ctx:
    store: Store
    identity: Identity  # who the request's token acts as
    method: str
    path: str  # without the API prefix
    query: dict[str, str]
    body: Any
    api: str  # absolute API root as seen by the client: http://host[:port][prefix]
    web: str  # absolute web root: http://host[:port]

    @property
    def git(self) -> GitStore:
        return self.store.git

    @property
    def login(self) -> str:
        return self.identity.login

    # JSON shapes ---------------------------------------------------------------------------
    def user_json(self, login: str) -> Json:
        user: Json = {
            "login": login,
            "id": abs(hash(login)) % 10_000_000,
            "type": self.store.user_type(login),
            "url": f"{self.api}/users/{quote(login)}",
            "html_url": f"{self.web}/{quote(login)}",
        }
        return user

    def repo_json(self, repo: str) -> Json:
        owner, name = repo.split("/")
        return {
            "id": abs(hash(repo)) % 10_000_000,
            "name": name,
            "full_name": repo,
            "owner": self.user_json(owner),
            "private": False,
            "url": f"{self.api}/repos/{repo}",
            "html_url": f"{self.web}/{repo}",
        }

    def pull_json(self, pr: PullRequest) -> Json:
        base = f"{self.api}/repos/{pr.repo}"
        merged_at = iso(_EPOCH + timedelta(days=1)) if pr.merged else None
        head_repo = pr.head_repo or pr.repo
        return {
            "id": pr.number * 7919,
            "number": pr.number,
            "title": pr.title,
            "state": pr.state,
            "merged": pr.merged,
            "merged_at": merged_at,
            "merge_commit_sha": pr.merge_commit_sha,
            "url": f"{base}/pulls/{pr.number}",
            "html_url": f"{self.web}/{pr.repo}/pull/{pr.number}",
            "issue_url": f"{base}/issues/{pr.number}",
            "comments_url": f"{base}/issues/{pr.number}/comments",
            "head": {"sha": pr.head_sha, "ref": "feature", "repo": self.repo_json(head_repo)},
            "base": {"sha": "b" * 40, "ref": "main", "repo": self.repo_json(pr.repo)},
        }

    def issue_json(self, pr: PullRequest) -> Json:
        base = f"{self.api}/repos/{pr.repo}"
        return {
            "id": pr.number * 7919,
            "number": pr.number,
            "title": pr.title,
            "state": pr.state,
            "url": f"{base}/issues/{pr.number}",
            "html_url": f"{self.web}/{pr.repo}/pull/{pr.number}",
            "comments_url": f"{base}/issues/{pr.number}/comments",
            "pull_request": {"url": f"{base}/pulls/{pr.number}"},
        }

    def comment_json(self, c: Comment) -> Json:
        base = f"{self.api}/repos/{c.repo}"
        return {
            "id": c.id,
            "node_id": f"IC_{c.id}",
            "url": f"{base}/issues/comments/{c.id}",
            "html_url": f"{self.web}/{c.repo}/pull/{c.issue}#issuecomment-{c.id}",
            "issue_url": f"{base}/issues/{c.issue}",
            "body": c.body,
            "user": self.user_json(c.login),
            "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at),
            "author_association": "NONE" if self.store.user_type(c.login) == "Bot" else "MEMBER",
        }

    # helpers -------------------------------------------------------------------------------
    def repo(self, m: re.Match[str]) -> str:
        repo = f"{m['owner']}/{m['name']}"
        if repo not in self.store.repos:
            raise Reply(404, "Not Found")
        return repo

    def pull(self, m: re.Match[str]) -> PullRequest:
        pr = self.store.pulls.get((self.repo(m), int(m["number"])))
        if pr is None:
            raise Reply(404, "Not Found")
        return pr

    def comment_body(self) -> str:
        body = self.body.get("body") if isinstance(self.body, dict) else None
        if not isinstance(body, str):
            raise Reply(422, 'Invalid request.\n\n"body" wasn\'t supplied.')
        if len(body) > self.store.body_limit:
            raise Reply(
                422,
                "Validation Failed",
                {
                    "errors": [
                        {
                            "resource": "IssueComment",
                            "code": "unprocessable",
                            "field": "data",
                            "message": (
                                f"Body is too long (maximum is {self.store.body_limit} characters)"
                            ),
                        }
                    ]
                },
            )
        return body

    def paginate(self, items: list[Json]) -> Answer:
        """GitHub's page/per_page pagination with its exact Link header."""
        try:
            per_page = min(max(int(self.query.get("per_page", "30")), 1), 100)
            page = max(int(self.query.get("page", "1")), 1)
        except ValueError as e:
            raise Reply(422, "Invalid page or per_page") from e
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        url = f"{self.api}{self.path}"

        def link(p: int, rel: str) -> str:
            return f'<{url}?per_page={per_page}&page={p}>; rel="{rel}"'

        links: list[str] = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, chunk, headers
