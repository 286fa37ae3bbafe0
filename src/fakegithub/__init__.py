"""A local fake of the GitHub REST API for tests (never shipped in the action's image)."""

from __future__ import annotations

from .gitdata import GitCommit, Release
from .models import ACTIONS_BOT, BODY_LIMIT, Comment, Identity, PullRequest, Request
from .server import FakeGitHub

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
