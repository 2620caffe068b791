# Set-up and checks. `make demo` and `make test` work on a fresh Debian/Ubuntu machine: they create
# .venv, install flagroll with pinned dependencies (`make demo` the runtime ones only, `make test` also
# the development extras), and install Prometheus (and Node.js and Chromium for the tests) with apt-get if
# missing. `make test` also builds Prometheus 3 and VictoriaMetrics from the Go module proxy
# (scripts/peer; Go 1.26 or later on PATH), once, then cached.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup prometheus prometheus3 victoriametrics kubernetes node chromium demo test lint docs image-test clean

PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
# One stamp per set of packages, so that both kinds of set-up share .venv: `make demo` installs the
# runtime dependencies only; `make test` (or `make setup`) adds the development extras to the same venv
# (never rebuilding it), and a later `make demo` only re-checks the runtime set (pip never uninstalls
# extras). An edit of pyproject.toml or constraints.txt makes both stamps stale.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

# A venv whose python no longer runs (the interpreter it was made with was removed or upgraded) is made
# anew, whatever the stamps' dates say: its stamps are then always out of date.
ifneq ($(shell $(BIN)/python -c '' 2>/dev/null || echo broken),)
.PHONY: $(RUNTIME)
endif

$(RUNTIME): pyproject.toml constraints.txt
	$(BIN)/python -c '' 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(PIP) -e .
	touch $@

$(DEV): $(RUNTIME)
	$(PIP) -e '.[dev]'
	touch $@

# The full development set (the target the test and lint commands need).
$(BIN)/flagroll: $(DEV)
	touch $@

setup: $(BIN)/flagroll prometheus prometheus3 victoriametrics kubernetes node chromium

prometheus:
	@scripts/install-prometheus

node:
	@scripts/install-node

# The browser tests (tests/browser) drive Debian's Chromium headless through chromedriver.
chromium:
	@scripts/install-chromium

# The tests run against the Debian package's Prometheus 2.x and this Prometheus 3 (docs/peers.md): built
# from the Go module proxy the first time (minutes), found in the cache afterwards (a few milliseconds).
prometheus3:
	@scripts/peer prometheus3 >/dev/null

# The core scenarios also run against VictoriaMetrics single-node (docs/peers.md), built the same way.
victoriametrics:
	@scripts/peer victoriametrics >/dev/null

# The Kubernetes store, leader election and RBAC tests run against a real API server (etcd and
# kube-apiserver) with the OpenFeature Operator's FeatureFlag CRD, built the same way (docs/peers.md).
kubernetes:
	@scripts/peer etcd >/dev/null
	@scripts/peer kube-apiserver >/dev/null
	@scripts/peer featureflag-crd >/dev/null

demo: $(RUNTIME) prometheus
	$(BIN)/flagroll demo

lint: $(BIN)/flagroll
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The documentation site (mkdocs.yml) into site/, strictly: a broken link or anchor, or a page left out of
# the navigation, fails the build.
docs: $(BIN)/flagroll
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: setup lint docs
	$(BIN)/pytest

image-test:
	scripts/image-test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis site
