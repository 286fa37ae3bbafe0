"""The README stays a README: short enough to read (comparable actions' READMEs run from 240 to
1,800 words), with the reference in docs/; and its links, and those of the pages it points to,
lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_WORDS = 2200
LINK = re.compile(r"\]\(([^)\s]+)\)")


def words(text: str) -> int:
    """As `wc -w` counts them: runs of non-space characters, code and tables included."""
    return len(text.split())


def test_readme_is_short() -> None:
    count = words(README.read_text(encoding="utf-8"))
    print(f"README.md: {count} words (at most {MAX_WORDS})")
    assert count <= MAX_WORDS, (
        f"README.md has {count} words; move reference material to docs/ (at most {MAX_WORDS})"
    )


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation other than `-` and
    `_` dropped, spaces made hyphens (a repeated heading gets -1, -2, …)."""
    found: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            n, unique = 0, slug
            while unique in found:
                n += 1
                unique = f"{slug}-{n}"
            found.add(unique)
    return found


def local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def linked_pages() -> list[Path]:
    """The README and the pages of docs/ it links to: where its reference sections went."""
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in local_links(README)
        if target.startswith("docs/") and target.partition("#")[0].endswith(".md")
    }
    return [README, *sorted(p for p in linked if p.exists())]


@pytest.mark.parametrize("page", linked_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        missing_heading = anchor and file.suffix == ".md" and anchor not in anchors(file)
        if not file.exists() or missing_heading:
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_the_anchor_rule_matches_githubs() -> None:
    page = ROOT / "docs" / "recipes.md"
    assert "fork-safe-plan-fork-pull-requests-through-workflow_run" in anchors(page)
    assert "open-for-one-job-migrations-in-ci" in anchors(page)
