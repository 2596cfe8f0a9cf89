# One command runs the service, one passes the tests; both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint sandbox clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.examples: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[examples]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,examples]'
	touch $@

run: $(VENV)/.examples
	$(BIN)/orchestrator serve

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check orchestrator tests
	$(BIN)/pyright

sandbox: $(VENV)/.examples
	$(BIN)/orchestrator sandbox

bench: $(VENV)/.dev
	$(BIN)/python -m pip install --quiet -e '.[dev,examples,bench]'
	$(BIN)/python bench/run.py

bench-quick: $(VENV)/.dev
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) var .pytest_cache
