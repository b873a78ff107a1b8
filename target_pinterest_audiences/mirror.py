"""Mirror mode: each run's records are the complete membership; send only the difference.

Most taps cannot say "this user left the audience": a SQL tap running
``select email from customers where ...`` emits the current members, every time. In mirror
mode the target keeps the members it sent in the :mod:`ledger` and, at the end of each run,
compares this run's snapshot with it:

- in the snapshot, confirmed in the ledger: unchanged, no request;
- in the snapshot, not confirmed: ADD;
- in the ledger (confirmed or uncertain), not in the snapshot: REMOVE.

A stream covers the audiences its records name in this run plus those it fed before; a
covered audience with no records this run is emptied. Because an empty or truncated
upstream query must not wipe a list, no removal is sent at all when any audience would lose
more than ``max_removal_fraction`` of its ledger rows; the run fails and says which.

The snapshot lives in a temporary SQLite file and both sides are streamed in digest order
and merged, so memory stays flat for 10M-member audiences.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.errors import RemovalGuardError
from target_pinterest_audiences.ledger import CHUNK_ROWS, Ledger
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.uploader import ADD, Uploader

logger = logging.getLogger(__name__)


class Change(enum.Enum):
    """What the diff decided for one member."""

    ADD = "add"
    REMOVE = "remove"
    UNCHANGED = "unchanged"


class Snapshot:
    """This run's membership per audience, on disk; the last record for a user wins."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="target-pinterest-audiences-")
        self._db = sqlite3.connect(Path(self._directory.name) / "snapshot.sqlite3")
        # Scratch data, rebuilt from the input on any re-run: no journal, no fsync.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE seen (audience INTEGER NOT NULL, hash BLOB NOT NULL,"
            " present INTEGER NOT NULL, PRIMARY KEY (audience, hash)) WITHOUT ROWID"
        )
        # Removals found by the merge wait here until the removal guard has passed.
        self._db.execute("CREATE TABLE removals (audience TEXT NOT NULL, hash BLOB NOT NULL)")
        self._keys: dict[str, int] = {}
        self._pending: list[tuple[int, bytes, int]] = []
        self._parked: list[tuple[str, bytes]] = []
        self.streams: dict[str, set[str]] = {}

    def observe_stream(self, stream: str) -> None:
        """A stream took part in this run (it sent a SCHEMA), even if it has no records."""
        self.streams.setdefault(stream, set())

    def record(self, stream: str, audience: str, hashes: list[str], present: bool) -> None:
        """Note that the users ``hashes`` are (not) in ``audience`` according to ``stream``."""
        named = self.streams.setdefault(stream, set())
        named.add(audience)
        key = self._keys.get(audience)
        if key is None:
            key = self._keys[audience] = len(self._keys)
        flag = 1 if present else 0
        self._pending.extend((key, bytes.fromhex(value), flag) for value in hashes)
        if len(self._pending) >= CHUNK_ROWS:
            self._write()

    def _write(self) -> None:
        self._db.executemany(
            "INSERT INTO seen VALUES (?, ?, ?) "
            "ON CONFLICT (audience, hash) DO UPDATE SET present = excluded.present",
            self._pending,
        )
        self._pending.clear()

    def present(self, audience: str) -> Iterator[bytes]:
        """The members of ``audience`` in this run, in digest order, streamed."""
        self._write()
        key = self._keys.get(audience)
        if key is None:
            return
        last = b""
        while True:
            rows = self._db.execute(
                "SELECT hash FROM seen WHERE audience = ? AND present = 1 AND hash > ? "
                "ORDER BY hash LIMIT ?",
                (key, last, CHUNK_ROWS),
            ).fetchall()
            if not rows:
                return
            for (digest,) in rows:
                yield bytes(digest)
            last = bytes(rows[-1][0])

    def park_removal(self, audience: str, digest: bytes) -> None:
        """Keep a removal for after the guard (on disk: there may be millions)."""
        self._parked.append((audience, digest))
        if len(self._parked) >= CHUNK_ROWS:
            self._write_parked()

    def _write_parked(self) -> None:
        self._db.executemany("INSERT INTO removals VALUES (?, ?)", self._parked)
        self._parked.clear()

    def removals(self, audience: str) -> Iterator[list[str]]:
        """The parked removals of ``audience``, as hex digests, in chunks."""
        self._write_parked()
        cursor = self._db.execute("SELECT hash FROM removals WHERE audience = ?", (audience,))
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield [bytes(digest).hex() for (digest,) in rows]

    def close(self) -> None:
        """Delete the scratch file."""
        self._db.close()
        self._directory.cleanup()


def diff(
    ledger_rows: Iterator[tuple[bytes, bool]], snapshot: Iterator[bytes]
) -> Iterator[tuple[bytes, Change]]:
    """Merge two digest-ordered streams into the change each member needs."""
    ledger_row = next(ledger_rows, None)
    member = next(snapshot, None)
    while ledger_row is not None or member is not None:
        if member is None or (ledger_row is not None and ledger_row[0] < member):
            assert ledger_row is not None
            yield ledger_row[0], Change.REMOVE
            ledger_row = next(ledger_rows, None)
        elif ledger_row is None or member < ledger_row[0]:
            yield member, Change.ADD
            member = next(snapshot, None)
        else:
            yield member, Change.UNCHANGED if ledger_row[1] else Change.ADD
            ledger_row = next(ledger_rows, None)
            member = next(snapshot, None)


@dataclass
class AudiencePlan:
    """The counted difference for one audience, before anything is sent."""

    audience: str
    before: int
    rows: int
    add: int = 0
    remove: int = 0
    unchanged: int = 0


class MirrorSync:
    """Plans and applies one mirror run."""

    def __init__(
        self,
        ledger: Ledger,
        report: RunReport,
        *,
        max_removal_fraction: float,
        dry_run: bool,
    ) -> None:
        self.ledger = ledger
        self.snapshot = Snapshot()
        self._report = report
        self._max_removal_fraction = max_removal_fraction
        self._dry_run = dry_run
        self.started = False
        """Something may have been sent (the difference is being applied)."""
        self.applied = False
        """The whole difference was applied: STATE may be emitted."""

    # The record path feeds the snapshot.

    def observe_stream(self, stream: str) -> None:
        """A stream takes part in this run (it sent a SCHEMA), even without records."""
        self.snapshot.observe_stream(stream)

    def record(self, stream: str, audience: str, hashes: list[str], present: bool) -> None:
        """A snapshot row: the users ``hashes`` are (not) in ``audience``."""
        self.snapshot.record(stream, audience, hashes, present)

    # Hooks for the uploader: the ledger is written around every request.

    def before_sending(self, audience: str, operation: Operation, hashes: list[str]) -> None:
        """Mark rows uncertain before a request that may or may not get applied."""
        self.ledger.mark_uncertain(audience, hashes)

    def acknowledged(
        self, audience: str, list_id: str, operation: Operation, hashes: list[str]
    ) -> None:
        """Record what Pinterest acknowledged."""
        if operation == ADD:
            self.ledger.confirm_added(audience, list_id, hashes)
        else:
            self.ledger.confirm_removed(audience, hashes)

    def coverage(self) -> Iterator[tuple[str, str]]:
        """(stream, audience) for every audience this run covers (see covered_audiences)."""
        for stream, named in self.snapshot.streams.items():
            for audience in sorted(named | self.ledger.stream_audiences(stream)):
                yield stream, audience

    def covered_audiences(self) -> list[str]:
        """Audiences named this run, plus those the run's streams fed before."""
        covered: set[str] = set()
        for stream, named in self.snapshot.streams.items():
            covered |= named | self.ledger.stream_audiences(stream)
        return sorted(covered)

    def _reconcile_list(self, audience: str, current_list_id: str | None) -> None:
        """Make the ledger describe the list Pinterest has now (dropping stale rows)."""
        if current_list_id is None:
            # No list on Pinterest: nobody is in it, whatever the ledger remembers.
            self.ledger.forget(audience)
        else:
            self.ledger.set_list_id(audience, current_list_id)

    def guard_violations(self, plans: list[AudiencePlan]) -> list[str]:
        """Audiences that would lose more than the allowed fraction of their ledger rows."""
        if self._max_removal_fraction >= 1.0:
            return []
        return [
            f"'{p.audience}' would lose {p.remove} of its {p.rows} members "
            f"({p.remove / p.rows:.0%})"
            for p in plans
            if p.rows and p.remove / p.rows > self._max_removal_fraction
        ]

    def apply(self, uploader: Uploader) -> None:
        """Send the difference: additions as the merge finds them, removals after the guard.

        One merge pass per audience sends the additions and parks the removals on disk;
        only when every audience passed the removal guard are the removals sent.
        """
        if not self._dry_run:
            # Coverage first: if this run dies after sending, the next one still knows
            # which stream these audiences belong to.
            for stream, named in self.snapshot.streams.items():
                self.ledger.add_stream_audiences(stream, named)
        self.started = True
        plans = [self._merge(audience, uploader) for audience in self.covered_audiences()]
        violations = self.guard_violations(plans)
        if not violations and not self._dry_run:
            for plan in plans:
                for hashes in self.snapshot.removals(plan.audience):
                    uploader.change(plan.audience, hashes, member=False)
        uploader.flush()
        self._report_plans(plans, removals_sent=not violations)
        self.applied = True
        if violations:
            msg = (
                "Mirror mode sent no removals: "
                + "; ".join(violations)
                + f", more than max_removal_fraction={self._max_removal_fraction}. An empty or "
                "truncated upstream query must not wipe a list; if these removals are "
                "intended, re-run with a higher max_removal_fraction (1.0 turns the guard off)."
            )
            if self._dry_run:
                logger.warning("Dry run: %s", msg)
            else:
                raise RemovalGuardError(msg)

    def _merge(self, audience: str, uploader: Uploader) -> AudiencePlan:
        """Diff one audience: send its additions now, park its removals, count everything."""
        if self._dry_run:
            list_id = self.ledger.list_id(audience)
        else:
            list_id = uploader.resolve(audience)
            self._reconcile_list(audience, list_id)
        before, rows = self.ledger.counts(audience)
        plan = AudiencePlan(audience, before=before, rows=rows)
        additions: list[str] = []
        for digest, change in diff(self.ledger.members(audience), self.snapshot.present(audience)):
            if change is Change.UNCHANGED:
                plan.unchanged += 1
            elif change is Change.REMOVE:
                plan.remove += 1
                self.snapshot.park_removal(audience, digest)
            else:
                plan.add += 1
                additions.append(digest.hex())
                if len(additions) >= CHUNK_ROWS:
                    uploader.change(audience, additions, member=True)
                    additions = []
        if additions:
            uploader.change(audience, additions, member=True)
        return plan

    def _report_plans(self, plans: list[AudiencePlan], *, removals_sent: bool) -> None:
        for plan in plans:
            removed = plan.remove if removals_sent else 0
            after = (
                plan.unchanged + plan.add + (plan.remove - removed)
                if self._dry_run
                else self.ledger.counts(plan.audience)[0]
            )
            with self._report.lock:
                report = self._report.audience(plan.audience)
                report.mirror = {
                    "before": plan.before,
                    "after": after,
                    "added": plan.add,
                    "removed": removed,
                    "unchanged": plan.unchanged,
                }
                if not self._dry_run:
                    # The ledger's confirmed rows: what the list holds, for the match rate.
                    report.ledger_members = after

    def close(self) -> None:
        """Drop the snapshot and close the ledger."""
        self.snapshot.close()
        self.ledger.close()
