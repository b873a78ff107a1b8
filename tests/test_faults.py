"""The target under injected faults: it completes with exact membership or fails loudly.

Each test runs the installed console script against the emulator with one kind of fault
switched on, then checks the exit code, the STATE it emitted, and the exact membership of
every list. Where a run must fail, a second run without the fault must converge.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator

from support import (
    AD_ACCOUNT,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    TOKEN,
    Run,
    assert_contract_kept,
    emulator_config,
    lists_by_name,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    state,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

USERS = [f"user{n:03d}@example.com" for n in range(40)]


def membership_stream(users: list[str] = USERS, audience: str = "vip") -> list[dict[str, Any]]:
    """Adds for every user, then removes every fourth one; ends with a STATE."""
    messages: list[dict[str, Any]] = [
        schema("members", "email", "audience_key", "flag:in_audience")
    ]
    messages += [record("members", email=u, audience_key=audience) for u in users]
    messages += [
        record("members", email=u, audience_key=audience, in_audience=False) for u in users[::4]
    ]
    messages.append(state({"bookmarks": {"members": len(messages)}}))
    return messages


def expected(users: list[str] = USERS) -> set[str]:
    removed = set(users[::4])
    return {sha(u) for u in users if u not in removed}


def sync(emulator: Emulator, tmp_path: Path, **overrides: Any) -> Run:
    """One run over the standard stream, with small requests so faults hit mid-run."""
    config = emulator_config(emulator, records_per_request=7, **overrides)
    return run_target(tmp_path, config, membership_stream())


def assert_converged(emulator: Emulator, run: Run) -> None:
    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": expected()}
    assert run.state_lines[-1] == membership_stream()[-1]["value"]
    assert_contract_kept(emulator)
    assert "Traceback" not in run.stderr
    assert not any(u in run.output for u in USERS)
    assert TOKEN not in run.output


def faults(emulator: Emulator, *rules: dict[str, Any], **extra: Any) -> None:
    emulator.configure_faults({"rules": list(rules), **extra})


def faults_applied(emulator: Emulator) -> int:
    return int(emulator.counters()["faults_applied"])


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 429, "code": 8, "message": "Rate limited", "headers": {"Retry-After": "1"}},
        {
            "status": 429,
            "code": 8,
            "message": "Rate limited",
            "headers": {"X-RateLimit-Reset": "1"},
        },
        {"status": 429, "code": 8, "message": "Rate limited"},
        {"status": 500, "code": 0, "message": "Internal error"},
        {"status": 503, "code": 0, "message": "Unavailable", "headers": {"Retry-After": "0"}},
    ],
    ids=["429-retry-after", "429-ratelimit-reset", "429-no-hint", "500", "503"],
)
def test_retryable_errors_on_updates_are_retried_to_exact_membership(
    emulator: Emulator, tmp_path: Path, rule: dict[str, Any]
) -> None:
    faults(emulator, {"method": "PATCH", "after": 1, "times": 3, "action": "error", **rule})

    run = sync(emulator, tmp_path)

    assert_converged(emulator, run)
    assert faults_applied(emulator) == 3
    assert f"HTTP {rule['status']}" in run.stderr  # each retry is logged


def test_a_429_storm_slows_the_sync_down_instead_of_failing_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Every write is refused 12 times in a row: more than max attempts for errors, but
    # rate limiting is bounded only by the total wait.
    faults(
        emulator,
        {
            "method": "*",
            "path": "customer_lists",
            "times": 12,
            "action": "error",
            "status": 429,
            "headers": {"Retry-After": "0.05"},
        },
    )

    run = sync(emulator, tmp_path, max_parallel_requests=4)

    assert_converged(emulator, run)
    assert faults_applied(emulator) == 12


@pytest.mark.parametrize("action", ["drop", "drop_after_apply"])
def test_lost_connections_on_updates_are_retried(
    emulator: Emulator, tmp_path: Path, action: str
) -> None:
    faults(emulator, {"method": "PATCH", "after": 2, "times": 2, "action": action})

    run = sync(emulator, tmp_path)

    assert_converged(emulator, run)
    assert faults_applied(emulator) == 2


@pytest.mark.parametrize("action", ["drop", "drop_after_apply"])
@pytest.mark.parametrize("resource", ["customer_lists", "audiences"])
def test_a_lost_answer_to_a_create_never_creates_twice(
    emulator: Emulator, tmp_path: Path, action: str, resource: str
) -> None:
    faults(emulator, {"method": "POST", "path": f"/{resource}$", "times": 1, "action": action})

    run = sync(emulator, tmp_path)

    assert_converged(emulator, run)
    snapshot = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]
    assert len(snapshot["customer_lists"]) == 1
    assert len(snapshot["audiences"]) == 1
    assert (
        snapshot["audiences"][0]["rule"]["customer_list_id"] == snapshot["customer_lists"][0]["id"]
    )


def test_slow_responses_time_out_and_are_retried(emulator: Emulator, tmp_path: Path) -> None:
    faults(emulator, {"method": "PATCH", "after": 1, "times": 1, "action": "delay", "seconds": 2.5})

    run = sync(emulator, tmp_path, request_timeout_seconds=1)

    assert_converged(emulator, run)
    assert "no answer within request_timeout_seconds" in run.stderr


def test_an_expired_token_is_refreshed_once_and_the_run_completes(
    emulator: Emulator, tmp_path: Path
) -> None:
    faults(emulator, {"method": "PATCH", "after": 2, "times": 1, "action": "expire_token"})

    run = sync(
        emulator,
        tmp_path,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )

    assert_converged(emulator, run)
    assert "Obtained a new Pinterest access token" in run.stderr
    assert REFRESH_TOKEN not in run.output
    assert CLIENT_SECRET not in run.output


def test_an_expired_token_without_refresh_credentials_fails_with_advice(
    emulator: Emulator, tmp_path: Path
) -> None:
    faults(emulator, {"method": "PATCH", "after": 2, "times": 1, "action": "expire_token"})

    run = sync(emulator, tmp_path)

    assert run.returncode == 1
    assert "rejected the credentials" in run.stderr
    assert "refresh_token, client_id" in run.stderr
    assert run.state_lines == []
    assert "Traceback" not in run.stderr


def test_a_second_401_after_refreshing_stops_the_run(emulator: Emulator, tmp_path: Path) -> None:
    # The refreshed token is refused too. (One request thread, so that both 401s hit the
    # same request: each request may refresh once.)
    faults(emulator, {"method": "PATCH", "times": 2, "action": "expire_token"})

    run = sync(
        emulator,
        tmp_path,
        max_parallel_requests=1,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )

    assert run.returncode == 1
    assert "rejected the credentials" in run.stderr
    assert run.state_lines == []


def test_403_names_the_roles_and_scopes_needed(emulator: Emulator, tmp_path: Path) -> None:
    run = sync(emulator, tmp_path, ad_account_id="111111111111")

    assert run.returncode == 1
    assert "owner, admin or audience manager" in run.stderr
    assert "ads:read and ads:write" in run.stderr
    assert run.state_lines == []
    assert "Traceback" not in run.stderr


def test_payload_too_large_halves_requests_until_they_fit(
    emulator: Emulator, tmp_path: Path
) -> None:
    faults(emulator, max_records_per_request=5)

    run = sync(emulator, tmp_path)  # 7 records per request

    assert_converged(emulator, run)
    assert "payload is too large" in run.stderr
    writes = [r for r in emulator.requests() if r["operation_type"] in {"CREATE", "ADD", "REMOVE"}]
    assert max(r["record_count"] for r in writes if r["status"] == 200) <= 5


def test_records_pinterest_rejects_are_isolated_and_counted(
    emulator: Emulator, tmp_path: Path
) -> None:
    bad = [sha(USERS[5]), sha(USERS[22])]
    faults(emulator, rejected_records=bad)

    run = sync(emulator, tmp_path)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": expected() - set(bad)}
    assert "rejected by Pinterest http_400" in run.stderr
    assert "=2" in run.stderr.split("rejected by Pinterest")[1].splitlines()[0]
    assert_contract_kept(emulator)


def test_persistent_server_errors_fail_the_run_and_a_rerun_converges(
    emulator: Emulator, tmp_path: Path
) -> None:
    faults(emulator, {"method": "PATCH", "after": 1, "action": "error", "status": 503})

    failed = sync(emulator, tmp_path, max_retry_wait_seconds=2)

    assert failed.returncode == 1
    assert failed.state_lines == []
    assert "Pinterest did not acknowledge every change" in failed.stderr
    assert "Traceback" not in failed.stderr

    faults(emulator)  # Pinterest recovers; the tap replays from the old bookmark
    rerun = sync(emulator, tmp_path)

    assert_converged(emulator, rerun)
    assert len(lists_by_name(emulator)) == 1


def test_rotated_refresh_tokens_survive_in_the_token_store(
    emulator: Emulator, tmp_path: Path
) -> None:
    store = tmp_path / "secrets" / "pinterest-tokens.json"
    refresh_config = {
        "refresh_token": REFRESH_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_store_path": str(store),
    }
    first = run_target(
        tmp_path,
        {**emulator_config(emulator), "access_token": None, **refresh_config},
        membership_stream(),
    )
    assert first.returncode == 0, first.stderr
    saved = json.loads(store.read_text())
    assert saved["refresh_token"] != REFRESH_TOKEN  # Pinterest rotated it...
    assert stat.S_IMODE(store.stat().st_mode) == 0o600  # ...and it is kept private

    # Everything expires; the config still holds the original (now invalid) refresh token.
    emulator.expire_tokens()
    second = run_target(
        tmp_path,
        {**emulator_config(emulator), "access_token": None, **refresh_config},
        membership_stream(),
    )

    assert second.returncode == 0, second.stderr
    assert json.loads(store.read_text())["refresh_token"] not in {
        REFRESH_TOKEN,
        saved["refresh_token"],
    }
    for secret in (saved["refresh_token"], saved["access_token"], REFRESH_TOKEN, CLIENT_SECRET):
        assert secret not in first.output + second.output
    assert members_by_name(emulator) == {"vip": expected()}


def test_without_the_store_a_rotated_refresh_token_is_lost(
    emulator: Emulator, tmp_path: Path
) -> None:
    refresh_config = {
        "access_token": None,
        "refresh_token": REFRESH_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert sync(emulator, tmp_path, **refresh_config).returncode == 0
    emulator.expire_tokens()

    second = sync(emulator, tmp_path, **refresh_config)

    assert second.returncode == 1
    assert "token_store_path" in second.stderr  # the advice says how to avoid this


def keyed_people(count: int) -> tuple[list[str], list[dict[str, Any] | str]]:
    """``count`` users, one keyed row each in audience ``vip``, then a STATE."""
    users = [f"p{n}@example.com" for n in range(count)]
    messages: list[dict[str, Any] | str] = [
        schema("people", "id", "email", "audience_key", key_properties=["id"])
    ]
    messages += [
        record("people", id=str(n), email=u, audience_key="vip") for n, u in enumerate(users)
    ]
    messages.append(state({"lsn": 1}))
    return users, messages


@pytest.mark.parametrize("sync_mode", ["upsert", "mirror"])
def test_a_full_temporary_directory_stops_the_run_clearly_and_a_rerun_converges(
    emulator: Emulator, tmp_path: Path, sync_mode: str
) -> None:
    """Upsert rows and mirror snapshots wait in TMPDIR. When it cannot take them, the user
    reads which directory, why and what to do, not a traceback; nothing half-merged is
    sent, no STATE moves, and the same input run again converges.

    A file-size limit stands in for the full disk (the same OSError on write, for any user,
    without mounting one): 2 MiB lets the ledger open (its first writes stay under it) and
    refuses the temporary file of 120,000 rows (upsert mode: 8.8 MB of rows spilled in
    blocks of 25,000 while reading; mirror mode: the 4 MB snapshot, before its merge).
    """
    users, messages = keyed_people(120_000)
    config = emulator_config(
        emulator,
        sync_mode=sync_mode,
        ledger_path=str(tmp_path / "ledger.sqlite3"),
        report_path=str(tmp_path / "report.json"),
        records_per_request=1900,
    )
    temp = tmp_path / "tmp"
    temp.mkdir()

    full = run_target(
        tmp_path, config, messages, env={"TMPDIR": str(temp)}, max_file_bytes=2 * 1024 * 1024
    )

    assert full.returncode == 1
    assert full.state_lines == []
    assert emulator.requests() == [] or all(
        entry["operation_type"] not in {"CREATE", "ADD", "REMOVE"} for entry in emulator.requests()
    )
    assert "Traceback" not in full.stderr
    assert f"in the temporary directory {temp} (File too large)" in full.stderr
    assert "set TMPDIR to a directory on a disk with room" in full.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "failed"
    assert report["error"].startswith("Cannot write ")

    rerun = run_target(tmp_path, config, messages, env={"TMPDIR": str(temp)})

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.state_lines == [{"lsn": 1}]
    assert members_by_name(emulator) == {"vip": {sha(u) for u in users}}
    assert list(temp.iterdir()) == []  # nothing left behind by either run


@pytest.mark.parametrize("sync_mode", ["upsert", "mirror"])
def test_a_ledger_that_cannot_be_written_stops_the_run_clearly_and_a_rerun_converges(
    emulator: Emulator, tmp_path: Path, sync_mode: str
) -> None:
    """The ledger's disk fills during the run: one message naming the ledger, the failure
    and what to do, no traceback, no STATE; the same input run again converges. The
    file-size limit (2 MiB) lets the ledger open and the rows' temporary file (1.5 MB)
    be written, and stops the ledger while it takes 20,000 members (4 MB)."""
    users, messages = keyed_people(20_000)
    ledger = tmp_path / "ledger.sqlite3"
    config = emulator_config(
        emulator,
        sync_mode=sync_mode,
        ledger_path=str(ledger),
        report_path=str(tmp_path / "report.json"),
        records_per_request=1900,
    )

    full = run_target(tmp_path, config, messages, max_file_bytes=2 * 1024 * 1024)

    assert full.returncode == 1
    assert full.state_lines == []
    assert "Traceback" not in full.stderr
    assert f"The SQLite ledger {ledger} could not be read or written: disk I/O error" in (
        full.stderr
    )
    assert "then run again" in full.stderr
    assert json.loads((tmp_path / "report.json").read_text())["outcome"] == "failed"

    rerun = run_target(tmp_path, config, messages)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.state_lines == [{"lsn": 1}]
    assert members_by_name(emulator) == {"vip": {sha(u) for u in users}}


def test_a_ledger_that_cannot_be_opened_is_one_clear_line_and_nothing_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    messages = [schema("people", "id", "email", key_properties=["id"])]
    messages += [record("people", id="1", email="a@example.com"), state({"lsn": 1})]
    ledger = tmp_path / "ledger.sqlite3"
    sqlite = emulator_config(emulator, sync_mode="upsert", ledger_path=str(ledger))
    password = "ledger-password-42"
    postgres = emulator_config(
        emulator,
        sync_mode="upsert",
        ledger_url=f"postgresql://target:{password}@127.0.0.1:9/ledger",  # nobody listens
    )

    runs = {
        "sqlite": run_target(tmp_path, sqlite, messages, max_file_bytes=256 * 1024),
        "postgres": run_target(tmp_path, postgres, messages),
    }

    for name, run in runs.items():
        assert run.returncode == 1, name
        assert run.state_lines == [], name
        assert "Traceback" not in run.stderr, name
        assert password not in run.output, name
    assert f"The SQLite ledger {ledger} could not be read or written: " in runs["sqlite"].stderr
    assert "The PostgreSQL ledger at ledger_url could not be read or written: " in (
        runs["postgres"].stderr
    )
    assert "Check that the server is up" in runs["postgres"].stderr
    assert emulator.requests() == []
