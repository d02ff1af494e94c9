# Hala Whatsup — the Makefile is the interface. `make help` lists the targets.
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Every Python dependency (runtime and dev), pinned with the hashes of its files: `make lock`
# regenerates it from pyproject.toml with the pinned pip-tools.
LOCK := requirements-lock.txt
# AUDIT_STRICT=1: `make lint` also fails when the locked dependencies could not be checked for
# known vulnerabilities (no vulnerability service reachable, or it knows none of them).
AUDIT_STRICT ?= 0

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# The lock first, every file checked against its hash; then the project itself, which brings
# nothing more (--no-deps) and builds with the locked setuptools (--no-build-isolation).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create the Python environment with the pinned dependencies

run: $(STAMP) ## Run everything in the foreground on loopback (Ctrl-C stops all)
	$(PY) deploy/local/stack.py run

up: $(STAMP) ## Start broker, database, simulator and services in the background; returns when ready
	$(PY) deploy/local/stack.py up

down: $(STAMP) ## Stop everything `make up` started
	$(PY) deploy/local/stack.py down

status: $(STAMP) ## Show what runs
	$(PY) deploy/local/stack.py status

infra-up: ## Start only Kafka and the MongoDB-compatible server
	deploy/local/infra.sh up

infra-down: ## Stop Kafka and the MongoDB-compatible server
	deploy/local/infra.sh down

# pytest exits 5 when a folder holds no test yet; that is not a failure of the suite.
PYTEST = rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) $(1) || rc=$$?; [ $$rc -eq 0 -o $$rc -eq 5 ] || exit $$rc

tools: ## Debian tools used by tests and benchmarks (promtool, wrk), installed if missing
	deploy/local/ensure_tools.sh

test: $(STAMP) tools ## Unit tests, simulator conformance, then integration tests on the real broker and database
	@$(call PYTEST,tests/unit tests/metasim)
	@$(call PYTEST,tests/integration tests/e2e)

test-unit: $(STAMP) tools ## Only the tests that need no broker and no database
	@$(call PYTEST,tests/unit tests/metasim)

# `make lint` runs every check, even after one fails, then fails if any did and names them.
LINT_FAILED := $(VENV)/.lint-failed
LINT_CHECK = echo "+ $(1)"; $(1) || echo "$(1)" >> $(LINT_FAILED)

lint: $(STAMP) ## ruff (lint + format check), the import contracts, mypy (strict: shared/ and the cores), pip-audit over the lock
	@rm -f $(LINT_FAILED)
	@$(call LINT_CHECK,$(VENV)/bin/ruff check .)
	@$(call LINT_CHECK,$(VENV)/bin/ruff format --check --output-format concise .)
	@$(call LINT_CHECK,$(VENV)/bin/lint-imports)
	@$(call LINT_CHECK,$(VENV)/bin/mypy)
	@$(call LINT_CHECK,$(PY) tools/audit_lock.py $(LOCK) $(if $(filter 1,$(AUDIT_STRICT)),--strict))
	@if [ -s $(LINT_FAILED) ]; then \
	  echo "make lint: these checks failed:"; sed 's/^/  /' $(LINT_FAILED); \
	  rm -f $(LINT_FAILED); exit 1; \
	fi

lock: ## Regenerate the hashed lock file from pyproject.toml (then `make venv` installs it)
	@test -x $(VENV)/bin/pip-compile || { echo "no pip-compile in $(VENV): run 'make venv' first"; exit 1; }
	$(VENV)/bin/pip-compile --quiet --extra dev --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml

bench: $(STAMP) tools ## Benchmarks: print a table of figures and write bench/results/
	$(PY) bench/run_all.py --own-infra  # its own broker (with JMX) and database: the cost rows count only the bench

clean: ## Remove runtime data (.run) — stops nothing; run `make down` first
	rm -rf .run

.PHONY: tools help venv run up down status infra-up infra-down test test-unit lint lock bench clean
