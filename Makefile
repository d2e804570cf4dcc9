# Two commands: `make run` and `make test`. Both set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

# Reinstall only when the dependency list changes, so a second `make` is quick.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/flashsale up --demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Every figure of issue 7's Targets table; `make bench BENCH_ARGS=--quick` for a short run.
bench: setup
	$(BIN)/flashsale bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .flashsale .pytest_cache
