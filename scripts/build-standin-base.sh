#!/usr/bin/env bash
# Build a local stand-in for the Dockerfile's base image (python:3.12-slim) from Debian packages,
# for machines whose Docker daemon can reach no image registry. The container test builds the
# project's own Dockerfile on it, with only the FROM line changed to name this image.
#
# It mimics the layout of the official image where the Dockerfile relies on it: `python` on PATH
# and at /usr/local/bin/python, pip able to install into the system interpreter as root.
# Its Python is Debian bookworm's 3.11, not 3.12: requirements.txt installs on both.
#
# Idempotent: the image carries a label with a hash of this recipe (script, CA bundle, index
# settings) and is rebuilt only when that label is missing or different.
#
# Usage: scripts/build-standin-base.sh [IMAGE]      (needs root for debootstrap, and a Docker daemon)
# Env:   STANDIN_SUITE (bookworm), STANDIN_MIRROR (http://deb.debian.org/debian),
#        STANDIN_CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt): the CA bundle pip inside the
#        image trusts, so a TLS-intercepting proxy between this machine and PyPI keeps working.
#        PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (or the host pip config): http(s) indexes are carried
#        into the image so pip in a build uses the same PyPI mirror as the host.
# Prints the image name on the last line of stdout.
set -euo pipefail

image="${1:-fly-pg-external-standin-base:py3-bookworm}"
suite="${STANDIN_SUITE:-bookworm}"
mirror="${STANDIN_MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${STANDIN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
label="org.fly-pg-external.standin-recipe"
packages="ca-certificates,python3,python3-pip,python3-venv,python-is-python3"

log() { echo "build-standin-base: $*" >&2; }

# Index settings worth carrying: only http(s) URLs, since file:// paths do not exist in the image.
host_pip_setting() {
  local env_value="$1" key="$2" value=""
  value="${!env_value:-}"
  if [ -z "$value" ] && command -v python3 >/dev/null 2>&1; then
    value="$(python3 -m pip config get "global.$key" 2>/dev/null || true)"
  fi
  local url kept=()
  for url in $value; do
    case "$url" in http://* | https://*) kept+=("$url") ;; esac
  done
  echo "${kept[*]:-}"
}
index_url="$(host_pip_setting PIP_INDEX_URL index-url)"
extra_index_url="$(host_pip_setting PIP_EXTRA_INDEX_URL extra-index-url)"

ca_hash="none"
[ -r "$ca_bundle" ] && ca_hash="$(sha256sum <"$ca_bundle" | cut -c1-64)"
recipe="$(
  {
    cat "$0"
    echo "$suite $mirror $packages $ca_hash"
    echo "$index_url|$extra_index_url"
  } | sha256sum | cut -c1-16
)"

current="$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)"
if [ "$current" = "$recipe" ]; then
  log "$image is up to date (recipe $recipe)"
  echo "$image"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "debootstrap needs root; run with sudo"
  exit 1
fi
command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
rootfs="$workdir/rootfs"

log "debootstrap $suite from $mirror (a few minutes)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
  tail -40 "$workdir/debootstrap.log" >&2
  exit 1
}

# Like python:*-slim: pip may install into the system interpreter, `python` lives in
# /usr/local/bin, and no package caches or docs are kept.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

changes=(
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  --change "ENV LANG=C.UTF-8"
  --change "LABEL $label=$recipe"
  --change 'CMD ["python3"]'
)
if [ -r "$ca_bundle" ]; then
  # Another name than Debian's own bundle, which update-ca-certificates would overwrite.
  install -D -m 0644 "$ca_bundle" "$rootfs/usr/local/share/standin/pip-ca-bundle.crt"
  changes+=(--change "ENV PIP_CERT=/usr/local/share/standin/pip-ca-bundle.crt")
fi
[ -n "$index_url" ] && changes+=(--change "ENV PIP_INDEX_URL=$index_url")
[ -n "$extra_index_url" ] && changes+=(--change "ENV PIP_EXTRA_INDEX_URL=$extra_index_url")

log "importing $image"
tar -C "$rootfs" --numeric-owner -c . | docker import "${changes[@]}" - "$image" >/dev/null
docker run --rm "$image" python -c 'import sys, venv, ensurepip; print("stand-in python", sys.version.split()[0])' >&2 \
  || { log "the imported image does not run python"; exit 1; }
echo "$image"
