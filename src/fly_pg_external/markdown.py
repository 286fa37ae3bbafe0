"""Markdown as GitHub renders it in a comment or a job summary, for text the action did not
write: code spans and blocks no backtick can close, text that cannot open HTML, table cells a
pipe cannot split, lines cut where a diff can be cut. Pure helpers, no knowledge of the report.
"""

from __future__ import annotations

import html
import re


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


def cell(text: str) -> str:
    # A pipe ends a table cell even inside a code span; GFM strips this escape before it
    # parses the cell, so the pipe still shows.
    return text.replace("|", "\\|")


def link_target(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" … ({len(text) - limit:,} more characters cut)"


def plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def split_lines(text: str) -> list[str]:
    """`text` split after each newline and only there, so that some lines of a diff are always a
    prefix of it (`str.splitlines` also splits at CR, form feeds and Unicode separators)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
