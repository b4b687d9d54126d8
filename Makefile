# The two quick-start commands of the README, plus lint. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint

demo: $(VENV)/installed
	$(BIN)/python -m example_app

test: $(VENV)/installed
	$(BIN)/python -m pytest

lint: $(VENV)/installed
	$(BIN)/ruff check flask_mailchimp_sync example_app tests benchmarks
	$(BIN)/ruff format --check flask_mailchimp_sync example_app tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable ".[dev]"
	touch $@
