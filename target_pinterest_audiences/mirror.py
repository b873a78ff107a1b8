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

The snapshot lives in a scratch file (:mod:`snapshot`); both sides are compared one range
of digest prefixes at a time (about :data:`GROUP_ROWS` rows), so memory stays flat for
10M-member audiences.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.errors import RemovalGuardError
from target_pinterest_audiences.ledger import CHUNK_ROWS, Ledger, MemberRange
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.snapshot import Snapshot, prefix_groups
from target_pinterest_audiences.uploader import ADD, Uploader

logger = logging.getLogger(__name__)

KEEP_ROWS = 100_000
"""Differences up to this size are kept by the guard's counting pass (about 10 MB)."""

GROUP_ROWS = 65_536
"""About this many ledger rows and snapshot entries are compared at a time (see diff)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """What one prefix group of an audience needs: digests to add and to remove, sorted."""

    add: list[bytes]
    remove: list[bytes]
    unchanged: int


def diff(ledger_rows: MemberRange, present: set[bytes]) -> Difference:
    """Compare one prefix group's ledger rows with its members in this run's snapshot.

    - in the snapshot, confirmed in the ledger: unchanged, no request;
    - in the snapshot, not confirmed (absent, or uncertain: a request that may not have
      arrived): ADD;
    - in the ledger (confirmed or uncertain), not in the snapshot: REMOVE.

    Set operations, in C, where a merge of both sides in digest order was a Python loop.
    """
    rows = ledger_rows.rows
    confirmed = rows - ledger_rows.uncertain if ledger_rows.uncertain else rows
    add = sorted(present - confirmed)
    return Difference(add, sorted(rows - present), len(present) - len(add))


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

    # The record path feeds the snapshot directly (see SinkContext.mirror).

    def observe_stream(self, stream: str) -> None:
        """A stream takes part in this run (it sent a SCHEMA), even without records."""
        self.snapshot.observe_stream(stream)

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
                uploader.send_now(plan.audience)  # its last requests go while the next merges
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
        groups = prefix_groups(plan.rows + self.snapshot.entries(audience), GROUP_ROWS)
        chunks: dict[bool, list[str]] = {True: [], False: []}
        kept: list[tuple[str, bool]] | None = [] if uploader is None else None
        for low, high, present in self.snapshot.members(audience, groups):
            difference = diff(self.ledger.members_between(audience, low, high), present)
            plan.unchanged += difference.unchanged
            plan.add += len(difference.add)
            plan.remove += len(difference.remove)
            for member, digests in ((True, difference.add), (False, difference.remove)):
                if kept is not None:
                    kept.extend((digest.hex(), member) for digest in digests)
                    if len(kept) > KEEP_ROWS:
                        kept = None  # too many to hold: the sending pass merges again
                elif uploader is not None:
                    chunk = chunks[member]
                    for digest in digests:
                        chunk.append(digest.hex())
                        if len(chunk) >= CHUNK_ROWS:
                            self._send(uploader, audience, chunk, member=member)
                            chunk = chunks[member] = []
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
