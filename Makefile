# intercom-sync — developer and CI entry points.  `make` (or `make help`) lists the targets.
#
# Every target that runs project code depends on `venv`, which bootstraps .venv/ from the lock
# files on first use and again only when requirements*.lock or pyproject.toml change.
#
# Overridable variables:
#   PYTHON       bootstrap interpreter for the venv   (default: python3; e.g. PYTHON=python3.12)
#   VENV         virtual-environment folder            (default: .venv)
#   PYTEST_ARGS  extra pytest arguments                (e.g. PYTEST_ARGS="-x -k webhook")
#   SOAK_ARGS    extra arguments for `make soak`
#   SERVE_ARGS   extra arguments for `make serve`       (e.g. SERVE_ARGS="--port 8080")
#   DEMO_ARGS    extra arguments for `make demo`        (e.g. DEMO_ARGS="--port 8001")

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(VENV)/bin
VENV_PY := $(VENV_BIN)/python
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime

PYTEST_ARGS ?=
SOAK_ARGS ?=
SERVE_ARGS ?=
DEMO_ARGS ?=

# Lint only the folders that exist.
LINT_PATHS := $(wildcard app harness tests bench migrations)

.PHONY: help venv venv-runtime test test-fast test-postgres lint format demo serve migrate bench bench-quick soak \
        clean clean-venv

help: ## Show this help
	@echo "usage: make <target> [PYTEST_ARGS=...] [PYTHON=python3.x]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

# --- environment -----------------------------------------------------------------------------

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Two stamps: running the service (demo, serve, migrate) needs only the runtime lock; the
# checks need the dev lock on top (pytest, hypothesis, schemathesis, mypy, ruff: three times
# the download). The dev install satisfies the runtime stamp too.
# Order-only on the interpreter: recreating the venv removes the stamps anyway.
$(RUNTIME_STAMP): requirements.lock pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -r requirements.lock
	$(VENV_PY) -m pip install --no-deps -e .
	@touch $@

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -r requirements-dev.lock
	$(VENV_PY) -m pip install --no-deps -e .
	@touch $@ $(RUNTIME_STAMP)

venv: $(STAMP) ## Create/refresh .venv from the lock files (only when they changed)

venv-runtime: $(RUNTIME_STAMP) ## Only what running the service needs (used by demo/serve/migrate)

# --- checks ----------------------------------------------------------------------------------

test: venv ## Run the whole test suite (SQLite)
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

# The inner loop: leaves out the tests marked slow (soak, races, crash, replicas, rolling
# restart, bench smoke, demo). CI runs `test` and `test-postgres`, which include them.
test-fast: venv ## Run the test suite without the slow end-to-end groups (SQLite)
	$(VENV_PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-postgres: venv ## Run the test suite on a throwaway PostgreSQL 15 cluster
	bash scripts/test-postgres.sh $(VENV_PY) -m pytest $(PYTEST_ARGS)

# Runs all four checks even when an earlier one fails, so one run reports everything.
# lint-imports checks the layer contracts of app/ in pyproject.toml ([tool.importlinter]).
lint: venv ## ruff check, ruff format --check, mypy, lint-imports
	@rc=0; \
	for cmd in "$(VENV_BIN)/ruff check $(LINT_PATHS)" \
	           "$(VENV_BIN)/ruff format --check $(LINT_PATHS)" \
	           "$(VENV_BIN)/mypy" \
	           "$(VENV_BIN)/lint-imports"; do \
		echo "$$cmd"; \
		$$cmd || { rc=1; echo "lint: '$$cmd' failed" >&2; }; \
	done; \
	exit $$rc

format: venv ## Auto-fix lint findings and format the code
	$(VENV_BIN)/ruff check --fix $(LINT_PATHS)
	$(VENV_BIN)/ruff format $(LINT_PATHS)

# --- running -----------------------------------------------------------------------------------

demo: venv-runtime ## Run the service end to end against the bundled Intercom simulator (DEMO_ARGS=...)
	$(VENV_BIN)/intercom-sync demo $(DEMO_ARGS)

serve: venv-runtime ## Run the service (applies migrations first; SERVE_ARGS=...)
	$(VENV_BIN)/intercom-sync serve $(SERVE_ARGS)

migrate: venv-runtime ## Apply database migrations (alembic upgrade head) to DATABASE_URL
	$(VENV_BIN)/intercom-sync migrate

# --- benchmarks --------------------------------------------------------------------------------

bench: venv ## Run the full benchmark suite
	$(VENV_PY) -m bench

bench-quick: venv ## Run a short benchmark pass (used by CI)
	$(VENV_PY) -m bench --quick

soak: venv ## Run the soak test (SOAK_ARGS=...)
	$(VENV_PY) -m bench.soak $(SOAK_ARGS)

# --- housekeeping --------------------------------------------------------------------------------

clean: ## Remove caches and build artefacts (keeps .venv and data/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

clean-venv: ## Remove the virtual environment too
	rm -rf $(VENV)
