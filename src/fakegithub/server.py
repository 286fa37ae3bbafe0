"""A local stand-in for the GitHub REST API: the few endpoints the PR comment upsert uses.

It is a real HTTP server on 127.0.0.1, so PyGithub runs unmodified against it (through
`base_url`), with its own pagination, URL checks and error mapping. Two GitHub behaviours matter
to PyGithub and are reproduced exactly:

- every `url` in a response, and every `Link` header, is absolute and built from the request's own
  `Host` header (PyGithub refuses to follow a URL on another host or port);
- the `Link` header has GitHub's exact shape (`<url>; rel="next", <url>; rel="last"`), because
  PyGithub's parser splits on ", " and "; ".

Each token acts as an `Identity`: a person's token (a PAT) may read `GET /user`; an integration
token (the Actions `GITHUB_TOKEN`, a GitHub App installation token) gets 403 from it, like GitHub.
Any token may edit or delete anyone's comment (GitHub lets every account with write access do
so), so a test sees it when a client touches a comment that is not its own. GraphQL answers the
one query the action sends: `nodes(ids:)` with `viewerDidAuthor`.

Git data (blobs, trees, commits, tags, refs) and releases come from `gitdata`, for clients that
commit and tag through the API (the release script): tests program them with `add_commit`,
`set_ref`, `add_annotated_tag` and read them back with `ref`, `ref_commit`, `git_commit`,
`files_at`, `releases` and `latest_release`.

State lives in memory behind one lock; tests program it (`add_pr`, `add_comment`, `add_token`,
`forbid_writes`, `fail_next`) and inspect it (`comments`, `requests`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, quote, urlsplit

from . import gitdata
from .gitdata import GitCommit, GitError, GitStore, Release

ACTIONS_BOT = "github-actions[bot]"
BODY_LIMIT = 65_536
DOCS = "https://docs.github.com/rest"
NOT_INTEGRATION_ACCESSIBLE = "Resource not accessible by integration"
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

Json = dict[str, Any]
UserType = Literal["User", "Bot"]


def _type_of(login: str) -> UserType:
    # GitHub logins cannot contain brackets: only bot accounts end in "[bot]".
    return "Bot" if login.endswith("[bot]") else "User"


@dataclass(frozen=True)
class Identity:
    """Who a token acts as.

    `login` writes the comments the token creates; `type` is the account's `user.type` in the
    JSON ("User" for a person, "Bot" for the Actions bot and GitHub App bots). An `integration`
    token (the Actions `GITHUB_TOKEN`, a GitHub App installation token) gets 403 "Resource not
    accessible by integration" from `GET /user`.
    """

    login: str
    type: UserType = "User"
    integration: bool = False

    @classmethod
    def user(cls, login: str) -> Identity:
        """A person's token (a PAT): `GET /user` works."""
        return cls(login, "User", integration=False)

    @classmethod
    def actions_bot(cls) -> Identity:
        """The Actions `GITHUB_TOKEN`: comments by github-actions[bot]."""
        return cls(ACTIONS_BOT, "Bot", integration=True)

    @classmethod
    def app_bot(cls, slug: str) -> Identity:
        """A GitHub App installation token: comments by `<slug>[bot]`."""
        return cls(f"{slug}[bot]", "Bot", integration=True)


@dataclass(frozen=True)
class Comment:
    id: int
    repo: str
    issue: int
    body: str
    login: str
    created_at: datetime
    updated_at: datetime


@dataclass
class PullRequest:
    repo: str
    number: int
    state: str = "open"  # open / closed
    merged: bool = False
    merge_commit_sha: str | None = None
    head_sha: str = "0" * 40
    head_repo: str | None = None  # a fork's full name; None means the base repository
    title: str = "Update fly.toml"


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (the path includes any `/api/v3` prefix)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    at_ns: int = 0  # time.monotonic_ns() when it arrived, to order it among other fakes' logs


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    remaining: int | None  # None: every matching request fails
    after: bool  # the request takes effect, then the client gets the error anyway


@dataclass
class _State:
    repos: set[str] = field(default_factory=set)
    pulls: dict[tuple[str, int], PullRequest] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    writes_forbidden: str | None = None
    tokens: dict[str, Identity] = field(default_factory=dict)
    # The `type` of accounts that wrote comments (default: from the login, see `_type_of`).
    account_types: dict[str, UserType] = field(default_factory=dict)
    git: GitStore = field(default_factory=GitStore)


class FakeGitHub:
    """A fake GitHub API.

    With one identity (the default): `login` is who the token acts as, and comments it creates
    are written by that login. `user_endpoint_forbidden=True` makes it an integration token like
    the Actions `GITHUB_TOKEN`: `GET /user` answers 403. With `token` set, a request carrying
    another token gets 401 "Bad credentials".

    With several identities: `tokens` (or `add_token`) maps each token to the `Identity` it acts
    as, e.g. a PAT user, `Identity.actions_bot()` and `Identity.app_bot("my-deployer")`; then
    `login`, `user_endpoint_forbidden` and `token` are not used, and a request carrying a token
    not in the map gets 401.

    `api_prefix="/api/v3"` mimics GitHub Enterprise Server.
    """

    def __init__(
        self,
        *,
        login: str = ACTIONS_BOT,
        user_endpoint_forbidden: bool = False,
        api_prefix: str = "",
        token: str | None = None,
        tokens: Mapping[str, Identity] | None = None,
        body_limit: int = BODY_LIMIT,
        port: int = 0,
    ) -> None:
        if api_prefix and (not api_prefix.startswith("/") or api_prefix.endswith("/")):
            raise ValueError(f"api_prefix must look like '/api/v3', got {api_prefix!r}")
        if tokens and (token is not None or user_endpoint_forbidden or login != ACTIONS_BOT):
            raise ValueError("pass either tokens= or login=/user_endpoint_forbidden=/token=")
        self.login = login
        self.user_endpoint_forbidden = user_endpoint_forbidden
        self.api_prefix = api_prefix
        self.token = token
        self.body_limit = body_limit
        self._port = port
        self._lock = threading.Lock()
        self._state = _State()
        for t, identity in (tokens or {}).items():
            self._add_token(t, identity)
        self._ids = itertools.count(1001)
        self._clock = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

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
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as PyGithub's `base_url` (and as GITHUB_API_URL)."""
        return f"http://127.0.0.1:{self.port}{self.api_prefix}"

    @property
    def server_url(self) -> str:
        """The web host (GITHUB_SERVER_URL): html_url links point here."""
        return f"http://127.0.0.1:{self.port}"

    # -- programming the state ------------------------------------------------------------
    def add_repo(self, repo: str) -> None:
        _check_repo(repo)
        with self._lock:
            self._state.repos.add(repo)

    def add_pr(
        self,
        repo: str,
        number: int,
        *,
        merge_commit_sha: str | None = None,
        merged: bool = False,
        head_sha: str | None = None,
        head_repo: str | None = None,
        state: str | None = None,
    ) -> PullRequest:
        """A pull request. `merged=True` closes it; `head_repo` names a fork it comes from."""
        _check_repo(repo)
        pr = PullRequest(
            repo=repo,
            number=number,
            state=state or ("closed" if merged else "open"),
            merged=merged,
            merge_commit_sha=merge_commit_sha,
            head_sha=head_sha or f"{number:040x}",
            head_repo=head_repo,
        )
        with self._lock:
            self._state.repos.add(repo)
            self._state.pulls[(repo, number)] = pr
        return pr

    def add_token(self, token: str, identity: Identity) -> None:
        """Accept `token`, acting as `identity` (switches the fake to several identities)."""
        with self._lock:
            self._add_token(token, identity)

    def add_comment(self, repo: str, number: int, body: str, login: str) -> Comment:
        """A comment written by `login` (anyone: a token's identity or somebody else); its
        account's `type` is "Bot" for a login ending in "[bot]" (only bots can have one), else
        "User"."""
        with self._lock:
            if (repo, number) not in self._state.pulls:
                raise KeyError(f"no pull request #{number} in {repo}; call add_pr first")
            return self._create_comment(repo, number, body, login)

    def comments(self, repo: str, number: int) -> list[Comment]:
        with self._lock:
            return sorted(
                (c for c in self._state.comments.values() if (c.repo, c.issue) == (repo, number)),
                key=lambda c: c.id,
            )

    def comment(self, comment_id: int) -> Comment:
        with self._lock:
            return self._state.comments[comment_id]

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._state.requests.clear()

    def forbid_writes(self, message: str = "Resource not accessible by integration") -> None:
        """Every POST/PATCH/DELETE answers 403, like a read-only token (fork pull requests)."""
        with self._lock:
            self._state.writes_forbidden = message

    def allow_writes(self) -> None:
        with self._lock:
            self._state.writes_forbidden = None

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        message: str = "Server Error",
        times: int | None = 1,
        after_effect: bool = False,
    ) -> None:
        """Answer `status` to the next `times` requests (None: all) whose path (after the API
        prefix) fully matches `path_pattern`.

        With `after_effect=True` the request is carried out first and only the answer is lost,
        like a gateway timing out on a write GitHub did perform.
        """
        with self._lock:
            self._state.failures.append(
                _Failure(
                    method.upper(), re.compile(path_pattern), status, message, times, after_effect
                )
            )

    # -- git data and releases ------------------------------------------------------------
    def add_commit(
        self,
        repo: str,
        files: Mapping[str, str | bytes],
        message: str,
        parents: tuple[str, ...] = (),
    ) -> str:
        """A commit whose tree holds exactly `files` (path -> content); returns its SHA."""
        _check_repo(repo)
        with self._lock:
            self._state.repos.add(repo)
            git = self._state.git
            blobs = {
                path: git.blob(repo, content if isinstance(content, bytes) else content.encode())
                for path, content in files.items()
            }
            tree = git.tree(repo, blobs)
            return git.commit(repo, tree, parents, message, login="octocat").sha

    def set_ref(self, repo: str, ref: str, sha: str) -> None:
        """Point `ref` ("refs/tags/v1", "refs/heads/main") at an object, creating it if needed."""
        _check_repo(repo)
        with self._lock:
            self._state.repos.add(repo)
            self._state.git.set_ref(repo, ref, sha)

    def add_annotated_tag(self, repo: str, tag: str, commit: str, message: str = "") -> str:
        """`git tag -a tag commit` pushed: a tag object, and refs/tags/<tag> pointing at it."""
        with self._lock:
            obj = self._state.git.annotated_tag(repo, tag, commit, message or tag)
            self._state.git.set_ref(repo, f"refs/tags/{tag}", obj.sha)
            return obj.sha

    def ref(self, repo: str, ref: str) -> str | None:
        """The object `ref` points at (a tag object for an annotated tag), or None."""
        with self._lock:
            return self._state.git.repo(repo).refs.get(ref)

    def ref_commit(self, repo: str, ref: str) -> str | None:
        """The commit `ref` points at, through any annotated tag, or None."""
        with self._lock:
            sha = self._state.git.repo(repo).refs.get(ref)
            return None if sha is None else self._state.git.peel(repo, sha)

    def git_commit(self, repo: str, sha: str) -> GitCommit:
        with self._lock:
            return self._state.git.repo(repo).commits[sha]

    def git_commits(self, repo: str) -> list[GitCommit]:
        with self._lock:
            return list(self._state.git.repo(repo).commits.values())

    def files_at(self, repo: str, commit: str) -> dict[str, str]:
        """The files of a commit's tree, path -> text."""
        with self._lock:
            data = self._state.git.repo(repo)
            tree = data.trees[data.commits[commit].tree]
            return {path: data.blobs[blob].decode() for path, blob in tree.items()}

    def releases(self, repo: str) -> list[Release]:
        with self._lock:
            return sorted(self._state.git.repo(repo).releases.values(), key=lambda r: r.id)

    def latest_release(self, repo: str) -> Release | None:
        """The release GitHub marks "Latest", or None."""
        with self._lock:
            data = self._state.git.repo(repo)
            return None if data.latest_release is None else data.releases[data.latest_release]

    # -- internals used by the handler (called with the lock held) ------------------------
    def _add_token(self, token: str, identity: Identity) -> None:
        if not token:
            raise ValueError("a token must not be empty")
        self._state.tokens[token] = identity
        self._state.account_types[identity.login] = identity.type

    def _identity(self, authorization: str | None) -> Identity:
        """Who a request acts as; 401 for a token the fake does not accept."""
        given = None
        for scheme in ("token ", "Bearer "):
            if authorization is not None and authorization.startswith(scheme):
                given = authorization[len(scheme) :]
        if self._state.tokens:
            identity = self._state.tokens.get(given) if given is not None else None
            if identity is None:
                raise _Reply(401, "Bad credentials")
            return identity
        if self.token is not None and given != self.token:
            raise _Reply(401, "Bad credentials")
        return Identity(
            self.login, self._user_type(self.login), integration=self.user_endpoint_forbidden
        )

    def _user_type(self, login: str) -> UserType:
        return self._state.account_types.get(login, _type_of(login))

    def _tick(self) -> datetime:
        return _EPOCH + timedelta(seconds=next(self._clock))

    def _create_comment(self, repo: str, number: int, body: str, login: str) -> Comment:
        now = self._tick()
        c = Comment(next(self._ids), repo, number, body, login, now, now)
        self._state.comments[c.id] = c
        return c

    def _edit_comment(self, comment_id: int, body: str) -> Comment:
        c = replace(self._state.comments[comment_id], body=body, updated_at=self._tick())
        self._state.comments[comment_id] = c
        return c


def _check_repo(repo: str) -> None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"repository must be 'owner/name', got {repo!r}")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Reply(Exception):
    """Raised by a route to answer with an error status and GitHub's error JSON."""

    def __init__(self, status: int, message: str, extra: Json | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.payload: Json = {"message": message, "documentation_url": DOCS, **(extra or {})}


_Route = Callable[["_Ctx", re.Match[str]], tuple[int, Any, dict[str, str]]]


@dataclass
class _Ctx:
    fake: FakeGitHub
    identity: Identity  # who the request's token acts as
    method: str
    path: str  # without the API prefix
    query: dict[str, str]
    body: Any
    api: str  # absolute API root as seen by the client: http://host[:port][prefix]
    web: str  # absolute web root: http://host[:port]

    @property
    def git(self) -> GitStore:
        return self.fake._state.git

    @property
    def login(self) -> str:
        return self.identity.login

    # JSON shapes ---------------------------------------------------------------------------
    def user_json(self, login: str) -> Json:
        user: Json = {
            "login": login,
            "id": abs(hash(login)) % 10_000_000,
            "type": self.fake._user_type(login),
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
        merged_at = _iso(_EPOCH + timedelta(days=1)) if pr.merged else None
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
            "created_at": _iso(c.created_at),
            "updated_at": _iso(c.updated_at),
            "author_association": "NONE" if self.fake._user_type(c.login) == "Bot" else "MEMBER",
        }

    # helpers -------------------------------------------------------------------------------
    def repo(self, m: re.Match[str]) -> str:
        repo = f"{m['owner']}/{m['name']}"
        if repo not in self.fake._state.repos:
            raise _Reply(404, "Not Found")
        return repo

    def pull(self, m: re.Match[str]) -> PullRequest:
        pr = self.fake._state.pulls.get((self.repo(m), int(m["number"])))
        if pr is None:
            raise _Reply(404, "Not Found")
        return pr

    def comment_body(self) -> str:
        body = self.body.get("body") if isinstance(self.body, dict) else None
        if not isinstance(body, str):
            raise _Reply(422, 'Invalid request.\n\n"body" wasn\'t supplied.')
        if len(body) > self.fake.body_limit:
            raise _Reply(
                422,
                "Validation Failed",
                {
                    "errors": [
                        {
                            "resource": "IssueComment",
                            "code": "unprocessable",
                            "field": "data",
                            "message": (
                                f"Body is too long (maximum is {self.fake.body_limit} characters)"
                            ),
                        }
                    ]
                },
            )
        return body

    def paginate(self, items: list[Json]) -> tuple[int, Any, dict[str, str]]:
        """GitHub's page/per_page pagination with its exact Link header."""
        try:
            per_page = min(max(int(self.query.get("per_page", "30")), 1), 100)
            page = max(int(self.query.get("page", "1")), 1)
        except ValueError as e:
            raise _Reply(422, "Invalid page or per_page") from e
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


def _get_user(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    if ctx.identity.integration:
        raise _Reply(403, NOT_INTEGRATION_ACCESSIBLE)
    return 200, ctx.user_json(ctx.identity.login), {}


def _get_repo(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return 200, ctx.repo_json(ctx.repo(m)), {}


def _get_pull(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return 200, ctx.pull_json(ctx.pull(m)), {}


def _get_issue(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return 200, ctx.issue_json(ctx.pull(m)), {}


def _list_comments(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    pr = ctx.pull(m)
    items = [
        ctx.comment_json(c)
        for c in sorted(ctx.fake._state.comments.values(), key=lambda c: c.id)
        if (c.repo, c.issue) == (pr.repo, pr.number)
    ]
    return ctx.paginate(items)


def _create_comment(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    pr = ctx.pull(m)
    c = ctx.fake._create_comment(pr.repo, pr.number, ctx.comment_body(), ctx.identity.login)
    return 201, ctx.comment_json(c), {"Location": ctx.comment_json(c)["url"]}


def _one_comment(ctx: _Ctx, m: re.Match[str]) -> Comment:
    repo = ctx.repo(m)
    c = ctx.fake._state.comments.get(int(m["id"]))
    if c is None or c.repo != repo:
        raise _Reply(404, "Not Found")
    return c


def _get_comment(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return 200, ctx.comment_json(_one_comment(ctx, m)), {}


def _edit_comment(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    # Like GitHub, any token with write access may edit any comment, not only its own (a
    # maintainer's edit; an App or Actions token with `pull-requests: write` as well): the client
    # is the one that must not touch other people's comments.
    c = _one_comment(ctx, m)
    return 200, ctx.comment_json(ctx.fake._edit_comment(c.id, ctx.comment_body())), {}


def _delete_comment(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    c = _one_comment(ctx, m)
    del ctx.fake._state.comments[c.id]
    return 204, None, {}


def _commit_pulls(ctx: _Ctx, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    repo = ctx.repo(m)
    sha = m["sha"]
    prs = sorted(
        (
            pr
            for pr in ctx.fake._state.pulls.values()
            if pr.repo == repo and sha in (pr.merge_commit_sha, pr.head_sha)
        ),
        key=lambda pr: pr.number,
    )
    items = []
    for pr in prs:
        item = ctx.pull_json(pr)
        # The list endpoint leaves out `merged`; clients must read `merged_at`.
        item.pop("merged")
        items.append(item)
    return ctx.paginate(items)


def _graphql(ctx: _Ctx) -> tuple[int, Any, dict[str, str]]:
    """The one GraphQL question the action asks: which of these comments did the viewer write.

    `nodes(ids:)` with `... on IssueComment { id viewerDidAuthor }`; an unknown ID is null, as on
    GitHub. Any other query gets GitHub's error shape (200 with `errors`).
    """
    body = ctx.body if isinstance(ctx.body, dict) else {}
    query = body.get("query")
    variables = body.get("variables") or {}
    if not isinstance(query, str) or "nodes(" not in query or "viewerDidAuthor" not in query:
        return 200, {"errors": [{"message": "the fake answers only nodes/viewerDidAuthor"}]}, {}
    ids = variables.get("ids") if isinstance(variables, dict) else None
    if not isinstance(ids, list) or len(ids) > 100:
        return 200, {"errors": [{"type": "INVALID", "message": "ids: 1 to 100 IDs"}]}, {}
    by_node = {f"IC_{c.id}": c for c in ctx.fake._state.comments.values()}
    nodes: list[Json | None] = []
    for node_id in ids:
        c = by_node.get(str(node_id))
        nodes.append(
            None if c is None else {"id": node_id, "viewerDidAuthor": c.login == ctx.identity.login}
        )
    return 200, {"data": {"nodes": nodes}}, {}


_REPO = gitdata.REPO_PATH
_ROUTES: list[tuple[str, re.Pattern[str], _Route]] = [
    ("GET", re.compile(r"/user"), _get_user),
    ("GET", re.compile(_REPO), _get_repo),
    ("GET", re.compile(_REPO + r"/pulls/(?P<number>\d+)"), _get_pull),
    ("GET", re.compile(_REPO + r"/issues/(?P<number>\d+)"), _get_issue),
    ("GET", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _list_comments),
    ("POST", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _create_comment),
    ("GET", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _get_comment),
    ("PATCH", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _edit_comment),
    ("DELETE", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _delete_comment),
    ("GET", re.compile(_REPO + r"/commits/(?P<sha>[0-9A-Za-z._-]+)/pulls"), _commit_pulls),
    *gitdata.ROUTES,
]


def _make_handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive like GitHub: PyGithub reuses its connection pool.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, each response would wait for
        # the client's delayed ACK (~40 ms).
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
            host = self.headers.get("Host") or f"127.0.0.1:{fake.port}"
            with fake._lock:
                fake._state.requests.append(
                    Request(method, split.path, query, body, auth, time.monotonic_ns())
                )
                status, payload, headers = self._dispatch(
                    method,
                    split.path,
                    query=query,
                    body=body,
                    bad_json=bad_json,
                    auth=auth,
                    host=host,
                )
            self._send(status, payload, headers)

        def _dispatch(
            self,
            method: str,
            path: str,
            *,
            query: dict[str, str],
            body: Any,
            bad_json: bool,
            auth: str | None,
            host: str,
        ) -> tuple[int, Any, dict[str, str]]:
            prefix = fake.api_prefix
            # GraphQL sits next to the REST API: /graphql, or /api/graphql on GHES (/api/v3).
            graphql_path = prefix.removesuffix("/v3") + "/graphql"
            if path == graphql_path:
                route_path = "/graphql"
            elif prefix and not (path == prefix or path.startswith(prefix + "/")):
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            else:
                route_path = path[len(prefix) :] or "/"
            try:
                ctx = _Ctx(
                    fake=fake,
                    identity=fake._identity(auth),
                    method=method,
                    path=route_path,
                    query=query,
                    body=body,
                    api=f"http://{host}{prefix}",
                    web=f"http://{host}",
                )
                failure = self._take_failure(method, route_path)
                if failure is not None and not failure.after:
                    raise _Reply(failure.status, failure.message)
                if bad_json:
                    raise _Reply(400, "Problems parsing JSON")
                # A GraphQL query is a POST but reads nothing but the answer.
                writing = method != "GET" and route_path != "/graphql"
                if writing and fake._state.writes_forbidden is not None:
                    raise _Reply(403, fake._state.writes_forbidden)
                if route_path == "/graphql" and method == "POST":
                    answer = _graphql(ctx)
                    if failure is not None:
                        raise _Reply(failure.status, failure.message)
                    return answer
                for route_method, pattern, route in _ROUTES:
                    m = pattern.fullmatch(route_path)
                    if m is not None and route_method == method:
                        answer = route(ctx, m)
                        if failure is not None:
                            raise _Reply(failure.status, failure.message)
                        return answer
                # GitHub answers 404 to an unknown path and to a known path with another method.
                raise _Reply(404, "Not Found")
            except GitError as e:
                extra = {"errors": e.errors} if e.errors else None
                return e.status, _Reply(e.status, str(e), extra).payload, {}
            except _Reply as r:
                return r.status, r.payload, {}

        def _take_failure(self, method: str, route_path: str) -> _Failure | None:
            for failure in fake._state.failures:
                if failure.method == method and failure.path.fullmatch(route_path):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            fake._state.failures.remove(failure)
                    return failure
            return None

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

    return Handler
