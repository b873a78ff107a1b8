"""Upsert mode, as a user with a CDC or incremental tap meets it.

Each test runs the installed console script against the emulator, feeding what a
log-based tap emits (whole rows on insert and update, the key plus ``_sdc_deleted_at`` on
delete), and checks the lists against an independent model of the upstream table: an
identifier is in an audience while at least one live row puts it there.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

from support import (
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
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

STREAM = "public-users"
USERS = schema(STREAM, "id", "email", "audience_key", key_properties=["id"])
DELETED = "2026-12-01T10:00:00+00:00"


class Table:
    """The upstream table, and the lists it implies (the test's own model)."""

    def __init__(self) -> None:
        self.rows: dict[Any, dict[str, Any]] = {}

    def upsert(self, key: Any, **fields: Any) -> dict[str, Any]:
        self.rows[key] = {"id": key, **fields}
        return record(STREAM, **self.rows[key])

    def delete(self, key: Any) -> dict[str, Any]:
        self.rows.pop(key, None)
        return record(STREAM, id=key, _sdc_deleted_at=DELETED)  # the replica identity only

    def lists(self) -> dict[str, set[str]]:
        lists: dict[str, set[str]] = {}
        for row in self.rows.values():
            email, audience = row.get("email"), row.get("audience_key")
            if email and audience and row.get("in_audience", True):
                lists.setdefault(audience, set()).add(sha(email.strip().lower()))
        return lists


def upsert_config(emulator: Emulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return emulator_config(
        emulator,
        **{
            "sync_mode": "upsert",
            "ledger_path": str(tmp_path / "ledger" / "ledger.sqlite3"),
            "report_path": str(tmp_path / "report.json"),
            "records_per_request": 50,
            **overrides,
        },
    )


def sent_records(emulator: Emulator, since: int) -> dict[str, int]:
    """Identifiers carried by acknowledged customer-list writes after request ``since``."""
    totals = {"CREATE": 0, "ADD": 0, "REMOVE": 0}
    for entry in emulator.requests()[since:]:
        if entry["operation_type"] in totals and entry["status"] == 200:
            totals[entry["operation_type"]] += entry["record_count"]
    return totals


def nonempty(lists: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    return {name: set(members) for name, members in lists.items() if members}


def report(tmp_path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((tmp_path / "report.json").read_text())
    return {audience["audience"]: audience for audience in data["audiences"]}


def sync(
    emulator: Emulator, tmp_path: Path, messages: list[Any], **overrides: Any
) -> tuple[Run, dict[str, int]]:
    since = len(emulator.requests())
    run = run_target(tmp_path, upsert_config(emulator, tmp_path, **overrides), messages)
    return run, sent_records(emulator, since)


def test_a_cdc_batch_moves_exactly_what_the_table_says(emulator: Emulator, tmp_path: Path) -> None:
    table = Table()
    initial = [table.upsert(n, email=f"user{n}@example.com", audience_key="vip") for n in range(60)]
    initial += [
        table.upsert(n, email=f"user{n}@example.com", audience_key="news") for n in range(60, 80)
    ]
    initial.append(table.upsert(80, email="user1@example.com", audience_key="vip"))  # shared
    run, sent = sync(emulator, tmp_path, [USERS, *initial, state({"lsn": 1})])
    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == table.lists()
    assert sent["CREATE"] + sent["ADD"] == 80  # user1 once, although two rows hold it

    batch = [
        table.upsert(2, email="USER2.NEW@example.com ", audience_key="vip"),  # email changed
        table.upsert(3, email="user3@example.com", audience_key="news"),  # moved
        table.delete(4),  # key-only delete
        table.delete(5),
        table.delete(1),  # user1 stays: row 80 still has that email
        table.upsert(90, email="user90@example.com", audience_key="vip"),  # insert
        table.upsert(6, email="user6@example.com", audience_key="vip"),  # unchanged update
    ]
    run, sent = sync(emulator, tmp_path, [USERS, *batch, state({"lsn": 2})])

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == table.lists()
    # user2 -> new (1 remove, 1 add), user3 vip -> news (1, 1), 4 and 5 (2 removes), user90.
    assert sent == {"CREATE": 0, "ADD": 3, "REMOVE": 4}
    assert run.state_lines == [{"lsn": 2}]
    audiences = report(tmp_path)
    assert audiences["vip"]["upsert"] == {"live_rows": 58, "rows_deleted": 3, "members": 58}
    assert audiences["news"]["upsert"] == {"live_rows": 21, "rows_deleted": 0, "members": 21}
    assert "Stream 'public-users': 7 records read, 7 used (3 deletes)" in run.stderr
    assert "upsert: 58 live rows (3 deleted this run), 58 members" in run.stderr
    assert_contract_kept(emulator)
    assert "@example.com" not in run.output
    assert TOKEN not in run.output


def test_replaying_applied_rows_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    table = Table()
    rows = [table.upsert(n, email=f"r{n}@example.com", audience_key="vip") for n in range(30)]
    rows += [table.delete(7)]
    assert sync(emulator, tmp_path, [USERS, *rows])[0].returncode == 0
    since = len(emulator.requests())

    run, sent = sync(emulator, tmp_path, [USERS, *rows])  # a re-run from an old bookmark

    assert run.returncode == 0, run.stderr
    assert sent == {"CREATE": 0, "ADD": 0, "REMOVE": 0}
    writes = [r for r in emulator.requests()[since:] if r["method"] != "GET"]
    assert writes == []
    assert nonempty(members_by_name(emulator)) == table.lists()


def test_a_stream_without_key_properties_stops_before_anything_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    keyless = schema(STREAM, "id", "email", "audience_key")
    run, _ = sync(emulator, tmp_path, [keyless, record(STREAM, id=1, email="a@example.com")])

    assert run.returncode == 1
    assert "stream 'public-users'" in run.stderr
    assert "declares no key_properties" in run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.requests() == []


def test_an_email_key_never_reaches_the_ledger(emulator: Emulator, tmp_path: Path) -> None:
    by_email = schema("crm", "email", "flag:vip", key_properties=["email"])
    emails = [f"key{n}@example.com" for n in range(20)]
    run, _ = sync(
        emulator, tmp_path, [by_email, *(record("crm", email=e, vip=True) for e in emails)]
    )

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == {"vip": {sha(e) for e in emails}}
    for path in (tmp_path / "ledger").iterdir():
        content = path.read_bytes()
        assert b"@example.com" not in content


def test_engage_flags_from_the_schema_false_and_null_mean_not_a_member(
    emulator: Emulator, tmp_path: Path
) -> None:
    traits = schema(
        "traits", "user_id", "email", "flag:vip", "flag:lapsed", key_properties=["user_id"]
    )
    first = [
        record("traits", user_id="a", email="a@example.com", vip=True, lapsed=True),
        record("traits", user_id="b", email="b@example.com", vip=True, lapsed=None),
    ]
    assert sync(emulator, tmp_path, [traits, *first])[0].returncode == 0
    assert nonempty(members_by_name(emulator)) == {
        "vip": {sha("a@example.com"), sha("b@example.com")},
        "lapsed": {sha("a@example.com")},
    }

    later = [
        record("traits", user_id="a", email="a@example.com", vip=False, lapsed=None),
        record("traits", user_id="b", email="b@example.com"),  # flags absent: in none
    ]
    run, _ = sync(emulator, tmp_path, [traits, *later])

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == {}
    assert "traits" not in lists_by_name(emulator)  # never the stream's own list


def test_one_tap_with_an_events_stream_and_a_users_table(
    emulator: Emulator, tmp_path: Path
) -> None:
    events = schema("public-events", "email", "audience_key", "flag:in_audience")
    messages = [
        USERS,
        events,
        record(STREAM, id=1, email="u1@example.com", audience_key="customers"),
        record(STREAM, id=2, email="u2@example.com", audience_key="customers"),
        record("public-events", email="e1@example.com", audience_key="clicked", in_audience=True),
        record("public-events", email="e2@example.com", audience_key="clicked", in_audience=True),
        record("public-events", email="e2@example.com", audience_key="clicked", in_audience=False),
    ]
    run, _ = sync(
        emulator,
        tmp_path,
        messages,
        sync_mode="changes",
        stream_sync_modes={STREAM: "upsert"},
    )

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == {
        "customers": {sha("u1@example.com"), sha("u2@example.com")},
        "clicked": {sha("e1@example.com")},
    }
    run, _ = sync(
        emulator,
        tmp_path,
        [USERS, record(STREAM, id=2, _sdc_deleted_at=DELETED)],
        sync_mode="changes",
        stream_sync_modes={STREAM: "upsert"},
    )
    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator))["customers"] == {sha("u1@example.com")}


def test_one_audience_fed_in_two_modes_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    events = schema("public-events", "email", "audience_key")
    messages = [
        USERS,
        events,
        record(STREAM, id=1, email="u1@example.com", audience_key="vip"),
        record("public-events", email="e1@example.com", audience_key="vip"),
    ]
    run, _ = sync(
        emulator, tmp_path, messages, sync_mode="changes", stream_sync_modes={STREAM: "upsert"}
    )

    assert run.returncode == 1
    assert (
        "audience 'vip' is fed by stream 'public-users' in upsert mode and by stream "
        "'public-events' in changes mode" in run.stderr
    )
    assert "Traceback" not in run.stderr


def test_activate_version_is_accepted_quietly(emulator: Emulator, tmp_path: Path) -> None:
    version = {"type": "ACTIVATE_VERSION", "stream": STREAM, "version": 1700000000}
    messages = [
        USERS,
        version,
        record(STREAM, id=1, email="a@example.com", audience_key="vip"),
        version,
    ]

    run, _ = sync(emulator, tmp_path, messages)

    assert run.returncode == 0, run.stderr
    # The SDK's own handling warns twice per message ("not implemented", "_sdc_ metadata").
    assert "ACTIVATE_VERSION" not in run.stderr.replace("activate version messages", "")
    assert "metadata properties" not in run.stderr


def test_a_dry_run_sends_and_keeps_nothing(emulator: Emulator, tmp_path: Path) -> None:
    rows = [record(STREAM, id=n, email=f"d{n}@example.com", audience_key="vip") for n in range(10)]
    run, _ = sync(emulator, tmp_path, [USERS, *rows], dry_run=True)
    assert run.returncode == 0, run.stderr
    assert "would add 10" in run.stderr
    assert emulator.requests() == []

    run, sent = sync(emulator, tmp_path, [USERS, *rows])  # the real run still sends them all

    assert run.returncode == 0, run.stderr
    assert sent["CREATE"] + sent["ADD"] == 10


def test_the_upsert_ledger_in_postgresql(
    emulator: Emulator, tmp_path: Path, fresh_postgres_url: str
) -> None:
    table = Table()
    first = [table.upsert(n, email=f"p{n}@example.com", audience_key="vip") for n in range(20)]
    run, _ = sync(emulator, tmp_path, [USERS, *first], ledger_url=fresh_postgres_url)
    assert run.returncode == 0, run.stderr
    second = [table.delete(n) for n in range(5)] + [
        table.upsert(6, email="p6@example.com", audience_key="news")
    ]

    run, sent = sync(emulator, tmp_path, [USERS, *second], ledger_url=fresh_postgres_url)

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == table.lists()
    assert sent == {"CREATE": 1, "ADD": 0, "REMOVE": 6}
    assert "PostgreSQL ledger on 127.0.0.1" in run.stderr
    assert not (tmp_path / "ledger").exists()


def test_failed_requests_then_a_rerun_converge(emulator: Emulator, tmp_path: Path) -> None:
    table = Table()
    first = [table.upsert(n, email=f"f{n}@example.com", audience_key="vip") for n in range(100)]
    assert sync(emulator, tmp_path, [USERS, *first])[0].returncode == 0
    batch = [table.delete(n) for n in range(0, 100, 2)]
    batch += [
        table.upsert(n, email=f"f{n}.new@example.com", audience_key="vip") for n in range(1, 40, 2)
    ]
    emulator.configure_faults(
        {
            "rules": [
                {"method": "PATCH", "times": 1, "action": "drop_after_apply"},
                {"method": "PATCH", "after": 1, "action": "error", "status": 503},
            ]
        }
    )
    failed, _ = sync(
        emulator, tmp_path, [USERS, *batch, state({"lsn": 2})], max_retry_wait_seconds=1
    )
    assert failed.returncode == 1
    assert failed.state_lines == []

    emulator.configure_faults({"rules": []})
    rerun, _ = sync(emulator, tmp_path, [USERS, *batch, state({"lsn": 2})])

    assert rerun.returncode == 0, rerun.stderr
    assert nonempty(members_by_name(emulator)) == table.lists()
    assert ledger_is_settled(tmp_path)


def ledger_is_settled(tmp_path: Path) -> bool:
    """After a successful run nothing is pending and every kept pair is live and present."""
    with sqlite3.connect(tmp_path / "ledger" / "ledger.sqlite3") as db:
        pending: int = db.execute("SELECT COUNT(*) FROM ledger_pending_batches").fetchone()[0]
        unsettled: int = db.execute(
            "SELECT COUNT(*) FROM ledger_live_members WHERE live_rows < 1 OR sent <> 2"
        ).fetchone()[0]
    return pending == 0 and unsettled == 0


# Crash safety: SIGKILL at random points of a CDC stream, re-run from the last STATE ----


def cdc_stream(seed: int, chunks: int, per_chunk: int) -> tuple[list[list[dict[str, Any]]], Table]:
    """Chunks of random inserts, updates, moves and deletes, each ending with its bookmark."""
    rng = random.Random(seed)
    table = Table()
    out = []
    for position in range(1, chunks + 1):
        messages = []
        for _ in range(per_chunk):
            key = rng.randrange(40)
            if key in table.rows and rng.random() < 0.25:
                messages.append(table.delete(key))
            else:
                messages.append(
                    table.upsert(
                        key,
                        email=f"c{rng.randrange(30)}@example.com",  # shared emails are common
                        audience_key=rng.choice(["vip", "lapsed"]),
                    )
                )
        messages.append(state({"position": position}))
        out.append(messages)
    return out, table


class Feeder:
    """The console script fed chunk by chunk from ``start``, its STATE lines collected."""

    def __init__(self, config_path: Path, chunks: list[list[dict[str, Any]]], start: int) -> None:
        self.process = subprocess.Popen(
            [*target_command(), "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.states: list[dict[str, Any]] = []
        self._chunks = chunks
        self._position = start
        self._deadline = time.monotonic() + 30
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._send([USERS])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.states.append(json.loads(line))

    def _send(self, messages: list[dict[str, Any]]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
        self.process.stdin.flush()

    @property
    def confirmed(self) -> int:
        """The last bookmark this run confirmed (0: none)."""
        return self.states[-1]["position"] if self.states else 0

    def feed_until(self, done: Any) -> None:
        """Feed a chunk every 0.1 s (keeping the last one back) until ``done()``."""
        while not done() and time.monotonic() < self._deadline:
            if self._position < len(self._chunks) - 1:
                self._send(self._chunks[self._position])
                self._position += 1
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def test_sigkill_at_random_points_then_reruns_converge(tmp_path: Path) -> None:
    chunks, table = cdc_stream(seed=11, chunks=200, per_chunk=4)
    with Emulator(EmulatorConfig.without_rate_limits(latency_ms=30)) as emulator:
        config = upsert_config(
            emulator, tmp_path, records_per_request=3, checkpoint_interval_seconds=1
        )
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        confirmed = 0
        rng = random.Random(5)
        for _attempt in range(3):  # three runs killed part-way, each resuming from STATE
            feeder = Feeder(config_path, chunks, start=confirmed)
            # Feed until this run confirmed a new bookmark, then until its next checkpoint
            # is being sent, and kill it while those requests are in flight.
            feeder.feed_until(lambda f=feeder, c=confirmed: f.confirmed > c)
            requests = len(emulator.requests())
            feeder.feed_until(lambda r=requests: len(emulator.requests()) > r + 1)
            time.sleep(rng.uniform(0, 0.04))
            feeder.kill()
            assert feeder.states, "a killed run confirmed no bookmark"
            assert len(emulator.requests()) > requests + 1, "the kill landed outside a flush"
            confirmed = feeder.confirmed

        replay = [USERS] + [m for messages in chunks[confirmed:] for m in messages]
        rerun = run_target(tmp_path, config, replay)

        assert rerun.returncode == 0, rerun.stderr
        assert rerun.state_lines[-1] == {"position": len(chunks)}
        assert nonempty(members_by_name(emulator)) == table.lists()
        assert ledger_is_settled(tmp_path)
        assert_contract_kept(emulator)


def test_an_unreachable_api_counts_every_row_change_as_failed_and_a_rerun_sends_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    table = Table()
    rows = [table.upsert(n, email=f"u{n}@example.com", audience_key="vip") for n in range(12)]
    rows += [table.upsert(n, email=f"n{n}@example.com", audience_key="news") for n in range(12, 15)]
    unreachable = upsert_config(
        emulator, tmp_path, api_url="http://127.0.0.1:9/v5", max_retry_wait_seconds=1
    )

    failed = run_target(tmp_path, unreachable, [USERS, *rows, state({"lsn": 1})])

    assert failed.returncode != 0
    assert failed.state_lines == []
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["outcome"] == "failed"
    counted = {a["audience"]: a["failed"] for a in data["audiences"]}
    assert counted == {"vip": 12, "news": 3}  # every change read, none acknowledged

    run, sent = sync(emulator, tmp_path, [USERS, *rows, state({"lsn": 1})])  # the replay

    assert run.returncode == 0, run.stderr
    assert nonempty(members_by_name(emulator)) == table.lists()
    assert sent["CREATE"] + sent["ADD"] == 15
