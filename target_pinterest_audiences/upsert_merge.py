"""Upsert mode's merge pass: the rows gathered since the last pass, merged with the row ledger.

Why a pass over rows spilled to disk, not a merge of each batch held in memory: row ids and
digests are hashes, so any batch of rows touches pages all over the ledger's tables, and
each merge read and rewrote nearly every page of them. With batches of 100,000 rows an
initial load of 10M rows rewrote its tables a hundred times: the process read about 1 GB
and wrote 0.8 GB per second, and the load took 13 to 15 times the parse-and-hash floor
(bench/README.md). A pass takes up to :data:`upsert.BATCH_ROWS` rows, spilled to a temporary
file by the first byte of the row id as they arrive (:mod:`prefix_spill`), and merges them
one range of prefixes at a time, in key order, so each page is read and written once per
pass and only one range is in memory.

A pass has two phases, in one transaction (rows and live counts must never disagree):

1. rows, range by range of row-id prefixes: each row's last record against its stored
   pairs; the rows are written, and each pair whose live count changes is spilled with that
   change, by the first byte of its digest;
2. pairs, range by range of digest prefixes: each pair's summed change against its live
   count; counts are written, and each pair whose wanted presence flips (0 live rows <-> more)
   is marked uncertain (or contested, if a request for it may still be outstanding),
   recorded in a pending entry, and spilled as a request to make.

Only after the commit are the flips handed to the uploader (:mod:`upsert`), so every request
finds its pairs marked and pending before it leaves.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby

from target_pinterest_audiences.prefix_spill import PREFIXES, PrefixSpill, prefix_ranges
from target_pinterest_audiences.row_ledger import (
    ABSENT,
    CONTESTED,
    KEY_BYTES,
    OPEN,
    PAIR_BYTES,
    UNCERTAIN,
    MergeTransaction,
    RowLedger,
    entries,
)

ROW_ID_BYTES = 32
DELETED, KEPT = b"\x01", b"\x00"
"""The flag after a spilled row's id: whether its record deleted it."""
_FLAG_AT = ROW_ID_BYTES
_PAIRS_AT = ROW_ID_BYTES + 1

RANGE_RECORDS = 50_000
"""About how many spilled records one range holds in memory (a pass picks its ranges)."""

_DELTA = struct.Struct(">i")
_PAIR_DELTA_BYTES = PAIR_BYTES + _DELTA.size
_ADD, _REMOVE = b"\x01", b"\x00"
_SEND_BYTES = PAIR_BYTES + 1
"""A request to make: list key, 1 to add or 0 to remove, digest."""


def spilled_row(row_id: bytes, pairs: bytes, *, deleted: bool) -> bytes:
    """A row's record in the spill: its id, whether it was deleted, its packed pairs now."""
    return row_id + (DELETED if deleted else KEPT) + pairs


def _list_of(pair: bytes) -> bytes:
    """A packed pair's list key (its first bytes)."""
    return pair[:KEY_BYTES]


@dataclass
class Flips:
    """What a committed pass asks Pinterest to change."""

    requests: PrefixSpill = field(
        # Read back whole, in the order spilled: the prefix (a list key's top byte) is moot.
        default_factory=lambda: PrefixSpill(
            prefix_at=0, record_bytes=_SEND_BYTES, what="upsert mode's identifier changes to send"
        )
    )
    per_list: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    """List key -> identifiers to add or remove in it."""
    rows_deleted: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    """Packed list key -> rows a delete took out of that audience in this pass. Returned
    with the flips, not added to the run's count as the pass goes: a pass that rolls back
    deleted nothing."""

    def changes(self, chunk: int) -> Iterator[tuple[int, bool, list[bytes]]]:
        """(list key, add?, digests) in chunks of at most ``chunk`` digests."""
        waiting: dict[tuple[int, bool], list[bytes]] = defaultdict(list)
        for record in self.requests.read(0, PREFIXES):
            key = (int.from_bytes(record[:KEY_BYTES], "big"), record[KEY_BYTES] == 1)
            digests = waiting[key]
            digests.append(record[KEY_BYTES + 1 :])
            if len(digests) >= chunk:
                yield key[0], key[1], digests
                waiting[key] = []
        for (list_key, member), digests in waiting.items():
            if digests:
                yield list_key, member, digests

    def close(self) -> None:
        """Delete the spilled requests."""
        self.requests.close()


@dataclass
class _Totals:
    """Per-list changes of one pass, applied to the lists' counters at its end."""

    live_rows: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    live_members: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))

    def by_list_key(self) -> dict[int, tuple[int, int]]:
        keys = set(self.live_rows) | set(self.live_members)
        return {
            int.from_bytes(key, "big"): (self.live_rows.get(key, 0), self.live_members.get(key, 0))
            for key in keys
        }


def merge_pass(
    rows: RowLedger,
    spilled: PrefixSpill,
    *,
    touched: set[int],
) -> Flips:
    """Merge the spilled rows with the ledger and commit; return what flipped.

    ``touched`` (list keys whose pairs changed) is updated for the run's report.
    """
    # Acknowledged pairs written first: a pass that saw them still uncertain would mark
    # their flips contested, which only a checkpoint settles.
    rows.write_acknowledged()
    pair_changes = PrefixSpill(
        prefix_at=KEY_BYTES,
        record_bytes=_PAIR_DELTA_BYTES,
        what="upsert mode's changes of live counts in a merge pass",
    )
    flips = Flips()
    totals = _Totals()
    try:
        with rows.merging() as merge:
            for low, high in prefix_ranges(spilled.records, RANGE_RECORDS):
                _merge_rows(merge, spilled.read(low, high), pair_changes, totals, flips)
            for low, high in prefix_ranges(pair_changes.records, RANGE_RECORDS):
                _merge_pairs(merge, pair_changes.read(low, high), flips, totals, touched)
            merge.update_lists(totals.by_list_key())
    except BaseException:
        flips.close()
        raise
    finally:
        pair_changes.close()
    return flips


def _merge_rows(
    merge: MergeTransaction,
    records: Iterator[bytes],
    pair_changes: PrefixSpill,
    totals: _Totals,
    flips: Flips,
) -> None:
    """Phase 1 for one range of row ids: write the rows, spill their pairs' changes."""
    latest: dict[bytes, bytes] = {}
    for record in records:
        latest[record[:ROW_ID_BYTES]] = record  # a key's last record wins
    # In key order: B-tree reads and writes then walk the table's pages in order.
    row_ids = sorted(latest)
    stored = merge.stored_rows(row_ids)
    deltas: dict[bytes, int] = defaultdict(int)
    """Packed pair -> change of its live-row count."""
    list_rows = totals.live_rows
    rows_deleted = flips.rows_deleted
    written: list[tuple[bytes, bytes]] = []
    emptied: list[bytes] = []
    for row_id in row_ids:
        record = latest[row_id]
        new = record[_PAIRS_AT:]
        old = stored.get(row_id, b"")
        if new == old:
            continue  # a replay, or an update that changes nothing we keep
        if new:
            written.append((row_id, new))
        else:
            emptied.append(row_id)
        if not old and len(new) == PAIR_BYTES:  # the common case: a new one-pair row
            deltas[new] += 1
            list_rows[new[:KEY_BYTES]] += 1
            continue
        old_pairs = set(entries(old))
        new_pairs = set(entries(new))
        for pair in new_pairs - old_pairs:
            deltas[pair] += 1
        for pair in old_pairs - new_pairs:
            deltas[pair] -= 1
        old_lists = {pair[:KEY_BYTES] for pair in old_pairs}
        new_lists = {pair[:KEY_BYTES] for pair in new_pairs}
        for key in new_lists - old_lists:
            list_rows[key] += 1
        for key in old_lists - new_lists:
            list_rows[key] -= 1
            if record[_FLAG_AT] == DELETED[0]:
                rows_deleted[key] += 1
    del latest, stored, row_ids
    merge.write_rows(written, emptied)
    pack = _DELTA.pack
    for pair, delta in deltas.items():
        if delta:
            pair_changes.add(pair + pack(delta))


def _merge_pairs(
    merge: MergeTransaction,
    records: Iterator[bytes],
    flips: Flips,
    totals: _Totals,
    touched: set[int],
) -> None:
    """Phase 2 for one range of digests: write live counts, mark and spill the flips."""
    deltas: dict[bytes, int] = defaultdict(int)
    unpack = _DELTA.unpack_from
    for record in records:
        deltas[record[:PAIR_BYTES]] += unpack(record, PAIR_BYTES)[0]
    counts: list[tuple[int, bytes, int]] = []
    marked: list[tuple[int, bytes, int, int]] = []
    requests = flips.requests
    # Sorted packed pairs are grouped by list (the key comes first), digests in order.
    changed = sorted(pair for pair, delta in deltas.items() if delta)
    for packed_key, group in groupby(changed, key=_list_of):
        pairs = list(group)
        list_key = int.from_bytes(packed_key, "big")
        touched.add(list_key)
        digests = [pair[KEY_BYTES:] for pair in pairs]
        current = merge.live_states(list_key, digests)
        members = flipped = 0
        for pair, digest in zip(pairs, digests, strict=True):
            before, sent = current.get(digest, (0, ABSENT))
            after = before + deltas[pair]
            if after < 0:  # only a damaged ledger could say so
                after = 0
            if before == after:
                continue  # nothing to write (a count the ledger never had)
            if (before == 0) == (after == 0):
                counts.append((list_key, digest, after))
                continue
            # A request for the pair may still be outstanding: its acknowledgement must
            # not be taken for the one this flip will send.
            marked.append((list_key, digest, after, CONTESTED if sent in OPEN else UNCERTAIN))
            requests.add(packed_key + (_ADD if after else _REMOVE) + digest)
            members += 1 if after else -1
            flipped += 1
        flips.per_list[list_key] += flipped
        totals.live_members[packed_key] += members
    merge.write_pairs(counts, marked)
