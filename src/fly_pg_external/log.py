"""One logging channel: the standard `logging` module, written out as workflow commands.

Every module logs with `logging.getLogger(__name__)`; while a run is on, `to_workflow` sends the
package's records to the runner: INFO as plain lines (or `::notice::` when the record says
`extra={"notice": True}`), WARNING as `::warning::`, ERROR as `::error::` (with the record's
`title`, when it has one, as the annotation's title). The
`Actions` object it writes through redacts every line, so text is scrubbed once, where it
enters the log. Outside a run (unit tests), records go to the root logger as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

PACKAGE = "fly_pg_external"


class CommandWriter(Protocol):
    def info(self, message: str) -> None: ...
    def notice(self, message: str, title: str | None = None) -> None: ...
    def warning(self, message: str, title: str | None = None) -> None: ...
    def error(self, message: str, title: str | None = None) -> None: ...


class WorkflowCommandHandler(logging.Handler):
    def __init__(self, gha: CommandWriter) -> None:
        super().__init__(logging.INFO)
        self.gha = gha

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            title = getattr(record, "title", None)
            if record.levelno >= logging.ERROR:
                self.gha.error(message, title=title)
            elif record.levelno >= logging.WARNING:
                self.gha.warning(message, title=title)
            elif getattr(record, "notice", False):
                # Worth a reader's eye, but nothing to act on: not a warning.
                self.gha.notice(message, title=title)
            else:
                self.gha.info(message)
        except Exception:
            self.handleError(record)


@contextmanager
def to_workflow(gha: CommandWriter) -> Iterator[None]:
    """Send the package's log records to `gha` while the block runs."""
    logger = logging.getLogger(PACKAGE)
    handler = WorkflowCommandHandler(gha)
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the runner's log is the only place these lines belong
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def silence(library: str) -> None:
    """Keep a library's own log lines out of the step's log. PyGithub, on import, gives its
    `github` logger a stderr handler at INFO, so every refused request it retries or reports
    (an Actions token's 403 on GET /user) would print as a line the user can do nothing about,
    unredacted; the action explains every GitHub failure itself, from the exception."""
    logger = logging.getLogger(library)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
