# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Python dependencies come from the lock files in requirements/ (exact versions and hashes,
# resolved for every Python the package supports), installed with uv. uv itself is pinned
# and lives in its own venv, so it is never removed by a sync of .venv.
# --compile-bytecode: as pip does, so that every start of the console script does not compile
# its imports again (PYTHONDONTWRITEBYTECODE is common in CI and containers).
# After changing dependencies in pyproject.toml: `make lock`, then commit requirements/.
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_STAMP := $(UV_VENV)/.installed-uv-$(UV_VERSION)
DEV_LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
# .venv holds either the runtime set (make demo) or the runtime and development set
# (make install, make test); the dev set includes the runtime set at the same versions.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: demo test lint install lock bench clean meltano-venv postgres-server postgres-wal2json

$(UV_STAMP):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	touch $@

# The target and its runtime dependencies only: what `make demo` needs.
$(RUNTIME_STAMP): $(RUNTIME_LOCK) pyproject.toml | $(UV_STAMP)
	rm -f $(STAMP)
	@[ -x $(BIN)/python ] || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python $(RUNTIME_LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# Plus pytest, ruff, mypy and the PostgreSQL driver: the development venv.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(UV_STAMP)
	@[ -x $(BIN)/python ] || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python $(DEV_LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(RUNTIME_STAMP) $@

install: $(STAMP)

# Re-resolve the lock files from pyproject.toml, keeping every pin that still fits (pass
# UPGRADE=--upgrade to move everything to the newest versions). The runtime lock is
# constrained by the dev lock, so both agree on every shared package.
UPGRADE ?=
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes $(UPGRADE)
lock: | $(UV_STAMP)
	$(UV) pip compile $(LOCK_FLAGS) --extra dev pyproject.toml -o $(DEV_LOCK)
	$(UV) pip compile $(LOCK_FLAGS) --constraint $(DEV_LOCK) pyproject.toml -o $(RUNTIME_LOCK)
	echo 'meltano==$(MELTANO_VERSION)' | $(UV) pip compile $(LOCK_FLAGS) - -o $(MELTANO_LOCK)

# Real Meltano for the tests (and the README's Meltano section), in its own venv: its pinned
# dependencies stay out of the dev venv. They are locked too (requirements/meltano.txt, by
# make lock). The stamp names the version, so bumping MELTANO_VERSION (then make lock)
# reinstalls.
MELTANO_VERSION := 4.4.1
MELTANO_VENV := .venv-meltano
MELTANO_LOCK := requirements/meltano.txt
MELTANO_STAMP := $(MELTANO_VENV)/.installed-meltano-$(MELTANO_VERSION)

$(MELTANO_STAMP): | $(UV_STAMP)
	@[ -x $(MELTANO_VENV)/bin/python ] || $(UV) venv --quiet --python $(PYTHON) $(MELTANO_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(MELTANO_VENV)/bin/python $(MELTANO_LOCK)
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

# wal2json, the logical decoding plugin of tap-postgres' LOG_BASED replication, for the
# CDC tests (tests/test_cdc_postgres.py). Installs Debian's postgresql-<major>-wal2json for the
# server installation the tests use (POSTGRES_BIN_DIR, else the newest in /usr/lib/postgresql)
# only when wal2json.so is missing from that server's library directory.
PG_BIN_DIR_SH := if [ -n "$${POSTGRES_BIN_DIR:-}" ]; then echo "$$POSTGRES_BIN_DIR"; \
	else ls -d $(PG_INITDB_GLOB) 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname; fi
WAL2JSON_MISSING = wal2json.so is not in $$libdir (the PostgreSQL server in $$bindir).

postgres-wal2json: postgres-server
	@bindir="$$($(PG_BIN_DIR_SH))"; \
	libdir="$$("$$bindir/pg_config" --pkglibdir)" \
		|| { echo "No pg_config in $$bindir to find its library directory." >&2; exit 1; }; \
	[ -f "$$libdir/wal2json.so" ] && exit 0; \
	major="$$("$$bindir/postgres" --version | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')"; \
	package="postgresql-$$major-wal2json"; \
	install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$package"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "$(WAL2JSON_MISSING) Install wal2json for PostgreSQL $$major." >&2; exit 1; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		echo "Installing $$package (apt-get install) for the CDC tests"; \
		apt-get update && sh -c "$$install"; \
	elif command -v sudo >/dev/null 2>&1; then \
		echo "Installing $$package (sudo apt-get install) for the CDC tests"; \
		sudo apt-get update && sudo sh -c "$$install"; \
	else \
		echo "$(WAL2JSON_MISSING) Not root and no sudo: as root run" >&2; \
		echo "  apt-get update && $$install" >&2; exit 1; \
	fi; \
	[ -f "$$libdir/wal2json.so" ] || { echo "$(WAL2JSON_MISSING) Installing $$package did not work." >&2; exit 1; }

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m target_pinterest_audiences.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint meltano-venv postgres-server postgres-wal2json
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(UV_VENV) $(MELTANO_VENV) .pytest_cache .mypy_cache .ruff_cache
