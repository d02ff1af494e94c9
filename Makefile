# Hala Whatsup — the Makefile is the interface. `make help` lists the targets.
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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

lint: $(STAMP) ## ruff (lint + format check) and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP) tools ## Benchmarks: print a table of figures and write bench/results/
	$(PY) bench/run_all.py --own-infra  # its own broker (with JMX) and database: the cost rows count only the bench

clean: ## Remove runtime data (.run) — stops nothing; run `make down` first
	rm -rf .run

.PHONY: tools help venv run up down status infra-up infra-down test test-unit lint bench clean
