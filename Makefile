# The verbs a newcomer and CI use. Each installs what it needs into .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $@

demo: install
	$(BIN)/integration demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check integration tests bench
	$(BIN)/ruff format --check integration tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/transform_bench.py

clean:
	rm -rf $(VENV) out .pytest_cache
