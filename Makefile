# Every target installs what it needs into .venv first, from the locked
# requirements, so a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONTRACT ?= buf.build/agynio/api

.PHONY: install run test lint lint-deploy typecheck check generate check-generated lock clean bench bench-smoke

install: $(STAMP)

# Both distributions, editable: the client (client/, agent-state-client) and
# the server; their dependencies come from the lock alone.
$(STAMP): requirements/dev.txt pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ./client -e .
	touch $(STAMP)

## run: the service on the embedded SQLite file ./agent-state.db (DATABASE_URL selects PostgreSQL)
run: install
	$(BIN)/agent-state serve

## test: the whole suite; the PostgreSQL half uses AGENT_STATE_TEST_POSTGRES_URL (see README)
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: the benchmark (bench/README.md); PostgreSQL at AGENT_STATE_BENCH_POSTGRES_URL;
## the turn plot goes to build/bench/bench-turn.png (BENCH_ARGS="--plot PATH" to change)
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## bench-smoke: the benchmark at small sizes, targets not enforced (CI, offline; PostgreSQL and pgbouncer needed)
bench-smoke: install
	$(BIN)/python -m bench.run --quick

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

## lint-deploy: hadolint on the Dockerfile, then the checks of the Dockerfile, compose and Kubernetes files
lint-deploy: install
	$(BIN)/hadolint Dockerfile
	$(BIN)/pytest -q tests/packaging

typecheck: install
	$(BIN)/mypy

check: lint typecheck check-generated test

## generate: regenerate client/src/agent_state_client/_gen (the server imports it too)
## (CONTRACT=../shared/contract where the registry is out of reach)
generate: install
	PYTHON=$(BIN)/python scripts/generate.sh $(CONTRACT)

GENERATED := client/src/agent_state_client/_gen

check-generated: install
	PYTHON=$(BIN)/python scripts/generate.sh $(CONTRACT)
	git diff --exit-code -- $(GENERATED)
	test -z "$$(git status --porcelain -- $(GENERATED))"

# agent-state-client is built from client/, never taken from an index: the
# resolver finds it as a wheel built here, and the lock leaves it out (an
# "unsafe" package; install puts it in, editable). Listing it as unsafe
# replaces pip-tools' default list, so pip and setuptools are pinned, as
# --allow-unsafe did.
LOCK_WHEELS := build/lock-wheels
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url \
	--find-links $(LOCK_WHEELS) --unsafe-package agent-state-client

## lock: re-resolve requirements/*.txt after changing either pyproject.toml's dependencies
lock: install
	rm -rf $(LOCK_WHEELS)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(LOCK_WHEELS) ./client
	$(BIN)/pip-compile $(LOCK_FLAGS) --extra dev -o requirements/dev.txt pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) -o requirements/runtime.txt pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
