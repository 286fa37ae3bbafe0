"""The image: docker commands (printed in a dry run), and the `build` and `push` steps."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fly_pg_external.gha import Actions

from .config import DRY_DIGEST, Config, Docker, write_output
from .context import Context
from .errors import ReleaseError


def docker_runner(dry_run: bool, gha: Actions) -> Docker:
    def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        if dry_run:
            gha.info("[dry-run] docker " + " ".join(_shell_quote(a) for a in argv))
            return subprocess.CompletedProcess(["docker", *argv], 0, "", "")
        gha.info("+ docker " + " ".join(_shell_quote(a) for a in argv))
        return subprocess.run(
            ["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def checked(proc: subprocess.CompletedProcess[str], title: str, what: str) -> None:
    """A failed docker command stops the release with the end of its output."""
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise ReleaseError(title, f"{what} failed (exit {proc.returncode}):\n{tail}")


def build_args(cfg: Config) -> list[str]:
    labels = {
        "org.opencontainers.image.source": f"{cfg.server_url}/{cfg.repository}",
        "org.opencontainers.image.revision": cfg.source_sha,
        "org.opencontainers.image.version": cfg.version.tag,
    }
    argv = ["buildx", "build", "--platform", ",".join(cfg.platforms)]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return [*argv, "--tag", f"{cfg.image}:{cfg.version}", str(cfg.root)]


def build(ctx: Context) -> None:
    checked(ctx.docker(build_args(ctx.cfg), 3600), "Build", "docker buildx build")


def push(ctx: Context) -> None:
    cfg = ctx.cfg
    with tempfile.TemporaryDirectory() as tmp:
        metadata = Path(tmp) / "metadata.json"
        argv = [*build_args(cfg)[:-1], "--push", "--metadata-file", str(metadata), str(cfg.root)]
        checked(ctx.docker(argv, 3600), "Push", "docker buildx build --push")
        if cfg.dry_run:
            digest = ctx.state.digest or DRY_DIGEST
        else:
            written = json.loads(metadata.read_text()) if metadata.exists() else {}
            digest = str(written.get("containerimage.digest", ""))
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ReleaseError("Push", f"the push reported no image digest ({digest!r})")
    ctx.state.digest = digest
    write_output(cfg, "digest", digest)
    # The image's name as pushed (the owner lowercased): the attestation's subject.
    write_output(cfg, "image", cfg.image)
    ctx.gha.append_summary(f"- image: `{cfg.image}@{digest}`")
    ctx.gha.info(f"Pushed {cfg.image}:{cfg.version} = {cfg.image}@{digest}")
