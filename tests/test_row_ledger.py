"""Upsert mode's engine and row ledger, in process, against both ledger backends.

A small fake stands in for the uploader and for Pinterest: it applies each change to an
in-memory list, calling the same ledger hooks the real uploader calls around a request,
and can "crash" between sending and acknowledging. Every scenario is checked against what
the upstream table says the lists should hold.
"""

from __future__ import annotations

import errno
import hashlib
import random
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from target_pinterest_audiences import row_ledger, upsert, upsert_merge
from target_pinterest_audiences.errors import (
    PinterestAPIError,
    ScratchSpaceError,
    SyncFailedError,
)
from target_pinterest_audiences.ledger import (
    SCHEMA_VERSION,
    Ledger,
    LedgerVersionError,
    PostgresLedger,
    SQLiteLedger,
)
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.row_ledger import in_lists, pack, unpack
from target_pinterest_audiences.uploader import Uploader
from target_pinterest_audiences.upsert import UpsertSync

ACCOUNT = "549755885175"


def h(name: str) -> str:
    return hashlib.sha256(f"{name}@example.com".encode()).hexdigest()


def row(n: int | str) -> bytes:
    return hashlib.sha256(f"row {n}".encode()).digest()


class Crash(Exception):
    """The process dies here."""


class FakePinterest:
    """Uploader and Pinterest in one: queues changes, then delivers them like requests
    (delivering everything and returning is the uploader's flush)."""

    def __init__(self) -> None:
        self.lists: dict[str, set[str]] = {}
        self.ids: dict[str, str] = {}
        self.queue: list[tuple[str, list[str], bool]] = []
        self.sent: list[tuple[str, str, bool]] = []
        self.upsert: UpsertSync | None = None

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        self.queue.append((audience, list(hashes), member))

    def resolve(self, audience: str) -> str | None:
        return self.ids.get(audience)

    def list_ids(self) -> dict[str, str]:
        return dict(self.ids)

    def room(self) -> int:
        return 1 << 62  # takes everything at once

    def deliver(self, *, crash_after: int | None = None) -> None:
        """Send every queued change, acknowledging each as the uploader does; optionally
        die after N requests (the last one applied, never acknowledged)."""
        assert self.upsert is not None
        queue, self.queue = self.queue, []
        for number, (audience, hashes, member) in enumerate(queue):
            members = self.lists.setdefault(audience, set())
            list_id = self.ids.setdefault(audience, str(1000 + len(self.ids)))
            for value in hashes:
                self.sent.append((audience, value, member))
                (members.add if member else members.discard)(value)
            if crash_after is not None and number + 1 >= crash_after:
                raise Crash
            self.upsert.acknowledged(audience, list_id, "ADD" if member else "REMOVE", hashes)

    def members(self) -> dict[str, set[str]]:
        return {name: set(values) for name, values in self.lists.items() if values}


LedgerFactory = Callable[[], Ledger]


@pytest.fixture(params=["sqlite", "postgres"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """Opens the same ledger again and again, as successive runs do."""
    opened: list[Ledger] = []
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgres" else None

    def factory() -> Ledger:
        for previous in opened:
            end_process(previous)  # each run is a new process
        if url is None:
            ledger: Ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)
        else:
            ledger = PostgresLedger(url, ACCOUNT)
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        end_process(ledger)


def end_process(ledger: Ledger) -> None:
    """What the end of a process leaves: committed writes only (a run that finished
    committed everything; one that crashed loses what it had not committed)."""
    connection = ledger._connection  # the one reach into the ledger: a process dying
    try:
        connection.rollback()
        connection.close()
    except Exception:  # already closed
        pass


class Run:
    """One run of upsert mode: rows in, apply, deliver."""

    def __init__(self, ledger: Ledger, pinterest: FakePinterest, *, batch_rows: int = 1000) -> None:
        self.upsert = UpsertSync(ledger, RunReport(), dry_run=False, batch_rows=batch_rows)
        self.upsert.attach(pinterest)
        pinterest.upsert = self.upsert
        self.pinterest = pinterest

    def rows(self, *rows: tuple[bytes, list[str], list[str]]) -> Run:
        for row_id, audiences, emails in rows:
            self.upsert.record(row_id, audiences, [h(e) for e in emails], deleted=False)
        return self

    def delete(self, *row_ids: bytes) -> Run:
        for row_id in row_ids:
            self.upsert.record(row_id, [], [], deleted=True)
        return self

    def finish(self, **deliver: object) -> None:
        """Merge, send, and (unless the fake crashes first) commit, as the target's end does."""
        self.upsert.apply()
        self.pinterest.deliver(**deliver)  # type: ignore[arg-type]
        self.upsert.settle()


def expect(**lists: list[str]) -> dict[str, set[str]]:
    return {name: {h(e) for e in emails} for name, emails in lists.items() if emails}


def test_pack_is_canonical_and_reversible() -> None:
    pairs = {(2, bytes(32)), (1, b"\x01" * 32), (1, bytes(32))}
    assert pack(pairs) == pack(sorted(pairs, reverse=True))
    assert unpack(pack(pairs)) == pairs
    assert unpack(b"") == set()


def test_rows_replace_their_state_and_only_changes_are_sent(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows(
        (row(1), ["vip"], ["ann"]), (row(2), ["vip"], ["bob"]), (row(3), ["news"], ["cy"])
    ).finish()
    assert pinterest.members() == expect(vip=["ann", "bob"], news=["cy"])
    pinterest.sent.clear()

    # ann changes her email; bob moves to news; cy's row is deleted.
    Run(open_ledger(), pinterest).rows(
        (row(1), ["vip"], ["ann2"]), (row(2), ["news"], ["bob"])
    ).delete(row(3)).finish()

    assert pinterest.members() == expect(vip=["ann2"], news=["bob"])
    assert sorted(pinterest.sent) == sorted(
        [
            ("vip", h("ann"), False),
            ("vip", h("ann2"), True),
            ("vip", h("bob"), False),
            ("news", h("bob"), True),
            ("news", h("cy"), False),
        ]
    )


def test_an_identifier_leaves_only_when_no_live_row_holds_it(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows(
        (row(1), ["vip"], ["shared"]), (row(2), ["vip"], ["shared"]), (row("t:1"), ["vip"], ["x"])
    ).finish()
    assert sorted(pinterest.sent) == sorted([("vip", h("shared"), True), ("vip", h("x"), True)])
    pinterest.sent.clear()

    Run(open_ledger(), pinterest).delete(row(1)).finish()
    assert pinterest.sent == []  # row 2 still puts it there
    assert pinterest.members() == expect(vip=["shared", "x"])

    Run(open_ledger(), pinterest).delete(row(2)).finish()
    assert pinterest.sent == [("vip", h("shared"), False)]
    assert pinterest.members() == expect(vip=["x"])


def test_replaying_an_applied_batch_sends_nothing(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    batch = [(row(n), ["vip"], [f"user{n}"]) for n in range(50)]
    Run(open_ledger(), pinterest).rows(*batch).delete(row(7)).finish()
    pinterest.sent.clear()

    Run(open_ledger(), pinterest).rows(*batch[8:]).delete(row(7)).finish()

    assert pinterest.sent == []


def test_the_last_record_of_a_key_wins_across_batches(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest, batch_rows=2)
    run.rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"]))  # a full batch: merged
    run.rows((row(1), ["vip"], ["c"]), (row(1), ["news"], ["c"]))
    run.finish()

    assert pinterest.members() == expect(vip=["b"], news=["c"])


def test_a_crash_between_uncertain_and_confirmed_converges(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"])).finish()

    crashed = Run(open_ledger(), pinterest)
    crashed.rows((row(1), ["vip"], ["a2"])).delete(row(2))
    with pytest.raises(Crash):
        crashed.finish(crash_after=1)  # one request applied, never acknowledged
    assert pinterest.members() != expect(vip=["a2"])

    # The re-run starts from the last STATE: the same rows arrive again.
    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["a2"])).delete(row(2)).finish()

    assert pinterest.members() == expect(vip=["a2"])


def test_a_crash_converges_even_when_the_replay_brings_newer_rows(
    open_ledger: LedgerFactory,
) -> None:
    """Row 1 went a -> b; b was added but the run died. By the re-run, row 1 is c."""
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["a"])).finish()

    crashed = Run(open_ledger(), pinterest)
    crashed.rows((row(1), ["vip"], ["b"]))
    crashed.upsert.apply()
    additions = [entry for entry in pinterest.queue if entry[2]]
    pinterest.queue = additions  # the ADD of b goes first and is acknowledged ...
    pinterest.deliver()  # ... then the process dies before the REMOVE of a is sent

    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["c"])).finish()

    assert pinterest.members() == expect(vip=["c"])


def test_a_crash_before_any_request_is_recovered_without_the_rows(
    open_ledger: LedgerFactory,
) -> None:
    pinterest = FakePinterest()
    crashed = Run(open_ledger(), pinterest)
    crashed.rows((row(1), ["vip"], ["a"]))
    crashed.upsert.apply()  # committed to the ledger ...
    pinterest.queue.clear()  # ... and the process died before sending anything

    # The tap's STATE had moved on (another target run confirmed it): nothing is replayed.
    Run(open_ledger(), pinterest).finish()

    assert pinterest.members() == expect(vip=["a"])


def test_a_list_deleted_on_pinterest_gets_its_live_members_back(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows(*[(row(n), ["vip"], [f"u{n}"]) for n in range(5)]).finish()
    pinterest.lists.clear()
    pinterest.ids.clear()  # someone deleted the list in Ads Manager

    Run(open_ledger(), pinterest).rows((row(9), ["vip"], ["new"])).finish()

    assert pinterest.members() == expect(vip=[*(f"u{n}" for n in range(5)), "new"])


def test_a_keys_last_record_in_a_batch_decides_whether_it_was_deleted(
    open_ledger: LedgerFactory,
) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"])).finish()

    run = Run(open_ledger(), pinterest)
    run.delete(row(1)).rows((row(1), ["news"], ["a"]))  # deleted, then back: it moved
    run.rows((row(2), ["vip"], ["b2"])).delete(row(2))  # updated, then deleted
    run.finish()
    run.upsert.report()

    assert run.upsert._report.audience("vip").upsert == {
        "live_rows": 0,
        "rows_deleted": 1,
        "members": 0,
    }
    assert pinterest.members() == expect(news=["a"])


def test_counters_follow_live_rows_and_members(open_ledger: LedgerFactory) -> None:
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    run.rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["a"]), (row(3), ["vip"], ["b", "c"]))
    run.finish()
    run.upsert.report()
    assert run.upsert._report.audience("vip").upsert == {
        "live_rows": 3,
        "rows_deleted": 0,
        "members": 3,
    }

    again = Run(open_ledger(), pinterest)
    again.delete(row(1), row(3), row(404)).finish()
    again.upsert.report()
    assert again.upsert._report.audience("vip").upsert == {
        "live_rows": 1,
        "rows_deleted": 2,
        "members": 1,
    }


def test_a_dry_run_leaves_the_ledger_as_it_was(tmp_path: Path) -> None:
    pinterest = FakePinterest()
    Run(SQLiteLedger(tmp_path / "l.sqlite3", ACCOUNT), pinterest).rows(
        (row(1), ["vip"], ["a"])
    ).finish()
    before = (tmp_path / "l.sqlite3").read_bytes()

    dry = UpsertSync(
        SQLiteLedger(tmp_path / "l.sqlite3", ACCOUNT, dry_run=True), RunReport(), dry_run=True
    )
    plan = FakePinterest()
    dry.attach(plan)
    dry.record(row(1), ["vip"], [h("b")], deleted=False)
    dry.apply()
    dry.close()

    assert sorted((a, v, m) for a, vs, m in plan.queue for v in vs) == sorted(
        [("vip", h("a"), False), ("vip", h("b"), True)]
    )
    assert SQLiteLedger(tmp_path / "l.sqlite3", ACCOUNT).list_id("vip") is not None
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        (pairs,) = db.execute("SELECT pairs FROM ledger_rows").fetchone()
    assert unpack(pairs) == {(1, bytes.fromhex(h("a")))}
    assert before  # the file existed before the dry run


# Migrations -------------------------------------------------------------------------

# The tables exactly as the first release (schema version 1, no version row) made them.
V1_SCHEMA = (
    "CREATE TABLE ledger_lists (list_key INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ad_account_id TEXT NOT NULL, audience TEXT NOT NULL,"
    " list_id TEXT, UNIQUE (ad_account_id, audience))",
    "CREATE TABLE ledger_streams (ad_account_id TEXT NOT NULL, stream TEXT NOT NULL,"
    " audience TEXT NOT NULL, PRIMARY KEY (ad_account_id, stream, audience))",
    "CREATE TABLE ledger_members (list_key INTEGER NOT NULL, hash BLOB NOT NULL,"
    " confirmed INTEGER NOT NULL, PRIMARY KEY (list_key, hash)) WITHOUT ROWID",
)


def make_v1_ledger(path: Path) -> None:
    with sqlite3.connect(path) as db:
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.execute(
            "INSERT INTO ledger_lists (ad_account_id, audience, list_id) VALUES (?, 'vip', '77')",
            (ACCOUNT,),
        )
        db.execute("INSERT INTO ledger_streams VALUES (?, 'segments', 'vip')", (ACCOUNT,))
        db.executemany(
            "INSERT INTO ledger_members VALUES (1, ?, 1)",
            [(bytes.fromhex(h(name)),) for name in ("ann", "bob")],
        )


def test_a_mirror_ledger_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    make_v1_ledger(path)

    ledger = SQLiteLedger(path, ACCOUNT)

    assert ledger.migrated_from == 1
    members = ledger.members_between("vip", 0, 256)
    assert {digest.hex() for digest in members.rows} == {h("ann"), h("bob")}
    assert members.uncertain == set()
    assert ledger.list_id("vip") == "77"
    assert ledger.stream_audiences("segments") == {"vip"}
    pinterest = FakePinterest()
    Run(ledger, pinterest).rows((row(1), ["news"], ["cy"])).finish()  # upsert works on it
    assert pinterest.members() == expect(news=["cy"])
    ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM ledger_meta").fetchone() == (str(SCHEMA_VERSION),)
    reopened = SQLiteLedger(path, ACCOUNT)
    assert reopened.migrated_from is None
    reopened.close()


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path, ACCOUNT).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ledger_meta SET value = ?", (str(SCHEMA_VERSION + 1),))

    with pytest.raises(LedgerVersionError, match="newer release"):
        SQLiteLedger(path, ACCOUNT)


def test_the_postgres_ledger_is_versioned_too(fresh_postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(fresh_postgres_url) as db:
        for statement in V1_SCHEMA:
            db.execute(
                statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
                .replace("BLOB", "BYTEA")
                .replace(" WITHOUT ROWID", "")
            )
        db.execute(
            "INSERT INTO ledger_lists (ad_account_id, audience) VALUES (%s, 'vip')", (ACCOUNT,)
        )

    ledger = PostgresLedger(fresh_postgres_url, ACCOUNT)
    assert ledger.migrated_from == 1
    ledger.close()
    with psycopg.connect(fresh_postgres_url) as db:
        db.execute("UPDATE ledger_meta SET value = %s", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerVersionError):
        PostgresLedger(fresh_postgres_url, ACCOUNT)


def test_a_rerun_after_a_failed_run_sends_only_what_was_not_acknowledged(
    open_ledger: LedgerFactory,
) -> None:
    pinterest = FakePinterest()
    crashed = Run(open_ledger(), pinterest, batch_rows=1)  # one request per row here
    crashed.rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"]), (row(3), ["vip"], ["c"]))
    with pytest.raises(Crash):
        crashed.finish(crash_after=3)  # a and b acknowledged; c applied, not acknowledged
    crashed.upsert.close()  # the run failed and ended (a SIGKILL would lose what was not written)
    pinterest.sent.clear()

    Run(open_ledger(), pinterest).finish()  # nothing replayed: the tap's STATE moved on

    assert pinterest.sent == [("vip", h("c"), True)]
    assert pinterest.members() == expect(vip=["a", "b", "c"])


def test_an_old_acknowledgement_never_settles_a_newer_flip(open_ledger: LedgerFactory) -> None:
    """ADD, REMOVE, ADD of one user queued while the first was outstanding; the first is
    acknowledged, the REMOVE applied, and the process dies: the user must be re-added."""
    pinterest = FakePinterest()
    crashed = Run(open_ledger(), pinterest, batch_rows=1)  # every row is its own batch
    crashed.rows((row(1), ["vip"], ["a"]))
    crashed.delete(row(1))
    crashed.rows((row(1), ["vip"], ["a"]))
    assert [(member) for _, _, member in pinterest.queue] == [True, False, True]
    with pytest.raises(Crash):
        crashed.pinterest.deliver(crash_after=2)
    crashed.upsert.close()  # the run failed; the first acknowledgement is committed
    assert pinterest.members() == {}  # Pinterest has the REMOVE's result

    Run(open_ledger(), pinterest).finish()

    assert pinterest.members() == expect(vip=["a"])


def test_acknowledgements_are_durable_once_a_checkpoint_is(open_ledger: LedgerFactory) -> None:
    """They are held and written together; a checkpoint writes them before it drops the
    pending entries, so a crash right after it leaves nothing uncertain."""
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    run.rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"])).delete(row(3)).finish()
    end_process(run.upsert.rows.ledger)  # killed after the checkpoint, before closing

    ledger = open_ledger()
    with ledger.transaction() as cursor:
        cursor.execute("SELECT sent FROM ledger_live_members")
        assert [int(sent) for (sent,) in cursor.fetchall()] == [2, 2]  # present, settled
    assert list(UpsertSync(ledger, RunReport(), dry_run=False).rows.pending()) == []


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_passes_in_many_ranges_and_blocks_keep_the_lists_equal_to_the_table(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    """Random row changes over several runs, merged in passes split into as many prefix
    ranges (one record each) and spill blocks (three rows) as they can be."""
    monkeypatch.setattr(upsert_merge, "RANGE_RECORDS", 1)
    monkeypatch.setattr(upsert, "SPILL_ROWS", 3)
    chooser = random.Random(batch_rows)
    audiences, emails = ["vip", "news", "cart"], [f"user{n}" for n in range(25)]
    table: dict[int, tuple[list[str], list[str]]] = {}
    merged: dict[int, list[str]] = {}
    """Each row's audiences as of the last pass (a delete counts against those)."""
    pinterest = FakePinterest()
    for _ in range(4):
        run = Run(open_ledger(), pinterest, batch_rows=batch_rows)
        deleted: dict[str, int] = dict.fromkeys(audiences, 0)
        this_pass: dict[int, list[str] | None] = {}

        def end_pass(
            this_pass: dict[int, list[str] | None] = this_pass, deleted: dict[str, int] = deleted
        ) -> None:
            for key, now in this_pass.items():
                if now is None:
                    for name in merged.pop(key, []):
                        deleted[name] += 1
                else:
                    merged[key] = now
            this_pass.clear()

        for number in range(60):
            key = chooser.randrange(30)
            if chooser.random() < 0.25:
                table.pop(key, None)
                run.delete(row(key))
                this_pass[key] = None  # the key's last record in the pass decides
            else:
                state = (
                    chooser.sample(audiences, chooser.choice([0, 1, 1, 1, 2])),
                    chooser.sample(emails, chooser.choice([1, 1, 1, 2])),
                )
                table[key] = state
                run.rows((row(key), *state))
                this_pass[key] = state[0]
            if (number + 1) % batch_rows == 0:
                end_pass()
        run.finish()
        end_pass()
        run.upsert.report()

        wanted: dict[str, set[str]] = {}
        live_rows: dict[str, int] = dict.fromkeys(audiences, 0)
        for in_audiences, row_emails in table.values():
            for name in in_audiences:
                wanted.setdefault(name, set()).update(h(e) for e in row_emails)
                live_rows[name] += 1
        assert pinterest.members() == wanted
        for name in audiences:
            counters = run.upsert._report.audience(name).upsert
            if counters is not None:
                assert counters == {
                    "live_rows": live_rows[name],
                    "rows_deleted": deleted[name],
                    "members": len(wanted.get(name, ())),
                }
            else:
                assert deleted[name] == 0


def sent_states(ledger: Ledger) -> list[int]:
    """``sent`` of every live-member entry, as this connection sees it (uncommitted too)."""
    with ledger.transaction() as cursor:
        cursor.execute("SELECT sent FROM ledger_live_members ORDER BY hash")
        return [int(sent) for (sent,) in cursor.fetchall()]


def test_acknowledgements_are_held_until_the_next_pass_or_checkpoint(
    open_ledger: LedgerFactory,
) -> None:
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    run.rows((row(1), ["vip"], ["a"])).upsert.apply()
    pinterest.deliver()
    assert sent_states(run.upsert.rows.ledger) == [1]  # acknowledged, held

    # The next pass writes them first: had it seen the pair still uncertain, it would mark
    # the removal contested (3), which only a checkpoint settles.
    run.delete(row(1)).upsert.apply()
    assert sent_states(run.upsert.rows.ledger) == [1]  # the removal, uncertain

    pinterest.deliver()  # the removal acknowledged, held
    assert sent_states(run.upsert.rows.ledger) == [1]
    run.upsert.settle()  # the checkpoint writes it
    assert sent_states(run.upsert.rows.ledger) == []


def test_many_acknowledgements_in_many_blocks_and_ranges_are_all_written(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(row_ledger, "ACKNOWLEDGED_BLOCK", 3)
    monkeypatch.setattr(row_ledger, "ACKNOWLEDGED_RANGE", 1)  # a range per prefix
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    names = [f"user{n}" for n in range(60)]
    run.rows(*[(row(n), ["vip" if n % 3 else "news"], [name]) for n, name in enumerate(names)])
    run.upsert.apply()
    pinterest.deliver()
    run.delete(*[row(n) for n in range(0, 60, 4)]).upsert.apply()
    pinterest.deliver()
    assert sorted(set(sent_states(run.upsert.rows.ledger))) == [1, 2]  # the removals held

    run.upsert.rows.write_acknowledged()

    assert sent_states(run.upsert.rows.ledger) == [2] * 45  # every add settled, removals gone


def test_changes_not_handed_over_are_counted_as_failed(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass's flips that never reach the uploader stay pending for the next run; the
    report must not look better than the run (counted across all of the pass's ranges)."""
    monkeypatch.setattr(upsert_merge, "RANGE_RECORDS", 1)

    class Refusing(FakePinterest):
        def resolve(self, audience: str) -> str | None:
            raise Crash  # the list cannot be looked up: nothing reaches the uploader

    run = Run(open_ledger(), Refusing())
    run.rows((row(1), ["vip"], ["a", "b", "e", "f"]), (row(2), ["news"], ["c"]))
    with pytest.raises(Crash):
        run.upsert.apply()
    assert run.upsert._report.audience("vip").failed == 4
    assert run.upsert._report.audience("news").failed == 1

    stopped = Run(open_ledger(), FakePinterest())
    stopped.rows((row(3), ["vip"], ["d"])).delete(row(2))
    stopped.upsert.abandon()  # a stop before sending: merged, pending, counted
    assert stopped.upsert._report.audience("vip").failed == 1
    assert stopped.upsert._report.audience("news").failed == 1
    stopped.upsert.close()

    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).finish()  # the next run sends what was left
    assert pinterest.members() == expect(vip=["a", "b", "d", "e", "f"])


class RefusingLists:
    """Pinterest with one list, ``vip``, that refuses every update for good (HTTP 404)."""

    def ids_by_name(self) -> dict[str, list[str]]:
        return {"vip": ["1"]}

    def audience_ids_by_list(self) -> dict[str, str]:
        return {"1": "11"}

    def update(self, list_id: str, operation: str, records: list[str]) -> None:
        raise PinterestAPIError("PATCH /customer_lists/1 failed: 404", status=404)


def test_changes_the_uploader_took_are_counted_failed_once(open_ledger: LedgerFactory) -> None:
    """Handing a pass's flips to an uploader whose earlier request failed raises inside
    ``change``, after the uploader took them: it counts them at its close, so upsert must
    not count them as well (5 flips were once reported as 10 failed)."""
    report = RunReport()
    uploader = Uploader(
        RefusingLists(),  # type: ignore[arg-type]
        report,
        records_per_request=1,
        max_parallel_requests=1,
    )
    upsert_sync = UpsertSync(open_ledger(), report, dry_run=False)
    upsert_sync.attach(uploader)
    try:
        uploader.change("vip", [h("earlier")], member=True)
        with pytest.raises(SyncFailedError):
            uploader.flush()  # the earlier request failed: 1 failed
        for n, name in enumerate(["a", "b", "c", "d", "e"]):
            upsert_sync.record(row(n), ["vip"], [h(name)], deleted=False)
        with pytest.raises(SyncFailedError):
            upsert_sync.apply()
    finally:
        uploader.close()
        upsert_sync.close()
    assert report.audience("vip").failed == 1 + 5


def test_a_pass_that_rolls_back_counts_no_deletes(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).rows((row(1), ["vip"], ["a"])).finish()

    def fail(*args: object) -> None:
        raise OSError("disk full")

    failed = Run(open_ledger(), pinterest).delete(row(1))
    monkeypatch.setattr(row_ledger.MergeTransaction, "update_lists", fail)  # the pass's end
    with pytest.raises(OSError, match="disk full"):
        failed.upsert.apply()
    failed.upsert.report()
    assert failed.upsert._report.audience("vip").upsert == {
        "live_rows": 1,
        "rows_deleted": 0,  # the delete never reached the ledger
        "members": 1,
    }

    monkeypatch.undo()
    rerun = Run(open_ledger(), pinterest).delete(row(1))
    rerun.finish()
    rerun.upsert.report()
    assert rerun.upsert._report.audience("vip").upsert == {
        "live_rows": 0,
        "rows_deleted": 1,
        "members": 0,
    }


class Narrow(FakePinterest):
    """An uploader whose request slots are busy: it takes ``budget`` identifiers more
    without waiting (the test frees room as requests would complete)."""

    budget = 0

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        hashes = list(hashes)
        self.budget = max(0, self.budget - len(hashes))
        super().change(audience, hashes, member)

    def room(self) -> int:
        return self.budget

    def queued(self) -> int:
        return sum(len(hashes) for _, hashes, _ in self.queue)


def test_a_pass_is_handed_over_while_the_next_one_is_read(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its requests then leave while the reading goes on, instead of holding it up."""
    monkeypatch.setattr(upsert, "FEED_EVERY", 1)
    pinterest = Narrow()
    run = Run(open_ledger(), pinterest, batch_rows=4)
    handed = []
    for n in range(8):
        pinterest.budget = 1  # a request completed meanwhile
        run.rows((row(n), ["vip"], [f"user{n}"]))
        handed.append(pinterest.queued())
    # Pass 1 at the 4th row: one now, one per row read after it, all before pass 2.
    assert handed == [0, 0, 0, 1, 2, 3, 4, 5]
    run.upsert.apply()  # before a flush: everything
    assert pinterest.queued() == 8
    run.finish()
    assert pinterest.members() == expect(vip=[f"user{n}" for n in range(8)])


def test_flips_not_handed_over_when_the_run_stops_are_failed_and_sent_next_run(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upsert, "FEED_EVERY", 1)
    narrow = Narrow()
    narrow.budget = 1
    run = Run(open_ledger(), narrow, batch_rows=4)
    run.rows(*[(row(n), ["vip"], [f"user{n}"]) for n in range(4)])  # pass 1: 1 handed over
    run.upsert.abandon()  # the run stops (its uploader's requests never acknowledged)
    assert run.upsert._report.audience("vip").failed == 3  # the other one is the uploader's
    run.upsert.close()

    pinterest = FakePinterest()
    Run(open_ledger(), pinterest).finish()
    assert pinterest.members() == expect(vip=[f"user{n}" for n in range(4)])


def test_a_full_disk_under_the_acknowledgements_fails_the_run_not_the_request(
    open_ledger: LedgerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinterest applied the request: the request thread goes on, and the main thread
    stops the run at its next write, naming what could not be written."""
    monkeypatch.setattr(row_ledger, "ACKNOWLEDGED_BLOCK", 1)  # each goes to disk at once
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    run.rows((row(1), ["vip"], ["a"]), (row(2), ["vip"], ["b"])).upsert.apply()

    def no_space(**_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as disk:
        disk.setattr(tempfile, "TemporaryFile", no_space)
        pinterest.deliver()  # the request thread's acknowledgements: no exception here
    with pytest.raises(
        ScratchSpaceError, match=r"acknowledged identifiers \(37 bytes each\) .*No space left"
    ):
        run.upsert.rows.write_acknowledged()

    assert sent_states(run.upsert.rows.ledger) == [1, 1]  # uncertain: the next run re-sends
    run.upsert.rows.write_acknowledged()  # the failure was reported once
    pinterest.queue.clear()
    rerun = FakePinterest()
    Run(open_ledger(), rerun).finish()
    assert rerun.members() == expect(vip=["a", "b"])


def test_in_lists_have_few_lengths_and_lose_nothing() -> None:
    """Each distinct length is a statement compiled and cached: at most 13 of them."""
    lengths: set[int] = set()
    for count in [1, 2, 3, 100, 4096, 4097, 9000, *range(5, 300, 7)]:
        values = [n.to_bytes(4, "big") for n in range(count)]
        chunks = list(in_lists(values))
        assert set().union(*map(set, chunks)) == set(values)
        assert sum(len(set(chunk)) for chunk in chunks) == count  # no value in two chunks
        lengths.update(len(chunk) for chunk in chunks)
    assert all(length & (length - 1) == 0 for length in lengths)
    assert max(lengths) == 4096


def test_an_acknowledgement_never_waits_for_the_ledger(open_ledger: LedgerFactory) -> None:
    """Request threads only note what Pinterest acknowledged; the ledger is written later,
    so a long merge or write holding the ledger never holds up sending."""
    pinterest = FakePinterest()
    run = Run(open_ledger(), pinterest)
    run.rows((row(1), ["vip"], ["a"])).upsert.apply()
    rows = run.upsert.rows
    key = rows.list_key("vip")
    done = threading.Event()

    def acknowledge() -> None:
        rows.confirm_added(key, [bytes.fromhex(h("a"))])
        done.set()

    with rows.ledger._lock:  # the main thread is in a long write
        thread = threading.Thread(target=acknowledge)
        thread.start()
        assert done.wait(5)
    thread.join()
    rows.write_acknowledged()
    assert sent_states(rows.ledger) == [2]
