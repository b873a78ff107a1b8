"""Shared fixtures, and the markers that split the fast suite from the slow one.

``slow`` marks tests that start real processes or servers: the console script as a
subprocess, Meltano, PostgreSQL. ``pytest -m 'not slow'`` is the fast suite; a test outside
it that starts a process fails with a message saying to mark it (see CONTRIBUTING.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

# A throwaway PostgreSQL server on 127.0.0.1 for the PostgreSQL ledger's tests.
pytest_plugins = ["postgres_server"]

# Tests using these fixtures talk to the session's PostgreSQL server.
POSTGRES_FIXTURES = {
    "postgres_server",
    "postgres_url",
    "fresh_postgres_url",
    "logical_postgres_server",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """PostgreSQL tests are found by their fixtures; meltano and postgres imply slow."""
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) or _postgres_param(item):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("postgres") or item.get_closest_marker("meltano"):
            item.add_marker(pytest.mark.slow)


def _postgres_param(item: pytest.Item) -> bool:
    """A backend-parametrized fixture's "postgres" case (it asks for the server by name)."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(
        isinstance(value, str) and value == "postgres" for value in callspec.params.values()
    )


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the fast suite fast and honest: a test that starts a process must be marked."""
    if request.node.get_closest_marker("slow"):
        return
    node_id = request.node.nodeid

    def refuse(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        msg = (
            f"{node_id} starts a process but is not marked slow: add "
            "@pytest.mark.slow (or pytestmark = pytest.mark.slow for the module)"
        )
        raise AssertionError(msg)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A real HTTP emulator of the Pinterest API, empty, on a free loopback port.

    Its rate limits are lifted: most tests are about something else and must stay fast.
    Tests about pacing start an emulator with Pinterest's limits (the emulator's default).
    """
    with Emulator(EmulatorConfig.without_rate_limits()) as running:
        yield running
