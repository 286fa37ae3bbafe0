"""Versions (vX.Y.Z, compared numerically) and their release notes in CHANGELOG.md."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

from fly_pg_external.gha import Actions

from .errors import ReleaseError


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        m = re.fullmatch(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", text.strip())
        return None if m is None else cls(int(m[1]), int(m[2]), int(m[3]))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def tag(self) -> str:
        return f"v{self}"

    @property
    def major_tag(self) -> str:
        return f"v{self.major}"


_HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?:\s+-\s+(?P<date>\S.*?))?\s*$")
_LINK_DEFINITION = re.compile(r"^\[[^\]]+\]:\s+\S+")


@dataclass(frozen=True)
class ChangelogSection:
    version: str
    date: str | None
    body: str


def changelog_sections(text: str) -> list[ChangelogSection]:
    """The `## [name] - date` sections of a Keep a Changelog file, bodies stripped (the link
    definitions at the end of the file belong to no section)."""
    sections: list[ChangelogSection] = []
    current: tuple[str, str | None, list[str]] | None = None
    for line in [*text.splitlines(), "## [end]"]:
        heading = _HEADING.match(line)
        if heading is not None or (current is not None and line.startswith("## ")):
            if current is not None:
                sections.append(
                    ChangelogSection(current[0], current[1], "\n".join(current[2]).strip())
                )
            current = None if heading is None else (heading["name"], heading["date"], [])
        elif current is not None and not _LINK_DEFINITION.match(line):
            current[2].append(line)
    return sections[:-1] if sections and sections[-1].version == "end" else sections


def release_notes(changelog: Path, version: Version, gha: Actions) -> str:
    """The version's CHANGELOG.md section: the release notes. An error if it is missing; a
    warning if it has no release date."""
    if not changelog.is_file():
        raise ReleaseError(
            "No CHANGELOG.md", f"{changelog} does not exist; it holds the release notes."
        )
    wanted = str(version)
    for section in changelog_sections(changelog.read_text(encoding="utf-8")):
        if Version.parse(section.version) == version:
            if not section.body:
                raise ReleaseError(
                    "Empty release notes", f"CHANGELOG.md's section [{wanted}] is empty."
                )
            if (section.date or "").strip().lower() in ("", "unreleased"):
                gha.warning(
                    f"CHANGELOG.md gives [{wanted}] no release date; set it on the branch.",
                    title="Release date",
                )
            return section.body
    raise ReleaseError(
        "No release notes",
        f"CHANGELOG.md has no `## [{wanted}] - YYYY-MM-DD` section: write this version's notes "
        "there (move them out of [Unreleased]) and release again. Nothing was built or pushed.",
    )
