"""Release the action as vX.Y.Z: an image pinned by digest that every `uses: …@vX` can pull.

    python scripts/release.py --version 1.2.3 all
    python scripts/release.py --version 1.2.3 preflight build push          # job 1
    python scripts/release.py --version 1.2.3 --digest sha256:… check-public run   # job 2
    python scripts/release.py --version 1.2.3 --digest sha256:… commit tag publish # job 3

The steps, always in this order (.github/workflows/release.yml runs them in three jobs):

1. `preflight`: vX.Y.Z is a new version (its tag does not exist yet), CHANGELOG.md has its
   section, action.yml builds from the Dockerfile, and the major tag vX can be placed; nothing
   is built or pushed otherwise.
2. `build`: `docker buildx build` for every platform (linux/amd64, linux/arm64).
3. `push`: the same build pushed to <registry>/<owner>/fly-pg-external:X.Y.Z; its digest is the
   release's image.
4. `check-public`: the image can be pulled by digest ANONYMOUSLY, through the registry's
   `WWW-Authenticate: Bearer` token flow without credentials, as a user's runner pulls it. GHCR
   creates a package private on its first push; a private image would break every `uses: …@vX`,
   so the release stops here, before any tag exists, and says how to make the package public.
5. `run`: the pushed image, by digest, on every platform, run the way the runner runs a
   container action (INPUT_* variables, file commands, the workspace mounts) against the Fly
   simulator (scripts/self_test_simulator.py). First its post entrypoint: a `lifetime: job` run,
   then the post step as the runner starts it (`--entrypoint` = action.yml's `post-entrypoint`,
   the same image and inputs, the STATE_* the main step saved in GITHUB_STATE), which must
   release exactly the addresses the main step allocated, as the simulator sees them. Then the
   main entrypoint: `mode: expose` allocates the IPs it reports, a second run changes nothing.
6. `commit`: a commit on top of the released source commit whose only change is action.yml's
   `image: Dockerfile` → `image: docker://<image>@sha256:…`, made through the GitHub API (no git
   credentials on disk). Its message carries `Release-Version:`, `Source-Commit:` and `Image:`.
   The branch `releases/vX.Y.Z` is created at it right away, so a branch contains every release
   commit (the branch released from keeps `image: Dockerfile`); like the version tag, it never
   moves.
7. `tag`: creates vX.Y.Z at that commit (so the version tag never names a commit that builds the
   Dockerfile on every job), then moves vX there only FORWARD: vX stays where it is when it
   names a later release (a backport v1.2.4 after v1.3.0).
8. `publish`: the GitHub Release of vX.Y.Z, its notes the version's section of CHANGELOG.md,
   marked "Latest" only if no higher version exists.

A new release of an existing version is refused before anything is built: a version's image and
commit never change. Re-running the last steps of the same release (same digest, e.g. after the
Release could not be created) is idempotent: the release commit (on its tag or its branch), the
branch and the tags already made are found and kept, only what is missing is made.

`--dry-run` prints the docker commands and the GitHub writes instead of running them (GitHub is
still read). In-process callers (tests) pass their own docker runner, HTTP transports and sleep.

Environment: GITHUB_TOKEN (contents: write for commit/tag/publish), GITHUB_REPOSITORY, GITHUB_SHA,
GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY, as the runner sets them.

One module per job: `cli` (the command line, the steps in order), `config` (what the steps
share), `versions` (versions and CHANGELOG.md), `github` (the REST client), `image` (docker:
build, push), `registry` (the anonymous pull), `simulator` and `run` (the run by digest),
`preflight`, `commit` (the release commit and its branch), `tags` and `publish`. Log lines,
annotations, groups and the step summary go through the action's own workflow-command writer
(fly_pg_external.gha); the run by digest reads what the main step saved through the action's
step state (fly_pg_external.step_state).
"""
