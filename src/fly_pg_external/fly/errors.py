"""Errors from Fly's APIs, classified the way the action must react to them."""

from __future__ import annotations


class FlyError(Exception):
    """A Fly API call failed. `message` is Fly's own text (`message`, else `error`)."""

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        rid = f" [fly-request-id {self.request_id}]" if self.request_id else ""
        return f"{self.message}{where}{rid}"


class FlyAuthError(FlyError):
    """401/403: the token is wrong, expired, or not allowed on this app."""


class FlyNotFound(FlyError):
    pass


class FlyConflict(FlyError):
    """409: a lease is held by someone else, or our nonce is no longer valid."""


class FlyTimeout(FlyError):
    """408: from the wait endpoint, the machine did not reach the state within the timeout; from
    any other endpoint, Fly timed out talking to the host, and a write may still have landed."""


class FlyTransient(FlyError):
    """429, 5xx or a transport error that survived every retry."""
