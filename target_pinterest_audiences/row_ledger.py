"""Upsert mode's part of the ledger: each keyed row's pairs, live counts, pending batches.

Three tables (defined with the others in :mod:`ledger`):

- ``ledger_rows``: per row (a SHA-256 of account, stream and key values), the sorted
  (list, hash) pairs it contributes, packed as 36-byte entries (4-byte list key, 32-byte
  digest). A row that holds nothing, or was deleted, has no entry.
- ``ledger_live_members``: per (list, hash), how many live rows hold it. A pair is wanted
  in the list while it has an entry.
- ``ledger_pending_batches``: per merged batch, the packed pairs whose wanted presence it
  flipped. Pinterest holds a pair exactly when the pair is wanted, except for the pairs
  of pending batches: their requests may not have been acknowledged yet.

A batch's rows, live counts and pending entry are committed in one transaction, before its
requests are sent (so Pinterest may hold them from then on: "uncertain before"); a
checkpoint, after the uploader's flush confirmed every request sent so far, deletes the
pending entries ("confirmed after"). After a crash the next run re-sends the current
wanted state of every pair still pending, which converges because ADD and REMOVE are
idempotent. Nothing is written per request: a pair costs one write when it changes and
none when it is acknowledged.

The main thread alone writes these tables; every method takes the ledger's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from target_pinterest_audiences.ledger import Ledger

PAIR_BYTES = 36
KEY_BYTES = 4

Pair = tuple[int, bytes]
"""(list key, 32-byte digest)."""

# Statement parameters per IN (...) list: far below both backends' limits. Only "?"
# placeholders are ever formatted into SQL (hence the S608 waivers).
_IN_CHUNK = 5_000


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
        """Live rows and live members of one list, as of the last committed batch."""
        with self.ledger.transaction() as cursor:
            cursor.execute(
                self.ledger.sql(
                    "SELECT live_rows, live_members FROM ledger_lists WHERE list_key = ?"
                ),
                (list_key,),
            )
            row = cursor.fetchone()
        return Counters(int(row[0]), int(row[1])) if row else Counters(0, 0)

    # Reads for a batch ---------------------------------------------------------------

    def stored_rows(self, row_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored pairs of those of ``row_ids`` that have any."""
        found: dict[bytes, bytes] = {}
        with self.ledger.transaction() as cursor:
            for start in range(0, len(row_ids), _IN_CHUNK):
                chunk = row_ids[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self.ledger.sql(
                        f"SELECT row_id, pairs FROM ledger_rows WHERE row_id IN ({marks})"  # noqa: S608
                    ),
                    chunk,
                )
                found.update((bytes(row_id), bytes(pairs)) for row_id, pairs in cursor.fetchall())
        return found

    def live_rows(self, list_key: int, digests: Sequence[bytes]) -> dict[bytes, int]:
        """The live-row counts of those of ``digests`` the list has an entry for."""
        found: dict[bytes, int] = {}
        with self.ledger.transaction() as cursor:
            for start in range(0, len(digests), _IN_CHUNK):
                chunk = digests[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self.ledger.sql(
                        "SELECT hash, live_rows FROM ledger_live_members "  # noqa: S608
                        f"WHERE list_key = ? AND hash IN ({marks})"
                    ),
                    (list_key, *chunk),
                )
                found.update((bytes(digest), int(live)) for digest, live in cursor.fetchall())
        return found

    # The batch write -----------------------------------------------------------------

    def commit_batch(
        self,
        rows: Sequence[tuple[bytes, bytes]],
        deleted_rows: Sequence[bytes],
        live: Sequence[tuple[int, bytes, int]],
        list_deltas: dict[int, tuple[int, int]],
        flipped: bytes,
    ) -> None:
        """Write one batch in one transaction.

        ``rows``: (row id, packed pairs) of rows that hold something now; ``deleted_rows``:
        rows that hold nothing now; ``live``: (list key, digest, live rows after) of every
        pair whose count changed (0: no longer wanted); ``list_deltas``: per list key, the
        change of its live rows and live members; ``flipped``: the packed pairs whose
        wanted presence flipped, pending until a checkpoint (see :meth:`confirm_sent`).
        """
        sql = self.ledger.sql
        with self.ledger.transaction() as cursor:
            cursor.executemany(
                sql(
                    "INSERT INTO ledger_rows (row_id, pairs) VALUES (?, ?) "
                    "ON CONFLICT (row_id) DO UPDATE SET pairs = excluded.pairs"
                ),
                rows,
            )
            cursor.executemany(
                sql("DELETE FROM ledger_rows WHERE row_id = ?"), [(row,) for row in deleted_rows]
            )
            cursor.executemany(
                sql(
                    "INSERT INTO ledger_live_members (list_key, hash, live_rows) VALUES (?, ?, ?) "
                    "ON CONFLICT (list_key, hash) DO UPDATE SET live_rows = excluded.live_rows"
                ),
                [entry for entry in live if entry[2] > 0],
            )
            cursor.executemany(
                sql("DELETE FROM ledger_live_members WHERE list_key = ? AND hash = ?"),
                [(key, digest) for key, digest, count in live if count == 0],
            )
            cursor.executemany(
                sql(
                    "UPDATE ledger_lists SET live_rows = live_rows + ?, "
                    "live_members = live_members + ? WHERE list_key = ?"
                ),
                [(rows_, members, key) for key, (rows_, members) in list_deltas.items()],
            )
            if flipped:
                cursor.execute(
                    sql("INSERT INTO ledger_pending_batches (ad_account_id, pairs) VALUES (?, ?)"),
                    (self.ledger.account, flipped),
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

    def confirm_sent(self) -> None:
        """A checkpoint: every request sent so far was acknowledged; nothing is pending."""
        with self.ledger.transaction() as cursor:
            cursor.execute(
                self.ledger.sql("DELETE FROM ledger_pending_batches WHERE ad_account_id = ?"),
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
                        "ORDER BY hash LIMIT ?"
                    ),
                    (list_key, last, _IN_CHUNK),
                )
                rows = [bytes(row[0]) for row in cursor.fetchall()]
            if not rows:
                return
            yield rows
            last = rows[-1]
