"""`poll` and `write_once`, on a fake clock: every wait of the action is one of these."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_clock import FakeClock

from fly_pg_external.errors import FlyConflict, FlyError, FlyTimeout, FlyTransient, LandingUnknown
from fly_pg_external.poll import SETTLE_AFTER_5XX, Backoff, poll, write_once


def reads(clock: FakeClock, *answers: str | None) -> tuple[Callable[[], str | None], list[float]]:
    """A read that gives `answers` in turn (the last one forever), and when it was called."""
    times: list[float] = []
    pending = list(answers)

    def read() -> str | None:
        times.append(clock.now())
        return pending.pop(0) if len(pending) > 1 else pending[0]

    return read, times


# -- poll --------------------------------------------------------------------------------------


def test_poll_returns_the_first_answer_pausing_by_the_schedule(
    clock: FakeClock,
) -> None:
    read, times = reads(clock, None, None, "there")
    found = poll(read, deadline=100, pauses=Backoff(1.0, 8.0), clock=clock)
    assert found == "there"
    assert times == [0.0, 1.0, 3.0]
    assert clock.sleeps == [1.0, 2.0]


def test_poll_gives_up_when_the_next_read_would_come_after_the_deadline(clock: FakeClock) -> None:
    read, times = reads(clock, None)
    assert poll(read, deadline=10, pauses=Backoff(1.0, 4.0), clock=clock) is None
    # 0, 1, 3, 7; the next (11) would be late, so there is no sleep towards it either.
    assert times == [0.0, 1.0, 3.0, 7.0]
    assert clock.now() == 7.0


def test_poll_always_reads_once_even_past_the_deadline(clock: FakeClock) -> None:
    read, times = reads(clock, "late but there")
    clock.advance(50)
    assert poll(read, deadline=10, pauses=Backoff(1.0, 1.0), clock=clock) == "late but there"
    read, times = reads(clock, None)
    assert poll(read, deadline=10, pauses=Backoff(1.0, 1.0), clock=clock) is None
    assert len(times) == 1
    assert clock.sleeps == []


def test_an_infinite_pause_means_do_not_ask_again(clock: FakeClock) -> None:
    read, times = reads(clock, None, "never seen")
    assert poll(read, deadline=1e9, pauses=iter([float("inf")]), clock=clock) is None
    assert len(times) == 1
    assert clock.sleeps == []


def test_a_read_that_raises_stops_the_poll(clock: FakeClock) -> None:
    def read() -> None:
        raise FlyError("no wait mends this", status=400)

    with pytest.raises(FlyError, match="no wait mends this"):
        poll(read, deadline=100, pauses=Backoff(1.0, 1.0), clock=clock)
    assert clock.sleeps == []


def test_backoff_grows_by_its_factor_up_to_its_most() -> None:
    pauses = iter(Backoff(0.25, 2.0))
    assert [next(pauses) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


# -- write_once --------------------------------------------------------------------------------


class Write:
    """A write whose sends answer from a script, and a target that shows when it landed."""

    def __init__(
        self, clock: FakeClock, *sends: BaseException | str, landed_after_send: int | None = None
    ) -> None:
        self.clock = clock
        self.sends = list(sends)
        self.sent_at: list[float] = []
        self.read_at: list[float] = []
        self.landed: str | None = None
        self.read_error: FlyError | None = None
        self.landed_after_send = landed_after_send  # the write lands with send N, answer or not

    def send(self) -> str:
        self.sent_at.append(self.clock.now())
        answer = self.sends.pop(0)
        if self.landed_after_send == len(self.sent_at):
            self.landed = f"result of send {len(self.sent_at)}"
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def read(self) -> str | None:
        self.read_at.append(self.clock.now())
        if self.read_error is not None:
            raise self.read_error
        return self.landed

    def run(
        self,
        *,
        request_timeout: float = 5.0,
        on_ambiguous: Callable[[FlyError], None] | None = None,
    ) -> str:
        return write_once(
            self.send,
            self.read,
            request_timeout=request_timeout,
            clock=self.clock,
            on_ambiguous=on_ambiguous,
        )


def test_a_write_that_succeeds_is_sent_once_and_never_read(clock: FakeClock) -> None:
    write = Write(clock, "done")
    assert write.run() == "done"
    assert len(write.sent_at) == 1 and write.read_at == []


def test_an_ambiguous_failure_that_landed_is_not_sent_again(clock: FakeClock) -> None:
    write = Write(clock, FlyTimeout("deadline_exceeded", status=408), landed_after_send=1)
    seen: list[FlyError] = []
    assert write.run(on_ambiguous=seen.append) == "result of send 1"
    assert len(write.sent_at) == 1
    assert len(write.read_at) == 1
    assert [str(e) for e in seen] == ["deadline_exceeded (HTTP 408)"]


def test_an_ambiguous_failure_that_did_not_land_is_sent_once_more(clock: FakeClock) -> None:
    write = Write(clock, FlyTransient("connection reset"), "second answer")
    assert write.run() == "second answer"
    assert len(write.sent_at) == 2
    assert len(write.read_at) > 1  # watched for a while before the resend


def test_a_resend_that_fails_ambiguously_is_watched_and_never_sent_a_third_time(
    clock: FakeClock,
) -> None:
    write = Write(clock, FlyTimeout("timed out"), FlyTransient("reset again"))
    with pytest.raises(FlyTransient, match="reset again"):
        write.run()
    assert len(write.sent_at) == 2
    # The resend may be in flight too: it is watched as long as the first one was.
    assert write.read_at[-1] - write.sent_at[-1] >= 1.0


def test_a_resend_that_fails_ambiguously_but_lands_is_the_result(clock: FakeClock) -> None:
    write = Write(clock, FlyTimeout("timed out"), FlyTransient("reset again"), landed_after_send=2)
    assert write.run() == "result of send 2"
    assert len(write.sent_at) == 2


def test_a_resend_refused_outright_is_judged_by_one_read(clock: FakeClock) -> None:
    write = Write(clock, FlyTimeout("timed out"), FlyError("stale version", status=400))
    with pytest.raises(FlyError, match="stale version"):
        write.run()
    assert write.read_at[-1] == write.sent_at[-1]  # the one read, right after the resend


def test_a_non_ambiguous_failure_is_judged_by_one_read(clock: FakeClock) -> None:
    refused = Write(clock, FlyError("bad request", status=400))
    with pytest.raises(FlyError, match="bad request"):
        refused.run()
    assert len(refused.read_at) == 1 and len(refused.sent_at) == 1
    # The same status for a write that landed after all (a stale-version refusal of our own
    # late request): the target decides, not the status.
    landed = Write(clock, FlyConflict("version mismatch", status=409), landed_after_send=1)
    assert landed.run() == "result of send 1"
    assert len(landed.read_at) == 1 and clock.sleeps == []


def test_a_failure_whose_target_cannot_be_read_is_landing_unknown(clock: FakeClock) -> None:
    write = Write(clock, FlyError("bad gateway answer", status=400))
    write.read_error = FlyTransient("read failed too", status=503)
    with pytest.raises(LandingUnknown) as err:
        write.run()
    assert "bad gateway answer" in str(err.value)
    assert "cannot be told (read failed too (HTTP 503))" in str(err.value)


def test_an_ambiguous_failure_with_an_unreadable_target_is_landing_unknown(
    clock: FakeClock,
) -> None:
    # Not the read's own error: a caller would take that for "the write was not carried out".
    write = Write(clock, FlyTimeout("timed out", status=408), "never sent")
    write.read_error = FlyTransient("read failed", status=503)
    with pytest.raises(LandingUnknown, match=r"timed out .* cannot be told"):
        write.run()
    assert len(write.sent_at) == 1


def test_a_5xx_settles_quickly_before_the_resend(clock: FakeClock) -> None:
    write = Write(clock, FlyTransient("bad gateway", status=502), "resent")
    assert write.run(request_timeout=10.0) == "resent"
    assert write.sent_at[1] <= SETTLE_AFTER_5XX
    assert all(t <= SETTLE_AFTER_5XX for t in write.read_at)


@pytest.mark.parametrize(
    "error",
    [FlyTimeout("deadline_exceeded", status=408), FlyTransient("connection reset")],
    ids=["408", "reset"],
)
def test_a_timeout_or_reset_is_watched_for_about_two_request_timeouts(
    clock: FakeClock, error: FlyError
) -> None:
    write = Write(clock, error, "resent")
    assert write.run(request_timeout=5.0) == "resent"
    resent = write.sent_at[1]
    assert 8.0 <= resent <= 10.0  # two request timeouts, less at most one landing check
    assert max(write.read_at) <= 10.0


def test_the_watch_after_a_timeout_is_capped_at_thirty_seconds(clock: FakeClock) -> None:
    write = Write(clock, FlyTimeout("timed out", status=408), "resent")
    write.run(request_timeout=120.0)
    assert 28.0 <= write.sent_at[1] <= 30.0
