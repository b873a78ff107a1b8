"""The ledger, against both backends: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from target_pinterest_audiences.ledger import Ledger, PostgresLedger, SQLiteLedger
from target_pinterest_audiences.mirror import Change, Snapshot, diff

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
    return {digest.hex(): confirmed for digest, confirmed in ledger.members(audience)}


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


def test_members_stream_in_digest_order_across_chunks(ledger: Ledger) -> None:
    many = [h(n) for n in range(25_000)]  # more than one fetch chunk
    ledger.confirm_added("big", "222", many)

    streamed = [digest.hex() for digest, _ in ledger.members("big")]

    assert streamed == sorted(many)


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


def test_the_postgres_ledger_persists_across_connections(fresh_postgres_url: str) -> None:
    first = PostgresLedger(fresh_postgres_url, ACCOUNT)
    first.confirm_added("vip", "111", [h(1), h(2)])
    first.close()

    second = PostgresLedger(fresh_postgres_url, ACCOUNT)
    assert rows(second, "vip") == {h(1): True, h(2): True}
    second.close()


@pytest.mark.parametrize(
    ("ledger_rows", "snapshot", "expected"),
    [
        ([], [], []),
        ([], [b"a"], [(b"a", Change.ADD)]),
        ([(b"a", True)], [], [(b"a", Change.REMOVE)]),
        ([(b"a", False)], [], [(b"a", Change.REMOVE)]),
        ([(b"a", True)], [b"a"], [(b"a", Change.UNCHANGED)]),
        ([(b"a", False)], [b"a"], [(b"a", Change.ADD)]),  # uncertain: send again
        (
            [(b"a", True), (b"c", True), (b"e", False)],
            [b"b", b"c", b"d", b"e"],
            [
                (b"a", Change.REMOVE),
                (b"b", Change.ADD),
                (b"c", Change.UNCHANGED),
                (b"d", Change.ADD),
                (b"e", Change.ADD),
            ],
        ),
    ],
)
def test_diff_merges_two_ordered_streams(
    ledger_rows: list[tuple[bytes, bool]],
    snapshot: list[bytes],
    expected: list[tuple[bytes, Change]],
) -> None:
    assert list(diff(iter(ledger_rows), iter(snapshot))) == expected


def test_snapshot_last_record_wins_and_streams_in_order() -> None:
    snap = Snapshot()
    try:
        snap.record("s", "vip", [h(3), h(1)], True)
        snap.record("s", "vip", [h(2)], True)
        snap.record("s", "vip", [h(3)], False)  # left again later in the same run
        snap.record("t", "other", [h(9)], True)
        snap.observe_stream("u")

        assert [d.hex() for d in snap.present("vip")] == sorted([h(1), h(2)])
        assert [d.hex() for d in snap.present("unknown")] == []
        assert snap.streams == {"s": {"vip"}, "t": {"other"}, "u": set()}
    finally:
        snap.close()
