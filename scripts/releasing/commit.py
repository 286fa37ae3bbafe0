"""The release commit: action.yml pinned to the image by digest, on top of the source commit, on
a branch of its own (releases/vX.Y.Z); and the `commit` step that makes it, or finds it made."""

from __future__ import annotations

import re

from .config import write_output
from .context import Context
from .errors import ReleaseError
from .versions import Version

_BUILD_LINE = re.compile(r"^(?P<indent>[ \t]+)image:[ \t]*(['\"]?)Dockerfile\2[ \t]*$", re.M)


def pin_image(action_yml: str, image_ref: str) -> str:
    """action.yml with `image: Dockerfile` replaced by `image: docker://<image_ref>`."""
    found = _BUILD_LINE.findall(action_yml)
    if len(found) != 1:
        raise ReleaseError(
            "action.yml",
            "action.yml must say `image: Dockerfile` exactly once under `runs:` "
            f"(found {len(found)}): release from a commit that builds the Dockerfile.",
        )
    return _BUILD_LINE.sub(lambda m: f"{m['indent']}image: docker://{image_ref}", action_yml)


def trailers(message: str) -> dict[str, str]:
    return {
        m["key"]: m["value"].strip()
        for m in re.finditer(
            r"^(?P<key>Release-Version|Source-Commit|Image): (?P<value>.+)$", message, re.M
        )
    }


def commit_message(version: Version, source_sha: str, image_ref: str) -> str:
    return (
        f"Release {version.tag}\n\n"
        "action.yml runs the image built from this version's Dockerfile, pulled by digest,\n"
        "instead of building the Dockerfile on every job.\n\n"
        f"Release-Version: {version}\n"
        f"Source-Commit: {source_sha}\n"
        f"Image: {image_ref}\n"
    )


def release_branch(version: Version) -> str:
    """The branch that holds the release commit: `releases/vX.Y.Z`. The release commit is not on
    the branch it was released from (that keeps `image: Dockerfile`); without a branch of its own
    no branch would contain it, and GitHub shows such a commit as one that "does not belong to any
    branch of this repository", the warning a commit pushed only to a fork gets. The branch is
    made once, like the version tag, and never moves."""
    return f"releases/{version.tag}"


def release_commit(ctx: Context) -> None:
    cfg, gh, state = ctx.cfg, ctx.github, ctx.state
    image_ref = f"{cfg.image}@{state.need_digest()}"
    # A re-run finds the commit an earlier attempt made: on the version tag, or, when the tag
    # step never ran, on the release branch.
    name = cfg.version.tag
    existing = gh.ref_commit(f"tags/{name}")
    if existing is None:
        name = release_branch(cfg.version)
        existing = gh.ref_commit(f"heads/{name}")
    if existing is not None:
        if not _is_release_commit(ctx, existing, image_ref):
            raise ReleaseError(
                "Already released",
                f"{name} already exists at {existing}, which is not this release's commit. A "
                "released version never changes: release a new version.",
            )
        ctx.gha.info(f"{name} is already at this release's commit {existing}: kept.")
        state.release_sha = existing
    else:
        state.release_sha = _make_release_commit(ctx, image_ref)
        ctx.gha.info(f"Release commit {state.release_sha}: action.yml runs {image_ref}.")
    _put_on_branch(ctx, state.release_sha)
    write_output(cfg, "release-commit", state.release_sha)
    ctx.gha.append_summary(f"- release commit: `{state.release_sha}` (on `{cfg.source_sha}`)")


def _make_release_commit(ctx: Context, image_ref: str) -> str:
    """The source commit's tree with action.yml pinned, committed on top of it (no git
    credentials on disk: through the API)."""
    cfg, gh = ctx.cfg, ctx.github
    source = gh.commit(cfg.source_sha)
    pinned = pin_image(gh.file_at(cfg.source_sha, "action.yml"), image_ref)
    entry = {"path": "action.yml", "mode": "100644", "type": "blob", "content": pinned}
    tree = gh.write("POST", "git/trees", {"base_tree": source["tree"]["sha"], "tree": [entry]})
    message = commit_message(cfg.version, cfg.source_sha, image_ref)
    commit = gh.write(
        "POST",
        "git/commits",
        {"message": message, "tree": tree["sha"], "parents": [cfg.source_sha]},
    )
    return str(commit["sha"])


def _is_release_commit(ctx: Context, sha: str, image_ref: str) -> bool:
    cfg, gh = ctx.cfg, ctx.github
    commit = gh.commit(sha)
    marks = trailers(commit["message"])
    if [p["sha"] for p in commit["parents"]] != [cfg.source_sha] or marks.get(
        "Release-Version"
    ) != str(cfg.version):
        return False
    if marks.get("Image") != image_ref:
        raise ReleaseError(
            "Already released",
            f"{cfg.version.tag} is already released with the image {marks.get('Image')}, not "
            f"{image_ref}: a released version never changes its image. Release a new version.",
        )
    return f"image: docker://{image_ref}" in gh.file_at(sha, "action.yml")


def _put_on_branch(ctx: Context, sha: str) -> None:
    cfg, gh = ctx.cfg, ctx.github
    branch = release_branch(cfg.version)
    at = gh.ref_commit(f"heads/{branch}")
    if at is None:
        gh.write("POST", "git/refs", {"ref": f"refs/heads/{branch}", "sha": sha})
        ctx.gha.info(f"Created the branch {branch} at the release commit {sha}.")
        at = sha if cfg.dry_run else gh.ref_commit(f"heads/{branch}")
    if at != sha:
        raise ReleaseError(
            "Release branch",
            f"{branch} is at {at}, not at the release commit {sha}: the branch holds one release "
            "commit and never moves. If it is left from a release that never finished, delete "
            "it and re-run this job.",
        )
    write_output(cfg, "release-branch", branch)
