"""The one error of the release: it stops the release and is shown as an `::error::`."""

from __future__ import annotations


class ReleaseError(Exception):
    """Stops the release; printed as an ::error:: with `title`."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title
