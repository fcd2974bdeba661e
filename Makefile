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

## generate: regenerate src/agent_state/_gen and client/src/agent_state_client/_gen
## (CONTRACT=../shared/contract where the registry is out of reach)
generate: install
	PYTHON=$(BIN)/python scripts/generate.sh $(CONTRACT)

GENERATED := src/agent_state/_gen client/src/agent_state_client/_gen

check-generated: install
	PYTHON=$(BIN)/python scripts/generate.sh $(CONTRACT)
	git diff --exit-code -- $(GENERATED)
	test -z "$$(git status --porcelain -- $(GENERATED))"

## lock: re-resolve requirements/*.txt after changing pyproject.toml dependencies
lock: install
	$(BIN)/pip-compile --quiet --extra dev --generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url --allow-unsafe -o requirements/dev.txt pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url --allow-unsafe -o requirements/runtime.txt pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
