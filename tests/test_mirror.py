"""Mirror mode, as a user with a plain SQL tap meets it: full snapshots in, changes out.

Each run feeds the console script the complete current membership; the emulator must end
up with exactly that membership, and its request log must show that only the changes
were sent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig
from target_pinterest_audiences.scratch import ScratchDirectory
from target_pinterest_audiences.snapshot import SNAPSHOT_FOLDER_PREFIX

from support import (
    AD_ACCOUNT,
    TOKEN,
    Run,
    StderrLines,
    assert_contract_kept,
    emulator_config,
    lists_by_name,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    state,
    target_command,
)

# The tests here run the installed console script as a subprocess.
pytestmark = pytest.mark.slow


def users(*numbers: int) -> list[str]:
    return [f"member{n:04d}@example.com" for n in numbers]


def snapshot(stream: str, audience_members: dict[str, list[str]]) -> list[dict[str, Any]]:
    """What `select email, segment from ...` would emit: every current member, once."""
    messages: list[dict[str, Any]] = [schema(stream, "email", "audience_key")]
    for audience, emails in audience_members.items():
        messages += [record(stream, email=email, audience_key=audience) for email in emails]
    messages.append(state({"snapshot": sum(len(v) for v in audience_members.values())}))
    return messages


def hashes(emails: list[str]) -> set[str]:
    return {sha(email) for email in emails}


def sent_records(emulator: Emulator, since: int) -> dict[str, int]:
    """Identifiers carried by customer-list writes after request ``since``, by operation."""
    totals: dict[str, int] = {"CREATE": 0, "ADD": 0, "REMOVE": 0}
    for entry in emulator.requests()[since:]:
        if entry["operation_type"] in totals and entry["status"] == 200:
            totals[entry["operation_type"]] += entry["record_count"]
    return totals


def mirror_config(emulator: Emulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return emulator_config(
        emulator,
        **{
            "sync_mode": "mirror",
            "ledger_path": str(tmp_path / "ledger" / "ledger.sqlite3"),
            "records_per_request": 25,
            **overrides,
        },
    )


def mirror_run(
    emulator: Emulator, tmp_path: Path, audiences: dict[str, list[str]], **overrides: Any
) -> tuple[Run, dict[str, int]]:
    since = len(emulator.requests())
    run = run_target(
        tmp_path, mirror_config(emulator, tmp_path, **overrides), snapshot("segments", audiences)
    )
    return run, sent_records(emulator, since)


def test_three_overlapping_snapshots_send_only_the_changes(
    emulator: Emulator, tmp_path: Path
) -> None:
    first = {"vip": users(*range(0, 120)), "lapsed": users(*range(500, 530))}
    second = {"vip": users(*range(10, 130)), "lapsed": users(*range(500, 530))}
    third = {"vip": users(*range(10, 100), *range(200, 205)), "lapsed": users(*range(505, 535))}

    run, sent = mirror_run(emulator, tmp_path, first)
    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {k: hashes(v) for k, v in first.items()}
    assert sent == {"CREATE": 50, "ADD": 100, "REMOVE": 0}  # first sync: everyone, once

    run, sent = mirror_run(emulator, tmp_path, second)
    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {k: hashes(v) for k, v in second.items()}
    assert sent == {"CREATE": 0, "ADD": 10, "REMOVE": 10}  # 0-9 left, 120-129 joined
    assert (
        "mirror: 120 members before, 10 added, 10 removed, 110 unchanged, 120 after" in run.stderr
    )
    assert "mirror: 30 members before, 0 added, 0 removed, 30 unchanged, 30 after" in run.stderr

    run, sent = mirror_run(emulator, tmp_path, third)
    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {k: hashes(v) for k, v in third.items()}
    assert sent == {"CREATE": 0, "ADD": 5 + 5, "REMOVE": 30 + 5}
    assert run.state_lines == [{"snapshot": len(third["vip"]) + len(third["lapsed"])}]
    assert_contract_kept(emulator)
    assert not re.search(r"member\d{4}@example\.com", run.output)
    assert TOKEN not in run.output


def test_an_unchanged_snapshot_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    members = {"vip": users(*range(40))}
    assert mirror_run(emulator, tmp_path, members)[0].returncode == 0

    run, sent = mirror_run(emulator, tmp_path, members)

    assert run.returncode == 0, run.stderr
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}


def test_in_audience_false_counts_as_absent(emulator: Emulator, tmp_path: Path) -> None:
    assert mirror_run(emulator, tmp_path, {"vip": users(1, 2, 3)})[0].returncode == 0
    messages = [
        schema("segments", "email", "audience_key", "flag:in_audience"),
        record("segments", email=users(1)[0], audience_key="vip"),
        record("segments", email=users(2)[0], audience_key="vip", in_audience=False),
        record("segments", email=users(3)[0], audience_key="vip"),
    ]

    run = run_target(tmp_path, mirror_config(emulator, tmp_path), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": hashes(users(1, 3))}


def test_a_truncated_snapshot_trips_the_guard_and_removes_nobody(
    emulator: Emulator, tmp_path: Path
) -> None:
    full = {"vip": users(*range(100)), "lapsed": users(*range(500, 510))}
    assert mirror_run(emulator, tmp_path, full)[0].returncode == 0

    # The upstream query was cut short: vip lost 60% of its rows; lapsed is intact.
    run, sent = mirror_run(emulator, tmp_path, {"vip": users(*range(40)), "lapsed": full["lapsed"]})

    assert run.returncode == 1
    assert "'vip' would lose 60 of its 100 members (60%)" in run.stderr
    assert "max_removal_fraction=0.5" in run.stderr
    assert sent["REMOVE"] == 0
    assert members_by_name(emulator) == {k: hashes(v) for k, v in full.items()}
    assert run.state_lines == []
    assert "Traceback" not in run.stderr


def test_a_tripped_guard_applies_nothing_so_a_retry_trips_it_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    first = {"vip": users(*range(100))}
    assert mirror_run(emulator, tmp_path, first)[0].returncode == 0
    ledger_before = ledger_members(tmp_path)
    # 60 of the 100 members left and 100 new ones joined: with the additions applied, a
    # retry would measure 60 of 200 (30%) and pass. Nothing may be applied instead.
    second = {"vip": users(*range(60, 100), *range(1000, 1100))}

    for attempt in range(2):  # what every orchestrator does: retry the failed run
        run, sent = mirror_run(emulator, tmp_path, second)

        assert run.returncode == 1, f"attempt {attempt}: {run.stderr}"
        assert "'vip' would lose 60 of its 100 members (60%)" in run.stderr
        assert "no additions and no removals" in run.stderr
        assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}
        assert members_by_name(emulator) == {"vip": hashes(first["vip"])}
        assert ledger_members(tmp_path) == ledger_before
        assert run.state_lines == []
        assert "Traceback" not in run.stderr

    run, sent = mirror_run(emulator, tmp_path, second, max_removal_fraction=0.6)

    assert run.returncode == 0, run.stderr
    assert sent == {"CREATE": 0, "ADD": 100, "REMOVE": 60}
    assert members_by_name(emulator) == {"vip": hashes(second["vip"])}
    assert "mirror: 100 members before, 100 added, 60 removed, 40 unchanged, 140 after" in (
        run.stderr
    )


def test_a_tripped_guard_on_one_audience_holds_back_every_audience(
    emulator: Emulator, tmp_path: Path
) -> None:
    first = {"vip": users(*range(10)), "lapsed": users(*range(500, 510))}
    assert mirror_run(emulator, tmp_path, first)[0].returncode == 0

    # lapsed only grows; vip loses 8 of 10.
    run, sent = mirror_run(
        emulator, tmp_path, {"vip": users(0, 1), "lapsed": users(*range(500, 520))}
    )

    assert run.returncode == 1
    assert "'vip' would lose 8 of its 10 members (80%)" in run.stderr
    assert "'lapsed'" not in run.stderr.split("would lose")[1]
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}
    assert members_by_name(emulator) == {k: hashes(v) for k, v in first.items()}


def test_a_dry_run_that_would_trip_the_guard_says_so_and_exits_0(
    emulator: Emulator, tmp_path: Path
) -> None:
    assert mirror_run(emulator, tmp_path, {"vip": users(*range(10))})[0].returncode == 0

    run, sent = mirror_run(emulator, tmp_path, {"vip": users(0, 20, 21)}, dry_run=True)

    assert run.returncode == 0, run.stderr
    assert "Dry run: " in run.stderr
    assert "'vip' would lose 9 of its 10 members (90%)" in run.stderr
    assert "mirror: 10 members before, 0 added, 0 removed, 10 unchanged, 10 after" in run.stderr
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}


def test_an_empty_snapshot_trips_the_guard(emulator: Emulator, tmp_path: Path) -> None:
    assert mirror_run(emulator, tmp_path, {"vip": users(*range(10))})[0].returncode == 0

    run = run_target(tmp_path, mirror_config(emulator, tmp_path), [schema("segments", "email")])

    assert run.returncode == 1
    assert "'vip' would lose 10 of its 10 members (100%)" in run.stderr
    assert members_by_name(emulator) == {"vip": hashes(users(*range(10)))}


def test_with_the_guard_off_a_covered_audience_without_records_is_emptied(
    emulator: Emulator, tmp_path: Path
) -> None:
    first = {"vip": users(*range(10)), "lapsed": users(20, 21)}
    assert mirror_run(emulator, tmp_path, first)[0].returncode == 0

    run, sent = mirror_run(emulator, tmp_path, {"vip": users(*range(10))}, max_removal_fraction=1.0)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": hashes(users(*range(10))), "lapsed": set()}
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 2}


def test_dry_run_reports_the_difference_and_changes_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    assert mirror_run(emulator, tmp_path, {"vip": users(*range(10))})[0].returncode == 0
    before = ledger_members(tmp_path)

    run, sent = mirror_run(emulator, tmp_path, {"vip": users(*range(2, 14))}, dry_run=True)

    assert run.returncode == 0, run.stderr
    assert "mirror: 10 members before, 4 added, 2 removed, 8 unchanged, 12 after" in run.stderr
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}
    assert ledger_members(tmp_path) == before


def test_a_list_deleted_in_ads_manager_is_recreated_with_everyone(
    emulator: Emulator, tmp_path: Path
) -> None:
    members = {"vip": users(*range(30))}
    assert mirror_run(emulator, tmp_path, members)[0].returncode == 0
    emulator.reset()  # someone deleted the list (and everything else) on Pinterest

    run, sent = mirror_run(emulator, tmp_path, members)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": hashes(members["vip"])}
    assert sent["CREATE"] + sent["ADD"] == 30


def test_failed_requests_leave_the_ledger_consistent_and_a_rerun_converges(
    emulator: Emulator, tmp_path: Path
) -> None:
    assert mirror_run(emulator, tmp_path, {"vip": users(*range(100))})[0].returncode == 0
    target = {"vip": users(*range(50, 160))}
    # Pinterest applies two requests but the answers are lost, then fails for good.
    emulator.configure_faults(
        {
            "rules": [
                {"method": "PATCH", "times": 2, "action": "drop_after_apply"},
                {"method": "PATCH", "after": 2, "action": "error", "status": 503},
            ]
        }
    )
    failed, _ = mirror_run(emulator, tmp_path, target, max_retry_wait_seconds=1)
    assert failed.returncode == 1
    assert failed.state_lines == []

    emulator.configure_faults({"rules": []})
    rerun, _ = mirror_run(emulator, tmp_path, target)

    assert rerun.returncode == 0, rerun.stderr
    assert members_by_name(emulator) == {"vip": hashes(target["vip"])}
    assert ledger_members(tmp_path) == {"vip": hashes(target["vip"])}


def test_sigkill_during_a_mirror_run_then_rerun_converges(tmp_path: Path) -> None:
    with Emulator(EmulatorConfig.without_rate_limits(latency_ms=60)) as emulator:
        first = {"vip": users(*range(0, 200))}
        assert mirror_run(emulator, tmp_path, first, records_per_request=10)[0].returncode == 0
        target = {"vip": users(*range(100, 300))}  # 100 removals, 100 additions
        config_path = tmp_path / "config.json"
        config_path.write_text(
            json.dumps(
                mirror_config(emulator, tmp_path, records_per_request=10, max_parallel_requests=2)
            )
        )
        since = len(emulator.requests())
        process = subprocess.Popen(
            [*target_command(), "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None
        process.stdin.write("".join(json.dumps(m) + "\n" for m in snapshot("segments", target)))
        process.stdin.close()
        deadline = time.monotonic() + 30
        while sent_records(emulator, since)["ADD"] + sent_records(emulator, since)["REMOVE"] < 40:
            assert time.monotonic() < deadline, "the mirror run never started sending"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.stdout is not None
        assert process.stdout.read() == ""  # killed before the end: no STATE
        partial = members_by_name(emulator)["vip"]
        assert partial not in (hashes(first["vip"]), hashes(target["vip"]))

        rerun, _ = mirror_run(emulator, tmp_path, target, records_per_request=10)

        assert rerun.returncode == 0, rerun.stderr
        assert members_by_name(emulator) == {"vip": hashes(target["vip"])}
        assert ledger_members(tmp_path) == {"vip": hashes(target["vip"])}


def snapshot_folders(temp: Path) -> list[Path]:
    return sorted(temp.glob("target-pinterest-audiences-*"))


def wait_for_snapshot_folder(temp: Path) -> Path:
    deadline = time.monotonic() + 30
    while not snapshot_folders(temp):
        assert time.monotonic() < deadline, "the run never made its snapshot folder"
        time.sleep(0.02)
    (folder,) = snapshot_folders(temp)
    return folder


def test_the_snapshot_folder_is_removed_on_every_exit_path(
    emulator: Emulator, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    config = mirror_config(emulator, tmp_path)
    members = {"vip": users(*range(20))}
    outcomes = {}

    outcomes["success"] = run_target(tmp_path, config, snapshot("segments", members), env=env)
    outcomes["guard tripped"] = run_target(
        tmp_path, config, snapshot("segments", {"vip": users(1)}), env=env
    )
    outcomes["bad input"] = run_target(
        tmp_path, config, [*snapshot("segments", members)[:3], "not json"], env=env
    )
    store = tmp_path / "tokens.json"
    store.write_text("not json")  # start-up fails after the snapshot folder was made
    outcomes["start-up failure"] = run_target(
        tmp_path,
        {
            **config,
            "token_store_path": str(store),
            "refresh_token": "r" * 10,
            "client_id": "c",
            "client_secret": "s" * 10,
        },
        snapshot("segments", members),
        env=env,
    )
    config_path = tmp_path / "config-sigterm.json"
    # A progress line says when records were read (see below).
    config_path.write_text(json.dumps({**config, "progress_interval_seconds": 0.05}))
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdin is not None
    assert process.stderr is not None
    stderr_lines = StderrLines(process)
    process.stdin.write("".join(json.dumps(m) + "\n" for m in snapshot("segments", members)[:5]))
    process.stdin.flush()
    wait_for_snapshot_folder(temp)  # the folder exists while the run reads
    # Signal once records were read: a signal that lands before the SCHEMA line stops a run
    # that no mirror stream joined yet, which rightly exits 0.
    stderr_lines.wait_for(r"Progress: [1-9]\d* records read")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)  # stdin stays open, as with a tap still running
    process.stdin.close()
    outcomes["SIGTERM"] = Run(process.returncode, "", stderr_lines.all())

    assert [run.returncode for run in outcomes.values()] == [0, 1, 1, 1, 1], {
        name: run.stderr[-500:] for name, run in outcomes.items()
    }
    assert "Received signal" in outcomes["SIGTERM"].stderr, outcomes["SIGTERM"].stderr
    assert "token_store_path" in outcomes["start-up failure"].stderr
    for name, run in outcomes.items():
        assert "Traceback" not in run.stderr, name
    assert list(temp.iterdir()) == []


def test_a_killed_runs_snapshot_folder_is_removed_by_the_next_run_but_a_live_ones_is_kept(
    emulator: Emulator, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    config = mirror_config(emulator, tmp_path)
    config_path = tmp_path / "config-sigkill.json"
    config_path.write_text(json.dumps(config))
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(schema("segments", "email")) + "\n")
    process.stdin.flush()
    killed = wait_for_snapshot_folder(temp)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert killed.is_dir()  # nobody could remove it
    # A run that is alive right now (this test process) owns a folder with the same prefix.
    live = ScratchDirectory(SNAPSHOT_FOLDER_PREFIX, temp)
    an_hour_ago = time.time() - 3600
    for folder in (killed, live.path):
        os.utime(folder, (an_hour_ago, an_hour_ago))

    try:
        run = run_target(tmp_path, config, snapshot("segments", {"vip": users(*range(5))}), env=env)

        assert run.returncode == 0, run.stderr
        assert not killed.exists()
        assert live.path.is_dir()
        assert snapshot_folders(temp) == [live.path]
        assert "Removed 1 temporary folder(s)" in run.stderr
    finally:
        live.close()


def test_the_ledger_holds_no_raw_identifier(emulator: Emulator, tmp_path: Path) -> None:
    emails = users(*range(50))
    assert mirror_run(emulator, tmp_path, {"vip": emails})[0].returncode == 0

    for path in (tmp_path / "ledger").iterdir():  # the database and any WAL/SHM files
        content = path.read_bytes()
        assert b"@example.com" not in content
        assert not any(email.encode() in content for email in emails)
    assert ledger_members(tmp_path) == {"vip": hashes(emails)}


def ledger_members(tmp_path: Path) -> dict[str, set[str]]:
    """Confirmed members per audience, read straight from the SQLite ledger."""
    with sqlite3.connect(tmp_path / "ledger" / "ledger.sqlite3") as db:
        rows = db.execute(
            "SELECT l.audience, m.hash, m.confirmed FROM ledger_members m "
            "JOIN ledger_lists l ON l.list_key = m.list_key WHERE l.ad_account_id = ?",
            (AD_ACCOUNT,),
        ).fetchall()
    members: dict[str, set[str]] = {}
    for audience, digest, confirmed in rows:
        assert confirmed == 1, "an uncertain row after a successful run"
        members.setdefault(audience, set()).add(bytes(digest).hex())
    return members


@pytest.mark.parametrize("stream_count", [2])
def test_two_streams_feeding_one_audience_are_one_snapshot(
    emulator: Emulator, tmp_path: Path, stream_count: int
) -> None:
    messages = []
    for n in range(stream_count):
        messages += [schema(f"source{n}", "email", "audience_key")]
        messages += [
            record(f"source{n}", email=e, audience_key="vip") for e in users(n * 10, n * 10 + 1)
        ]
    run = run_target(tmp_path, mirror_config(emulator, tmp_path), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": hashes(users(0, 1, 10, 11))}
    assert len(lists_by_name(emulator)) == 1


def test_three_snapshots_with_the_ledger_in_postgresql(
    emulator: Emulator, tmp_path: Path, fresh_postgres_url: str
) -> None:
    """Ephemeral machines: the ledger lives in PostgreSQL; no local ledger file is made."""
    for members in (users(*range(0, 60)), users(*range(20, 80)), users(*range(20, 50))):
        run, _ = mirror_run(
            emulator,
            tmp_path,
            {"vip": members},
            ledger_url=fresh_postgres_url,
            max_removal_fraction=1.0,
        )
        assert run.returncode == 0, run.stderr
        assert members_by_name(emulator) == {"vip": hashes(members)}
        assert "PostgreSQL ledger on 127.0.0.1" in run.stderr
    assert not (tmp_path / "ledger").exists()
    assert fresh_postgres_url not in run.output  # ledger_url is a secret
