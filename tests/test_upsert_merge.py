"""Upsert mode's merge pass, on its own: what it commits, what it returns, all or nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from target_pinterest_audiences import upsert_merge
from target_pinterest_audiences.ledger import SQLiteLedger
from target_pinterest_audiences.prefix_spill import PrefixSpill
from target_pinterest_audiences.row_ledger import KEY_BYTES, RowLedger
from target_pinterest_audiences.upsert_merge import merge_pass, spilled_row


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def pair(list_key: int, name: str) -> bytes:
    return list_key.to_bytes(KEY_BYTES, "big") + digest(name)


def spill(*records: bytes) -> PrefixSpill:
    spilled = PrefixSpill(prefix_at=0, block_records=2)
    for record in records:
        spilled.add(record)
    return spilled


def stored_rows(rows: RowLedger) -> int:
    with rows.ledger.transaction() as cursor:
        cursor.execute("SELECT COUNT(*) FROM ledger_rows")
        return int(cursor.fetchone()[0])


@pytest.fixture
def rows(tmp_path: Path) -> RowLedger:
    return RowLedger(SQLiteLedger(tmp_path / "ledger.sqlite3", "549755885175"))


def test_a_pass_returns_each_lists_flips_in_digest_order(rows: RowLedger) -> None:
    vip, news = rows.list_key("vip"), rows.list_key("news")
    names = [f"user{n}" for n in range(10)]
    records = [
        spilled_row(digest(f"row {n}"), pair(vip if n % 2 else news, name), deleted=False)
        for n, name in enumerate(names)
    ]
    touched: set[int] = set()
    flips = merge_pass(rows, spill(*records), touched=touched)

    changes = list(flips.changes(chunk=3))
    assert all(member for _, member, _ in changes)
    for key in (vip, news):
        sent = [d for list_key, _, chunk in changes if list_key == key for d in chunk]
        expected = sorted(digest(n) for i, n in enumerate(names) if (i % 2 == 1) == (key == vip))
        assert sent == expected
    assert dict(flips.per_list) == {vip: 5, news: 5}
    assert max(len(chunk) for _, _, chunk in changes) == 3
    assert touched == {vip, news}
    assert stored_rows(rows) == 10
    assert rows.counters(vip).live_members == 5
    flips.close()

    # The same rows again: a replay flips nothing.
    again = merge_pass(rows, spill(*records), touched=touched)
    assert list(again.changes(chunk=3)) == []


def test_a_pass_that_fails_half_way_leaves_the_ledger_as_it_was(
    rows: RowLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows and live counts commit together: rows written without their pairs' counts
    would make a replay look applied when its identifiers were never sent."""
    vip = rows.list_key("vip")
    records = [spilled_row(digest("row 1"), pair(vip, "a"), deleted=False)]

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(upsert_merge, "_merge_pairs", fail)
    with pytest.raises(OSError, match="disk full"):
        merge_pass(rows, spill(*records), touched=set())
    assert stored_rows(rows) == 0
    assert list(rows.pending()) == []

    monkeypatch.undo()
    flips = merge_pass(rows, spill(*records), touched=set())
    assert [(key, member) for key, member, _ in flips.changes(chunk=10)] == [(vip, True)]
    assert stored_rows(rows) == 1
    assert len(list(rows.pending())) == 1


def test_a_delete_counts_for_each_audience_the_row_leaves(rows: RowLedger) -> None:
    vip, news = rows.list_key("vip"), rows.list_key("news")
    both = b"".join(sorted([pair(vip, "a"), pair(news, "a")]))
    merge_pass(rows, spill(spilled_row(digest("r"), both, deleted=False)), touched=set())

    flips = merge_pass(rows, spill(spilled_row(digest("r"), b"", deleted=True)), touched=set())
    assert flips.rows_deleted == {
        vip.to_bytes(KEY_BYTES, "big"): 1,
        news.to_bytes(KEY_BYTES, "big"): 1,
    }
    assert sorted((key, member) for key, member, _ in flips.changes(chunk=10)) == [
        (min(vip, news), False),
        (max(vip, news), False),
    ]
    assert stored_rows(rows) == 0
