"""What makes a release verifiable, as .github/workflows/release.yml declares it.

A signed build provenance attestation of the pushed image, made by a job that can do nothing
else; the writes to the repository behind a protected environment; nothing pulled or installed
that is not pinned (images by digest, Python packages by hash). The order of the release and
its registry login are tests/unit/test_release.py's; that every action runs on a runtime GitHub
still has is tests/unit/test_action_runtimes.py's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
DIGEST_PINNED = re.compile(r"^[\w./-]+(?::[\w.-]+)?@sha256:[0-9a-f]{64}$")
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.M)


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(f"{action}@")]


def resolve(value: str, env: dict[str, str]) -> str:
    """`${{ env.NAME }}` replaced by the workflow's value, as the runner does for `with:`."""
    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env[m[1]], value)


def test_one_job_attests_the_pushed_image_and_can_do_nothing_else() -> None:
    """The OIDC token (id-token: write) can sign anything in this repository's name: only the job
    that signs the attestation may mint it, and that job runs nothing but the attest action on
    the digest the image job pushed, after the image passed the verify job and before anything
    is written to the repository."""
    jobs = workflow()["jobs"]
    signers = [n for n, j in jobs.items() if set(j["permissions"]) & {"id-token", "attestations"}]
    assert signers == ["attest"]
    attest = jobs["attest"]
    assert attest["permissions"] == {"id-token": "write", "attestations": "write"}
    (step,) = attest["steps"]
    assert step == steps_using(attest, "actions/attest-build-provenance")[0]
    assert step["with"] == {
        "subject-name": "${{ needs.image.outputs.image }}",
        "subject-digest": "${{ needs.image.outputs.digest }}",
        "push-to-registry": False,
    }
    assert set(attest["needs"]) == {"image", "verify"}
    assert "attest" in jobs["release"]["needs"]
    # The subject's name is the image as pushed: the script writes it next to the digest.
    outputs = jobs["image"]["outputs"]
    assert outputs["image"] == "${{ steps.push.outputs.image }}"
    push = (ROOT / "scripts" / "releasing" / "image.py").read_text()
    assert 'write_output(cfg, "image", cfg.image)' in push


def test_only_the_job_that_writes_to_the_repository_waits_for_the_release_environment() -> None:
    jobs = workflow()["jobs"]
    gated = {name: job["environment"] for name, job in jobs.items() if "environment" in job}
    assert gated == {"release": "release"}
    assert jobs["release"]["permissions"] == {"contents": "write"}
    releasing = (ROOT / "docs" / "releasing.md").read_text()
    assert "**The `release` environment is protected.**" in releasing


def test_every_image_the_jobs_pull_is_pinned_by_digest() -> None:
    """QEMU's binfmt image (run --privileged) and the BuildKit daemon (which holds the registry
    login while it pushes) would otherwise be whatever their moving tags name that day."""
    data = workflow()
    env = data["env"]
    qemu = [
        s for job in data["jobs"].values() for s in steps_using(job, "docker/setup-qemu-action")
    ]
    buildx = [
        s for job in data["jobs"].values() for s in steps_using(job, "docker/setup-buildx-action")
    ]
    assert qemu and buildx
    for step in qemu:
        assert DIGEST_PINNED.match(resolve(step["with"]["image"], env)), step
        assert step["with"]["cache-image"] is False, "a cached image is loaded, not pulled"
    for step in buildx:
        options = resolve(step["with"]["driver-opts"], env).split(",")
        images = [o.removeprefix("image=") for o in options if o.startswith("image=")]
        assert len(images) == 1 and DIGEST_PINNED.match(images[0]), step


def test_every_job_installs_python_packages_only_from_a_hashed_lock() -> None:
    installs = []
    for name, job in workflow()["jobs"].items():
        for step in job["steps"]:
            script = str(step.get("run", ""))
            assert "make " not in script, f"{name}: make installs the dev tools without hashes"
            for line in script.splitlines():
                if "pip install" in line:
                    installs.append(line)
                    assert "--require-hashes" in line and "--only-binary=:all:" in line, line
                    for lock in re.findall(r"-r (\S+)", line):
                        assert (ROOT / lock).is_file(), lock
    assert len(installs) == 3  # one per job that runs Python


def test_the_release_lock_is_the_image_lock_plus_the_simulator_and_every_pin_is_hashed() -> None:
    """The verify job runs the release script on the same versions as the image (and as the
    other jobs), plus what the simulator needs; pip-compile made it from requirements-release.in,
    and its header says how to make it again."""
    image = dict(REQUIREMENT.findall((ROOT / "requirements.txt").read_text()))
    text = (ROOT / "requirements-release.txt").read_text()
    release = dict(REQUIREMENT.findall(text))
    assert {k: release.get(k) for k in image} == image
    assert {"graphql-core", "pyyaml"} <= set(release)
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n\n", 1)[-1].strip())
    requirement_blocks = [b for b in blocks if REQUIREMENT.match(b)]
    assert len(requirement_blocks) == len(release)
    assert all("--hash=sha256:" in b for b in requirement_blocks)
    assert "pip-compile --generate-hashes" in text[:600] and "requirements-release.in" in text[:600]
    assert "-r requirements.txt" in (ROOT / "requirements-release.in").read_text()
