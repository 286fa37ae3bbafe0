"""The runner's contract: inputs, outputs, masks, annotations, groups and the step summary.

Workflow commands go through actions-toolkit's command and file-command writers, which escape
`%`, CR and LF and write outputs as heredocs with a random delimiter. Only those two modules are
imported: `actions_toolkit.core` pulls in `requests` for OIDC (a tenth of a second of start-up)
and `actions_toolkit.github` rewrites sys.path. What the library lacks is added here: a flush
after every command (it never flushes, so commands and tracebacks interleave out of order), the
step summary, and `::stop-commands::` around untrusted text.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

from actions_toolkit.command import Command
from actions_toolkit.file_command import prepare_key_value_message

from .redact import Redactor


class Actions:
    """Workflow commands for one run. Every line printed passes through the redactor first."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        out: TextIO | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.env = os.environ if env is None else env
        self.out = out or sys.stdout
        self.redactor = redactor or Redactor()
        self.outputs: dict[str, str] = {}
        self._masked: set[str] = set()
        self._group_depth = 0  # groups open now: the runner shows only the outermost

    # -- inputs ---------------------------------------------------------------------------
    def input(self, name: str) -> str | None:
        """The raw value of input `name`, or None when the runner did not pass it.

        The runner upper-cases the name and keeps hyphens (`INPUT_IP-VERSIONS`); the underscore
        spelling is accepted too, because shells cannot export a name with a hyphen.
        """
        key = "INPUT_" + name.replace(" ", "_").upper()
        for candidate in (key, key.replace("-", "_")):
            if candidate in self.env:
                return self.env[candidate]
        return None

    # -- printing -------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _command(self, name: str, message: str, **properties: str) -> None:
        self._write(str(Command(name, dict(properties), self.redactor.redact(message))))

    def add_mask(self, value: str) -> None:
        """Register a secret with the runner and with our own redactor."""
        if not value or value in self._masked:
            # The runner refuses an empty mask ("Can't add secret mask for empty string").
            return
        self._masked.add(value)
        self.redactor.add(value)
        for line in value.splitlines() or [value]:
            if line.strip():
                # Printed directly: passing it through the redactor would mask the mask.
                self._write(str(Command("add-mask", {}, line)))

    def info(self, message: str) -> None:
        """Plain log text. Text that could be read as a workflow command is fenced off."""
        text = self.redactor.redact(message)
        # The runner runs `::cmd::` at the start of a line and the legacy `##[cmd]` anywhere.
        if "##[" in text or any(line.lstrip().startswith("::") for line in text.splitlines()):
            with self.stop_commands():
                self._write(text)
        else:
            self._write(text)

    def notice(self, message: str, title: str | None = None) -> None:
        self._command("notice", message, **({"title": title} if title else {}))

    def warning(self, message: str, title: str | None = None) -> None:
        self._command("warning", message, **({"title": title} if title else {}))

    def error(self, message: str, title: str | None = None) -> None:
        self._command("error", message, **({"title": title} if title else {}))

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A foldable group of log lines. The runner does not nest groups (an inner `::group::`
        would end the outer one), so a group opened inside another is a plain title line."""
        if self._group_depth:
            self.info(f"── {title}")
        else:
            self._command("group", title)
        self._group_depth += 1
        try:
            yield
        finally:
            self._group_depth -= 1
            if not self._group_depth:
                self._write("::endgroup::")

    @contextmanager
    def stop_commands(self) -> Iterator[None]:
        """Between these markers the runner treats `::x::` lines as text, not commands."""
        token = secrets.token_hex(16)
        self._write(f"::stop-commands::{token}")
        try:
            yield
        finally:
            self._write(f"::{token}::")

    # -- file commands --------------------------------------------------------------------
    def set_output(self, name: str, value: str) -> None:
        self.outputs[name] = value
        # Outside Actions (e.g. the local demo) there is no file: outputs are only reported.
        self._file_command("GITHUB_OUTPUT", name, value)

    def save_state(self, name: str, value: str) -> None:
        """For this action's post step, which reads it back as `STATE_<name>`."""
        self._file_command("GITHUB_STATE", name, value)

    def _file_command(self, variable: str, name: str, value: str) -> None:
        path = self.env.get(variable)
        if not path:
            return
        with open(path, "a", encoding="utf-8", newline="") as fh:
            fh.write(prepare_key_value_message(name, value) + os.linesep)

    def append_summary(self, markdown: str) -> None:
        """Append `markdown` to the step summary as given: the report is sized to the runner's
        1 MiB limit (`report.fit`) and built from redacted text, so nothing is cut or scrubbed
        here a second time."""
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
