"""Shared fixtures: a fresh Pinterest API emulator on 127.0.0.1 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

# A throwaway PostgreSQL server on 127.0.0.1 for the PostgreSQL ledger's tests.
pytest_plugins = ["postgres_server"]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A real HTTP emulator of the Pinterest API, empty, on a free loopback port."""
    with Emulator(EmulatorConfig()) as running:
        yield running
