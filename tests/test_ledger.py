"""The ledger, against both backends: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from target_pinterest_audiences.ledger import (
    PAGE_BYTES,
    Ledger,
    LedgerError,
    MemberRange,
    PostgresLedger,
    SQLiteLedger,
)
from target_pinterest_audiences.mirror import Difference, diff

ACCOUNT = "549755885175"


def h(n: int) -> str:
    return hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        opened: Ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)
    else:
        opened = PostgresLedger(request.getfixturevalue("fresh_postgres_url"), ACCOUNT)
    yield opened
    opened.close()


def rows(ledger: Ledger, audience: str) -> dict[str, bool]:
    found = ledger.members_between(audience, 0, 256)
    return {digest.hex(): digest not in found.uncertain for digest in found.rows}


def test_uncertain_then_confirmed_then_removed(ledger: Ledger) -> None:
    ledger.mark_uncertain("vip", [h(1), h(2)])
    assert rows(ledger, "vip") == {h(1): False, h(2): False}

    ledger.confirm_added("vip", "111", [h(1), h(2)])
    assert rows(ledger, "vip") == {h(1): True, h(2): True}
    assert ledger.list_id("vip") == "111"
    assert ledger.counts("vip") == (2, 2)

    ledger.mark_uncertain("vip", [h(2)])  # about to remove
    assert ledger.counts("vip") == (1, 2)
    ledger.confirm_removed("vip", [h(2)])
    assert rows(ledger, "vip") == {h(1): True}


@pytest.mark.parametrize(("low", "high"), [(0, 1), (0, 16), (127, 128), (100, 200), (255, 256)])
def test_members_between_returns_exactly_the_rows_of_a_prefix_range(
    ledger: Ledger, low: int, high: int
) -> None:
    many = [h(n) for n in range(5_000)]
    ledger.confirm_added("big", "222", many)
    ledger.mark_uncertain("big", many[:100])
    ledger.confirm_added("other", "333", [h(n) for n in range(5_000, 6_000)])

    found = ledger.members_between("big", low, high)

    assert all(type(digest) is bytes for digest in found.rows | found.uncertain)
    in_range = [value for value in many if low <= int(value[:2], 16) < high]
    assert {digest.hex() for digest in found.rows} == set(in_range)
    assert {digest.hex() for digest in found.uncertain} == set(in_range) & set(many[:100])
    assert in_range  # the range is not empty: the comparison means something


def test_a_different_list_id_voids_the_rows(ledger: Ledger) -> None:
    ledger.confirm_added("vip", "111", [h(1)])
    ledger.set_list_id("vip", "111")
    assert rows(ledger, "vip") == {h(1): True}

    ledger.set_list_id("vip", "999")  # the list was deleted and recreated on Pinterest

    assert rows(ledger, "vip") == {}
    assert ledger.list_id("vip") == "999"


def test_forget_drops_rows_and_list(ledger: Ledger) -> None:
    ledger.confirm_added("vip", "111", [h(1)])
    ledger.forget("vip")
    assert rows(ledger, "vip") == {}
    assert ledger.list_id("vip") is None


def test_audiences_are_separate_and_streams_remember_what_they_cover(ledger: Ledger) -> None:
    ledger.confirm_added("a", "1", [h(1)])
    ledger.confirm_added("b", "2", [h(2)])
    ledger.add_stream_audiences("segments", ["a", "b"])
    ledger.add_stream_audiences("segments", ["a"])

    assert rows(ledger, "a") == {h(1): True}
    assert rows(ledger, "b") == {h(2): True}
    assert ledger.stream_audiences("segments") == {"a", "b"}
    assert ledger.stream_audiences("other") == set()


def test_rows_persist_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SQLiteLedger(path, ACCOUNT)
    first.confirm_added("vip", "111", [h(1)])
    first.close()

    second = SQLiteLedger(path, ACCOUNT)
    assert rows(second, "vip") == {h(1): True}
    assert SQLiteLedger(path, "another-account").counts("vip") == (0, 0)
    second.close()


def assert_rows_survive_reopening(open_ledger: Callable[[], Ledger]) -> None:
    first = open_ledger()
    first.confirm_added("vip", "111", [h(1), h(2)])
    first.close()
    second = open_ledger()
    assert rows(second, "vip") == {h(1): True, h(2): True}
    second.close()


def page_size(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA page_size").fetchone()[0])
    finally:
        connection.close()


def test_a_new_sqlite_ledger_has_large_pages(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path, ACCOUNT).close()
    assert page_size(path) == PAGE_BYTES == 65_536


def test_a_ledger_with_small_pages_keeps_them_and_works(tmp_path: Path) -> None:
    # A ledger created by an earlier release (SQLite's default 4 KiB pages, WAL).
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE unrelated (x INTEGER)")
    old.close()

    assert_rows_survive_reopening(lambda: SQLiteLedger(path, ACCOUNT))
    assert page_size(path) == 4096


def test_the_postgres_ledger_persists_across_connections(fresh_postgres_url: str) -> None:
    assert_rows_survive_reopening(lambda: PostgresLedger(fresh_postgres_url, ACCOUNT))


A, B, C, D, E = (bytes([n]) * 32 for n in range(1, 6))


@pytest.mark.parametrize(
    ("ledger_rows", "present", "expected"),
    [
        (MemberRange(set(), set()), set(), Difference([], [], 0)),
        (MemberRange(set(), set()), {A}, Difference([A], [], 0)),
        (MemberRange({A}, set()), set(), Difference([], [A], 0)),
        (MemberRange({A}, {A}), set(), Difference([], [A], 0)),  # uncertain, not wanted
        (MemberRange({A}, set()), {A}, Difference([], [], 1)),
        (MemberRange({A}, {A}), {A}, Difference([A], [], 0)),  # uncertain, wanted: again
        (MemberRange({E, A, C}, {E}), {D, B, C, E}, Difference([B, D, E], [A], 1)),
    ],
)
def test_diff_compares_a_group_of_ledger_rows_with_the_snapshot(
    ledger_rows: MemberRange, present: set[bytes], expected: Difference
) -> None:
    assert diff(ledger_rows, present) == expected


def test_a_failing_disk_is_a_ledger_error_and_a_bad_statement_stays_a_bug(
    tmp_path: Path,
) -> None:
    """Only failures of the ledger's storage become the user-facing LedgerError; an SQL
    mistake (SQLITE_ERROR) is a bug and must surface as one."""
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)
    with pytest.raises(sqlite3.OperationalError), ledger.transaction() as cursor:
        cursor.execute("SELEC 1")
    ledger.close()

    (tmp_path / "not-a-ledger.sqlite3").write_bytes(b"plain text, not a database" * 100)
    with pytest.raises(LedgerError, match=r"could not be read or written: .*SQLITE_NOTADB"):
        SQLiteLedger(tmp_path / "not-a-ledger.sqlite3", ACCOUNT)


class FullDiskConnection:
    """A SQLite connection whose disk is full: every statement and commit fails so."""

    @staticmethod
    def _fail(*args: object) -> None:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorname = "SQLITE_FULL"
        raise exc

    def cursor(self) -> FullDiskConnection:
        return self

    execute = executemany = fetchone = fetchall = commit = _fail

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger: ledger.audience_key("new audience"),
        lambda ledger: ledger.list_id("vip"),
        lambda ledger: ledger.set_list_id("vip", "1"),
        lambda ledger: ledger.record_list_id("vip", "1"),
        lambda ledger: ledger.forget("vip"),
        lambda ledger: ledger.stream_audiences("people"),
        lambda ledger: ledger.add_stream_audiences("people", ["vip"]),
        lambda ledger: ledger.counts("vip"),
        lambda ledger: ledger.members_between("vip", 0, 256),
        lambda ledger: ledger.mark_uncertain("vip", [h(1)]),
        lambda ledger: ledger.confirm_added("vip", "1", [h(1)]),
        lambda ledger: ledger.confirm_removed("vip", [h(1)]),
        lambda ledger: ledger.commit(),
        lambda ledger: ledger.close(),
    ],
)
def test_every_way_into_the_ledger_reports_a_full_disk_clearly(
    tmp_path: Path, call: Callable[[Ledger], object]
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)
    ledger.audience_key("vip")  # known: no look-up needed for it
    real = ledger._connection  # the one reach inside: its disk fills up
    ledger._connection = FullDiskConnection()
    try:
        with pytest.raises(LedgerError, match=r"disk is full \(SQLITE_FULL\)\. Free space"):
            call(ledger)
    finally:
        real.close()


def test_closing_closes_the_connection_even_when_a_held_write_fails(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)

    def held_write() -> None:
        raise RuntimeError("the held write failed")

    ledger.before_close(held_write)
    with pytest.raises(RuntimeError, match="held write"):
        ledger.close()
    with pytest.raises(sqlite3.ProgrammingError):
        ledger._connection.cursor()  # closed
    ledger.close()  # and closing again is quiet
