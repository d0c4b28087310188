# consentd: `make run` serves on the embedded SQLite database; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-tuned openapi install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/consentd migrate
	$(BIN)/consentd demo
	$(BIN)/consentd serve

# The browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

# ruff, mypy and the layer contracts first (seconds), then the suite.
test: $(VENV)/.installed-test $(CHROMIUM)
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# The linters as pyproject.toml configures them: ruff, mypy (on app/) and import-linter's layer contracts.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# `make bench` runs every benchmark in bench/, one after the other; `make bench BENCHES=changes_feed` runs one.
BENCHES ?= check_throughput stream_throughput changes_feed import_throughput banner_endpoints audit_verify write_throughput requests_page request_export erasure webhooks

bench: $(VENV)/.installed-test
	@for name in $(BENCHES); do echo "== bench/$$name.py"; $(BIN)/python bench/$$name.py || exit $$?; done

# The import and the stream on a private PostgreSQL cluster with production settings (bench/tuned_cluster.py),
# which each bench starts and stops itself.
TUNED_BENCHES ?= import_throughput stream_throughput

bench-tuned: $(VENV)/.installed-test
	@for name in $(TUNED_BENCHES); do echo "== bench/$$name.py --tuned"; $(BIN)/python bench/$$name.py --tuned || exit $$?; done

openapi: $(VENV)/.installed-run
	$(BIN)/consentd openapi

clean:
	rm -rf $(VENV) consentd.db consentd.db-wal consentd.db-shm
