"""One HTTP client for both Fly APIs: timeouts, bounded retries with backoff, a request count.

Retried: 408, 429 (honouring Retry-After), 502/503/504, and transport errors (resets, refused
connections, read timeouts). Only idempotent calls are retried after the request may have
reached the server; a non-idempotent one (an IP allocation, a machine update, a first lease) is
retried by its caller, and only after re-reading shows it did not happen. flyctl treats the same
set as transient (flyctl `flapsutil/retry.go` `IsTransientFlapsError`: 408, 429 and 5xx; a 408 is
"typically a context.DeadlineExceeded that flaps hit talking to flyd"), so a 408 on a write is
ambiguous: the change may have landed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import FlyAuthError, FlyConflict, FlyError, FlyNotFound, FlyTimeout, FlyTransient
from ..poll import RetryPolicy
from .ratelimit import Limit, Limiter

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
USER_AGENT = "fly-pg-external/1"


@dataclass
class CallStats:
    """Counts requests sent, for the log and the benchmark."""

    requests: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, retry: bool) -> None:
        with self.lock:
            self.requests += 1
            if retry:
                self.retries += 1


def _error_text(response: httpx.Response) -> str:
    if "html" in response.headers.get("content-type", "") or response.text.lstrip().startswith("<"):
        # A proxy's error page says nothing the status line does not.
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        text = response.text.strip()
        return text[:300] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        if isinstance(body.get("message"), str) and body["message"]:
            return str(body["message"])
        if isinstance(body.get("error"), str):
            return str(body["error"])
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message", ""))
    return str(body)[:300]


def raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    status = response.status_code
    text = _error_text(response)
    rid = response.headers.get("fly-request-id")
    cls: type[FlyError] = FlyError
    if status in (401, 403):
        cls = FlyAuthError
    elif status == 404:
        cls = FlyNotFound
    elif status == 409:
        cls = FlyConflict
    elif status == 408:
        cls = FlyTimeout
    elif status in RETRY_STATUSES:
        cls = FlyTransient
    raise cls(text, status=status, request_id=rid)


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(cap, float(value)))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


class FlyHttp:
    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.stats = CallStats()
        self.limiter = Limiter(self.retry.clock)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            # Enough for concurrent reads plus the lease keeper.
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        headers: dict[str, str] | None = None,
        params: Any = None,
        json: Any = None,
        timeout: float | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        limit: tuple[str, str, Limit] | None = None,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a FlyError subclass.

        `limit` names the rate limit the request falls under (action, identifier, limit): every
        attempt waits for a token first (see ratelimit.py).
        """
        last: Exception | None = None
        for attempt in range(1, self.retry.attempts + 1):
            if limit is not None:
                self.limiter.take(*limit)
            self.stats.count(retry=attempt > 1)
            try:
                response = self._client.request(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    json=json,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                # A connect failure never reached the server, so even a POST is safe to resend.
                safe = idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                last = FlyTransient(f"{type(exc).__name__}: {exc or 'connection failed'}")
                if not safe or attempt == self.retry.attempts:
                    raise last from exc
                self.retry.pause(attempt)
                continue
            status = response.status_code
            if status in retry_statuses and (idempotent or status == 429):
                # A 429 means the request was refused before any work, so even a POST may be
                # resent; a 5xx on a POST may hide a change that happened, so its caller decides.
                if attempt == self.retry.attempts:
                    raise_for_status(response)
                self.retry.pause(attempt, _retry_after(response, self.retry.retry_after_max))
                continue
            raise_for_status(response)
            return response
        raise last or FlyTransient("request failed")  # pragma: no cover - loop always returns
