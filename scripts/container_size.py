"""An image's size as a registry stores it: each layer a gzip-compressed tarball.

`docker save` writes every layer as an uncompressed tar; `docker push` gzips each one before
upload and a runner downloads those gzip blobs. So each layer is compressed here with zlib at
gzip's default level (6) and the compressed bytes are counted. Docker's own gzip (Go's
compress/gzip, also level 6) makes blobs within a few percent of these; the image's config and
manifest, a few kilobytes, are left out.

Layers are matched by their diff ID (the SHA-256 of the uncompressed tar, which
`docker image inspect` lists under RootFS.Layers), so the base's layers and the ones the action
adds on top are told apart without trusting the order of the archive.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import zlib
from dataclasses import asdict, dataclass
from typing import IO, Any

CHUNK = 1 << 20
GZIP_LEVEL = 6  # gzip's and Docker's default
METHOD = (
    "every layer of `docker save` gzip-compressed at the default level (6), as `docker push` "
    "uploads it; the image's config and manifest (a few KB) left out"
)


@dataclass(frozen=True)
class Layers:
    """Some layers of an image: how many, their size unpacked, their size as gzip blobs."""

    count: int
    tar_bytes: int
    gzip_bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def diff_ids(image: str) -> list[str]:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    layers: list[str] = json.loads(out) or []
    return layers


def _compress(stream: IO[bytes]) -> tuple[str, int, int]:
    """(diff ID, bytes, gzip bytes) of one layer tarball, streamed."""
    digest = hashlib.sha256()
    gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    raw = packed = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        raw += len(chunk)
        packed += len(gzip.compress(chunk))
    packed += len(gzip.flush())
    return "sha256:" + digest.hexdigest(), raw, packed


def layer_sizes(image: str) -> dict[str, tuple[int, int]]:
    """Diff ID → (tar bytes, gzip bytes) of every layer of `image`, from `docker save`."""
    sizes: dict[str, tuple[int, int]] = {}
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        # A stream ("r|"): the archive is read once, never written to disk.
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                # A layer saved twice is a symlink to the first copy: one blob in a registry.
                if not member.isfile() or not member.name.endswith("layer.tar"):
                    continue
                layer = archive.extractfile(member)
                assert layer is not None
                diff_id, raw, packed = _compress(layer)
                sizes[diff_id] = (raw, packed)
    if proc.returncode != 0:
        raise RuntimeError(f"docker save {image} exited {proc.returncode}")
    return sizes


def _total(ids: list[str], sizes: dict[str, tuple[int, int]]) -> Layers:
    unique = list(dict.fromkeys(ids))
    missing = [i for i in unique if i not in sizes]
    if missing:
        raise RuntimeError(f"docker save left out layer {missing[0]}")
    return Layers(
        count=len(unique),
        tar_bytes=sum(sizes[i][0] for i in unique),
        gzip_bytes=sum(sizes[i][1] for i in unique),
    )


def split_sizes(image: str, base: str) -> tuple[Layers, Layers]:
    """(the base's layers, the layers `image` adds on top of them)."""
    ids, base_ids = diff_ids(image), diff_ids(base)
    if ids[: len(base_ids)] != base_ids:
        raise RuntimeError(f"{image} is not built on {base}: its first layers differ")
    sizes = layer_sizes(image)
    return _total(base_ids, sizes), _total(ids[len(base_ids) :], sizes)
