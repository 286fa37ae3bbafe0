"""The `tag` step: vX.Y.Z created at the release commit, and the major tag vX moved there only
forward (a backport leaves it on the later release)."""

from __future__ import annotations

from dataclasses import dataclass

from .commit import trailers
from .context import Context
from .errors import ReleaseError
from .github import GitHub
from .versions import Version


@dataclass(frozen=True)
class MajorPlan:
    action: str  # create, move, keep, noop
    current: str | None
    current_version: Version | None


def plan_major(gh: GitHub, version: Version, release_sha: str | None) -> MajorPlan:
    """Where the major tag goes: only forward, judged by the version of the commit it names now
    (the vX.Y.Z tags on that commit and its Release-Version trailer, the highest of them)."""
    current = gh.ref_commit(f"tags/{version.major_tag}")
    if current is None:
        return MajorPlan("create", None, None)
    found = [v for v, sha in gh.version_tags().items() if sha == current]
    marker = Version.parse(trailers(gh.commit(current)["message"]).get("Release-Version", ""))
    if marker is not None:
        found.append(marker)
    if not found:
        raise ReleaseError(
            "Major tag",
            f"{version.major_tag} points at {current}, which no vX.Y.Z tag and no Release-Version "
            f"trailer names, so the release cannot tell whether moving it to {version.tag} is "
            f"forward. Point {version.major_tag} at the latest release commit by hand "
            f"(git push --force origin <commit>:refs/tags/{version.major_tag}), then release "
            "again.",
        )
    at = max(found)
    if version > at:
        return MajorPlan("move", current, at)
    if version == at:
        return MajorPlan("noop" if current == release_sha else "move", current, at)
    return MajorPlan("keep", current, at)


def move_tags(ctx: Context) -> None:
    cfg, gh = ctx.cfg, ctx.github
    release_sha = ctx.state.need_release_sha()
    plan = plan_major(gh, cfg.version, release_sha)  # before anything moves
    tag, major = cfg.version.tag, cfg.version.major_tag
    current = gh.ref_commit(f"tags/{tag}")
    if current is None:
        gh.write("POST", "git/refs", {"ref": f"refs/tags/{tag}", "sha": release_sha})
        ctx.gha.info(f"Created {tag} at {release_sha}.")
    elif current != release_sha:
        raise ReleaseError(
            "Already released", f"{tag} appeared at {current} during the release: stopped."
        )
    if plan.action == "create":
        gh.write("POST", "git/refs", {"ref": f"refs/tags/{major}", "sha": release_sha})
        ctx.gha.info(f"Created {major} at {tag}.")
    elif plan.action == "move":
        gh.write("PATCH", f"git/refs/tags/{major}", {"sha": release_sha, "force": True})
        ctx.gha.info(f"Moved {major} forward from {plan.current_version} to {cfg.version}.")
    elif plan.action == "keep":
        ctx.gha.notice(
            f"{major} stays at {plan.current_version}: {cfg.version} is a backport.",
            title="Major tag",
        )
    if not cfg.dry_run:
        _check_tags(gh, plan, tag, major, release_sha)
    ctx.gha.append_summary(f"- tags: `{tag}`" + ("" if plan.action == "keep" else f", `{major}`"))


def _check_tags(gh: GitHub, plan: MajorPlan, tag: str, major: str, release_sha: str) -> None:
    """Read back: the tags made or moved name the release commit."""
    moved = {tag: gh.ref_commit(f"tags/{tag}")}
    if plan.action != "keep":
        moved[major] = gh.ref_commit(f"tags/{major}")
    wrong = {name: sha for name, sha in moved.items() if sha != release_sha}
    if wrong:
        raise ReleaseError("Tags", f"tags not at the release commit {release_sha}: {wrong}")
