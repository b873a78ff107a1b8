# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench clean meltano-venv

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

demo: $(STAMP)
	$(BIN)/python -m target_pinterest_audiences.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint meltano-venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(MELTANO_VENV) .pytest_cache .mypy_cache .ruff_cache
