"""Markdown report of one run, for the job summary and the pull request comment.

Pure functions of their arguments: no I/O, no clock and no redaction. The `Outcome` arrives
already clean (main passes it through `outcome.redacted(outcome, redactor)` once, where it builds
it), and the footer's commit and run URL are the runner's own values (read once by
`github.RunContext.from_env`), so nothing here knows the run's secrets. The same run always
renders the same text, and the PR comment's digest only changes when what the report says
changes. The comment adds a hidden marker line in front (app + digest, `comment_marker.py`) and the
same footer as the summary. The sections are drawn in `report_sections`, with `markdown.py`.

Sizing happens in one place, `fit`: GitHub takes a comment of at most 65,536 characters, the
runner a step summary of at most 1 MiB. The fly.toml diff is the part that gives way, so it is
drawn here (`diff_section`), collapsed, with the full image references a table shows cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .comment_marker import (
    COMMENT_SAFETY_MARGIN,
    GITHUB_COMMENT_LIMIT,
    content_digest,
    render_marker,
)
from .markdown import escape, fenced, inline_code, link_target, split_lines
from .outcome import Outcome
from .report_sections import render, short_image

# The runner refuses a step summary over 1 MiB per step. The report stays well below, leaving
# room for whatever else the step appends.
SUMMARY_MAX_BYTES = 1024 * 1024 - 64 * 1024
SUMMARY_NOTE = "The job summary of a step holds at most 1 MiB; the rest of the diff is left out."

# -- public API -----------------------------------------------------------------------------


def render_markdown(
    outcome: Outcome,
    *,
    commit: str | None,
    run_url: str | None,
    max_chars: int | None = None,
    max_bytes: int | None = None,
    note: str | None = None,
) -> str:
    """The full report, content then footer, within `max_chars` characters or `max_bytes`
    UTF-8 bytes (see `fit`) when one is given."""
    footer = render_footer(commit=commit, run_url=run_url)
    chars = None if max_chars is None else max_chars - len(footer)
    size = None if max_bytes is None else max_bytes - len(footer.encode())
    return fit(outcome, max_chars=chars, max_bytes=size, note=note) + footer


def summary_markdown(outcome: Outcome, *, commit: str | None, run_url: str | None) -> str:
    """The job summary: the full report, cut (with a notice) only above the runner's limit."""
    return render_markdown(
        outcome, commit=commit, run_url=run_url, max_bytes=SUMMARY_MAX_BYTES, note=SUMMARY_NOTE
    )


def comment_body(
    outcome: Outcome,
    *,
    commit: str | None,
    run_url: str | None,
    max_chars: int = GITHUB_COMMENT_LIMIT - COMMENT_SAFETY_MARGIN,
) -> str:
    """The PR comment: marker line, content, footer, in at most `max_chars` characters.

    The digest covers the content only (not the footer, which names the run), so a re-run that
    would post the same report leaves the comment alone. The marker names the app, so two apps
    reporting on one pull request keep two comments.
    """
    footer = render_footer(commit=commit, run_url=run_url)
    # Every digest has the same length, so the marker's length is known before the content.
    marker_len = len(render_marker(outcome.app, content_digest(""))) + 1
    where = f"[workflow run]({link_target(run_url)})" if run_url else "workflow run"
    note = (
        "A pull request comment holds at most 65,536 characters; the full diff is in the "
        f"job summary of the {where}."
    )
    content = fit(outcome, max_chars=max_chars - len(footer) - marker_len, note=note)
    return render_marker(outcome.app, content_digest(content)) + "\n" + content + footer


def fit(
    outcome: Outcome,
    *,
    max_chars: int | None = None,
    max_bytes: int | None = None,
    note: str | None = None,
) -> str:
    """The report without its footer, in at most `max_chars` characters or `max_bytes` UTF-8
    bytes (GitHub counts a comment in characters, the runner a summary in bytes); whole when
    neither is given or it fits.

    Only the fly.toml diff can be long in a normal run, so it gives way: it keeps as many whole
    lines as fit, then a notice saying so, followed by `note`. A report too long even without its
    diff (a flood of warnings) is cut bluntly, with a notice.
    """
    if max_chars is not None and max_bytes is not None:
        raise ValueError("fit takes max_chars or max_bytes, not both")
    full = render(outcome, diff_section(outcome, None, note))
    if max_bytes is not None:
        budget = _Budget(max_bytes, in_bytes=True)
    elif max_chars is not None:
        budget = _Budget(max_chars, in_bytes=False)
    else:
        return full
    if budget.size(full) <= budget.limit:
        return full
    # The most diff lines that fit, by bisection: the notice's line counts move the length a
    # little, so it is measured rather than computed.
    low, high, best = 0, len(split_lines(outcome.config_diff)) - 1, None
    while low <= high:
        mid = (low + high) // 2
        text = render(outcome, diff_section(outcome, mid, note))
        if budget.size(text) <= budget.limit:
            best, low = text, mid + 1
        else:
            high = mid - 1
    if best is not None:
        return best
    notice = "\n\n> ✂️ This report was cut to fit the size limit." + (f" {note}" if note else "")
    notice += "\n"
    text = render(outcome, diff_section(outcome, 0, note))
    return budget.prefix(text, max(budget.limit - budget.size(notice), 0)) + notice


# -- the diff ------------------------------------------------------------------------------------


def _full_images(outcome: Outcome) -> str:
    """The image references in full, where the table shows them cut."""
    changes = sorted({(m.image_before, m.image_after) for m in outcome.machines})
    shown = [
        inline_code(before) + (f" → {inline_code(after)}" if after != before else "")
        for before, after in changes
        if short_image(before) != before or short_image(after) != after
    ]
    return f"**Image:** {', '.join(shown)}" if shown else ""


def diff_section(outcome: Outcome, diff_lines: int | None, note: str | None) -> str:
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
    images = _full_images(outcome)
    images = f"\n\n{images}" if images else ""
    block = fenced(shown, "diff") if shown else "(diff left out)"
    return f"<details><summary>{summary}</summary>\n\n{block}{notice}{images}\n\n</details>"


@dataclass(frozen=True)
class _Budget:
    """A size limit in characters or in UTF-8 bytes."""

    limit: int
    in_bytes: bool

    def size(self, text: str) -> int:
        return len(text.encode()) if self.in_bytes else len(text)

    def prefix(self, text: str, size: int) -> str:
        if not self.in_bytes:
            return text[:size]
        # A character cut in half by the byte limit is dropped, not left as invalid UTF-8.
        return text.encode()[:size].decode(errors="ignore")


def render_footer(*, commit: str | None, run_url: str | None) -> str:
    parts = ["fly-pg-external"]
    if commit:
        # A bare 7-character SHA is auto-linked to the commit by GitHub in comments.
        parts.append(f"commit {escape(commit[:7] if _is_sha(commit) else commit)}")
    if run_url:
        parts.append(f"[workflow run]({link_target(run_url)})")
    return "\n---\n<sub>" + " · ".join(parts) + "</sub>\n"


def _is_sha(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text))
