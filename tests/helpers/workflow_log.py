"""Read a step's log the way the GitHub Actions runner does: which lines become workflow commands.

This follows actions/runner `ActionCommand.TryParseV2` / `TryParse` and `ActionCommandManager`:

- a line is a command when, after trimming leading white space, it starts with `::name` and has a
  second `::` (the current syntax), or when it contains `##[name` anywhere followed by `]` (the
  legacy syntax, still parsed when the current one does not match);
- command names are matched case-insensitively against the registered set;
- `::stop-commands::TOKEN` turns command processing off until a line whose command name is
  TOKEN; `add-mask` lines are consumed (never echoed to the log).

Lines are split on CR, LF and CRLF, as the runner's `StreamReader.ReadLine` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Every command the runner registers (ActionCommandManager's extensions plus stop-commands).
REGISTERED = frozenset(
    {
        "set-env",
        "set-output",
        "save-state",
        "add-mask",
        "add-path",
        "add-matcher",
        "remove-matcher",
        "warning",
        "error",
        "notice",
        "debug",
        "group",
        "endgroup",
        "echo",
        "stop-commands",
    }
)
# Commands an action may legitimately print; anything else in its log was injected.
ALLOWED = frozenset(
    {"add-mask", "warning", "error", "notice", "debug", "group", "endgroup", "stop-commands"}
)
# .NET's char.IsWhiteSpace, which `string.TrimStart()` strips.
_DOTNET_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_LINES = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class WorkflowCommand:
    line_no: int  # 1-based
    name: str  # lower-case
    properties: dict[str, str]
    data: str
    syntax: str  # "::" or "##["
    raw: str


@dataclass
class ParsedLog:
    """What the runner made of a log."""

    commands: list[WorkflowCommand] = field(default_factory=list)
    # Lines that parse as a command but arrived while commands were stopped: shown as text.
    fenced: list[WorkflowCommand] = field(default_factory=list)
    # (line number, text) of every line the runner shows in the log.
    shown: list[tuple[int, str]] = field(default_factory=list)
    stopped_at_end: bool = False

    def named(self, name: str) -> list[WorkflowCommand]:
        return [c for c in self.commands if c.name == name]

    @property
    def masks(self) -> list[str]:
        return [c.data for c in self.named("add-mask") if c.data.strip()]

    def unexpected(self, allowed: frozenset[str] = ALLOWED) -> list[WorkflowCommand]:
        """Commands the action never prints itself: each one is an injection."""
        return [c for c in self.commands if c.name not in allowed]

    @property
    def shown_text(self) -> str:
        return "\n".join(text for _, text in self.shown)


def split_lines(text: str) -> list[str]:
    lines = _LINES.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _trim_start(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in _DOTNET_SPACE:
        i += 1
    return text[i:]


def _unescape(text: str, mapping: tuple[tuple[str, str], ...]) -> str:
    for escaped, plain in mapping:
        text = text.replace(escaped, plain)
    return text


_DATA_V2 = (("%0D", "\r"), ("%0A", "\n"), ("%25", "%"))
_PROPERTY_V2 = (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%"))
_V1 = (("%3B", ";"), ("%0D", "\r"), ("%0A", "\n"), ("%5D", "]"), ("%25", "%"))


def _parse_v2(line: str, registered: set[str], line_no: int) -> WorkflowCommand | None:
    message = _trim_start(line)
    if not message.startswith("::"):
        return None
    end = message.find("::", 2)
    if end < 0:
        return None
    info = message[2:end]
    space = info.find(" ")
    name = info if space < 0 else info[:space]
    if name.lower() not in registered:
        return None
    props: dict[str, str] = {}
    if space > 0:
        for item in info[space + 1 :].strip().split(","):
            if not item:
                continue
            pair = [p for p in item.split("=", 1) if p]
            if len(pair) == 2:
                props[pair[0]] = _unescape(pair[1], _PROPERTY_V2)
    data = _unescape(message[end + 2 :], _DATA_V2)
    return WorkflowCommand(line_no, name.lower(), props, data, "::", line)


def _parse_v1(line: str, registered: set[str], line_no: int) -> WorkflowCommand | None:
    start = line.find("##[")
    if start < 0:
        return None
    close = line.find("]", start)
    if close < 0:
        return None
    info = line[start + 3 : close]
    space = info.find(" ")
    name = info if space < 0 else info[:space]
    if name.lower() not in registered:
        return None
    props: dict[str, str] = {}
    if space > 0:
        for item in info[space + 1 :].split(";"):
            if not item:
                continue
            pair = [p for p in item.split("=", 1) if p]
            if len(pair) == 2:
                props[pair[0]] = _unescape(pair[1], _V1)
    return WorkflowCommand(
        line_no, name.lower(), props, _unescape(line[close + 1 :], _V1), "##[", line
    )


def parse(text: str) -> ParsedLog:
    """Run `text` (one stream of a step's output) through the runner's command processing."""
    out = ParsedLog()
    registered = set(REGISTERED)
    stop_token: str | None = None
    for line_no, line in enumerate(split_lines(text), start=1):
        command = _parse_v2(line, registered, line_no) or _parse_v1(line, registered, line_no)
        if command is None:
            out.shown.append((line_no, line))
            continue
        if stop_token is not None:
            if command.name == stop_token.lower():
                registered.discard(stop_token.lower())
                stop_token = None
            else:
                out.fenced.append(command)
            out.shown.append((line_no, line))
            continue
        if command.name == "stop-commands":
            stop_token = command.data
            registered.add(stop_token.lower())
            out.commands.append(command)
            out.shown.append((line_no, line))
            continue
        out.commands.append(command)
        if command.name != "add-mask":  # the runner never echoes a mask
            out.shown.append((line_no, line))
    out.stopped_at_end = stop_token is not None
    return out


def assert_no_injected_commands(
    text: str, *, where: str = "log", require_resumed: bool = True
) -> ParsedLog:
    """The log issues only commands an action prints itself and (unless the process was killed
    mid-line, `require_resumed=False`) leaves command processing on at the end."""
    parsed = parse(text)
    bad = parsed.unexpected()
    assert not bad, f"{where}: injected workflow command(s): " + "; ".join(
        f"line {c.line_no}: {c.syntax}{c.name} {c.properties} {c.data[:60]!r}" for c in bad
    )
    if require_resumed:
        assert not parsed.stopped_at_end, f"{where}: ::stop-commands:: was never resumed"
    return parsed
