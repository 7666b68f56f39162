# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# The first Python 3.11+ on PATH (quietly: a missing or old interpreter is simply skipped).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then echo $$p; break; fi; \
	done)
# Bytecode caches on, whatever the environment says (some set PYTHONDONTWRITEBYTECODE): the tests
# start hundreds of Python processes (CLI, API, workers), and each would compile every module again.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-deploy bench lint clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependency list changes. The demo needs only the runtime; the tests add
# their tooling (playwright, schemathesis, ruff, mypy, ...).
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(RUNTIME) $(STAMP)

demo: $(RUNTIME)
	$(BIN)/conductor demo

# The architecture and style, kept by tools: import contracts (pyproject's [tool.importlinter]),
# ruff (lint and format), mypy (strict on the domain, the unit of work and the read model).
lint: $(STAMP)
	$(BIN)/ruff check conductor workers tests bench deploy
	$(BIN)/ruff format --check conductor workers tests bench deploy
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

# The container image, built and run with podman against this machine's PostgreSQL and a
# throwaway Redis: migrate, api, worker and beat as compose.yaml wires them, one signed webhook,
# one transition (deploy/test_deploy.py says what it proves and how).
test-deploy: $(RUNTIME)
	$(BIN)/python deploy/test_deploy.py

bench: $(STAMP)
	@for b in latency throughput scale dashboard sources decisions gameday; do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
