"""The `publish` step: the GitHub Release of vX.Y.Z, its notes the version's CHANGELOG.md
section, marked "Latest" only if no higher version exists; made, brought up to date, or kept."""

from __future__ import annotations

from .context import Context
from .versions import release_notes


def publish(ctx: Context) -> None:
    cfg, gh = ctx.cfg, ctx.github
    notes = release_notes(cfg.root / "CHANGELOG.md", cfg.version, ctx.gha)
    tag = cfg.version.tag
    versions = set(gh.version_tags()) | {cfg.version}
    latest = "true" if cfg.version >= max(versions) else "false"
    body = {
        "tag_name": tag,
        "name": tag,
        "body": notes,
        "draft": False,
        "prerelease": False,
        "make_latest": latest,
    }
    existing = gh.find(f"releases/tags/{tag}")
    if existing is None:
        made = gh.write("POST", "releases", body)
        ctx.gha.info(
            f"Created the GitHub Release {tag}{'' if latest == 'true' else ' (not marked Latest)'}."
        )
    elif existing.get("body") != notes or existing.get("name") != tag:
        made = gh.write(
            "PATCH",
            f"releases/{existing['id']}",
            {k: body[k] for k in ("name", "body", "make_latest")},
        )
        ctx.gha.info(f"Updated the GitHub Release {tag} to this version's notes.")
    else:
        made = existing
        ctx.gha.info(f"The GitHub Release {tag} already has this version's notes: kept.")
    ctx.gha.append_summary(f"- GitHub Release: {made.get('html_url') or tag}")
