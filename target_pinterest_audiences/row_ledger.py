"""Upsert mode's part of the ledger: each keyed row's pairs, live counts, pending batches.

Three tables (defined with the others in :mod:`ledger`):

- ``ledger_rows``: per row (a SHA-256 of account, stream and key values), the sorted
  (list, hash) pairs it contributes, packed as 36-byte entries (4-byte list key, 32-byte
  digest). A row that holds nothing, or was deleted, has no entry.
- ``ledger_live_members``: per (list, hash), how many live rows hold it (wanted in the
  list while more than 0) and what is known of Pinterest's copy (``sent``).
- ``ledger_pending_batches``: per range of a merge pass, the packed pairs whose wanted presence it
  flipped, kept until a checkpoint.

A merge pass's rows, live counts and pending entries are committed in one transaction
(:meth:`RowLedger.merging`), which also marks each flipped pair uncertain (``sent`` 1),
before its requests are sent. Each
acknowledged request settles its pairs (present, or deleted); a pair that flips again while
a request for it is outstanding is *contested* (``sent`` 3) and only a checkpoint settles it,
since an acknowledgement could then be the older request's. A checkpoint (the uploader
flushed: every request sent so far acknowledged, then STATE) settles the contested pairs and
drops the pending batches. After a crash the next run looks at the pairs of the pending
batches and re-sends the wanted state of every one not settled, so SIGKILL at any point and
a re-run converge, without re-sending what was acknowledged.

The main thread writes rows, live counts and pending batches, and the acknowledgements
that request threads hold until then, together and sorted
(:meth:`RowLedger.write_acknowledged`). Every write takes the ledger's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from target_pinterest_audiences.errors import ScratchSpaceError
from target_pinterest_audiences.ledger import Ledger
from target_pinterest_audiences.prefix_spill import PrefixSpill, prefix_ranges

PAIR_BYTES = 36
KEY_BYTES = 4

ABSENT, UNCERTAIN, PRESENT, CONTESTED = 0, 1, 2, 3
"""Values of ``ledger_live_members.sent`` (see the module docstring)."""
OPEN = frozenset({UNCERTAIN, CONTESTED})
"""A request for the pair may be outstanding."""

Pair = tuple[int, bytes]
"""(list key, 32-byte digest)."""

ACKNOWLEDGED_BLOCK = 20_000
"""Acknowledged pairs held in memory (about 75 bytes each) before they join the others on
disk (see :meth:`RowLedger.write_acknowledged`)."""
ACKNOWLEDGED_RANGE = 25_000
"""About how many acknowledged pairs one range of their write holds in memory."""
_ACK_BYTES = KEY_BYTES + 1 + 32
"""An acknowledged pair as held: list key, 1 if added or 0 if removed, digest."""
_ADDED, _REMOVED = b"\x01", b"\x00"


def _list_and_kind(acknowledged: bytes) -> tuple[bytes, int]:
    return acknowledged[:KEY_BYTES], acknowledged[KEY_BYTES]


# Statement parameters per IN (...) list: far below both backends' limits. Only "?"
# placeholders are ever formatted into SQL (hence the S608 waivers).
_IN_CHUNK = 4_096


def in_lists(values: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """``values`` in chunks for ``IN (...)`` lists of a few lengths: powers of two.

    A statement's text carries its number of placeholders, and every distinct text is
    compiled and kept in the connection's statement cache (128 statements in Python's
    sqlite3). Lists of any length up to 5,000 filled it with large compiled statements:
    on an initial load of 1M rows in passes of 100,000, SQLite's memory high-water was
    86 MiB and peak RSS 209 MiB; with padded lists 22 MiB and 142 MiB. A short chunk is
    padded by repeating its last value (an IN list ignores repeats), so each query has at
    most 13 texts.
    """
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        size = 1 << (len(chunk) - 1).bit_length()
        if size > len(chunk):
            chunk = [*chunk, *([chunk[-1]] * (size - len(chunk)))]
        yield chunk


def pack(pairs: Iterable[Pair]) -> bytes:
    """A row's pairs as stored: sorted, so equal states have equal bytes."""
    return b"".join(sorted({key.to_bytes(KEY_BYTES, "big") + digest for key, digest in pairs}))


def entries(blob: bytes) -> list[bytes]:
    """A stored row's pairs, each still packed (4-byte key + digest)."""
    return [blob[i : i + PAIR_BYTES] for i in range(0, len(blob), PAIR_BYTES)]


def unpack(blob: bytes) -> set[Pair]:
    """The pairs of a stored row."""
    return {
        (int.from_bytes(entry[:KEY_BYTES], "big"), entry[KEY_BYTES:]) for entry in entries(blob)
    }


@dataclass(frozen=True, slots=True)
class Counters:
    """What the ledger knows of one upsert audience."""

    live_rows: int
    live_members: int


class RowLedger:
    """Upsert mode's tables of one ad account's ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._audiences: dict[int, str] = {}
        self._acknowledged_lock = threading.Lock()
        self._acknowledged = self._new_hold()
        """Pairs acknowledged and not yet written, by their digest's first byte."""
        self._hold_failed: ScratchSpaceError | None = None
        """Why the hold could not take acknowledgements (raised by the next write)."""
        # Also when a run ends early: its acknowledgements spare the next run requests.
        ledger.before_close(self.write_acknowledged)

    # Lists ---------------------------------------------------------------------------

    def list_key(self, audience: str) -> int:
        """The ledger's key for ``audience`` (created on first use)."""
        key = self.ledger.audience_key(audience)
        self._audiences[key] = audience
        return key

    def audience(self, list_key: int) -> str:
        """The audience (list name) of a list key."""
        name = self._audiences.get(list_key)
        if name is None:
            with self.ledger.transaction() as cursor:
                cursor.execute(
                    self.ledger.sql("SELECT audience FROM ledger_lists WHERE list_key = ?"),
                    (list_key,),
                )
                row = cursor.fetchone()
            name = self._audiences[list_key] = str(row[0])
        return name

    def counters(self, list_key: int) -> Counters:
        """Live rows and live members of one list, as of the last committed merge pass."""
        with self.ledger.transaction() as cursor:
            cursor.execute(
                self.ledger.sql(
                    "SELECT live_rows, live_members FROM ledger_lists WHERE list_key = ?"
                ),
                (list_key,),
            )
            row = cursor.fetchone()
        return Counters(int(row[0]), int(row[1])) if row else Counters(0, 0)

    # One merge pass ------------------------------------------------------------------

    @contextmanager
    def merging(self) -> Iterator[MergeTransaction]:
        """One transaction for a whole merge pass (see :mod:`upsert_merge`), under the lock.

        Everything the pass writes commits together or not at all: rows and live counts
        must never disagree, or a replayed row would look applied while its pairs were not.
        """
        with self.ledger.transaction() as cursor:
            yield MergeTransaction(self.ledger, cursor)

    def live_states(self, list_key: int, digests: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        """(live rows, sent) of those of ``digests`` the list has an entry for."""
        with self.merging() as merge:
            return merge.live_states(list_key, digests)

    # Around requests (request threads) -----------------------------------------------

    def confirm_added(self, list_key: int, digests: Sequence[bytes]) -> None:
        """After an acknowledged ADD: these are present, unless contested meanwhile."""
        self._acknowledge(list_key, digests, added=True)

    def confirm_removed(self, list_key: int, digests: Sequence[bytes]) -> None:
        """After an acknowledged REMOVE: these are gone, unless contested meanwhile."""
        self._acknowledge(list_key, digests, added=False)

    def _acknowledge(self, list_key: int, digests: Sequence[bytes], *, added: bool) -> None:
        prefix = list_key.to_bytes(KEY_BYTES, "big") + (_ADDED if added else _REMOVED)
        with self._acknowledged_lock:
            add = self._acknowledged.add
            try:
                for digest in digests:
                    add(prefix + digest)
            except ScratchSpaceError as exc:
                # Not the request's failure (Pinterest has it): the main thread raises it
                # at the next write. The block lost is pairs left uncertain, sent again
                # by the next run.
                self._hold_failed = self._hold_failed or exc

    @staticmethod
    def _new_hold() -> PrefixSpill:
        return PrefixSpill(
            prefix_at=KEY_BYTES + 1,
            record_bytes=_ACK_BYTES,
            block_records=ACKNOWLEDGED_BLOCK,
            what="upsert mode's acknowledged identifiers (37 bytes each)",
        )

    def write_acknowledged(self) -> None:
        """Settle the pairs acknowledged so far, range of digests by range, in digest order.

        Held, not written as they come: a request's digests are spread over the whole
        table, so each write of acknowledgements touches about every page of it, whether it
        carries a thousand or a million (at 10M rows, writes of 200,000 held in memory
        rewrote the table 50 times in an initial load). So they wait on disk, in a
        temporary file like the rows of a pass (:mod:`prefix_spill`), and are written
        together, each page touched once: before every merge pass (which must not see a
        settled pair still uncertain: it would mark its flip contested), at every
        checkpoint (before the pending entries that would re-send them are dropped) and
        when the ledger closes. They join the open transaction, like every acknowledgement
        (see :meth:`Ledger.settling`): one that a crash loses leaves its pair uncertain,
        and the next run sends it again, which is harmless.
        """
        with self._acknowledged_lock:
            failed, self._hold_failed = self._hold_failed, None
            if failed is not None:
                raise failed
            if not self._acknowledged.records:
                return
            held, self._acknowledged = self._acknowledged, self._new_hold()
        try:
            with self.ledger.settling() as cursor:
                for low, high in prefix_ranges(held.records, ACKNOWLEDGED_RANGE):
                    self._write_range(cursor, sorted(held.read(low, high)))
        finally:
            held.close()

    def _write_range(self, cursor: Any, acknowledged: list[bytes]) -> None:
        """Write one range's sorted acknowledgements: grouped by list and kind, in order."""
        sql = self.ledger.sql
        for (packed_key, kind), group in groupby(acknowledged, key=_list_and_kind):
            list_key = int.from_bytes(packed_key, "big")
            added = kind == _ADDED[0]
            cursor.executemany(
                sql(
                    "UPDATE ledger_live_members SET sent = 2 "
                    "WHERE list_key = ? AND hash = ? AND sent = 1 AND live_rows > 0"
                    if added
                    else "DELETE FROM ledger_live_members "
                    "WHERE list_key = ? AND hash = ? AND sent = 1 AND live_rows = 0"
                ),
                [(list_key, pair[KEY_BYTES + 1 :]) for pair in group],
            )

    # Pending batches -----------------------------------------------------------------

    def pending(self) -> Iterator[tuple[int, bytes]]:
        """(batch id, packed pairs) of every batch not yet confirmed, oldest first."""
        last = 0
        while True:
            with self.ledger.transaction() as cursor:
                cursor.execute(
                    self.ledger.sql(
                        "SELECT batch_id, pairs FROM ledger_pending_batches "
                        "WHERE ad_account_id = ? AND batch_id > ? ORDER BY batch_id LIMIT 16"
                    ),
                    (self.ledger.account, last),
                )
                rows = cursor.fetchall()
            if not rows:
                return
            for batch_id, pairs in rows:
                yield int(batch_id), bytes(pairs)
            last = int(rows[-1][0])

    def checkpoint(self) -> None:
        """Every request sent so far was acknowledged: settle contested pairs, drop pending."""
        self.write_acknowledged()  # before the pending entries that would re-send them go
        sql = self.ledger.sql
        with self.ledger.transaction() as cursor:
            cursor.execute(
                sql("UPDATE ledger_live_members SET sent = 2 WHERE sent = 3 AND live_rows > 0")
            )
            cursor.execute(sql("DELETE FROM ledger_live_members WHERE sent = 3 AND live_rows = 0"))
            cursor.execute(
                sql("DELETE FROM ledger_pending_batches WHERE ad_account_id = ?"),
                (self.ledger.account,),
            )

    def live_digests(self, list_key: int) -> Iterator[list[bytes]]:
        """Every wanted digest of one list, in chunks (to re-add a lost list)."""
        last = b""
        while True:
            with self.ledger.transaction() as cursor:
                cursor.execute(
                    self.ledger.sql(
                        "SELECT hash FROM ledger_live_members WHERE list_key = ? AND hash > ? "
                        "AND live_rows > 0 ORDER BY hash LIMIT ?"
                    ),
                    (list_key, last, _IN_CHUNK),
                )
                rows = [bytes(row[0]) for row in cursor.fetchall()]
            if not rows:
                return
            yield rows
            last = rows[-1]


class MergeTransaction:
    """The reads and writes of one merge pass, on one cursor of one open transaction."""

    def __init__(self, ledger: Ledger, cursor: Any) -> None:
        self._ledger = ledger
        self._cursor = cursor

    def stored_rows(self, row_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored pairs of those of ``row_ids`` that have any."""
        found: dict[bytes, bytes] = {}
        cursor = self._cursor
        for chunk in in_lists(row_ids):
            marks = ", ".join("?" * len(chunk))
            cursor.execute(
                self._ledger.sql(
                    f"SELECT row_id, pairs FROM ledger_rows WHERE row_id IN ({marks})"  # noqa: S608
                ),
                chunk,
            )
            found.update((bytes(row_id), bytes(pairs)) for row_id, pairs in cursor.fetchall())
        return found

    def live_states(self, list_key: int, digests: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        """(live rows, sent) of those of ``digests`` the list has an entry for."""
        found: dict[bytes, tuple[int, int]] = {}
        cursor = self._cursor
        for chunk in in_lists(digests):
            marks = ", ".join("?" * len(chunk))
            cursor.execute(
                self._ledger.sql(
                    "SELECT hash, live_rows, sent FROM ledger_live_members "  # noqa: S608
                    f"WHERE list_key = ? AND hash IN ({marks})"
                ),
                (list_key, *chunk),
            )
            found.update(
                (bytes(digest), (int(live), int(sent))) for digest, live, sent in cursor.fetchall()
            )
        return found

    def write_rows(self, rows: Iterable[tuple[bytes, bytes]], emptied: Iterable[bytes]) -> None:
        """Store (row id, packed pairs) of rows that hold something; drop rows that do not."""
        sql = self._ledger.sql
        self._cursor.executemany(
            sql(
                "INSERT INTO ledger_rows (row_id, pairs) VALUES (?, ?) "
                "ON CONFLICT (row_id) DO UPDATE SET pairs = excluded.pairs"
            ),
            rows,
        )
        self._cursor.executemany(
            sql("DELETE FROM ledger_rows WHERE row_id = ?"), [(row,) for row in emptied]
        )

    def write_pairs(
        self,
        counts: Sequence[tuple[int, bytes, int]],
        flips: Sequence[tuple[int, bytes, int, int]],
    ) -> None:
        """Write live counts; mark flipped pairs and record them as pending.

        ``counts``: (list key, digest, live rows) of pairs whose count changed but not
        whether they are wanted; ``flips``: (list key, digest, live rows, sent) of pairs
        whose wanted presence flipped (``sent`` uncertain or contested), also recorded as a
        pending entry, until a checkpoint.
        """
        sql = self._ledger.sql
        cursor = self._cursor
        # A count alone never touches sent: a request thread may be settling it.
        cursor.executemany(
            sql("UPDATE ledger_live_members SET live_rows = ? WHERE list_key = ? AND hash = ?"),
            [(live, key, digest) for key, digest, live in counts],
        )
        cursor.executemany(
            sql(
                "INSERT INTO ledger_live_members (list_key, hash, live_rows, sent) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (list_key, hash) "
                "DO UPDATE SET live_rows = excluded.live_rows, sent = excluded.sent"
            ),
            flips,
        )
        if flips:
            # Appended, not joined: a join would first hold every pair as its own object.
            packed = bytearray()
            for key, digest, _, _ in flips:
                packed += key.to_bytes(KEY_BYTES, "big")
                packed += digest
            cursor.execute(
                sql("INSERT INTO ledger_pending_batches (ad_account_id, pairs) VALUES (?, ?)"),
                (self._ledger.account, packed),
            )

    def update_lists(self, list_deltas: dict[int, tuple[int, int]]) -> None:
        """Per list key, add (live rows, live members) to its counters."""
        self._cursor.executemany(
            self._ledger.sql(
                "UPDATE ledger_lists SET live_rows = live_rows + ?, "
                "live_members = live_members + ? WHERE list_key = ?"
            ),
            [(rows, members, key) for key, (rows, members) in list_deltas.items()],
        )
