"""The action's own pull request comment: the hidden first line that makes a comment ours (the
app and a digest of the report, so an unchanged report is not posted again and two apps keep two
comments), GitHub's size limit for it, and the comment once the post step of `lifetime: job`
has run (what the end of the job did first, the main step's report folded below).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

# GitHub refuses a comment body longer than this ("Body is too long (maximum is 65536
# characters)").
GITHUB_COMMENT_LIMIT = 65_536
# The comment is built to stay this far below the limit: GitHub counts characters on its side
# after its own normalisation, and a few hundred characters of slack cost nothing.
COMMENT_SAFETY_MARGIN = 512
MARKER_NAME = "fly-pg-external"
MARKER_VERSION = 1
_MARKER_RE = re.compile(r"\A<!-- fly-pg-external: (\{[^\n]*\}) -->(?:\r?\n|\Z)")


@dataclass(frozen=True)
class Marker:
    """What the hidden first line of one of our comments says."""

    app: str
    digest: str
    version: int = MARKER_VERSION


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
    m = _MARKER_RE.match(body or "")
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


# -- the comment once a `lifetime: job` post step has run -----------------------------------

# Where the main step's report starts in a comment the post step rewrote: found again if the
# post step runs a second time (a re-run), so its part is replaced, never nested.
MAIN_REPORT_START = "<!-- fly-pg-external: main step -->"
_FOLD_OPEN = "<details><summary>What the main step reported</summary>\n\n"
_FOLD_CLOSE = "\n\n</details>\n"


def job_end_comment(
    old_body: str,
    job_end: str,
    *,
    app: str,
    max_chars: int = GITHUB_COMMENT_LIMIT - COMMENT_SAFETY_MARGIN,
) -> str:
    """The comment after the post step of `lifetime: job`: what it did at the end of the job
    (`job_end`, its own Markdown) first, the main step's report folded below, so the first thing
    a reader sees is true once the job is over ("open" no longer is). Within `max_chars`: the
    main step's report gives way, whole, to a pointer at the job summary."""
    head = job_end.rstrip("\n") + "\n\n"
    folded = f"{MAIN_REPORT_START}\n{_FOLD_OPEN}{main_step_report(old_body)}{_FOLD_CLOSE}"
    marker_len = len(render_marker(app, content_digest(""))) + 1
    content = head + folded
    if marker_len + len(content) > max_chars:
        content = head + "The main step's report is in the job summary of its workflow run.\n"
    return render_marker(app, content_digest(content)) + "\n" + content


def main_step_report(body: str) -> str:
    """The main step's report in one of our comments: all of it after the marker line, or, once
    a post step rewrote the comment, what it folded."""
    _, _, rest = body.partition("\n") if parse_marker(body) else ("", "", body)
    start = rest.find(MAIN_REPORT_START)
    if start < 0:
        return rest.strip("\n")
    inner = rest[start + len(MAIN_REPORT_START) :].lstrip("\n")
    inner = inner.removeprefix(_FOLD_OPEN)
    end = inner.rfind(_FOLD_CLOSE.rstrip("\n"))
    return (inner[:end] if end >= 0 else inner).strip("\n")
