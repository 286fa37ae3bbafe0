"""The leak scanner: look for secrets in everything a run leaves behind, in every spelling.

A secret can travel raw, percent-encoded (a password inside a URL) or base64-encoded (HTTP basic
auth, a token inside a JSON blob that was encoded whole). Base64 of a secret that sits inside a
longer encoded blob does not start on a 3-byte boundary, so the scanner also looks for the part
of the encoding that is fixed by the secret alone at each of the three alignments.

What a run leaves behind: the log as the runner shows it (stdout and stderr, with the `add-mask`
commands the runner consumes removed; a mask line the runner would *show*, e.g. one fenced by
`::stop-commands::`, counts as a leak), every output in `$GITHUB_OUTPUT` except `database-url`,
`node-database-url` and `password` (which carry the password by design and must be masked: that
is checked too), the step
summary, every file written under RUNNER_TEMP (fly.toml) and any extra text (PR comments).
A secret that only some of those outputs carry is scanned with the others (`excused`): the
values of `password`, `sslpassword` and unknown query parameters of `database-url` travel in
`database-url` and `node-database-url` only, never in `password`. `masked_first` checks that
each secret was registered with `add-mask` before the log showed its first line.

The scanner is independent of the action's own redactor on purpose: it is the oracle.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import workflow_log

# The outputs that carry the password by design; each must be masked (checked too).
MASKED_OUTPUTS = frozenset({"database-url", "node-database-url", "password"})
_HEREDOC = re.compile(r"^(?P<name>[^\n<]+)<<(?P<delim>\S+)\n.*?\n(?P=delim)\n", re.S | re.M)
_MIN_CORE = 8  # shorter base64 fragments would match ordinary text by chance
_SUB_DELIMS = "!$&'()*+,;=:@/"


def _lower_escapes(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text):
            out.append(text[i : i + 3].lower())
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _base64_cores(raw: bytes) -> dict[str, str]:
    forms: dict[str, str] = {}
    for alphabet, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        whole = encode(raw).decode()
        forms[whole] = alphabet
        forms[whole.rstrip("=")] = alphabet
        for offset in range(3):
            data = b"\0" * offset + raw
            text = encode(data).decode()
            start = 4 if offset else 0
            core = text[start : 4 * (len(data) // 3)]
            if len(core) >= _MIN_CORE:
                forms.setdefault(core, f"{alphabet} (inside a longer blob)")
    return forms


def secret_forms(secret: str) -> dict[str, str]:
    """Each spelling of `secret` the scanner looks for → a name for it (never the value)."""
    forms: dict[str, str] = {secret: "raw"}
    for encoded in (
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret, safe=_SUB_DELIMS),
        quote(secret),
    ):
        if encoded != secret:
            forms.setdefault(encoded, "percent-encoded")
            forms.setdefault(_lower_escapes(encoded), "percent-encoded (lower-case hex)")
    forms.update({k: v for k, v in _base64_cores(secret.encode()).items() if k not in forms})
    return {form: kind for form, kind in forms.items() if form}


@dataclass(frozen=True)
class Hit:
    secret: str  # a label ("fly token"), never the value
    kind: str
    where: str
    line: int | None


@dataclass
class LeakReport:
    sources: int = 0  # texts scanned
    forms: int = 0  # spellings looked for
    hits: list[Hit] = field(default_factory=list)


# Every scan is reported here too, so a suite can count what it scanned (see the reliability
# suite's conftest); listeners must not raise.
_listeners: list[Callable[[LeakReport], None]] = []


def add_listener(listener: Callable[[LeakReport], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[LeakReport], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def scan_texts(texts: Mapping[str, str], secrets: Mapping[str, str]) -> LeakReport:
    """Look for every form of every secret (label → value) in every text (name → text)."""
    report = LeakReport(sources=len(texts))
    for label, secret in secrets.items():
        if not secret:
            continue
        forms = secret_forms(secret)
        report.forms += len(forms)
        for where, text in texts.items():
            for form, kind in forms.items():
                index = text.find(form)
                if index >= 0:
                    line = text.count("\n", 0, index) + 1
                    report.hits.append(Hit(label, kind, where, line))
    return report


def run_texts(result: Any, excused: frozenset[str] = MASKED_OUTPUTS) -> dict[str, str]:
    """Everything an ActionResult left behind, by name; the runner's view of the log. The
    `excused` outputs (masked ones that carry the secrets by design) are left out."""
    texts: dict[str, str] = {}
    for stream in ("stdout", "stderr"):
        parsed = workflow_log.parse(getattr(result, stream))
        texts[stream] = parsed.shown_text
    output_file = result.workdir / "file_commands" / "output"
    raw_outputs = output_file.read_text(encoding="utf-8") if output_file.exists() else ""
    # Each excused output's whole entry goes, so its value cannot hide a leak elsewhere.
    raw_outputs = _HEREDOC.sub(lambda m: "" if m["name"] in excused else m[0], raw_outputs)
    for name, value in result.outputs.items():
        if name not in excused:
            texts[f"output {name}"] = value
    texts["$GITHUB_OUTPUT"] = raw_outputs
    texts["step summary"] = result.summary
    for path, text in result.files.items():
        texts[f"file {path}"] = text
    return texts


def masked_outputs_are_masked(result: Any) -> list[str]:
    """Names of masked outputs with a value (or a line of it: the runner masks line by line)
    that the log never registered with add-mask."""
    masks = set(workflow_log.parse(result.stdout).masks)
    return [
        name
        for name in MASKED_OUTPUTS
        if result.outputs.get(name)
        and result.outputs[name] not in masks
        and not all(line in masks for line in result.outputs[name].splitlines() if line.strip())
    ]


def masked_first(result: Any, secrets: Mapping[str, str]) -> list[str]:
    """Labels of the secrets the log did not register with `add-mask` (each line of the value,
    as the runner masks line by line) before the first line it shows."""
    parsed = workflow_log.parse(result.stdout)
    first_shown = parsed.shown[0][0] if parsed.shown else float("inf")
    early = {c.data for c in parsed.named("add-mask") if c.line_no < first_shown}
    return [
        label
        for label, value in secrets.items()
        if value and not all(line in early for line in value.splitlines() if line.strip())
    ]


def find_leaks(
    result: Any,
    secrets: Mapping[str, str],
    *,
    extra: Mapping[str, str] | None = None,
    excused: frozenset[str] = MASKED_OUTPUTS,
) -> tuple[LeakReport, list[str]]:
    """Every form of every secret found in what `result` left behind (or in `extra`), and each
    masked output the log did not mask; nothing is reported to the listeners."""
    texts = run_texts(result, excused)
    texts.update(extra or {})
    report = scan_texts(texts, secrets)
    problems = [
        f"{h.secret} ({h.kind}) in {h.where}" + (f" line {h.line}" if h.line else "")
        for h in report.hits
    ]
    problems += [
        f"output {name} was set without ::add-mask::" for name in masked_outputs_are_masked(result)
    ]
    return report, problems


def assert_no_leaks(
    result: Any,
    secrets: Mapping[str, str],
    *,
    extra: Mapping[str, str] | None = None,
    excused: frozenset[str] = MASKED_OUTPUTS,
) -> LeakReport:
    """Fail if any form of any secret appears in what `result` left behind (or in `extra`)."""
    report, problems = find_leaks(result, secrets, extra=extra, excused=excused)
    for listener in list(_listeners):
        listener(report)
    assert not problems, "secret leaked: " + "; ".join(problems)
    return report


def assert_clean(texts: Iterable[tuple[str, str]], secrets: Mapping[str, str]) -> LeakReport:
    """`assert_no_leaks` for loose texts (e.g. what a fake server received)."""
    report = scan_texts(dict(texts), secrets)
    for listener in list(_listeners):
        listener(report)
    assert not report.hits, "secret leaked: " + "; ".join(
        f"{h.secret} ({h.kind}) in {h.where}" for h in report.hits
    )
    return report
