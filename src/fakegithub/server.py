"""A local stand-in for the GitHub REST API: the few endpoints the PR comment upsert uses.

It is a real HTTP server on 127.0.0.1, so PyGithub runs unmodified against it (through
`base_url`), with its own pagination, URL checks and error mapping; the URLs and `Link` headers
it reproduces exactly are described in :mod:`fakegithub.context`.

Each token acts as an `Identity`: a person's token (a PAT) may read `GET /user`; an integration
token (the Actions `GITHUB_TOKEN`, a GitHub App installation token) gets 403 from it, like GitHub.
Any token may edit or delete anyone's comment. GraphQL answers the one query the action sends:
`nodes(ids:)` with `viewerDidAuthor`.

Git data (blobs, trees, commits, tags, refs) and releases come from :mod:`fakegithub.gitdata`,
for clients that commit and tag through the API (the release script): tests program them with
`add_commit`, `set_ref`, `add_annotated_tag` and read them back with `ref`, `ref_commit`,
`git_commit`, `files_at`, `releases` and `latest_release`.

:class:`FakeGitHub` is the facade tests use: it programs the state (`add_pr`, `add_comment`,
`add_token`, `forbid_writes`, `fail_next`) and inspects it (`comments`, `requests`). The state
lives in memory behind one lock in :mod:`fakegithub.store`; requests are handled in
:mod:`fakegithub.handler` and answered by :mod:`fakegithub.routes`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from .gitdata import GitCommit, Release
from .handler import Server
from .models import ACTIONS_BOT, BODY_LIMIT, Comment, Failure, Identity, PullRequest, Request
from .store import Store

# Re-exported: tests and the package's __init__ have always found these here.
__all__ = [
    "ACTIONS_BOT",
    "BODY_LIMIT",
    "Comment",
    "FakeGitHub",
    "Identity",
    "PullRequest",
    "Request",
]


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
        self._store = Store(
            login=login,
            user_endpoint_forbidden=user_endpoint_forbidden,
            api_prefix=api_prefix,
            token=token,
            body_limit=body_limit,
        )
        for t, identity in (tokens or {}).items():
            self._store.add_token(t, identity)
        self._port = port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        server = Server(self._store, self._port)
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

    # -- settings (kept in the store, where the endpoints read them) -----------------------
    @property
    def login(self) -> str:
        return self._store.login

    @login.setter
    def login(self, login: str) -> None:
        self._store.login = login

    @property
    def user_endpoint_forbidden(self) -> bool:
        return self._store.user_endpoint_forbidden

    @user_endpoint_forbidden.setter
    def user_endpoint_forbidden(self, forbidden: bool) -> None:
        self._store.user_endpoint_forbidden = forbidden

    @property
    def api_prefix(self) -> str:
        return self._store.api_prefix

    @api_prefix.setter
    def api_prefix(self, prefix: str) -> None:
        self._store.api_prefix = prefix

    @property
    def token(self) -> str | None:
        return self._store.token

    @token.setter
    def token(self, token: str | None) -> None:
        self._store.token = token

    @property
    def body_limit(self) -> int:
        return self._store.body_limit

    @body_limit.setter
    def body_limit(self, limit: int) -> None:
        self._store.body_limit = limit

    # -- programming the state ------------------------------------------------------------
    def add_repo(self, repo: str) -> None:
        _check_repo(repo)
        with self._store.lock:
            self._store.repos.add(repo)

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
        with self._store.lock:
            self._store.repos.add(repo)
            self._store.pulls[(repo, number)] = pr
        return pr

    def add_token(self, token: str, identity: Identity) -> None:
        """Accept `token`, acting as `identity` (switches the fake to several identities)."""
        with self._store.lock:
            self._store.add_token(token, identity)

    def add_comment(self, repo: str, number: int, body: str, login: str) -> Comment:
        """A comment written by `login` (anyone: a token's identity or somebody else); its
        account's `type` is "Bot" for a login ending in "[bot]" (only bots can have one), else
        "User"."""
        with self._store.lock:
            if (repo, number) not in self._store.pulls:
                raise KeyError(f"no pull request #{number} in {repo}; call add_pr first")
            return self._store.create_comment(repo, number, body, login)

    def comments(self, repo: str, number: int) -> list[Comment]:
        with self._store.lock:
            return sorted(
                (c for c in self._store.comments.values() if (c.repo, c.issue) == (repo, number)),
                key=lambda c: c.id,
            )

    def comment(self, comment_id: int) -> Comment:
        with self._store.lock:
            return self._store.comments[comment_id]

    @property
    def requests(self) -> list[Request]:
        with self._store.lock:
            return list(self._store.requests)

    def clear_requests(self) -> None:
        with self._store.lock:
            self._store.requests.clear()

    def forbid_writes(self, message: str = "Resource not accessible by integration") -> None:
        """Every POST/PATCH/DELETE answers 403, like a read-only token (fork pull requests)."""
        with self._store.lock:
            self._store.writes_forbidden = message

    def allow_writes(self) -> None:
        with self._store.lock:
            self._store.writes_forbidden = None

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
        with self._store.lock:
            self._store.failures.append(
                Failure(
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
        with self._store.lock:
            self._store.repos.add(repo)
            git = self._store.git
            blobs = {
                path: git.blob(repo, content if isinstance(content, bytes) else content.encode())
                for path, content in files.items()
            }
            tree = git.tree(repo, blobs)
            return git.commit(repo, tree, parents, message, login="octocat").sha

    def set_ref(self, repo: str, ref: str, sha: str) -> None:
        """Point `ref` ("refs/tags/v1", "refs/heads/main") at an object, creating it if needed."""
        _check_repo(repo)
        with self._store.lock:
            self._store.repos.add(repo)
            self._store.git.set_ref(repo, ref, sha)

    def add_annotated_tag(self, repo: str, tag: str, commit: str, message: str = "") -> str:
        """`git tag -a tag commit` pushed: a tag object, and refs/tags/<tag> pointing at it."""
        with self._store.lock:
            obj = self._store.git.annotated_tag(repo, tag, commit, message or tag)
            self._store.git.set_ref(repo, f"refs/tags/{tag}", obj.sha)
            return obj.sha

    def ref(self, repo: str, ref: str) -> str | None:
        """The object `ref` points at (a tag object for an annotated tag), or None."""
        with self._store.lock:
            return self._store.git.repo(repo).refs.get(ref)

    def ref_commit(self, repo: str, ref: str) -> str | None:
        """The commit `ref` points at, through any annotated tag, or None."""
        with self._store.lock:
            sha = self._store.git.repo(repo).refs.get(ref)
            return None if sha is None else self._store.git.peel(repo, sha)

    def git_commit(self, repo: str, sha: str) -> GitCommit:
        with self._store.lock:
            return self._store.git.repo(repo).commits[sha]

    def git_commits(self, repo: str) -> list[GitCommit]:
        with self._store.lock:
            return list(self._store.git.repo(repo).commits.values())

    def files_at(self, repo: str, commit: str) -> dict[str, str]:
        """The files of a commit's tree, path -> text."""
        with self._store.lock:
            data = self._store.git.repo(repo)
            tree = data.trees[data.commits[commit].tree]
            return {path: data.blobs[blob].decode() for path, blob in tree.items()}

    def releases(self, repo: str) -> list[Release]:
        with self._store.lock:
            return sorted(self._store.git.repo(repo).releases.values(), key=lambda r: r.id)

    def latest_release(self, repo: str) -> Release | None:
        """The release GitHub marks "Latest", or None."""
        with self._store.lock:
            data = self._store.git.repo(repo)
            return None if data.latest_release is None else data.releases[data.latest_release]

    # -- internals used by the handler (called with the lock held) ------------------------


def _check_repo(repo: str) -> None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"repository must be 'owner/name', got {repo!r}")
