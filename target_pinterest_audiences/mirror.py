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
upstream query must not wipe a list, nothing of the snapshot is applied (no addition, no
removal, for any audience) when any audience would lose more than
``max_removal_fraction`` of its ledger rows; the run fails and says which. Applying the
additions alone would defeat the guard on a retry: the same removals would then be
measured against a bigger list and pass. So the counts come first, from a merge that sends
nothing; only when every audience passed does a second merge send the difference. (The
counting merge is skipped where the guard cannot trip: guard off, or no ledger rows.)

The snapshot lives in a temporary SQLite file and both sides are streamed in digest order
and merged, so memory stays flat for 10M-member audiences.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from target_pinterest_audiences import scratch
from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.errors import RemovalGuardError
from target_pinterest_audiences.ledger import CACHE_KIB, CHUNK_ROWS, Ledger
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.uploader import ADD, Uploader

logger = logging.getLogger(__name__)

KEEP_ROWS = 100_000
"""Differences up to this size are kept by the guard's counting pass (about 10 MB)."""

SNAPSHOT_FOLDER_PREFIX = "target-pinterest-audiences-snapshot-"
"""Snapshot folders in the temp directory are named ``<prefix><pid>-<random>``."""


class Change(enum.Enum):
    """What the diff decided for one member."""

    ADD = "add"
    REMOVE = "remove"
    UNCHANGED = "unchanged"


class Snapshot:
    """This run's membership per audience, on disk; the last record for a user wins."""

    def __init__(self) -> None:
        # Folders of runs that were killed (SIGKILL, OOM) go first; see ``scratch``.
        scratch.remove_stale(SNAPSHOT_FOLDER_PREFIX)
        self._directory = scratch.ScratchDirectory(SNAPSHOT_FOLDER_PREFIX)
        self._db = sqlite3.connect(self._directory.path / "snapshot.sqlite3")
        # Scratch data, rebuilt from the input on any re-run: no journal, no fsync.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        # Sorting works in this much memory (the ledger's 16 MiB), then spills to disk.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        # Appended in arrival order (the rowid) and sorted by SQLite's sorter when read, per
        # audience: a third of the cost of keeping a keyed table current record by record,
        # or of an index (whose table lookups, in digest order, jump all over the file).
        self._db.execute(
            "CREATE TABLE seen (audience INTEGER NOT NULL, hash BLOB NOT NULL,"
            " present INTEGER NOT NULL)"
        )
        self._keys: dict[str, int] = {}
        self._pending: list[tuple[int, bytes, int]] = []
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
        if self._pending:
            self._db.executemany("INSERT INTO seen VALUES (?, ?, ?)", self._pending)
            self._pending.clear()

    def present(self, audience: str) -> Iterator[bytes]:
        """The members of ``audience`` in this run, in digest order, streamed.

        A user's last record in the run decides: rows of one digest come in arrival order,
        and only the last of them counts.
        """
        self._write()
        key = self._keys.get(audience)
        if key is None:
            return
        cursor = self._db.execute(
            "SELECT hash, present FROM seen WHERE audience = ? ORDER BY hash, rowid", (key,)
        )
        last: bytes | None = None
        last_present = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            for digest, flag in rows:
                if digest != last:
                    if last is not None and last_present:
                        yield bytes(last)
                    last = digest
                last_present = flag
        if last is not None and last_present:
            yield bytes(last)

    def close(self) -> None:
        """Delete the scratch file and its folder."""
        self._db.close()
        self._directory.close()


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
    kept: list[tuple[str, bool]] | None = None
    """The counting pass's difference, (hex digest, add?), when small enough to keep."""

    def reset(self) -> None:
        """Forget the counts (a merge counts from zero)."""
        self.add = self.remove = self.unchanged = 0
        self.kept = None


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

    # Hook for the uploader: each acknowledgement is written to the ledger (rows were
    # marked uncertain before their requests were queued, in _send).

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

    def guard_can_trip(self, plan: AudiencePlan) -> bool:
        """Whether ``plan``'s audience could lose too many rows (it has rows to lose)."""
        return self._max_removal_fraction < 1.0 and plan.rows > 0

    def guard_violations(self, plans: list[AudiencePlan]) -> list[str]:
        """Audiences that would lose more than the allowed fraction of their ledger rows."""
        return [
            f"'{p.audience}' would lose {p.remove} of its {p.rows} members "
            f"({p.remove / p.rows:.0%})"
            for p in plans
            if self.guard_can_trip(p) and p.remove / p.rows > self._max_removal_fraction
        ]

    def apply(self, uploader: Uploader) -> None:
        """Count the difference, check the guard, and only then send it.

        The guard's counts come from a merge that sends nothing; a tripped guard leaves
        Pinterest and the ledger's members as they were, so the same snapshot trips it
        again until ``max_removal_fraction`` is raised. A second merge then sends the
        additions and removals as it finds them.
        """
        plans = [self._plan(audience, uploader) for audience in self.covered_audiences()]
        for plan in plans:
            if self._dry_run or self.guard_can_trip(plan):
                self._merge(plan, None)
        violations = self.guard_violations(plans)
        if violations:
            self._report_plans(plans, applied=False)
            msg = (
                "Mirror mode applied nothing of this snapshot (no additions and no removals, "
                "for any audience): "
                + "; ".join(violations)
                + f", more than max_removal_fraction={self._max_removal_fraction}. An empty or "
                "truncated upstream query must not wipe a list; if these removals are "
                "intended, re-run with a higher max_removal_fraction (1.0 turns the guard off)."
            )
            if not self._dry_run:
                raise RemovalGuardError(msg)
            logger.warning("Dry run: %s", msg)
        elif not self._dry_run:
            # Coverage first: if this run dies after sending, the next one still knows
            # which stream these audiences belong to.
            for stream, named in self.snapshot.streams.items():
                self.ledger.add_stream_audiences(stream, named)
            self.started = True
            for plan in plans:
                if plan.kept is not None:
                    self._send_kept(plan, uploader)
                else:
                    self._merge(plan, uploader)
            uploader.flush()
            self._report_plans(plans, applied=True)
        else:
            self._report_plans(plans, applied=True)
        self.applied = True

    def _plan(self, audience: str, uploader: Uploader) -> AudiencePlan:
        """Look the audience's list up, reconcile the ledger with it, count its rows."""
        if self._dry_run:
            list_id = self.ledger.list_id(audience)
        else:
            list_id = uploader.resolve(audience)
            self._reconcile_list(audience, list_id)
        before, rows = self.ledger.counts(audience)
        return AudiencePlan(audience, before=before, rows=rows)

    def _merge(self, plan: AudiencePlan, uploader: Uploader | None) -> None:
        """Diff one audience and count it; with an ``uploader``, send the changes too.

        Without one (the guard's counting pass), a small difference is kept, so that the
        sending pass can send it without merging the audience a second time.
        """
        plan.reset()
        audience = plan.audience
        chunks: dict[bool, list[str]] = {True: [], False: []}
        kept: list[tuple[str, bool]] | None = [] if uploader is None else None
        for digest, change in diff(self.ledger.members(audience), self.snapshot.present(audience)):
            if change is Change.UNCHANGED:
                plan.unchanged += 1
                continue
            member = change is Change.ADD
            if member:
                plan.add += 1
            else:
                plan.remove += 1
            if kept is not None:
                kept.append((digest.hex(), member))
                if len(kept) > KEEP_ROWS:
                    kept = None  # too many to hold: the sending pass merges again
                continue
            if uploader is not None:
                chunk = chunks[member]
                chunk.append(digest.hex())
                if len(chunk) >= CHUNK_ROWS:
                    self._send(uploader, audience, chunk, member=member)
                    chunks[member] = []
        if uploader is None:
            plan.kept = kept
            return
        for member, chunk in chunks.items():
            if chunk:
                self._send(uploader, audience, chunk, member=member)

    def _send_kept(self, plan: AudiencePlan, uploader: Uploader) -> None:
        """Send the difference the counting pass kept."""
        assert plan.kept is not None
        for member in (True, False):
            hashes = [value for value, is_member in plan.kept if is_member is member]
            for start in range(0, len(hashes), CHUNK_ROWS):
                self._send(
                    uploader, plan.audience, hashes[start : start + CHUNK_ROWS], member=member
                )

    def _send(self, uploader: Uploader, audience: str, hashes: list[str], *, member: bool) -> None:
        """Mark the rows uncertain (committed), then queue their request(s).

        Marking a merge chunk at once, in digest order, costs one commit per chunk instead
        of one per request, and every request still finds its rows marked before it leaves.
        """
        if not self._dry_run:
            self.ledger.mark_uncertain(audience, hashes)
        uploader.change(audience, hashes, member=member)

    def _report_plans(self, plans: list[AudiencePlan], *, applied: bool) -> None:
        for plan in plans:
            if not applied:
                counts = {"added": 0, "removed": 0, "unchanged": plan.before}
                after = plan.before
            else:
                counts = {"added": plan.add, "removed": plan.remove, "unchanged": plan.unchanged}
                after = (
                    plan.unchanged + plan.add
                    if self._dry_run
                    else self.ledger.counts(plan.audience)[0]
                )
            with self._report.updating(plan.audience) as report:
                report.mirror = {
                    "before": plan.before,
                    "after": after,
                    **counts,
                }
                if not self._dry_run:
                    # The ledger's confirmed rows: what the list holds, for the match rate.
                    report.ledger_members = after

    def close(self) -> None:
        """Drop the snapshot and close the ledger."""
        self.snapshot.close()
        self.ledger.close()
