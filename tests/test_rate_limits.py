"""Pacing against Pinterest's published limits, as a user with default settings meets them.

The emulator enforces Pinterest's limits by default (``ads_write`` 400 and ``ads_read``
1,000 requests per sliding minute, per token), so these tests start their own emulator
instead of the shared fixture, which lifts the limits for speed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig
from target_pinterest_audiences.rate_limits import (
    ADS_WRITE_PER_MINUTE,
    DEFAULT_WRITE_REQUESTS_PER_MINUTE,
)

from support import (
    Run,
    assert_contract_kept,
    emulator_config,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    state,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow


def default_pacing_config(emulator: Emulator, **overrides: Any) -> dict[str, Any]:
    """A working config with the target's default request ceilings (no speed-ups)."""
    config = emulator_config(emulator, **overrides)
    del config["max_write_requests_per_minute"], config["max_read_requests_per_minute"]
    return config


def users(count: int) -> list[str]:
    return [f"user{n:05d}@example.com" for n in range(count)]


def adds(emails: list[str], audience: str = "vip") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [schema("members", "email", "audience_key")]
    messages += [record("members", email=email, audience_key=audience) for email in emails]
    messages.append(state({"bookmarks": {"members": len(emails)}}))
    return messages


def writes(emulator: Emulator) -> list[dict[str, Any]]:
    """The log entries of every create/update request (Pinterest's ads_write category)."""
    return [entry for entry in emulator.requests() if entry["method"] in {"POST", "PATCH"}]


def most_in_any_minute(times: list[float]) -> int:
    """The largest number of ``times`` inside one 60-second window."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= 60:
            first += 1
        most = max(most, last - first + 1)
    return most


def assert_synced(emulator: Emulator, run: Run, emails: list[str]) -> None:
    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": {sha(email) for email in emails}}
    assert_contract_kept(emulator)


def test_a_long_sync_at_pinterest_limits_and_default_settings_meets_no_429(
    tmp_path: Path,
) -> None:
    # 2,045 users, 5 per request: a list create, its audience and 408 updates, more
    # ads_write requests than Pinterest allows in a minute. The old default (10 per
    # second) met its first 429 after 40 seconds.
    emails = users(2045)
    with Emulator(EmulatorConfig()) as emulator:
        config = default_pacing_config(emulator, records_per_request=5)
        run = run_target(tmp_path, config, adds(emails), timeout=300)

        assert_synced(emulator, run, emails)
        sent = writes(emulator)
        assert len(sent) > ADS_WRITE_PER_MINUTE
        assert "429" not in emulator.counters()["requests_by_status"]
        # The emulator counts arrivals and the target departures: a few requests may cross
        # the window's edge, which is what the default's 10% headroom is for.
        busiest_minute = most_in_any_minute([entry["time"] for entry in sent])
        assert busiest_minute >= DEFAULT_WRITE_REQUESTS_PER_MINUTE - 10
        assert busiest_minute <= DEFAULT_WRITE_REQUESTS_PER_MINUTE + 10


def test_with_lower_limits_the_sync_slows_down_and_still_converges(tmp_path: Path) -> None:
    # Five writes per two seconds: far below what the default settings send.
    emails = users(36)
    config = EmulatorConfig(write_rate_limit_per_minute=5, rate_limit_window_seconds=2)
    with Emulator(config) as emulator:
        started = time.monotonic()
        run = run_target(
            tmp_path, default_pacing_config(emulator, records_per_request=3), adds(emails)
        )
        elapsed = time.monotonic() - started

        assert_synced(emulator, run, emails)
        sent = writes(emulator)
        accepted = [entry for entry in sent if entry["status"] == 200]
        refused = [entry for entry in sent if entry["status"] == 429]
        assert len(accepted) == 1 + 1 + 11  # the list, its audience, 11 updates
        assert refused, "the lowered limit was never reached"
        assert len(refused) < len(accepted)  # it slowed down instead of hammering
        assert elapsed > (len(accepted) - 5) / 5 * 2  # at most 5 per 2 s got through
        assert "HTTP 429" in run.stderr


def test_a_429_storm_completes_well_within_the_retry_budget(
    emulator: Emulator, tmp_path: Path
) -> None:
    # 6,000 users at 200 per request; the first 40 updates are all refused with
    # Retry-After: 1. The pace after the storm must come back within seconds: with a
    # retry budget of 30 s (every wait counts), a stalled run would fail.
    emails = users(6000)
    emulator.configure_faults(
        {
            "rules": [
                {
                    "method": "PATCH",
                    "times": 40,
                    "action": "error",
                    "status": 429,
                    "headers": {"Retry-After": "1"},
                }
            ]
        }
    )
    config = default_pacing_config(emulator, records_per_request=200, max_retry_wait_seconds=30)

    run = run_target(tmp_path, config, adds(emails), timeout=60)

    assert_synced(emulator, run, emails)
    assert emulator.counters()["faults_applied"] == 40
    assert run.state_lines[-1] == {"bookmarks": {"members": 6000}}
