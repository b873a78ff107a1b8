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

Records are spilled to a temporary file as they come and merged with the ledger one pass
at a time (:mod:`upsert_merge`; the last record of a key wins), in one transaction that also
marks the pairs it flips uncertain and records them as pending, before their requests are
sent; each acknowledgement settles its pairs, and a checkpoint (every request acknowledged,
then STATE) clears the pending record.
A run starts by re-sending the wanted state of every pending pair a crashed run left
unsettled (not what was acknowledged), so SIGKILL at any point and a re-run converge, and
STATE stays at-least-once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.ledger import CHUNK_ROWS, Ledger
from target_pinterest_audiences.prefix_spill import PrefixSpill
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.row_ledger import (
    ABSENT,
    KEY_BYTES,
    OPEN,
    PRESENT,
    RowLedger,
    entries,
)
from target_pinterest_audiences.sync_modes import UPSERT, AudienceModes
from target_pinterest_audiences.uploader import ADD
from target_pinterest_audiences.upsert_merge import Flips, merge_pass, spilled_row

logger = logging.getLogger(__name__)

BATCH_ROWS = 1_000_000
"""Records (a key's repeats included) merged with the ledger in one pass
(:mod:`upsert_merge`). Each pass reads and writes about every page of the ledger's upsert
tables once, whatever its size (row ids and digests are hashes), so fewer, larger passes
write less; the rows wait on disk, not in memory. A larger pass also waits longer before
its first request and holds a longer transaction."""
SPILL_ROWS = 25_000
"""Rows held in memory (about 110 bytes each) before they are written to the spill. At 10M
rows a pass's merge runs while the next rows are read and the last pass's requests are
sent, so what the reading holds adds to the merge's peak: 25,000 instead of 100,000 took
the 10M initial load's peak RSS from 150 to 136 MiB (1M: 118 to 115)."""


class Sender(Protocol):
    """What upsert mode needs from the uploader (:class:`uploader.Uploader` is one)."""

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        """Queue adding (``member``) or removing ``hashes`` in ``audience``'s list.

        From the call on, the sender accounts for every one of ``hashes``: acknowledged,
        or counted as failed (at its close at the latest), also when this call raises
        because an earlier request failed. The caller must not count them again.
        """

    def resolve(self, audience: str) -> str | None:
        """The id of ``audience``'s list on Pinterest, or None if it has none."""

    def list_ids(self) -> dict[str, str]:
        """Audience -> list id of every list written or found this run."""

    def room(self) -> int:
        """About how many identifiers :meth:`change` takes now without waiting."""


FEED_EVERY = 1024
"""Records read between two looks at whether the uploader can take more of the last
pass's flips (a look is cheap; the uploader's free request slots decide how much)."""


class _HandOver:
    """A committed pass's flips, handed to the uploader a part at a time.

    Handing a pass's flips over at once held the reading until all but the last few of
    its requests had left, at the pace Pinterest allows (about 6 s per 1M identifiers):
    most of a first load's requests then waited for the reading, and the reading for them.
    """

    def __init__(self, flips: Flips) -> None:
        self.flips = flips
        self.left = dict(flips.per_list)
        """List key -> flipped identifiers not handed over yet."""
        self._changes = flips.changes(CHUNK_ROWS)
        self._chunk: tuple[int, bool, list[bytes]] | None = None

    def take(self, limit: int | None) -> tuple[int, bool, list[bytes]] | None:
        """Up to ``limit`` (None: a whole chunk) digests of one list and kind; None at the end."""
        if self._chunk is None:
            self._chunk = next(self._changes, None)
            if self._chunk is None:
                return None
        list_key, member, digests = self._chunk
        if limit is None or limit >= len(digests):
            self._chunk = None
        else:
            self._chunk = (list_key, member, digests[limit:])
            digests = digests[:limit]
        self.left[list_key] -= len(digests)
        return list_key, member, digests


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
        self._spilled = PrefixSpill(prefix_at=0, block_records=min(SPILL_ROWS, batch_rows))
        """This pass's rows so far (see :func:`upsert_merge.spilled_row`), by row-id prefix."""
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
        self._handing: _HandOver | None = None
        """The last pass's flips not handed to the uploader yet (while the next is read)."""

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
        spilled = self._spilled
        spilled.add(spilled_row(row_id, blob, deleted=deleted))
        if spilled.records >= self._batch_rows:
            self._next_pass()
        elif self._handing is not None and not spilled.records % FEED_EVERY:
            self._feed(wait=False)

    def _new_key(self, audience: str) -> bytes:
        key = self.rows.list_key(audience)
        self._touched.add(key)
        packed = self._key_bytes[audience] = key.to_bytes(KEY_BYTES, "big")
        return packed

    # Merging a pass ------------------------------------------------------------------

    def apply(self) -> None:
        """Merge the gathered rows with the ledger and hand every change to the uploader.

        Called before every flush (checkpoint, end of input, a stop after bad input or a
        signal), so nothing read is left unmerged or unsent.
        """
        self._next_pass()
        self._feed(wait=True)

    def _next_pass(self) -> None:
        """Merge the rows gathered so far; their flips start going to the uploader.

        The last pass's flips are all handed over first: a pass that flips a pair again
        must find the earlier flip's request already with the uploader, which keeps the
        last change of a user.
        """
        if not self._recovered:
            self._recovered = True
            self._recover()
        self._feed(wait=True)
        if not self._spilled.records:
            return
        self._handing = _HandOver(self._merge())
        self._feed(wait=False)

    def _merge(self) -> Flips:
        """Commit this pass's rows to the ledger; return what flipped."""
        try:
            flips = merge_pass(self.rows, self._spilled, touched=self._touched)
        finally:
            self._spilled.clear()
        for key, count in flips.rows_deleted.items():  # committed: now they count
            self._rows_deleted[key] += count
        return flips

    # Sending -------------------------------------------------------------------------

    def _feed(self, *, wait: bool) -> None:
        """Hand the last pass's flips to the uploader: all (``wait``), or as much as its free
        request slots take (a list's first look-up on Pinterest may still wait).

        Whatever is not handed over when that fails is counted as failed (see _send).
        """
        handing = self._handing
        if handing is None:
            return
        try:
            while True:
                room = None if wait or self._uploader is None else self._uploader.room()
                if room == 0:
                    return  # the rest at the next look
                taken = handing.take(room)
                if taken is None:
                    break
                list_key, member, digests = taken
                self._send({list_key: digests}, member=member)
        except BaseException:
            self._count_failed(handing.left)
            self._end_hand_over()
            raise
        self._end_hand_over()  # all handed over

    def _end_hand_over(self) -> None:
        if self._handing is not None:
            self._handing.flips.close()
            self._handing = None

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
                    # From here on the uploader accounts for the chunk, even if this raises.
                    left[key] -= len(chunk)
                    uploader.change(audience, [digest.hex() for digest in chunk], member)
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

        They are merged into the ledger like any pass, so their flips are pending and the
        next run sends them, and each identifier whose change is thereby left unsent is
        counted as failed: a failed run never reports fewer failures than it had. So is
        what the last pass flipped and did not hand over yet (pending in the ledger too).
        """
        if self._handing is not None and not self._dry_run:
            self._count_failed(self._handing.left)
        self._end_hand_over()
        if not self._spilled.records or self._dry_run:
            return
        flips = self._merge()
        try:
            self._count_failed(flips.per_list)
        finally:
            flips.close()

    def close(self) -> None:
        """Close the ledger (a dry run's writes are rolled back) and delete the spills."""
        self._end_hand_over()
        self._spilled.close()
        self.rows.ledger.close()
