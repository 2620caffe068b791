# Set-up and checks. `make demo` and `make test` work on a fresh Debian/Ubuntu machine: they create
# .venv, install flagroll with pinned dependencies, and install Prometheus with apt-get if it is missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup prometheus demo test lint image-test clean

$(BIN)/flagroll: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/flagroll prometheus

prometheus:
	@scripts/install-prometheus

demo: setup
	$(BIN)/flagroll demo

lint: $(BIN)/flagroll
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/pytest

image-test:
	scripts/image-test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
