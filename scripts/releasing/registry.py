"""The `check-public` step: the pushed image pulled by digest as an anonymous client, the way a
user's runner pulls it (no credentials; a token from the registry's Bearer challenge asked for
without any)."""

from __future__ import annotations

import hashlib
import json
import re

import httpx

from .config import IMAGE_NAME, Config, Sleep
from .context import Context
from .errors import ReleaseError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
_ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}


class _TryAgain(Exception):
    """The manifest is not there yet (a registry may answer 404 for a moment after a push), or
    the registry failed (5xx): ask again. The message says what was answered."""


def check_public(ctx: Context) -> None:
    cfg = ctx.cfg
    digest = ctx.state.need_digest()
    image_ref = f"{cfg.image}@{digest}"
    base, name = _registry_parts(cfg.image)
    url = f"{base}/v2/{name}/manifests/{digest}"
    if cfg.dry_run:
        ctx.gha.info(
            f"[dry-run] anonymous GET {url} (following the Bearer challenge, no credentials)"
        )
        return
    with httpx.Client(
        timeout=30,
        transport=ctx.registry_transport,
        headers={"User-Agent": "fly-pg-external-release"},
    ) as http:
        body = _anonymous_manifest(cfg, http, url, image_ref, ctx.sleep)
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise ReleaseError("Image digest", f"the registry served {image_ref} with other content")
    manifest = json.loads(body)
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in manifest.get("manifests", [])
        if "platform" in m
    }
    missing = sorted(set(cfg.platforms) - platforms)
    if manifest.get("mediaType") not in INDEX_TYPES or missing:
        raise ReleaseError(
            "Image platforms",
            f"{image_ref} is not an index for {', '.join(cfg.platforms)} (missing: {missing})",
        )
    pulled = ", ".join(sorted(platforms & set(cfg.platforms)))
    ctx.gha.info(f"{image_ref} can be pulled anonymously ({pulled}).")
    ctx.gha.append_summary(f"- anonymous pull of `{image_ref}`: ok")


def _registry_parts(image: str) -> tuple[str, str]:
    host, _, name = image.partition("/")
    local = host.startswith(("127.0.0.1:", "localhost:")) or host in ("127.0.0.1", "localhost")
    return ("http://" if local else "https://") + host, name


def _parse_challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {m[1].lower(): m[2] for m in re.finditer(r'(\w+)="([^"]*)"', params)}


def _anonymous_manifest(
    cfg: Config, http: httpx.Client, url: str, image_ref: str, sleep: Sleep
) -> bytes:
    """The manifest, fetched as an anonymous client; asked again, with a growing pause, while it
    is not there yet or the registry fails."""
    last = "no answer"
    for attempt in range(6):
        if attempt:
            sleep(min(2.0 * 2 ** (attempt - 1), 30.0))
        try:
            return _fetch_manifest(cfg, http, url, image_ref)
        except _TryAgain as e:
            last = str(e)
        except httpx.TransportError as e:
            last = f"{type(e).__name__}: {e}"
    raise ReleaseError("Registry", f"could not fetch {image_ref} anonymously: {last}")


def _fetch_manifest(cfg: Config, http: httpx.Client, url: str, image_ref: str) -> bytes:
    response = http.get(url, headers=_ACCEPT)
    if response.status_code == 401:
        token = _anonymous_token(cfg, http, url, image_ref, response)
        response = http.get(url, headers={**_ACCEPT, "Authorization": f"Bearer {token}"})
    if response.status_code in (401, 403):
        raise _not_public(cfg, image_ref, "manifest request", response)
    if response.status_code == 200:
        return response.content
    last = f"manifest request: HTTP {response.status_code} {response.text[:200]}"
    if response.status_code == 404 or response.status_code >= 500:
        raise _TryAgain(last)
    raise ReleaseError("Registry", f"could not fetch {image_ref} anonymously: {last}")


def _anonymous_token(
    cfg: Config, http: httpx.Client, url: str, image_ref: str, challenged: httpx.Response
) -> str:
    """The token the registry's Bearer challenge offers a client without credentials."""
    challenge = _parse_challenge(challenged.headers.get("WWW-Authenticate", ""))
    if "realm" not in challenge:
        raise ReleaseError("Registry", f"{url}: 401 without a Bearer challenge")
    params: dict[str, str] = {k: challenge[k] for k in ("service", "scope") if k in challenge}
    params.setdefault("scope", f"repository:{_registry_parts(cfg.image)[1]}:pull")
    response = http.get(challenge["realm"], params=params)
    if response.status_code in (401, 403):
        raise _not_public(cfg, image_ref, "token request", response)
    if response.status_code >= 500:
        raise _TryAgain(f"token request: HTTP {response.status_code}")
    if not response.is_success:
        raise ReleaseError(
            "Registry", f"token request: HTTP {response.status_code} " + response.text[:200]
        )
    answer = response.json()
    return str(answer.get("token") or answer.get("access_token"))


def _not_public(cfg: Config, image_ref: str, stage: str, response: httpx.Response) -> ReleaseError:
    owner = cfg.image.split("/")[1]
    try:
        errors = response.json().get("errors") or []
        code = " ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except ValueError:
        code = ""
    return ReleaseError(
        "Image not public",
        f"An anonymous pull of {image_ref} was refused ({stage}: HTTP {response.status_code} "
        f"{code}). Users' runners pull without credentials, so every `uses: {cfg.repository}@"
        f"{cfg.version.major_tag}` would fail. GHCR makes a new package private on its first "
        "push, even for a public repository: make it public once, in "
        f"{cfg.server_url}/{owner}?tab=packages → {IMAGE_NAME} → Package settings → Danger Zone → "
        "Change visibility → Public (an organization must allow public packages in its "
        "Packages settings). Then re-run the failed jobs: no tag was created or moved.",
    )
