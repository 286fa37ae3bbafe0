"""A local fake of the GitHub REST API for tests (never shipped in the action's image)."""

from __future__ import annotations

from .gitdata import GitCommit, Release
from .server import ACTIONS_BOT, BODY_LIMIT, Comment, FakeGitHub, Identity, PullRequest, Request

__all__ = [
    "ACTIONS_BOT",
    "BODY_LIMIT",
    "Comment",
    "FakeGitHub",
    "GitCommit",
    "Identity",
    "PullRequest",
    "Release",
    "Request",
]
