"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest
from fake_clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """Time that moves only when the code under test sleeps, from zero."""
    return FakeClock(start=0.0)
