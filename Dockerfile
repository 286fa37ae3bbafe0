# The action's runtime image: the entrypoint, the fly_pg_external package and its locked
# dependencies. Built by the runner (`image: Dockerfile` on main) or by the release workflow,
# which pushes a multi-arch image that release commits of action.yml pin by digest.
#
# Rules the GitHub runner imposes (docs "Dockerfile support for GitHub Actions"):
# - no USER: the runner writes $GITHUB_OUTPUT and friends as root and the step must too;
# - no WORKDIR reliance: the runner mounts the workspace and passes its own --workdir;
# - no BuildKit-only syntax: self-hosted and GHES runners may build with the classic builder.

# python:3.12-slim (3.12.14 on Debian trixie) pinned by the digest of its multi-arch index
# (amd64, arm64). Written straight into FROM, with its full version, because that is what
# Dependabot's docker ecosystem updates (.github/dependabot.yml): a new 3.12.x patch release
# comes as a pull request changing tag and digest together. Dependabot reads no ARG, so the
# base is not a build argument: the container test, which may build on a local stand-in,
# substitutes this one line (tests/container/test_container.py).
FROM python:3.12.14-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app/src

# Wheels only, every file checked against the hashes in the lock (regenerate with `make lock`).
COPY requirements.txt /app/requirements.txt
RUN python -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-deps --require-hashes --only-binary=:all: -r /app/requirements.txt

# Only the action's runtime code (see .dockerignore): no simulator, tests or docs.
COPY entrypoint.py /app/entrypoint.py
# The post step of `lifetime: job` (action.yml `post-entrypoint: /post.py`), an executable.
COPY post.py /post.py
COPY src/fly_pg_external /app/src/fly_pg_external
# Bytecode compiled once here, since PYTHONDONTWRITEBYTECODE keeps each run from writing it.
# (COPY --chmod would need BuildKit.)
RUN chmod 0755 /post.py \
    && python -m compileall -q --invalidation-mode unchecked-hash /app/src

ENTRYPOINT ["/usr/local/bin/python", "/app/entrypoint.py"]
