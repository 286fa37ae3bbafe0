"""The `preflight` step: whether this version can be released at all, before anything is built:
it is new (no tag, no release branch), CHANGELOG.md has its notes, action.yml builds the
Dockerfile, and the major tag can be placed."""

from __future__ import annotations

from .commit import pin_image, release_branch
from .config import DRY_DIGEST
from .context import Context
from .errors import ReleaseError
from .tags import plan_major
from .versions import release_notes


def preflight(ctx: Context) -> None:
    cfg, gh = ctx.cfg, ctx.github
    notes = release_notes(cfg.root / "CHANGELOG.md", cfg.version, ctx.gha)
    pin_image((cfg.root / "action.yml").read_text(encoding="utf-8"), f"{cfg.image}@{DRY_DIGEST}")
    existing = gh.ref_commit(f"tags/{cfg.version.tag}")
    if existing is not None:
        raise ReleaseError(
            "Already released",
            f"{cfg.version.tag} already exists (commit {existing}). A released version never "
            "changes its image or commit: release a new version instead. (To finish a release "
            "that stopped after its image was pushed, re-run only its failed jobs.)",
        )
    branch = gh.ref_commit(f"heads/{release_branch(cfg.version)}")
    if branch is not None:
        raise ReleaseError(
            "Already released",
            f"{release_branch(cfg.version)} already exists (commit {branch}): a run for "
            f"{cfg.version.tag} got as far as its release commit. To finish it, re-run only its "
            "failed jobs; to start over with a new image, delete that branch first.",
        )
    plan = plan_major(gh, cfg.version, None)
    where = {
        "create": f"created at {cfg.version.tag}",
        "move": f"moved from {plan.current_version} to {cfg.version}",
        "noop": "kept",
        "keep": f"kept at {plan.current_version}, a later release ({cfg.version} is a backport)",
    }[plan.action]
    major = cfg.version.major_tag
    ctx.gha.info(f"Releasing {cfg.version.tag} from {cfg.source_sha}; {major} will be {where}.")
    ctx.gha.info(f"Release notes ({len(notes)} characters) from CHANGELOG.md.")
