"""From membership changes to Pinterest requests: merge, chunk, order, send concurrently.

Changes arrive one user at a time. Per audience we keep two pending sets, "to add" and
"to remove"; a change moves the hash from one to the other, so the last change for a user
wins and duplicates are sent once. A set that reaches ``records_per_request`` becomes one
PATCH, sent by a pool of threads while the next records are read and hashed.

Ordering: ADD and ADD commute, as do REMOVE and REMOVE, and requests about different
users commute whatever their kind. Only an ADD and a REMOVE of the same user must not be
reordered, so a request waits only while a request of the other kind carrying one of its
users is still in flight for that list. A list being created holds other requests to it
until it has an id. Waiting requests queue per list; the reading thread never waits for a
list, only for a free slot.

A list that does not exist yet has nobody to remove: REMOVEs before it exists are not sent,
and for a list created in this run only the users this run may have added to it are
removed (a compact filter, ``bloom``, remembers them). Both count as "removals not needed".

Nothing is acknowledged until Pinterest said 2xx. :meth:`Uploader.flush` sends what is
pending and waits for every request; the target calls it before emitting STATE, which is
what makes state at-least-once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from target_pinterest_audiences.bloom import DigestFilter
from target_pinterest_audiences.customer_lists import (
    CustomerLists,
    ListRef,
    Operation,
    duplicate_message,
)
from target_pinterest_audiences.errors import (
    DuplicateListError,
    PinterestAPIError,
    SyncFailedError,
    TargetError,
)
from target_pinterest_audiences.report import RunReport

logger = logging.getLogger(__name__)

ADD: Operation = "ADD"
REMOVE: Operation = "REMOVE"
_OTHER: dict[Operation, Operation] = {ADD: REMOVE, REMOVE: ADD}

# Statuses for which Pinterest's complaint may be about some of the records (invalid value,
# payload too large): splitting the request isolates them instead of failing all.
_SPLITTABLE_STATUSES = frozenset({400, 413})
_PAYLOAD_TOO_LARGE = 413
# Past this many records rejected one by one from a single request, the problem is not in
# the records but in the request: stop instead of dropping the whole batch record by record.
MAX_INDIVIDUAL_REJECTIONS = 20

Acknowledged = Callable[[str, str, Operation, list[str]], None]
"""Callback(audience, list_id, operation, hashes) run after Pinterest acknowledged them."""


@dataclass(eq=False)  # compared and hashed by identity: tasks live in sets
class _Task:
    """One request's records, and how many of them are settled (sent or refused)."""

    state: _AudienceState
    operation: Operation
    records: list[str]
    users: frozenset[str]
    settled: int = 0
    rejected: int = 0


@dataclass
class _AudienceState:
    name: str
    pending: dict[Operation, set[str]] = field(default_factory=lambda: {ADD: set(), REMOVE: set()})
    # The requests in flight for this list, per kind (at most the pool size).
    inflight: dict[Operation, set[_Task]] = field(
        default_factory=lambda: {ADD: set(), REMOVE: set()}
    )
    resolved: bool = False
    list_id: str | None = None
    creating: bool = False
    # For a list this run creates: who was added to it, so that nobody else is removed.
    added: DigestFilter | None = None
    # Requests that must wait for an earlier one (see Uploader._submit), in order.
    queue: deque[tuple[Operation, list[str]]] = field(default_factory=deque)


class Uploader:
    """Turns membership changes into Pinterest requests; see the module docstring."""

    def __init__(
        self,
        lists: CustomerLists | None,
        report: RunReport,
        *,
        records_per_request: int,
        max_parallel_requests: int = 4,
        create_audiences: bool = True,
        max_pending_identifiers: int = 1_000_000,
        on_acknowledged: Acknowledged | None = None,
    ) -> None:
        """``lists=None`` is a dry run: everything is counted, nothing is sent."""
        self._lists = lists
        self._report = report
        self._records_per_request = records_per_request
        self._create_audiences = create_audiences
        self._max_pending = max_pending_identifiers
        self._on_acknowledged = on_acknowledged
        self._audiences: dict[str, _AudienceState] = {}
        self._pending_total = 0
        # Reentrant: a SIGTERM handler runs on the main thread and may flush while the
        # interrupted frame holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self._inflight_total = 0
        self._queued = 0
        self._max_inflight = max(2, 2 * max_parallel_requests)
        self._errors: list[TargetError] = []
        self._directory: dict[str, list[str]] | None = None
        self._audience_by_list: dict[str, str] | None = None
        self._executor = (
            ThreadPoolExecutor(max_parallel_requests, thread_name_prefix="pinterest-request")
            if lists is not None
            else None
        )

    # Main thread: accepting changes ---------------------------------------------------

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        """Record that the users ``hashes`` should (not) be in ``audience``.

        Every hash is in a pending set before anything here can raise (an earlier request
        failed, the list cannot be looked up), so each is counted exactly once: as
        acknowledged, as not needed, or as failed by :meth:`close`.
        """
        state = self._audiences.get(audience) or self._state(audience)
        if not member and state.added is not None:
            self._remove_from_new_list(state, hashes)
            return
        operation = ADD if member else REMOVE
        target = state.pending[operation]
        other = state.pending[_OTHER[operation]]
        before = len(target) + len(other)
        for value in hashes:
            other.discard(value)
            target.add(value)
        self._pending_total += len(target) + len(other) - before
        while len(target) >= self._records_per_request:
            self._dispatch(state, operation)
        if self._pending_total > self._max_pending:
            # Many audiences each holding a partial request: bound the memory they use.
            self._dispatch_all(
                max(self._audiences.values(), key=lambda s: sum(map(len, s.pending.values())))
            )

    def _remove_from_new_list(self, state: _AudienceState, hashes: Iterable[str]) -> None:
        """Removals from a list this run created: only of users it may have added.

        The list started empty this run, so anyone never sent to it in an ADD is not in
        it: removing them would spend write requests on nothing and report removals that
        did not happen. They are counted as removals not needed. The filter errs toward
        "maybe added", so a needed REMOVE is never dropped.
        """
        assert state.added is not None
        adds, removes = state.pending[ADD], state.pending[REMOVE]
        before = len(adds) + len(removes)
        absent = 0
        maybe_added = state.added.maybe_added_one
        for value in hashes:
            adds.discard(value)  # a pending ADD never reached the list
            if maybe_added(value):
                removes.add(value)
            else:
                absent += 1
        self._pending_total += len(adds) + len(removes) - before
        if absent:
            self._report.count(state.name, already_absent=absent)
        while len(removes) >= self._records_per_request:
            self._dispatch(state, REMOVE)

    def send_now(self, audience: str) -> None:
        """Send what is pending for ``audience``, partial requests too, without waiting.

        For a caller that knows no more changes for the audience are coming (mirror mode,
        after merging it): its requests then overlap the work on the next audiences
        instead of all leaving at :meth:`flush`.
        """
        state = self._audiences.get(audience)
        if state is not None:
            self._dispatch_all(state)

    def flush(self) -> None:
        """Send everything pending, wait for every request, raise if any failed."""
        for state in list(self._audiences.values()):
            self._dispatch_all(state)
        with self._cond:
            self._cond.wait_for(lambda: self._inflight_total == 0 and self._queued == 0)
        self._raise_if_failed()

    def close(self) -> None:
        """Stop the request threads (after a flush, or when giving up).

        Whatever was read and is not acknowledged by now never will be in this run: still
        pending, queued, or in a request that was cancelled. It is counted as failed, so a
        run that stopped early never reports fewer failures than it had.
        """
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._count_unacknowledged()

    def _count_unacknowledged(self) -> None:
        with self._cond:
            for state in self._audiences.values():
                left = sum(len(pending) for pending in state.pending.values())
                left += sum(len(records) for _, records in state.queue)
                left += sum(
                    len(task.records) - task.settled
                    for tasks in state.inflight.values()
                    for task in tasks
                )
                for pending in state.pending.values():
                    pending.clear()
                state.queue.clear()
                for tasks in state.inflight.values():
                    tasks.clear()
                if left:
                    self._report.count(state.name, failed=left)
            self._pending_total = 0
            self._queued = 0

    def room(self) -> int:
        """About how many identifiers :meth:`change` takes now without waiting for a slot.

        For a caller with more to hand over that has other work meanwhile (upsert mode
        reading its next pass). One slot is kept back for a request that a partial set
        of the same list completes.
        """
        if self._executor is None:  # a dry run never waits
            return 1 << 62
        with self._cond:
            free = self._max_inflight - self._inflight_total - self._queued
        return max(0, free - 1) * self._records_per_request

    def list_ids(self) -> dict[str, str]:
        """Audience name -> customer list id, for every list written or found this run."""
        return {s.name: s.list_id for s in self._audiences.values() if s.list_id is not None}

    def _state(self, audience: str) -> _AudienceState:
        state = self._audiences[audience] = _AudienceState(audience)
        self._report.count(audience)  # in the report from the first change on
        return state

    def _dispatch_all(self, state: _AudienceState) -> None:
        for operation in (ADD, REMOVE):
            while state.pending[operation]:
                self._dispatch(state, operation)

    def _dispatch(self, state: _AudienceState, operation: Operation) -> None:
        """Send up to one request's worth of ``state``'s pending ``operation``.

        The list is resolved and failures are checked before any record leaves the
        pending set; records taken and then not sent (an error while waiting) are counted
        as failed, never silently dropped.
        """
        self._raise_if_failed()
        if self._lists is not None and not state.resolved:
            self._resolve(state)
        records = self._take(state, operation, self._records_per_request)
        if not records:  # resolving found no list: its pending removals were not needed
            return
        if operation == ADD and state.added is not None:
            # Before any later change is read: a REMOVE of these users must find them.
            state.added.add(records)
        if self._lists is None or self._executor is None:
            self._count_acknowledged(state.name, operation, records)
            return
        try:
            self._submit(state, operation, records)
        except BaseException:
            self._report.count(state.name, failed=len(records))
            raise

    def _take(self, state: _AudienceState, operation: Operation, limit: int) -> list[str]:
        pending = state.pending[operation]
        if len(pending) <= limit:
            # Everything: clear() also gives the set's table back, which a set emptied by
            # pop() keeps (half a megabyte for one that held 10,000 identifiers, per list
            # and operation, for the rest of the run).
            records = list(pending)
            pending.clear()
        else:
            records = [pending.pop() for _ in range(limit)]
        self._pending_total -= len(records)
        return records

    def _submit(self, state: _AudienceState, operation: Operation, records: list[str]) -> None:
        """Queue a request for the list; it leaves as soon as nothing orders it behind.

        The reading thread waits only for a free slot (bounded memory), never for one
        list: a request that must wait (its list is being created, or a request of the
        other kind carrying one of its users is in flight) waits in the list's queue, and
        the request thread that unblocks it sends it.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._inflight_total + self._queued < self._max_inflight)
            self._raise_if_failed()
            state.queue.append((operation, records))
            self._queued += 1
            self._release(state)

    def _release(self, state: _AudienceState) -> None:
        """Send the list's queued requests that may go now, in order (caller holds the lock)."""
        assert self._executor is not None
        queue = state.queue
        while queue and not state.creating:
            operation, records = queue[0]
            if self._errors:  # the run failed: send nothing more, count what is left
                self._report.count(state.name, failed=len(records))
            elif state.list_id is None and operation == REMOVE:
                # No list, so nobody to remove: the desired state already holds.
                self._report.count(state.name, already_absent=len(records))
            else:
                users = frozenset(records)
                if any(not users.isdisjoint(t.users) for t in state.inflight[_OTHER[operation]]):
                    return  # wait for the request that carries the same users
                if state.list_id is None:
                    state.creating = True
                task = _Task(state, operation, records, users)
                state.inflight[operation].add(task)
                self._inflight_total += 1
                self._executor.submit(self._run, task)
            queue.popleft()
            self._queued -= 1
        self._cond.notify_all()

    def resolve(self, audience: str) -> str | None:
        """The id of the audience's list on Pinterest, or None if it has none (yet)."""
        state = self._audiences.get(audience) or self._state(audience)
        if self._lists is not None and not state.resolved:
            self._resolve(state)
        return state.list_id

    def _resolve(self, state: _AudienceState) -> None:
        """Find the audience's list by exact name (all lists are read once per run)."""
        assert self._lists is not None
        if self._directory is None:
            self._directory = self._lists.ids_by_name()
            found = sum(len(ids) for ids in self._directory.values())
            logger.info("Found %d customer lists in the ad account", found)
        ids = self._directory.get(state.name, [])
        if len(ids) > 1:
            raise DuplicateListError(duplicate_message(state.name, ids))
        state.resolved = True
        if not ids:
            # This run creates the list, so it starts empty: nobody pending removal so far
            # was ever in it (nothing was sent to it yet).
            state.added = DigestFilter()
            removals = state.pending[REMOVE]
            if removals:
                self._report.count(state.name, already_absent=len(removals))
                self._pending_total -= len(removals)
                removals.clear()
        if ids:
            state.list_id = ids[0]
            with self._report.updating(state.name) as report:
                report.list_id = ids[0]
            if self._create_audiences:
                self._ensure_audience(state.name, ids[0])

    def _ensure_audience(self, name: str, list_id: str) -> None:
        """Give an existing list its audience if a crashed run created the list only."""
        assert self._lists is not None
        if self._audience_by_list is None:
            self._audience_by_list = self._lists.audience_ids_by_list()
        audience_id = self._audience_by_list.get(list_id)
        created = False
        if audience_id is None:
            audience_id = self._lists.create_audience(name, list_id)
            self._audience_by_list[list_id] = audience_id
            created = True
        with self._report.updating(name) as report:
            report.audience_id = audience_id
            report.audience_created = created

    # Request threads ---------------------------------------------------------------------

    def _run(self, task: _Task) -> None:
        """One request thread's job: send ``task`` (splitting if needed), then release it."""
        state = task.state
        try:
            self._write(task)
        except Exception as exc:  # a bug must still fail the run, not vanish in a thread
            error = exc if isinstance(exc, TargetError) else None
            if error is None:
                logger.exception("Unexpected error sending to Pinterest")
                error = TargetError(f"unexpected {type(exc).__name__}: {exc}")
            self._report.count(state.name, failed=len(task.records) - task.settled)
            with self._cond:
                self._errors.append(error)
        finally:
            with self._cond:
                state.inflight[task.operation].discard(task)
                self._inflight_total -= 1
                state.creating = False
                self._release(state)

    def _write(self, task: _Task) -> None:
        state = task.state
        creating = state.list_id is None
        self._write_splitting(task, task.records)
        if creating and state.list_id is not None and self._create_audiences:
            self._create_audience(state.name, state.list_id)

    def _write_splitting(self, task: _Task, records: list[str]) -> None:
        """Send one request; if Pinterest objects to the records, halve until isolated.

        Creates the list when it has no id yet (only ever one thread per list does, see
        ``creating``), so a refused creation is split like a refused update: the first
        half that succeeds creates the list, the rest are added to it.
        """
        assert self._lists is not None
        state, operation = task.state, task.operation
        try:
            if state.list_id is None:
                self._create_list(state, operation, records)
            else:
                self._lists.update(state.list_id, operation, records)
                self._acknowledge(state.name, state.list_id, operation, records)
        except PinterestAPIError as exc:
            if exc.status not in _SPLITTABLE_STATUSES:
                raise
            if len(records) > 1:
                if exc.status == _PAYLOAD_TOO_LARGE:
                    self._shrink_requests(len(records) // 2)
                middle = len(records) // 2
                self._write_splitting(task, records[:middle])
                self._write_splitting(task, records[middle:])
                return
            task.rejected += 1
            if task.rejected > MAX_INDIVIDUAL_REJECTIONS:
                msg = (
                    f"Pinterest rejected more than {MAX_INDIVIDUAL_REJECTIONS} records of one "
                    f"request for '{state.name}' one by one ({exc}); this looks like a problem "
                    "with the request, not the records"
                )
                raise PinterestAPIError(msg, status=exc.status, code=exc.code) from exc
            reason = f"http_{exc.status}" + (f"_code_{exc.code}" if exc.code is not None else "")
            self._report.count_reason(state.name, "rejected_by_pinterest", reason)
        task.settled += len(records)

    def _create_list(self, state: _AudienceState, operation: Operation, records: list[str]) -> None:
        assert self._lists is not None
        ref: ListRef = self._lists.create(state.name, records)
        with self._cond:
            # Other requests to the list may go now; its audience is created meanwhile.
            state.list_id = ref.id
            state.creating = False
            self._release(state)
        with self._report.updating(state.name) as report:
            report.list_id = ref.id
            report.list_created = True
        logger.info("Created customer list '%s' (id %s)", state.name, ref.id)
        self._acknowledge(state.name, ref.id, operation, records)

    def _create_audience(self, name: str, list_id: str) -> None:
        """Make the new list targetable (a CUSTOMER_LIST audience on it)."""
        assert self._lists is not None
        audience_id = self._lists.create_audience(name, list_id)
        with self._report.updating(name) as report:
            report.audience_id = audience_id
            report.audience_created = True
        logger.info("Created audience '%s' (id %s) on list %s", name, audience_id, list_id)

    def _shrink_requests(self, size: int) -> None:
        with self._cond:
            if size < self._records_per_request:
                logger.warning(
                    "Pinterest said the payload is too large; sending at most %d records per "
                    "request from now on (lower records_per_request to avoid the extra requests)",
                    max(1, size),
                )
                self._records_per_request = max(1, size)

    def _acknowledge(
        self, audience: str, list_id: str, operation: Operation, records: list[str]
    ) -> None:
        if self._on_acknowledged is not None:
            self._on_acknowledged(audience, list_id, operation, records)
        self._count_acknowledged(audience, operation, records)

    def _count_acknowledged(self, audience: str, operation: Operation, records: list[str]) -> None:
        if operation == ADD:
            self._report.count(audience, requests=1, added=len(records))
        else:
            self._report.count(audience, requests=1, removed=len(records))

    def _raise_if_failed(self) -> None:
        with self._cond:
            if not self._errors:
                return
            errors = list(self._errors)
        first = errors[0]
        more = f" (and {len(errors) - 1} more failed requests)" if len(errors) > 1 else ""
        msg = (
            f"Pinterest did not acknowledge every change: {first}{more}. No STATE was emitted "
            "for the unacknowledged records; re-running the same input is safe (ADD and "
            "REMOVE are idempotent)."
        )
        if isinstance(first, PinterestAPIError) and not isinstance(first, SyncFailedError):
            raise SyncFailedError(msg) from first
        raise SyncFailedError(msg)
