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
one batch at a time, in one transaction, before the requests that follow from it are
sent; each request then marks its pairs uncertain before and settles them after. A run
starts by re-sending whatever a crashed run left unsettled (the ledger's pending pairs), so
SIGKILL at any point and a re-run converge, and STATE stays at-least-once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.ledger import CHUNK_ROWS, Ledger
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.row_ledger import LiveChange, Pair, RowLedger, pack, unpack
from target_pinterest_audiences.sync_modes import UPSERT, AudienceModes
from target_pinterest_audiences.uploader import ADD

logger = logging.getLogger(__name__)

BATCH_ROWS = 50_000
"""Rows merged with the ledger at a time: one transaction, a bounded amount of memory."""


class Sender(Protocol):
    """What upsert mode needs from the uploader (:class:`uploader.Uploader` is one)."""

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        """Queue adding (``member``) or removing ``hashes`` in ``audience``'s list."""

    def resolve(self, audience: str) -> str | None:
        """The id of ``audience``'s list on Pinterest, or None if it has none."""


@dataclass
class _AudienceCounts:
    """This run's row counts for one audience (the ledger has the totals)."""

    rows_deleted: int = 0


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
        self._batch: dict[bytes, tuple[frozenset[Pair], bool]] = {}
        """Row id -> the pairs the row holds now, and whether it was deleted."""
        self._touched: set[int] = set()
        """List keys of the audiences this run's rows named, now or before."""
        self._uploader: Sender | None = None
        self._modes: AudienceModes | None = None
        self._recovered = False
        self._checked: dict[str, int] = {}
        """Audiences whose list was checked against Pinterest this run -> their list key."""
        self._list_ids: dict[str, str | None] = {}
        self._counts: dict[str, _AudienceCounts] = defaultdict(_AudienceCounts)

    def attach(self, uploader: Sender, modes: AudienceModes | None = None) -> None:
        """The uploader that sends this mode's changes (built after the ledger)."""
        self._uploader = uploader
        self._modes = modes

    # The record path -----------------------------------------------------------------

    def record(
        self, row_id: bytes, audiences: Iterable[str], hashes: Iterable[str], *, deleted: bool
    ) -> None:
        """The row ``row_id`` now holds ``hashes`` in ``audiences`` (nothing if deleted)."""
        pairs: frozenset[Pair] = frozenset()
        if hashes and audiences:
            digests = [bytes.fromhex(value) for value in hashes]
            keys = [self.rows.list_key(audience) for audience in audiences]
            self._touched.update(keys)
            pairs = frozenset((key, digest) for key in keys for digest in digests)
        self._batch[row_id] = (pairs, deleted)
        if len(self._batch) >= self._batch_rows:
            self.apply()

    # Merging a batch -----------------------------------------------------------------

    def apply(self) -> None:
        """Merge the gathered rows with the ledger and hand the changes to the uploader.

        Called when a batch is full, and before every flush (checkpoint, end of input,
        a stop after bad input or a signal), so nothing read is left unmerged.
        """
        if not self._recovered:
            self._recovered = True
            self._recover()
        if not self._batch:
            return
        batch, self._batch = self._batch, {}
        additions, removals = self._merge(batch)
        self._send(additions, member=True)
        self._send(removals, member=False)

    def _merge(
        self, batch: dict[bytes, tuple[frozenset[Pair], bool]]
    ) -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
        """Commit one batch; return the pairs whose wanted presence flipped, per list."""
        row_ids = list(batch)
        stored = self.rows.stored_rows(row_ids)
        deltas: dict[Pair, int] = defaultdict(int)
        list_rows: dict[int, int] = defaultdict(int)
        rows_written: list[tuple[bytes, bytes]] = []
        rows_emptied: list[bytes] = []
        for row_id, (pairs, deleted) in batch.items():
            new_blob = pack(pairs)
            old_blob = stored.get(row_id, b"")
            if new_blob == old_blob:
                continue  # a replay, or an update that changes nothing we keep
            old_pairs = unpack(old_blob)
            for pair in pairs - old_pairs:
                deltas[pair] += 1
            for pair in old_pairs - pairs:
                deltas[pair] -= 1
            old_lists = {key for key, _ in old_pairs}
            new_lists = {key for key, _ in pairs}
            self._touched |= old_lists | new_lists
            for key in new_lists - old_lists:
                list_rows[key] += 1
            for key in old_lists - new_lists:
                list_rows[key] -= 1
                if deleted:
                    self._counts[self.rows.audience(key)].rows_deleted += 1
            if pairs:
                rows_written.append((row_id, new_blob))
            else:
                rows_emptied.append(row_id)

        changes: list[LiveChange] = []
        list_members: dict[int, int] = defaultdict(int)
        additions: dict[int, list[bytes]] = defaultdict(list)
        removals: dict[int, list[bytes]] = defaultdict(list)
        by_list: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
        for (key, digest), delta in deltas.items():
            if delta:
                by_list[key].append((digest, delta))
        for key, entries in by_list.items():
            current = self.rows.live_rows(key, [digest for digest, _ in entries])
            for digest, delta in entries:
                before = current.get(digest, 0)
                after = max(0, before + delta)
                changes.append(LiveChange(key, digest, after))
                if before == 0 and after > 0:
                    list_members[key] += 1
                    additions[key].append(digest)
                elif before > 0 and after == 0:
                    list_members[key] -= 1
                    removals[key].append(digest)
        list_deltas = {
            key: (list_rows.get(key, 0), list_members.get(key, 0))
            for key in set(list_rows) | set(list_members)
        }
        self.rows.commit_batch(rows_written, rows_emptied, changes, list_deltas)
        return additions, removals

    # Sending -------------------------------------------------------------------------

    def _send(self, pairs: dict[int, list[bytes]], *, member: bool) -> None:
        """Hand flipped pairs to the uploader, after checking each list once per run."""
        uploader = self._uploader
        if uploader is None:
            return
        for key, digests in pairs.items():
            audience = self._check_list(key)
            if self._modes is not None:
                self._modes.claim(audience, UPSERT, "(rows in the upsert ledger)")
            for start in range(0, len(digests), CHUNK_ROWS):
                chunk = digests[start : start + CHUNK_ROWS]
                uploader.change(audience, [digest.hex() for digest in chunk], member)

    def _check_list(self, list_key: int) -> str:
        """Make sure the ledger describes the list Pinterest has; return the audience.

        If the list the ledger knows is gone (deleted in Ads Manager) or replaced, nothing
        of it is on Pinterest: every live identifier is re-added to the list that now
        carries the name (created if there is none).
        """
        audience = self.rows.audience(list_key)
        if audience in self._checked or self._dry_run or self._uploader is None:
            self._checked[audience] = list_key
            return audience
        self._checked[audience] = list_key
        current = self._uploader.resolve(audience)
        recorded = self.rows.ledger.list_id(audience)
        self._list_ids[audience] = current
        if recorded is not None and recorded != current:
            logger.warning(
                "Customer list '%s' (id %s) that the ledger describes is gone from Pinterest%s; "
                "re-adding its live members",
                audience,
                recorded,
                f" (now id {current})" if current else "",
            )
            self.rows.forget_sent(list_key)
            self.rows.ledger.set_list_id(audience, current)
            self._send_pending(list_key)
        return audience

    def _send_pending(self, list_key: int | None) -> int:
        """Send every pending pair (of one list, or of the account) its wanted change."""
        chunks: dict[tuple[int, bool], list[bytes]] = defaultdict(list)
        count = 0
        for key, digest, wanted in self.rows.pending(list_key):
            count += 1
            self._touched.add(key)
            chunk = chunks[(key, wanted)]
            chunk.append(digest)
            if len(chunk) >= CHUNK_ROWS:
                self._send({key: chunk}, member=wanted)
                chunks[(key, wanted)] = []
        for (key, wanted), chunk in chunks.items():
            if chunk:
                self._send({key: chunk}, member=wanted)
        return count

    def _recover(self) -> None:
        """Settle what an earlier run left pending (it stopped between commit and ack)."""
        if self._dry_run or self._uploader is None:
            return
        count = self._send_pending(None)
        if count:
            logger.info(
                "Upsert ledger: %d identifier change(s) left unacknowledged by an earlier run "
                "were sent again",
                count,
            )

    # Hooks for the uploader: the ledger is written around every request. ------------

    def before_sending(self, audience: str, operation: Operation, hashes: list[str]) -> None:
        """Mark the pairs uncertain before a request that may or may not get applied."""
        self.rows.sending(self.rows.list_key(audience), [bytes.fromhex(h) for h in hashes])

    def acknowledged(
        self, audience: str, list_id: str, operation: Operation, hashes: list[str]
    ) -> None:
        """Record what Pinterest acknowledged (and which list it is, if created now)."""
        if self._list_ids.get(audience) != list_id:
            self._list_ids[audience] = list_id
            self.rows.ledger.record_list_id(audience, list_id)
        key = self.rows.list_key(audience)
        digests = [bytes.fromhex(h) for h in hashes]
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
            with self._report.lock:
                report = self._report.audience(audience)
                report.upsert = {
                    "live_rows": counters.live_rows,
                    "rows_deleted": self._counts[audience].rows_deleted,
                    "members": counters.live_members,
                }
                if not self._dry_run:  # a dry run changed nothing on Pinterest
                    report.ledger_members = counters.live_members

    def close(self) -> None:
        """Close the ledger (a dry run's writes are rolled back)."""
        self.rows.ledger.close()
