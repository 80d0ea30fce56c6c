# The verbs a newcomer and CI use. Each installs what it needs into .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint bench bench-pipeline dev-broker clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $@

demo: install dev-broker
	$(BIN)/integration demo

# Local development only: a vhost for the service, open to guest. Skipped quietly without a local broker.
dev-broker:
	@if command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl -q status >/dev/null 2>&1; then \
	  rabbitmqctl -q add_vhost hjerterehab >/dev/null 2>&1 || true; \
	  rabbitmqctl -q set_permissions -p hjerterehab guest ".*" ".*" ".*" >/dev/null; \
	fi

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check integration tests bench
	$(BIN)/ruff format --check integration tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/transform_bench.py

bench-pipeline: install
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) out data .pytest_cache
