"""The error every state change of the simulator may raise, whichever API asked for it.

Its own module so that the behaviour modules (:mod:`flysim.leases`, :mod:`flysim.lifecycle`,
:mod:`flysim.ips`) can raise it without importing :mod:`flysim.state`, which imports some of
them.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the Machines API: ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
