"""Upsert mode's part of the ledger: each keyed row's pairs, and live members per list.

Two tables (defined with the others in :mod:`ledger`):

- ``ledger_rows``: per row (a SHA-256 of account, stream and key values), the sorted
  (list, hash) pairs it contributes, packed as 36-byte entries (4-byte list key, 32-byte
  digest). A row that holds nothing, or was deleted, has no entry.
- ``ledger_live_members``: per (list, hash), how many live rows hold it (``live_rows``)
  and what Pinterest has (``sent``: 0 absent, 1 uncertain, 2 present). A pair is wanted
  in the list while ``live_rows > 0``.

A pair is *pending* while what Pinterest has may differ from what its rows say (see
:data:`ledger.PENDING`); a partial index finds pending pairs without a scan, which is how a
run finds the work a crashed run left. Row states, live counts and the uncertain marks of
the pairs to send are committed together, before those requests are sent; each
acknowledgement then settles its pairs (present, or gone), as mirror mode does around
every request.

The main thread alone writes rows and ``live_rows``, and marks the pairs a batch will send
uncertain in the same transaction; request threads settle ``sent`` after each
acknowledgement (the ``confirm_*`` methods). Every method takes the ledger's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from target_pinterest_audiences.ledger import CHUNK_ROWS, PENDING, Ledger

ABSENT, UNCERTAIN, PRESENT = 0, 1, 2
"""Values of ``ledger_live_members.sent``."""

PAIR_BYTES = 36
KEY_BYTES = 4

Pair = tuple[int, bytes]
"""(list key, 32-byte digest)."""

# Statement parameters per IN (...) list: far below both backends' limits. Only "?"
# placeholders and module constants are ever formatted into SQL (hence the S608 waivers).
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
class LiveChange:
    """A pair whose live-row count changes in a batch."""

    list_key: int
    digest: bytes
    live_rows: int
    """The count after the batch."""
    send: bool
    """Its wanted presence flips: a request follows, so Pinterest may have it or not."""


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
        changes: Sequence[LiveChange],
        list_deltas: dict[int, tuple[int, int]],
    ) -> None:
        """Write one batch of row states and their live counts in one transaction.

        ``rows``: (row id, packed pairs) of rows that hold something now; ``deleted_rows``:
        rows that hold nothing now; ``list_deltas``: per list key, the change of its live
        rows and live members. A pair whose count drops to 0 is always sent a REMOVE, so
        it stays (uncertain) until that is acknowledged.
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
            # A pair about to be sent is uncertain from now on: should the process die
            # before the acknowledgement, the next run finds it pending and settles it.
            cursor.executemany(
                sql(
                    "INSERT INTO ledger_live_members (list_key, hash, live_rows, sent) "
                    "VALUES (?, ?, ?, 1) ON CONFLICT (list_key, hash) "
                    "DO UPDATE SET live_rows = excluded.live_rows, sent = 1"
                ),
                [(c.list_key, c.digest, c.live_rows) for c in changes if c.send],
            )
            cursor.executemany(
                sql(
                    "INSERT INTO ledger_live_members (list_key, hash, live_rows, sent) "
                    "VALUES (?, ?, ?, 0) "
                    "ON CONFLICT (list_key, hash) DO UPDATE SET live_rows = excluded.live_rows"
                ),
                [(c.list_key, c.digest, c.live_rows) for c in changes if not c.send],
            )
            cursor.executemany(
                sql(
                    "UPDATE ledger_lists SET live_rows = live_rows + ?, "
                    "live_members = live_members + ? WHERE list_key = ?"
                ),
                [
                    (rows_delta, members_delta, key)
                    for key, (rows_delta, members_delta) in list_deltas.items()
                ],
            )

    # Around requests (request threads) -----------------------------------------------

    def confirm_added(self, list_key: int, digests: Sequence[bytes]) -> None:
        """After an acknowledged ADD: Pinterest has these."""
        self._set_sent(list_key, digests, PRESENT)

    def confirm_removed(self, list_key: int, digests: Sequence[bytes]) -> None:
        """After an acknowledged REMOVE: Pinterest has none of these."""
        params = [(list_key, digest) for digest in sorted(digests)]
        with self.ledger.settling() as cursor:
            cursor.executemany(
                self.ledger.sql(
                    "DELETE FROM ledger_live_members WHERE list_key = ? AND hash = ? "
                    "AND live_rows = 0"
                ),
                params,
            )
            cursor.executemany(
                self.ledger.sql(
                    "UPDATE ledger_live_members SET sent = 0 WHERE list_key = ? AND hash = ?"
                ),
                params,
            )

    def _set_sent(self, list_key: int, digests: Sequence[bytes], sent: int) -> None:
        with self.ledger.settling() as cursor:
            cursor.executemany(
                self.ledger.sql(
                    "UPDATE ledger_live_members SET sent = ? WHERE list_key = ? AND hash = ?"
                ),
                [(sent, list_key, digest) for digest in sorted(digests)],
            )

    # Recovery ------------------------------------------------------------------------

    def pending(self, list_key: int | None = None) -> Iterator[tuple[int, bytes, bool]]:
        """Pairs whose presence on Pinterest may be wrong: (list key, digest, wanted).

        All of this account's lists, or one; streamed in chunks through the partial index
        (a list whose Pinterest copy was lost can have millions).
        """
        keys = [list_key] if list_key is not None else self._account_list_keys()
        for key in keys:
            last = b""
            while True:
                with self.ledger.transaction() as cursor:
                    cursor.execute(
                        self.ledger.sql(
                            "SELECT hash, live_rows FROM ledger_live_members "  # noqa: S608
                            f"WHERE list_key = ? AND {PENDING} AND hash > ? "
                            "ORDER BY hash LIMIT ?"
                        ),
                        (key, last, CHUNK_ROWS),
                    )
                    rows = cursor.fetchall()
                if not rows:
                    break
                for digest, live in rows:
                    yield key, bytes(digest), int(live) > 0
                last = bytes(rows[-1][0])

    def _account_list_keys(self) -> list[int]:
        with self.ledger.transaction() as cursor:
            cursor.execute(
                self.ledger.sql("SELECT list_key FROM ledger_lists WHERE ad_account_id = ?"),
                (self.ledger.account,),
            )
            return sorted(int(row[0]) for row in cursor.fetchall())

    def forget_sent(self, list_key: int) -> None:
        """The list the ledger described is gone from Pinterest: nothing of it is there.

        Its live pairs become pending (to be added to the list that replaces it); pairs
        kept only for a REMOVE are dropped.
        """
        with self.ledger.transaction() as cursor:
            cursor.execute(
                self.ledger.sql(
                    "DELETE FROM ledger_live_members WHERE list_key = ? AND live_rows = 0"
                ),
                (list_key,),
            )
            cursor.execute(
                self.ledger.sql("UPDATE ledger_live_members SET sent = 0 WHERE list_key = ?"),
                (list_key,),
            )
