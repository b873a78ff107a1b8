# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench clean meltano-venv postgres-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real Meltano for tests/test_meltano.py, in its own venv: its pinned dependencies stay out
# of the dev venv. The stamp names the version, so bumping MELTANO_VERSION reinstalls.
MELTANO_VERSION := 4.4.1
MELTANO_VENV := .venv-meltano
MELTANO_STAMP := $(MELTANO_VENV)/.installed-meltano-$(MELTANO_VERSION)

$(MELTANO_STAMP):
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MELTANO_VENV)/bin/python -m pip install --quiet 'meltano==$(MELTANO_VERSION)'
	$(MELTANO_VENV)/bin/meltano --version
	touch $@

meltano-venv: $(MELTANO_STAMP)

# A PostgreSQL server installation for tests/postgres_server.py, which starts (and stops) its own
# throwaway server on 127.0.0.1 for the test session. Installs Debian's package only when no
# initdb is there; starts no system-wide service. POSTGRES_BIN_DIR may name another installation.
PG_INITDB_GLOB := /usr/lib/postgresql/*/bin/initdb
PG_APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
PG_MISSING := No PostgreSQL server (initdb) in /usr/lib/postgresql/*/bin nor POSTGRES_BIN_DIR.

postgres-server:
	@if ls $(PG_INITDB_GLOB) >/dev/null 2>&1 || [ -x "$${POSTGRES_BIN_DIR:-/nonexistent}/initdb" ]; then \
		exit 0; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "$(PG_MISSING) Install a PostgreSQL server and set POSTGRES_BIN_DIR." >&2; exit 1; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		echo "Installing the PostgreSQL server (apt-get install postgresql) for the tests"; \
		apt-get update && $(PG_APT_INSTALL); \
	elif command -v sudo >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server (sudo apt-get install postgresql) for the tests"; \
		sudo apt-get update && sudo env $(PG_APT_INSTALL); \
	else \
		echo "$(PG_MISSING) Not root and no sudo: as root run" >&2; \
		echo "  apt-get update && $(PG_APT_INSTALL)" >&2; exit 1; \
	fi
	@ls $(PG_INITDB_GLOB) >/dev/null 2>&1 || [ -x "$${POSTGRES_BIN_DIR:-/nonexistent}/initdb" ] \
		|| { echo "$(PG_MISSING) Installing it did not work." >&2; exit 1; }

demo: $(STAMP)
	$(BIN)/python -m target_pinterest_audiences.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint meltano-venv postgres-server
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(MELTANO_VENV) .pytest_cache .mypy_cache .ruff_cache
