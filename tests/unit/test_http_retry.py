"""FlyHttp's retry rules, with an httpx MockTransport (one module, no server)."""

from __future__ import annotations

import httpx
import pytest
from fake_clock import FakeClock

from fly_pg_external.errors import FlyAuthError, FlyConflict, FlyTransient
from fly_pg_external.fly.http import FlyHttp, RetryPolicy


class _Sleeps(FakeClock):
    """A clock that records the pauses into `into`."""

    def __init__(self, into: list[float]) -> None:
        super().__init__()
        self.sleeps = into


def client(responses: list[httpx.Response | Exception]) -> tuple[FlyHttp, list[float], list[str]]:
    sleeps: list[float] = []
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    http = FlyHttp(
        retry=RetryPolicy(attempts=4, clock=_Sleeps(sleeps)), transport=httpx.MockTransport(handler)
    )
    return http, sleeps, seen


def test_429_honours_retry_after() -> None:
    http, sleeps, _ = client(
        [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={})]
    )
    http.request("GET", "http://fly.test/x", idempotent=True)
    assert sleeps == [3.0]
    assert http.stats.requests == 2 and http.stats.retries == 1


def test_5xx_burst_is_retried_for_idempotent_calls() -> None:
    http, sleeps, _ = client([httpx.Response(502), httpx.Response(503), httpx.Response(200)])
    assert http.request("GET", "http://fly.test/x", idempotent=True).status_code == 200
    assert len(sleeps) == 2


def test_5xx_on_a_non_idempotent_call_is_not_resent() -> None:
    http, _, seen = client([httpx.Response(502), httpx.Response(200)])
    with pytest.raises(FlyTransient):
        http.request("POST", "http://fly.test/x", idempotent=False)
    assert seen == ["POST"]


def test_reset_is_retried_only_when_safe() -> None:
    http, _, seen = client([httpx.ReadError("reset"), httpx.Response(200)])
    http.request("GET", "http://fly.test/x", idempotent=True)
    assert seen == ["GET", "GET"]
    http2, _, seen2 = client([httpx.ReadError("reset"), httpx.Response(200)])
    with pytest.raises(FlyTransient):
        http2.request("POST", "http://fly.test/x", idempotent=False)
    assert seen2 == ["POST"]
    http3, _, seen3 = client([httpx.ConnectError("refused"), httpx.Response(200)])
    http3.request("POST", "http://fly.test/x", idempotent=False)  # never reached the server
    assert seen3 == ["POST", "POST"]


def test_retries_are_bounded() -> None:
    http, sleeps, _ = client([httpx.Response(503)] * 4)
    with pytest.raises(FlyTransient):
        http.request("GET", "http://fly.test/x", idempotent=True)
    assert len(sleeps) == 3


def test_errors_are_classified_with_flys_message() -> None:
    http, _, _ = client(
        [
            httpx.Response(401, json={"error": "Authenticate: token validation error"}),
            httpx.Response(409, json={"error": "lease currently held by x"}),
        ]
    )
    with pytest.raises(FlyAuthError, match="token validation"):
        http.request("GET", "http://fly.test/x", idempotent=True)
    with pytest.raises(FlyConflict, match="held by"):
        http.request("POST", "http://fly.test/x", idempotent=False)
