"""Upsert mode: a keyed stream is a table; send only what its row changes change.

CDC and incremental taps send rows, not memberships: an INSERT or UPDATE is the row's new
state, a DELETE often carries nothing but the key. The target keeps, per row, the
(audience, identifier) pairs it contributes, and per pair how many live rows hold it
(:mod:`row_ledger`). An identifier is added to a list when its count goes from 0 to more,
and removed when it goes back to 0, so

- an UPDATE that changes an email removes the old one and adds the new one;
- an UPDATE that moves a row to another audience leaves the old audience;
- a delete removes the row's identifiers, unless another live row (two rows sharing an
  email, or a row of another upsert stream) still puts them there;
- replaying rows that were already applied changes no count and sends nothing.

Records are gathered in batches (the last record of a key wins) and merged with the ledger
one batch at a time, in one transaction that also marks the pairs it flips uncertain and
records them as pending, before their requests are sent; each acknowledgement settles its
pairs, and a checkpoint (every request acknowledged, then STATE) clears the pending record.
A run starts by re-sending the wanted state of every pending pair a crashed run left
unsettled (not what was acknowledged), so SIGKILL at any point and a re-run converge, and
STATE stays at-least-once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Protocol

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.ledger import CHUNK_ROWS, Ledger
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.row_ledger import (
    ABSENT,
    CONTESTED,
    KEY_BYTES,
    OPEN,
    PAIR_BYTES,
    PRESENT,
    UNCERTAIN,
    RowLedger,
    entries,
)
from target_pinterest_audiences.sync_modes import UPSERT, AudienceModes
from target_pinterest_audiences.uploader import ADD

logger = logging.getLogger(__name__)

BATCH_ROWS = 100_000
"""Rows merged with the ledger at a time: one transaction, a bounded amount of memory
(about 400 bytes per row). Row ids and digests are hashes, so a batch touches pages all
over tables larger than the page cache: a larger batch shares each page among more rows.
Measured (bench/README.md): at 10M rows, 100,000 against 50,000 took the initial load from
432 s to 328 s and a CDC batch of 1M from 101 s to 68 s, for 25 and 45 MiB more peak RSS;
at 1M it changed nothing."""


class Sender(Protocol):
    """What upsert mode needs from the uploader (:class:`uploader.Uploader` is one)."""

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        """Queue adding (``member``) or removing ``hashes`` in ``audience``'s list."""

    def resolve(self, audience: str) -> str | None:
        """The id of ``audience``'s list on Pinterest, or None if it has none."""

    def list_ids(self) -> dict[str, str]:
        """Audience -> list id of every list written or found this run."""


def _list_of(pair: bytes) -> bytes:
    """A packed pair's list key (its first bytes)."""
    return pair[:KEY_BYTES]


@dataclass(slots=True)
class _Batch:
    """Rows gathered since the last merge; a key's last record wins."""

    rows: dict[bytes, bytes] = field(default_factory=dict)
    """Row id -> the row's packed pairs now (empty if it holds nothing)."""
    deleted: set[bytes] = field(default_factory=set)
    """Row ids whose last record is a delete (rows deleted from an audience are counted)."""


class UpsertSync:
    """Applies one run's keyed rows to the row ledger and sends what changes on Pinterest."""

    def __init__(
        self,
        ledger: Ledger,
        report: RunReport,
        *,
        dry_run: bool,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.rows = RowLedger(ledger)
        self._report = report
        self._dry_run = dry_run
        self._batch_rows = batch_rows
        self._batch = _Batch()
        self._touched: set[int] = set()
        """List keys of the audiences this run's rows named, now or before."""
        self._uploader: Sender | None = None
        self._modes: AudienceModes | None = None
        self._recovered = False
        self._checked: dict[str, int] = {}
        """Audiences whose list was checked against Pinterest this run -> their list key."""
        self._rows_deleted: dict[bytes, int] = defaultdict(int)
        """Packed list key -> rows deleted from that audience this run."""
        self._key_bytes: dict[str, bytes] = {}

    def attach(self, uploader: Sender, modes: AudienceModes | None = None) -> None:
        """The uploader that sends this mode's changes (built after the ledger)."""
        self._uploader = uploader
        self._modes = modes

    # The record path -----------------------------------------------------------------

    def record(
        self, row_id: bytes, audiences: Sequence[str], hashes: Sequence[str], *, deleted: bool
    ) -> None:
        """The row ``row_id`` now holds ``hashes`` in ``audiences`` (nothing if deleted).

        Kept as the row's packed state (see :func:`row_ledger.pack`) so that the merge
        compares bytes; most rows hold one identifier in one audience.
        """
        blob = b""
        if hashes and audiences:
            key_bytes = self._key_bytes
            if len(audiences) == 1 and len(hashes) == 1:
                key = key_bytes.get(audiences[0]) or self._new_key(audiences[0])
                blob = key + bytes.fromhex(hashes[0])
            else:
                keys = [key_bytes.get(a) or self._new_key(a) for a in audiences]
                digests = [bytes.fromhex(value) for value in hashes]
                blob = b"".join(sorted({key + digest for key in keys for digest in digests}))
        batch = self._batch
        batch.rows[row_id] = blob
        if deleted:
            batch.deleted.add(row_id)
        elif batch.deleted:
            batch.deleted.discard(row_id)  # re-inserted after its delete
        if len(batch.rows) >= self._batch_rows:
            self.apply()

    def _new_key(self, audience: str) -> bytes:
        key = self.rows.list_key(audience)
        self._touched.add(key)
        packed = self._key_bytes[audience] = key.to_bytes(KEY_BYTES, "big")
        return packed

    # Merging a batch -----------------------------------------------------------------

    def apply(self) -> None:
        """Merge the gathered rows with the ledger and hand the changes to the uploader.

        Called when a batch is full, and before every flush (checkpoint, end of input,
        a stop after bad input or a signal), so nothing read is left unmerged.
        """
        if not self._recovered:
            self._recovered = True
            self._recover()
        if not self._batch.rows:
            return
        batch, self._batch = self._batch, _Batch()
        additions, removals = self._merge(batch)
        try:
            self._send(additions, member=True)
        except BaseException:
            self._count_failed({key: len(digests) for key, digests in removals.items()})
            raise
        self._send(removals, member=False)

    def _merge(self, batch: _Batch) -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
        """Commit one batch; return the pairs whose wanted presence flipped, per list.

        Kept lean (about 400 bytes per row with the batch itself): what the transaction
        writes is generated from the batch, not copied into lists of tuples first.
        """
        rows = batch.rows
        # In key order: B-tree reads and writes then walk the tables' pages in order.
        row_ids = sorted(rows)
        stored = self.rows.stored_rows(row_ids)
        deltas: dict[bytes, int] = defaultdict(int)
        """Packed pair -> change of its live-row count."""
        list_rows: dict[bytes, int] = defaultdict(int)
        written: list[bytes] = []
        """Row ids that hold something now, in key order."""
        emptied: list[bytes] = []
        for row_id in row_ids:
            new = rows[row_id]
            old = stored.get(row_id, b"")
            if new == old:
                continue  # a replay, or an update that changes nothing we keep
            (written if new else emptied).append(row_id)
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
                if row_id in batch.deleted:
                    self._rows_deleted[key] += 1
        del stored, row_ids

        counts: list[tuple[int, bytes, int]] = []
        flips: list[tuple[int, bytes, int, int]] = []
        list_members: dict[bytes, int] = defaultdict(int)
        additions: dict[int, list[bytes]] = {}
        removals: dict[int, list[bytes]] = {}
        # Sorted packed pairs are grouped by list (the key comes first), digests in order.
        changed = sorted(pair for pair, delta in deltas.items() if delta)
        for packed_key, group in groupby(changed, key=_list_of):
            pairs = list(group)
            list_key = int.from_bytes(packed_key, "big")
            self._touched.add(list_key)
            digests = [pair[KEY_BYTES:] for pair in pairs]
            current = self.rows.live_states(list_key, digests)
            added = additions[list_key] = []
            removed = removals[list_key] = []
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
                flips.append((list_key, digest, after, CONTESTED if sent in OPEN else UNCERTAIN))
                (added if after else removed).append(digest)
            list_members[packed_key] = len(added) - len(removed)
        del changed, deltas
        list_deltas = {
            int.from_bytes(key, "big"): (list_rows.get(key, 0), list_members.get(key, 0))
            for key in set(list_rows) | set(list_members)
        }
        self.rows.commit_batch(
            ((row_id, rows[row_id]) for row_id in written), emptied, counts, flips, list_deltas
        )
        return additions, removals

    # Sending -------------------------------------------------------------------------

    def _send(self, pairs: dict[int, list[bytes]], *, member: bool) -> None:
        """Hand flipped pairs to the uploader, after checking each list once per run.

        If handing them over fails (the list cannot be looked up, the run already failed),
        what was not handed over is counted as failed here: it stays pending in the
        ledger for the next run, and the report must not look better than the run.
        """
        uploader = self._uploader
        if uploader is None:
            return
        left = {key: len(digests) for key, digests in pairs.items()}
        try:
            for key, digests in pairs.items():
                audience = self._check_list(key)
                if self._modes is not None:
                    self._modes.claim(audience, UPSERT, "(rows in the upsert ledger)")
                for start in range(0, len(digests), CHUNK_ROWS):
                    chunk = digests[start : start + CHUNK_ROWS]
                    uploader.change(audience, [digest.hex() for digest in chunk], member)
                    left[key] -= len(chunk)
        except BaseException:
            self._count_failed(left)
            raise

    def _count_failed(self, counts: dict[int, int]) -> None:
        for list_key, count in counts.items():
            if count:
                self._report.count(self.rows.audience(list_key), failed=count)

    def _check_list(self, list_key: int) -> str:
        """Make sure the ledger describes the list Pinterest has; return the audience.

        If the list the ledger knows is gone (deleted in Ads Manager) or replaced, nothing
        of it is on Pinterest: every live identifier is re-added to the list that now
        carries the name (created if there is none). The ledger learns the new list's id
        only at the next checkpoint, so a re-add cut short by a crash starts again.
        """
        audience = self.rows.audience(list_key)
        if audience in self._checked or self._dry_run or self._uploader is None:
            self._checked[audience] = list_key
            return audience
        self._checked[audience] = list_key
        current = self._uploader.resolve(audience)
        recorded = self.rows.ledger.list_id(audience)
        if recorded is not None and recorded != current:
            logger.warning(
                "Customer list '%s' (id %s) that the ledger describes is gone from Pinterest%s; "
                "re-adding its live members",
                audience,
                recorded,
                f" (now id {current})" if current else "",
            )
            for chunk in self.rows.live_digests(list_key):
                self._send({list_key: chunk}, member=True)
        return audience

    def _recover(self) -> None:
        """Re-send what an earlier run flipped and did not have acknowledged (it stopped)."""
        if self._dry_run or self._uploader is None:
            return
        count = 0
        for _, blob in self.rows.pending():
            by_list: dict[int, list[bytes]] = defaultdict(list)
            for pair in entries(blob):
                by_list[int.from_bytes(pair[:KEY_BYTES], "big")].append(pair[KEY_BYTES:])
            for list_key, digests in by_list.items():
                states = self.rows.live_states(list_key, digests)
                wanted: list[bytes] = []
                unwanted: list[bytes] = []
                for digest in digests:
                    live, sent = states.get(digest, (0, ABSENT))
                    if sent in OPEN or (live > 0) != (sent == PRESENT):
                        (wanted if live > 0 else unwanted).append(digest)
                if wanted or unwanted:
                    self._touched.add(list_key)
                    self._send({list_key: wanted}, member=True)
                    self._send({list_key: unwanted}, member=False)
                    count += len(wanted) + len(unwanted)
        if count:
            logger.info(
                "Upsert ledger: %d identifier change(s) an earlier run did not have "
                "acknowledged were sent again",
                count,
            )

    # Hook for the uploader: an acknowledgement settles its pairs. --------------------

    def acknowledged(
        self, audience: str, list_id: str, operation: Operation, hashes: list[str]
    ) -> None:
        """Pinterest acknowledged a request: its pairs are settled (unless contested)."""
        key = self.rows.list_key(audience)
        digests = [bytes.fromhex(value) for value in hashes]
        if operation == ADD:
            self.rows.confirm_added(key, digests)
        else:
            self.rows.confirm_removed(key, digests)

    # Reporting -------------------------------------------------------------------------

    def report(self) -> None:
        """Put each touched audience's live rows and members into the run report."""
        for key in sorted(self._touched):
            audience = self.rows.audience(key)
            counters = self.rows.counters(key)
            with self._report.updating(audience) as report:
                report.upsert = {
                    "live_rows": counters.live_rows,
                    "rows_deleted": self._rows_deleted[key.to_bytes(KEY_BYTES, "big")],
                    "members": counters.live_members,
                }
                if not self._dry_run:  # a dry run changed nothing on Pinterest
                    report.ledger_members = counters.live_members

    def settle(self) -> None:
        """A checkpoint: the uploader flushed, so every change sent so far is acknowledged.

        Settles contested pairs, clears the pending batches, and records which list each
        audience now has (only now: a re-add to a new list cut short starts again).
        """
        if self._dry_run or self._uploader is None:
            return
        list_ids = self._uploader.list_ids()
        for audience in self._checked:
            list_id = list_ids.get(audience)
            if list_id is not None and self.rows.ledger.list_id(audience) != list_id:
                self.rows.ledger.record_list_id(audience, list_id)
        self.rows.checkpoint()

    def abandon(self) -> None:
        """The run stops before sending the rows still gathered: record them, count them.

        They are merged into the ledger like any batch, so their flips are pending and the
        next run sends them, and each identifier whose change is thereby left unsent is
        counted as failed: a failed run never reports fewer failures than it had.
        """
        if not self._batch.rows or self._dry_run:
            return
        batch, self._batch = self._batch, _Batch()
        for changes in self._merge(batch):
            self._count_failed({key: len(digests) for key, digests in changes.items()})

    def close(self) -> None:
        """Close the ledger (a dry run's writes are rolled back)."""
        self.rows.ledger.close()
