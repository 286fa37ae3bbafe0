"""Markdown report of one run, for the job summary and the pull request comment.

Pure functions of an `Outcome`: no I/O, no clock, so the same run always renders the same text and
the PR comment's digest only changes when what the report says changes. The comment adds a hidden
marker line in front (app + digest) and the same footer as the summary.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .outcome import IpChange, MachineChange, Outcome

# GitHub refuses a comment body longer than this ("Body is too long (maximum is 65536
# characters)").
GITHUB_COMMENT_LIMIT = 65_536
# The comment is built to stay this far below the limit: GitHub counts characters on its side
# after its own normalisation, and a few hundred characters of slack cost nothing.
COMMENT_SAFETY_MARGIN = 512

MARKER_NAME = "fly-pg-external"
MARKER_VERSION = 1
_MARKER_RE = re.compile(r"\A<!-- fly-pg-external: (\{[^\n]*\}) -->(?:\r?\n|\Z)")

# Free text from Fly or from an exception is capped so one runaway message cannot crowd the
# diff (and the rest of the report) out of a comment.
_MAX_ERROR_CHARS = 8_000
_MAX_WARNING_CHARS = 2_000

_TITLE_ICON = {"plan": "📋", "applied": "✅", "no-change": "⚪", "failed": "❌"}


@dataclass(frozen=True)
class Marker:
    """What the hidden first line of one of our comments says."""

    app: str
    digest: str
    version: int = MARKER_VERSION


# -- public API -----------------------------------------------------------------------------


def render_markdown(
    outcome: Outcome,
    *,
    commit: str | None,
    run_url: str | None,
    max_chars: int | None = None,
    truncation_note: str | None = None,
) -> str:
    """The full report: content then footer.

    With `max_chars`, the fly.toml diff is cut (with a notice saying so, followed by
    `truncation_note`) so that the whole text fits in `max_chars` characters.
    """
    footer = render_footer(commit=commit, run_url=run_url)
    budget = None if max_chars is None else max_chars - len(footer)
    return render_content(outcome, max_chars=budget, truncation_note=truncation_note) + footer


def render_content(
    outcome: Outcome, *, max_chars: int | None = None, truncation_note: str | None = None
) -> str:
    """The report without its footer (the part the comment digest covers)."""
    full = _render(outcome, diff_limit=None, note=truncation_note)
    if max_chars is None or len(full) <= max_chars:
        return full
    # Only the diff can be long in a normal run, so it is the part that gives way. The notice
    # and the line count it prints change the length a little, hence a few rounds.
    diff_len = len(outcome.config_diff)
    limit = diff_len - (len(full) - max_chars) - 600
    for _ in range(10):
        text = _render(outcome, diff_limit=max(limit, 0), note=truncation_note)
        if len(text) <= max_chars:
            return text
        if limit <= 0:
            break
        limit -= len(text) - max_chars + 100
    # Even without the diff the text is too long (a flood of warnings): cut it bluntly.
    notice = "\n\n> ✂️ This report was cut to fit the size limit."
    if truncation_note:
        notice += " " + truncation_note
    notice += "\n"
    text = _render(outcome, diff_limit=0, note=truncation_note)
    return text[: max(max_chars - len(notice), 0)] + notice


def render_footer(*, commit: str | None, run_url: str | None) -> str:
    parts = ["fly-pg-external"]
    if commit:
        # A bare 7-character SHA is auto-linked to the commit by GitHub in comments.
        parts.append(f"commit {_escape(commit[:7] if _is_sha(commit) else commit)}")
    if run_url:
        parts.append(f"[workflow run]({_link_target(run_url)})")
    return "\n---\n<sub>" + " · ".join(parts) + "</sub>\n"


def comment_body(
    outcome: Outcome,
    *,
    commit: str | None,
    run_url: str | None,
    max_chars: int = GITHUB_COMMENT_LIMIT - COMMENT_SAFETY_MARGIN,
    redact: Callable[[str], str] | None = None,
) -> str:
    """The PR comment: marker line, content, footer, in at most `max_chars` characters.

    `redact` is applied to the content and the footer before the digest is taken, so the digest
    describes exactly what is posted. The marker names the app, so two apps reporting on one pull
    request keep two comments.
    """
    scrub = redact or _identity
    footer = scrub(render_footer(commit=commit, run_url=run_url))
    marker_len = len(render_marker(outcome.app, "0" * 64)) + 1
    if run_url:
        note = (
            "A pull request comment holds at most 65,536 characters; the full diff is in the "
            f"job summary of the [workflow run]({_link_target(run_url)})."
        )
    else:
        note = (
            "A pull request comment holds at most 65,536 characters; the full diff is in the "
            "job summary of the workflow run."
        )
    budget = max_chars - len(footer) - marker_len
    content = scrub(render_content(outcome, max_chars=budget, truncation_note=note))
    # Redaction can lengthen text (a secret shorter than "***"); shrink until it fits.
    shrink = budget
    while len(content) > budget and shrink > 0:
        shrink -= len(content) - budget + 64
        content = scrub(render_content(outcome, max_chars=max(shrink, 0), truncation_note=note))
    digest = content_digest(content)
    return render_marker(outcome.app, digest) + "\n" + content + footer


def content_digest(content: str) -> str:
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()


def render_marker(app: str, digest: str) -> str:
    payload = json.dumps({"v": MARKER_VERSION, "app": app, "digest": digest}, separators=(",", ":"))
    # "--" cannot occur in a JSON string of a Fly app name, but an HTML comment must not contain
    # "-->" whatever the input, or the rest of the marker would be shown on the page.
    payload = payload.replace("-->", "--\\u003e")
    return f"<!-- {MARKER_NAME}: {payload} -->"


def parse_marker(body: str | None) -> Marker | None:
    """The marker of a comment this action wrote, or None.

    Only the first line counts: a marker quoted further down (in a diff, or a reply that copies
    our text) does not make a comment ours.
    """
    if not body:
        return None
    m = _MARKER_RE.match(body)
    if not m:
        return None
    try:
        data = json.loads(m.group(1))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    app, digest, version = data.get("app"), data.get("digest"), data.get("v")
    if not isinstance(app, str) or not isinstance(digest, str) or not isinstance(version, int):
        return None
    return Marker(app=app, digest=digest, version=version)


def marker_digest(body: str) -> str | None:
    marker = parse_marker(body)
    return marker.digest if marker else None


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


def _escape(text: str) -> str:
    """Plain text that cannot open HTML (and so cannot hide or break the rest of the report)."""
    return html.escape(text, quote=False)


def _cell(text: str) -> str:
    # A pipe ends a table cell even inside a code span; GFM strips this escape before it
    # parses the cell, so the pipe still shows.
    return text.replace("|", "\\|")


def _link_target(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _is_sha(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text))


def _identity(text: str) -> str:
    return text


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" … ({len(text) - limit:,} more characters cut)"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# -- the report -----------------------------------------------------------------------------


def _closing(outcome: Outcome) -> bool:
    """True when the run takes external access away (unexpose) rather than opening it."""
    return outcome.mode == "unexpose" or any(ip.action == "release" for ip in outcome.ips)


def _title(outcome: Outcome) -> str:
    app = inline_code(outcome.app)
    closing = _closing(outcome)
    verb, state = ("close", "closed") if closing else ("open", "open")
    icon = _TITLE_ICON[outcome.status]
    if outcome.status == "plan":
        text = f"Plan: {verb} {app} to external connections"
    elif outcome.status == "applied":
        text = f"Applied: {app} is {state} to external connections"
    elif outcome.status == "no-change":
        text = f"No change: {app} is already {state} to external connections"
    else:
        text = f"Failed: could not {verb} {app} to external connections"
    return f"### {icon} {text}"


def _lead(outcome: Outcome) -> str | None:
    if outcome.status == "plan":
        hint = (
            " A run with `mode: expose` applies it."
            if outcome.mode == "plan"
            else " A run without `dry-run: true` applies it."
        )
        return f"This is a plan: nothing was changed on Fly.io.{hint}"
    if outcome.status == "no-change":
        return "Everything was already in place: this run changed nothing."
    if outcome.status == "failed":
        return "The run stopped on an error; the tables below show how far it got."
    return None


def _addresses(ip: IpChange) -> str:
    return ", ".join(inline_code(a) for a in ip.addresses)


def _ip_row(ip: IpChange, outcome: Outcome) -> tuple[str, str, str]:
    label = "Dedicated IPv4" if ip.family == "v4" else "IPv6"
    status = outcome.status
    addrs = _addresses(ip)
    if ip.action == "allocate":
        before = "none"
        if ip.done:
            after = f"{addrs} (allocated)" if addrs else "allocated"
        elif status == "plan":
            after = "allocated on apply"
        elif status == "failed":
            after = "not allocated (the run stopped first)"
        else:
            after = "not allocated"
    elif ip.action == "keep":
        before = addrs or "present"
        after = "unchanged"
    elif ip.action == "release":
        before = addrs or "present"
        if ip.done:
            after = "none (released)"
        elif status == "plan":
            after = "released on apply"
        elif status == "failed":
            after = "not released (the run stopped first)"
        else:
            after = "not released"
    else:  # absent
        before = after = "none"
    return label, before, after


def _service_row(outcome: Outcome) -> tuple[str, str, str] | None:
    machines = outcome.machines
    if not machines:
        return None
    label = f"`pg_tls` service on port {outcome.service_port}"
    n = len(machines)
    changing = [m for m in machines if m.services_change]
    if not changing:
        return label, f"on all {_plural(n, 'machine')}", "unchanged"
    before = f"missing or misconfigured on {len(changing)} of {_plural(n, 'machine')}"
    if outcome.status == "plan":
        after = f"added on {_plural(len(changing), 'machine')} on apply"
    else:
        done = sum(1 for m in changing if m.result == "updated")
        if done == len(changing):
            after = f"added on {_plural(done, 'machine')}"
        else:
            after = f"added on {done} of {_plural(len(changing), 'machine')}"
    return label, before, after


def _image_row(outcome: Outcome) -> tuple[str, str, str] | None:
    machines = outcome.machines
    if not machines:
        return None
    label = "Image"
    changing = [m for m in machines if m.image_before != m.image_after]
    if not changing:
        images = sorted({m.image_before for m in machines})
        return label, ", ".join(inline_code(i) for i in images), "unchanged"
    before = ", ".join(inline_code(i) for i in sorted({m.image_before for m in changing}))
    after = ", ".join(inline_code(i) for i in sorted({m.image_after for m in changing}))
    if outcome.status == "plan":
        after += " on apply"
    else:
        done = sum(1 for m in changing if m.result == "updated")
        if done != len(changing):
            after += f" on {done} of {_plural(len(changing), 'machine')}"
    return label, before, after


def _restart_row(outcome: Outcome) -> tuple[str, str, str] | None:
    machines = outcome.machines
    if not machines:
        return None
    label = "Machines restarted"
    restart = outcome.machines_to_restart
    n = len(machines)
    if not restart:
        return label, "—", "none"
    order = "one at a time, primary last"
    if outcome.status == "plan":
        return label, "—", f"{len(restart)} of {n} on apply, {order}"
    updated = sum(1 for m in restart if m.result == "updated")
    if outcome.status != "failed":
        return label, "—", f"{updated} of {n}, {order}"
    rolled = sum(1 for m in restart if m.result == "rolled-back")
    failed = sum(1 for m in restart if m.result == "failed")
    rest = len(restart) - updated - rolled - failed
    parts = [f"{updated} of {len(restart)} updated"]
    if rolled:
        parts.append(f"{rolled} rolled back")
    if failed:
        parts.append(f"{failed} failed")
    if rest:
        parts.append(f"{rest} not reached")
    return label, "—", ", ".join(parts)


def _summary_table(outcome: Outcome) -> str:
    rows: list[tuple[str, str, str]] = [_ip_row(ip, outcome) for ip in outcome.ips]
    for row in (_service_row(outcome), _image_row(outcome), _restart_row(outcome)):
        if row is not None:
            rows.append(row)
    if not rows:
        return ""
    after = "After apply" if outcome.status == "plan" else "After"
    lines = [f"| | Before | {after} |", "|---|---|---|"]
    lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} |" for a, b, c in rows]
    return "\n".join(lines)


def _warnings(outcome: Outcome) -> list[str]:
    out: list[str] = []
    status = outcome.status
    new_v4 = [ip for ip in outcome.ips if ip.family == "v4" and ip.action == "allocate"]
    if new_v4 and status == "plan":
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
    if restart and status == "plan":
        out.append(
            f"**Restarts:** applying restarts {_plural(len(restart), 'Postgres machine')} one at "
            "a time, replicas first and the primary last. Each machine drops its connections "
            "while it restarts; the primary's restart briefly interrupts writes."
        )
    elif restart:
        restarted = [m for m in restart if m.result in ("updated", "rolled-back", "failed")]
        if restarted:
            out.append(
                f"**Restarts:** this run restarted {_plural(len(restarted), 'Postgres machine')}, "
                "one at a time, primary last; clients connected to them had to reconnect."
            )
    for w in outcome.warnings:
        out.append(_escape(" ".join(_clip(w, _MAX_WARNING_CHARS).splitlines())))
    return [f"> ⚠️ {w}" for w in out]


_RESULT_TEXT = {
    "updated": "✅ updated",
    "rolled-back": "↩️ rolled back",
    "failed": "❌ failed",
}


def _machine_change(m: MachineChange) -> str:
    parts: list[str] = []
    if m.services_change:
        parts.append("`pg_tls` service")
    if m.image_before != m.image_after:
        parts.append(f"image → {inline_code(m.image_after)}")
    return ", ".join(parts) or "none"


def _machine_result(m: MachineChange, status: str) -> str:
    if m.result in _RESULT_TEXT:
        return _RESULT_TEXT[m.result]
    if m.result == "pending":
        return "restarts on apply" if status == "plan" else "not reached"
    return "not reached" if m.restarts and status == "failed" else "unchanged"


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
        cells = [
            str(i),
            inline_code(m.id),
            _escape(m.region),
            _escape(m.role),
            _machine_change(m),
            _machine_result(m, outcome.status),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _verify_section(outcome: Outcome) -> str:
    if not outcome.verify:
        return ""
    lines = ["**Connection check**", ""]
    for v in outcome.verify:
        icon = "✅" if v.ok else ("⚠️" if v.warning_only else "❌")
        detail = _escape(" ".join(_clip(v.detail, 500).splitlines()))
        version = f", PostgreSQL {_escape(v.server_version)}" if v.server_version else ""
        extra = " (not counted as a failure)" if (v.warning_only and not v.ok) else ""
        lines.append(f"- {icon} {inline_code(v.target)}: {detail}{version}{extra}")
    return "\n".join(lines)


def _diff_stats(diff: str) -> tuple[int, int]:
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def _diff_section(outcome: Outcome, diff_limit: int | None, note: str | None) -> str:
    diff = outcome.config_diff
    if not diff:
        if outcome.fly_toml_after:
            return "`fly.toml`: no change."
        return ""
    added, removed = _diff_stats(diff)
    total_lines = len(diff.splitlines())
    shown = diff
    notice = ""
    if diff_limit is not None and diff_limit < len(diff):
        shown = diff[:diff_limit]
        cut = shown.rfind("\n")
        if cut > 0:
            shown = shown[: cut + 1]
        kept = len(shown.splitlines())
        notice = (
            f"\n\n> ✂️ The diff is cut after line {kept:,} of {total_lines:,} to fit the size limit."
        )
        if note:
            notice += " " + note
    summary = f"<code>fly.toml</code> diff (+{added} −{removed})"
    if notice:
        summary += ", cut"
    where = ""
    if outcome.fly_toml_path:
        where = f"\n\nThe new configuration was written to {inline_code(outcome.fly_toml_path)}."
    block = fenced(shown, "diff") if shown else "(diff left out)"
    return f"<details><summary>{summary}</summary>\n\n{block}{notice}{where}\n\n</details>"


def _hide_password(url: str) -> str:
    """Belt and braces: the Outcome holds a redacted URL, but a password must never get through."""
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
    if outcome.mode == "unexpose" and outcome.status != "failed":
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


def _render(outcome: Outcome, *, diff_limit: int | None, note: str | None) -> str:
    blocks = [
        _title(outcome),
        _lead(outcome) or "",
        _error_section(outcome),
        _summary_table(outcome),
        # A blank quoted line between warnings keeps each in its own paragraph.
        "\n>\n".join(_warnings(outcome)),
        _machine_table(outcome),
        _verify_section(outcome),
        _diff_section(outcome, diff_limit, note),
        _connection_section(outcome),
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
