"""The sections of the report (title, tables, warnings, rollout, diff, connection string) and
the Markdown primitives they share.

Each section is a pure function of an `Outcome` whose free text is already redacted (see
`outcome.redacted`): nothing here does I/O, reads a clock or knows a secret. Text from Fly or
from an exception is escaped, so it shows as text and cannot open HTML or close a code block.
`report.fit` sizes what `render` returns.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit, urlunsplit

from .outcome import IpChange, MachineChange, Outcome

# Free text from Fly or from an exception is capped so one runaway message cannot crowd the
# diff (and the rest of the report) out of a comment.
_MAX_ERROR_CHARS = 8_000
_MAX_WARNING_CHARS = 2_000

_TITLE_ICON = {"plan": "📋", "applied": "✅", "no-change": "⚪", "failed": "❌"}


# -- markdown helpers -----------------------------------------------------------------------


def fenced(text: str, lang: str = "") -> str:
    """A code block that `text` cannot close, whatever backticks it contains."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{fence}{lang}\n{body}{fence}"


def inline_code(text: str) -> str:
    """An inline code span that survives backticks and newlines in `text`."""
    text = " ".join(text.splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    delim = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{delim}{pad}{text}{pad}{delim}"


def escape(text: str) -> str:
    """Plain text that cannot open HTML (and so cannot hide or break the rest of the report)."""
    return html.escape(text, quote=False)


def _cell(text: str) -> str:
    # A pipe ends a table cell even inside a code span; GFM strips this escape before it
    # parses the cell, so the pipe still shows.
    return text.replace("|", "\\|")


def link_target(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" … ({len(text) - limit:,} more characters cut)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def split_lines(text: str) -> list[str]:
    """`text` split after each newline and only there, so that some lines of a diff are always a
    prefix of it (`str.splitlines` also splits at CR, form feeds and Unicode separators)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


# -- the report -----------------------------------------------------------------------------


def _title(outcome: Outcome) -> str:
    app = inline_code(outcome.app)
    releasing = outcome.mode in ("unexpose", "sweep")
    if releasing and any(ip.action == "keep" and ip.addresses for ip in outcome.ips):
        return f"### {_TITLE_ICON[outcome.status]} {_kept_open_title(outcome, app)}"
    # An unexpose run (or one releasing addresses) takes external access away.
    closing = releasing or any(ip.action == "release" for ip in outcome.ips)
    verb, state = ("close", "closed") if closing else ("open", "open")
    text = {
        "plan": f"Plan: {verb} {app} to external connections",
        "applied": f"Applied: {app} is {state} to external connections",
        "no-change": f"No change: {app} is already {state} to external connections",
    }.get(outcome.status, f"Failed: could not {verb} {app} to external connections")
    return f"### {_TITLE_ICON[outcome.status]} {text}"


def _kept_open_title(outcome: Outcome, app: str) -> str:
    """A releasing run that keeps some address: the app stays open, and the title says so."""
    n = sum(len(ip.addresses) for ip in outcome.ips if ip.action == "release")
    return {
        "plan": f"Plan: release {n} address{'' if n == 1 else 'es'} of {app}; "
        "it stays open to external connections",
        "applied": f"Applied: {app} stays open to external connections (addresses kept)",
        "no-change": f"No change: {app} stays open to external connections (addresses kept)",
    }.get(outcome.status, f"Failed: could not release the addresses of {app}")


def _lead(outcome: Outcome) -> str:
    if outcome.status == "plan":
        how = "with `mode: expose`" if outcome.mode == "plan" else "without `dry-run: true`"
        return f"This is a plan: nothing was changed on Fly.io. A run {how} applies it."
    if outcome.status == "no-change":
        return "Everything was already in place: this run changed nothing."
    if outcome.status == "failed":
        return "The run stopped on an error; the tables below show how far it got."
    return ""


def _ip_row(ip: IpChange, outcome: Outcome) -> tuple[str, str, str]:
    label = "Dedicated IPv4" if ip.family == "v4" else "IPv6"
    addrs = ", ".join(inline_code(a) for a in ip.addresses)
    if ip.action == "absent":
        return label, "none", "none"
    if ip.action == "keep":
        return label, addrs or "present", f"kept: {escape(ip.note)}" if ip.note else "unchanged"
    allocate = ip.action == "allocate"
    before = "none" if allocate else (addrs or "present")
    verb = "allocated" if allocate else "released"
    if ip.done and allocate:
        after = f"{addrs} (allocated)" if addrs else "allocated"
    elif ip.done:
        after = "none (released)"
    elif outcome.status == "plan":
        after = f"{verb} on apply"
    elif outcome.status == "failed":
        after = f"not {verb} (the run stopped first)"
    else:
        after = f"not {verb}"
    return label, before, after


def _service_row(outcome: Outcome) -> tuple[str, str, str]:
    label = f"`pg_tls` service on port {outcome.service_port}"
    n = len(outcome.machines)
    changing = [m for m in outcome.machines if m.services_change]
    if not changing:
        return label, f"on all {_plural(n, 'machine')}", "unchanged"
    before = f"missing or misconfigured on {len(changing)} of {_plural(n, 'machine')}"
    done = sum(1 for m in changing if m.result == "updated")
    if outcome.status == "plan":
        after = f"added on {_plural(len(changing), 'machine')} on apply"
    elif done == len(changing):
        after = f"added on {_plural(done, 'machine')}"
    else:
        after = f"added on {done} of {_plural(len(changing), 'machine')}"
    return label, before, after


def _image_row(outcome: Outcome) -> tuple[str, str, str]:
    changing = [m for m in outcome.machines if m.image_before != m.image_after]

    def images(names: set[str]) -> str:
        return ", ".join(inline_code(i) for i in sorted(names))

    if not changing:
        return "Image", images({m.image_before for m in outcome.machines}), "unchanged"
    after = images({m.image_after for m in changing})
    done = sum(1 for m in changing if m.result == "updated")
    if outcome.status == "plan":
        after += " on apply"
    elif done != len(changing):
        after += f" on {done} of {_plural(len(changing), 'machine')}"
    return "Image", images({m.image_before for m in changing}), after


def _restart_row(outcome: Outcome) -> tuple[str, str, str]:
    label, restart, n = "Machines restarted", outcome.machines_to_restart, len(outcome.machines)
    order = "one at a time, primary last"
    updated = sum(1 for m in restart if m.result == "updated")
    if not restart:
        return label, "—", "none"
    if outcome.status == "plan":
        return label, "—", f"{len(restart)} of {n} on apply, {order}"
    if outcome.status != "failed":
        return label, "—", f"{updated} of {n}, {order}"
    rolled = sum(1 for m in restart if m.result == "rolled-back")
    failed = sum(1 for m in restart if m.result == "failed")
    rest = len(restart) - updated - rolled - failed
    parts = [f"{updated} of {len(restart)} updated"]
    parts += [f"{rolled} rolled back"] if rolled else []
    parts += [f"{failed} failed"] if failed else []
    parts += [f"{rest} not reached"] if rest else []
    return label, "—", ", ".join(parts)


def _summary_table(outcome: Outcome) -> str:
    rows = [_ip_row(ip, outcome) for ip in outcome.ips]
    if outcome.machines:
        rows += [_service_row(outcome), _image_row(outcome), _restart_row(outcome)]
    if not rows:
        return ""
    after = "After apply" if outcome.status == "plan" else "After"
    lines = [f"| | Before | {after} |", "|---|---|---|"]
    lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} |" for a, b, c in rows]
    return "\n".join(lines)


def _warnings(outcome: Outcome) -> str:
    out: list[str] = []
    plan = outcome.status == "plan"
    new_v4 = [ip for ip in outcome.ips if ip.family == "v4" and ip.action == "allocate"]
    if new_v4 and plan:
        out.append(
            "**Billing:** applying allocates a dedicated IPv4 address, which Fly.io bills monthly "
            "for as long as the app keeps it. `mode: unexpose` releases it."
        )
    elif any(ip.done for ip in new_v4):
        out.append(
            "**Billing:** a dedicated IPv4 address was allocated; Fly.io bills it monthly until "
            "it is released (`mode: unexpose`)."
        )
    restart = outcome.machines_to_restart
    restarted = [m for m in restart if m.result in ("updated", "rolled-back", "failed")]
    if restart and plan:
        out.append(
            f"**Restarts:** applying restarts {_plural(len(restart), 'Postgres machine')} one at "
            "a time, replicas first and the primary last. Each machine drops its connections "
            "while it restarts; the primary's restart briefly interrupts writes."
        )
    elif restarted:
        out.append(
            f"**Restarts:** this run restarted {_plural(len(restarted), 'Postgres machine')}, "
            "one at a time, primary last; clients connected to them had to reconnect."
        )
    out += [escape(" ".join(_clip(w, _MAX_WARNING_CHARS).splitlines())) for w in outcome.warnings]
    # A blank quoted line between warnings keeps each in its own paragraph.
    return "\n>\n".join(f"> ⚠️ {w}" for w in out)


_RESULT_TEXT = {"updated": "✅ updated", "rolled-back": "↩️ rolled back", "failed": "❌ failed"}


def _machine_cells(i: int, m: MachineChange, status: str) -> list[str]:
    change = ["`pg_tls` service"] if m.services_change else []
    if m.image_before != m.image_after:
        change.append(f"image → {inline_code(m.image_after)}")
    if m.result in _RESULT_TEXT:
        result = _RESULT_TEXT[m.result]
    elif m.result == "pending":
        result = "restarts on apply" if status == "plan" else "not reached"
    else:
        result = "not reached" if m.restarts and status == "failed" else "unchanged"
    role = [escape(m.region), escape(m.role)]
    return [str(i), inline_code(m.id), *role, ", ".join(change) or "none", result]


def _machine_table(outcome: Outcome) -> str:
    if not outcome.machines_to_restart:
        return ""
    lines = [
        "**Rollout order** (replicas first, primary last)",
        "",
        "| # | Machine | Region | Role | Change | Result |",
        "|---|---|---|---|---|---|",
    ]
    for i, m in enumerate(outcome.machines, start=1):
        cells = _machine_cells(i, m, outcome.status)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _verify_section(outcome: Outcome) -> str:
    if not outcome.verify:
        return ""
    lines = ["**Connection check**", ""]
    for v in outcome.verify:
        icon = "✅" if v.ok else ("⚠️" if v.warning_only else "❌")
        detail = escape(" ".join(_clip(v.detail, 500).splitlines()))
        version = f", PostgreSQL {escape(v.server_version)}" if v.server_version else ""
        extra = " (not counted as a failure)" if (v.warning_only and not v.ok) else ""
        lines.append(f"- {icon} {inline_code(v.target)}: {detail}{version}{extra}")
    return "\n".join(lines)


def _diff_section(outcome: Outcome, diff_lines: int | None, note: str | None) -> str:
    """The diff, collapsed; with `diff_lines`, only that many lines of it and a notice."""
    diff = outcome.config_diff
    if not diff:
        return "`fly.toml`: no change." if outcome.fly_toml_after else ""
    lines = diff.splitlines()
    added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    summary = f"<code>fly.toml</code> diff (+{added} −{removed})"
    shown, notice = diff, ""
    all_lines = split_lines(diff)
    total = len(all_lines)
    if diff_lines is not None and diff_lines < total:
        shown = "".join(all_lines[:diff_lines])
        notice = (
            f"\n\n> ✂️ The diff is cut after line {diff_lines:,} of {total:,} to fit the size limit."
        )
        notice += f" {note}" if note else ""
        summary += ", cut"
    where = ""
    if outcome.fly_toml_path:
        where = f"\n\nThe new configuration was written to {inline_code(outcome.fly_toml_path)}."
    block = fenced(shown, "diff") if shown else "(diff left out)"
    return f"<details><summary>{summary}</summary>\n\n{block}{notice}{where}\n\n</details>"


def _hide_password(url: str) -> str:
    """Structural belt and braces: whatever the Outcome holds, a URL never shows a password."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(connection string not shown: it could not be parsed)"
    if password is None or password == "***":
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def _connection_section(outcome: Outcome) -> str:
    if not outcome.redacted_url:
        return ""
    if outcome.mode in ("unexpose", "sweep") and outcome.status != "failed":
        return ""
    when = {
        "plan": "after apply, password hidden",
        "failed": "password hidden; the run failed, so it may not accept connections yet",
    }.get(outcome.status, "password hidden")
    url = inline_code(_hide_password(outcome.redacted_url))
    return f"**External connection string** ({when}): {url}"


def _error_section(outcome: Outcome) -> str:
    if outcome.status != "failed" and not outcome.error:
        return ""
    text = outcome.error or "The run failed; the log of the step has the details."
    return "**Error**\n\n" + fenced(_clip(text, _MAX_ERROR_CHARS), "text")


def render(outcome: Outcome, *, diff_lines: int | None, note: str | None) -> str:
    blocks = [
        _title(outcome),
        _lead(outcome),
        _error_section(outcome),
        _summary_table(outcome),
        _warnings(outcome),
        _machine_table(outcome),
        _verify_section(outcome),
        _diff_section(outcome, diff_lines, note),
        _connection_section(outcome),
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
