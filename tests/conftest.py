"""Shared fixtures: a fresh Pinterest API emulator on 127.0.0.1 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

# A throwaway PostgreSQL server on 127.0.0.1 for the PostgreSQL ledger's tests.
pytest_plugins = ["postgres_server"]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A real HTTP emulator of the Pinterest API, empty, on a free loopback port.

    Its rate limits are lifted: most tests are about something else and must stay fast.
    Tests about pacing start an emulator with Pinterest's limits (the emulator's default).
    """
    with Emulator(EmulatorConfig.without_rate_limits()) as running:
        yield running
