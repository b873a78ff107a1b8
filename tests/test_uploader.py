"""The uploader, in process, against a fake of the customer lists it writes to.

The request threads are the uploader's own. The fake records, in order, every call that
reaches it and can hold calls on an event, so a test decides the interleaving itself. Tests
wait only on events; every timeout is a failure guard that a passing test never reaches.

Some tests need to show that a request did *not* reach the fake while another was held.
They send a request to a second list after it and wait for that one to arrive: with two
request threads, one of them held, the pool runs its work in submission order on the other
thread, so a request wrongly let through would have reached the fake first.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, cast

import pytest

from target_pinterest_audiences.customer_lists import CustomerLists, ListRef, Operation
from target_pinterest_audiences.errors import (
    DuplicateListError,
    PermissionDeniedError,
    PinterestAPIError,
    RetriesExhaustedError,
    SyncFailedError,
)
from target_pinterest_audiences.report import AudienceReport, RunReport
from target_pinterest_audiences.uploader import (
    ADD,
    MAX_INDIVIDUAL_REJECTIONS,
    REMOVE,
    Acknowledged,
    Uploader,
)

GUARD_SECONDS = 10.0
"""Failure guard only: how long a test waits for an event that must happen."""


def h(name: str) -> str:
    """A stand-in for a SHA-256 hex digest: the uploader treats hashes as opaque strings."""
    return f"hash-{name}"


H1, H2, H3, H4, H5, H6 = (h(str(n)) for n in range(1, 7))


# The fake ----------------------------------------------------------------------------------

CallKind = Literal["create", "update", "create_audience"]


@dataclass(frozen=True)
class Call:
    """One call that reached the fake."""

    kind: CallKind
    list_name: str
    operation: Operation
    records: frozenset[str]


@dataclass(frozen=True)
class Event:
    """One entry of the timeline: a call entering, returning or refused, or a callback."""

    phase: Literal["enter", "exit", "refused", "sending", "acknowledged"]
    list_name: str
    operation: Operation
    records: frozenset[str]
    list_id: str | None = None


Match = Callable[[Call], bool]
Refusal = Callable[[Call], Exception | None]


class Gate:
    """Holds the first call that matches until opened, and says when it arrived."""

    def __init__(self, match: Match) -> None:
        self.match = match
        self.taken = False
        self.arrived = threading.Event()
        self._opened = threading.Event()

    def open(self) -> None:
        self._opened.set()

    def wait_arrived(self) -> None:
        assert self.arrived.wait(GUARD_SECONDS), "the held call never reached the fake"

    def pass_through(self) -> None:
        self.arrived.set()
        # Guard only: a test that forgets to open the gate fails instead of hanging.
        if not self._opened.wait(GUARD_SECONDS):
            raise AssertionError("gate never opened")


class FakeLists:
    """Stands in for CustomerLists: in-memory lists, and a timeline of what reached it.

    A call is applied when it returns (as Pinterest answers after applying), so the
    membership it ends with is what the order of calls made it.
    """

    def __init__(
        self, lists: dict[str, list[str]] | None = None, audiences: dict[str, str] | None = None
    ) -> None:
        self._cond = threading.Condition()
        self.names: dict[str, list[str]] = {}
        self.members: dict[str, set[str]] = {}
        self._name_of: dict[str, str] = {}
        self.audiences: dict[str, str] = dict(audiences or {})
        self.timeline: list[Event] = []
        self.calls: list[Call] = []
        self.gates: list[Gate] = []
        self.refusals: list[Refusal] = []
        self._created = 0
        for name, ids in (lists or {}).items():
            for list_id in ids:
                self._add_list(name, list_id, set())

    # Scripting the fake

    def hold(self, match: Match) -> Gate:
        gate = Gate(match)
        self.gates.append(gate)
        return gate

    def refuse(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)

    def note(self, event: Event) -> None:
        with self._cond:
            self.timeline.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, GUARD_SECONDS), "timed out waiting on the fake"

    def wait_for_event(self, phase: str, list_name: str) -> None:
        self.wait_for(
            lambda: any(e.phase == phase and e.list_name == list_name for e in self.timeline)
        )

    def history(self, record: str) -> list[tuple[str, Operation]]:
        """(phase, operation) of every call carrying ``record``, in the order they happened."""
        with self._cond:
            return [
                (e.phase, e.operation)
                for e in self.timeline
                if record in e.records and e.phase in ("enter", "exit", "refused")
            ]

    def lists_named(self, name: str) -> list[str]:
        with self._cond:
            return list(self.names.get(name, []))

    def members_of(self, name: str) -> set[str]:
        (list_id,) = self.lists_named(name)
        with self._cond:
            return set(self.members[list_id])

    def open_all(self) -> None:
        for gate in self.gates:
            gate.open()

    # The CustomerLists interface the uploader uses

    def ids_by_name(self) -> dict[str, list[str]]:
        with self._cond:
            return {name: list(ids) for name, ids in self.names.items()}

    def audience_ids_by_list(self) -> dict[str, str]:
        with self._cond:
            return dict(self.audiences)

    def create(self, name: str, records: list[str]) -> ListRef:
        self._enter(Call("create", name, ADD, frozenset(records)))
        with self._cond:
            self._created += 1
            list_id = f"new-{self._created}"
            self._add_list(name, list_id, set(records))
            self.timeline.append(Event("exit", name, ADD, frozenset(records), list_id))
            self._cond.notify_all()
        return ListRef(list_id, name)

    def update(self, list_id: str, operation: Operation, records: list[str]) -> None:
        name = self._name_of[list_id]
        self._enter(Call("update", name, operation, frozenset(records)))
        with self._cond:
            if operation == ADD:
                self.members[list_id] |= set(records)
            else:
                self.members[list_id] -= set(records)
            self.timeline.append(Event("exit", name, operation, frozenset(records), list_id))
            self._cond.notify_all()

    def create_audience(self, name: str, list_id: str) -> str:
        with self._cond:
            self.calls.append(Call("create_audience", name, ADD, frozenset()))
            audience_id = self.audiences[list_id] = f"audience-of-{list_id}"
            return audience_id

    def _add_list(self, name: str, list_id: str, members: set[str]) -> None:
        self.names.setdefault(name, []).append(list_id)
        self.members[list_id] = members
        self._name_of[list_id] = name

    def _enter(self, call: Call) -> None:
        with self._cond:
            self.calls.append(call)
            self.timeline.append(Event("enter", call.list_name, call.operation, call.records))
            self._cond.notify_all()
            gates = [gate for gate in self.gates if not gate.taken and gate.match(call)]
            for gate in gates:
                gate.taken = True
            refusal = next((e for r in self.refusals if (e := r(call)) is not None), None)
        for gate in gates:
            gate.pass_through()
        if refusal is not None:
            self.note(Event("refused", call.list_name, call.operation, call.records))
            raise refusal


def is_call(kind: CallKind, name: str, operation: Operation | None = None) -> Match:
    return lambda call: (
        call.kind == kind
        and call.list_name == name
        and (operation is None or call.operation == operation)
    )


def carrying(record: str, error: Exception) -> Refusal:
    """Refuse every request that carries ``record``."""
    return lambda call: error if record in call.records else None


# Wiring ------------------------------------------------------------------------------------


class Uploaders:
    """Builds uploaders on a fake (or dry runs) and stops them when the test ends."""

    def __init__(self, report: RunReport) -> None:
        self.report = report
        self._built: list[tuple[Uploader, FakeLists | None]] = []

    def make(
        self,
        fake: FakeLists | None,
        *,
        records_per_request: int = 2,
        max_parallel_requests: int = 2,
        create_audiences: bool = True,
        max_pending_identifiers: int = 1_000_000,
        on_acknowledged: Acknowledged | None = None,
    ) -> Uploader:
        uploader = Uploader(
            # The fake has CustomerLists' interface without an HTTP client underneath.
            cast(CustomerLists | None, fake),
            self.report,
            records_per_request=records_per_request,
            max_parallel_requests=max_parallel_requests,
            create_audiences=create_audiences,
            max_pending_identifiers=max_pending_identifiers,
            on_acknowledged=on_acknowledged,
        )
        self._built.append((uploader, fake))
        return uploader

    def close(self) -> None:
        for uploader, fake in self._built:
            if fake is not None:
                fake.open_all()  # a failed test must not leave a request thread held
            uploader.close()


@pytest.fixture
def report() -> RunReport:
    return RunReport()


@pytest.fixture
def uploaders(report: RunReport) -> Iterator[Uploaders]:
    built = Uploaders(report)
    yield built
    built.close()


def audience(report: RunReport, name: str) -> AudienceReport:
    return report.audiences[name]


def existing(*names: str) -> FakeLists:
    """A fake account where each named list exists, with its audience."""
    return FakeLists(
        {name: [f"list-{name}"] for name in names},
        {f"list-{name}": f"audience-{name}" for name in names},
    )


# Merging -----------------------------------------------------------------------------------


def test_the_last_change_for_a_user_wins_and_duplicates_are_sent_once(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    uploader = uploaders.make(fake, records_per_request=100)
    uploader.change("a", [H1, H2, H2], True)
    uploader.change("a", [H1], False)
    uploader.change("a", [H3], False)
    uploader.change("a", [H3, H3], True)
    uploader.change("a", [H4], True)
    uploader.change("a", [H4], False)
    uploader.flush()

    sent = [(c.operation, c.records) for c in fake.calls if c.kind == "update"]
    assert sorted(sent) == [(ADD, frozenset({H2, H3})), (REMOVE, frozenset({H1, H4}))]
    assert fake.members_of("a") == {H2, H3}
    counts = audience(report, "a")
    assert (counts.added, counts.removed, counts.requests) == (2, 2, 2)


def test_merging_is_per_audience(uploaders: Uploaders) -> None:
    fake = existing("a", "b")
    fake.members["list-b"].add(H1)
    uploader = uploaders.make(fake, records_per_request=100)
    uploader.change("a", [H1], True)
    uploader.change("b", [H1], False)
    uploader.flush()
    assert fake.members_of("a") == {H1}
    assert fake.members_of("b") == set()


def test_a_full_request_leaves_at_once_and_the_rest_at_flush(
    uploaders: Uploaders, report: RunReport
) -> None:
    uploader = uploaders.make(None, records_per_request=3)  # dry run: counted when dispatched
    uploader.change("a", [h(str(n)) for n in range(7)], True)
    assert (audience(report, "a").requests, audience(report, "a").added) == (2, 6)
    uploader.flush()
    assert (audience(report, "a").requests, audience(report, "a").added) == (3, 7)


def test_send_now_sends_one_audiences_partial_requests_at_once(
    uploaders: Uploaders, report: RunReport
) -> None:
    uploader = uploaders.make(None, records_per_request=3)  # dry run: counted when dispatched
    uploader.change("a", [h(str(n)) for n in range(4)], True)
    uploader.change("b", [h(str(n)) for n in range(2)], True)

    uploader.send_now("a")
    uploader.send_now("never-seen")  # nothing pending: nothing to do

    assert (audience(report, "a").requests, audience(report, "a").added) == (2, 4)
    assert (audience(report, "b").requests, audience(report, "b").added) == (0, 0)  # waits
    uploader.flush()
    assert (audience(report, "b").requests, audience(report, "b").added) == (1, 2)


def test_a_drained_pending_set_gives_its_memory_back(uploaders: Uploaders) -> None:
    uploader = uploaders.make(None, records_per_request=1900)  # dry run: nothing waits
    uploader.change("a", [h(str(n)) for n in range(12_000)], True)  # a mirror hand-over
    uploader.flush()

    pending = uploader._audiences["a"].pending[ADD]  # white box: the set itself
    assert not pending
    assert sys.getsizeof(pending) < 1_000  # not the ~0.5 MB table of 12,000 entries


# Ordering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(ADD, REMOVE), (REMOVE, ADD)])
def test_add_and_remove_of_one_user_reach_pinterest_in_the_order_they_were_made(
    uploaders: Uploaders, first: Operation, second: Operation
) -> None:
    fake = existing("a", "b")
    fake.members["list-a"] |= {H1, H2, H3}
    uploader = uploaders.make(fake)
    held = fake.hold(is_call("update", "a", first))

    uploader.change("a", [H1, H2], first == ADD)
    held.wait_arrived()
    uploader.change("a", [H1, H3], second == ADD)  # H1 again, the other way
    uploader.change("b", [H4, H5], True)  # the witness: see the module docstring
    fake.wait_for_event("exit", "b")
    assert fake.history(H1) == [("enter", first)], "the second request overtook the first"

    held.open()
    uploader.flush()
    assert fake.history(H1) == [
        ("enter", first),
        ("exit", first),
        ("enter", second),
        ("exit", second),
    ]
    assert (H1 in fake.members_of("a")) == (second == ADD)


def test_a_waiting_request_keeps_its_place_behind_an_earlier_one(
    uploaders: Uploaders,
) -> None:
    """ADD H1 H2 in flight; REMOVE H1 H3 waits for it; ADD H3 H6 must wait for the REMOVE."""
    fake = existing("a")
    uploader = uploaders.make(fake)
    held = fake.hold(is_call("update", "a", ADD))
    uploader.change("a", [H1, H2], True)
    held.wait_arrived()
    uploader.change("a", [H1, H3], False)
    uploader.change("a", [H3, H6], True)
    held.open()
    uploader.flush()

    assert fake.history(H3) == [("enter", REMOVE), ("exit", REMOVE), ("enter", ADD), ("exit", ADD)]
    assert fake.members_of("a") == {H2, H3, H6}


def test_requests_about_other_users_do_not_wait(uploaders: Uploaders) -> None:
    fake = existing("a")
    uploader = uploaders.make(fake)
    held = fake.hold(is_call("update", "a", ADD))
    uploader.change("a", [H1, H2], True)
    held.wait_arrived()
    uploader.change("a", [H3, H4], False)  # different users: commutes with the ADD
    fake.wait_for(lambda: ("exit", REMOVE) in fake.history(H3))
    assert fake.history(H1) == [("enter", ADD)]  # the ADD is still held
    held.open()
    uploader.flush()


# A list being created ----------------------------------------------------------------------


def test_a_list_being_created_holds_its_requests_while_other_lists_flow(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("b")
    uploader = uploaders.make(fake)
    held = fake.hold(is_call("create", "a"))

    uploader.change("a", [H1, H2], True)
    held.wait_arrived()
    uploader.change("a", [H3, H4], True)  # must wait for the list's id
    uploader.change("b", [H5, H6], True)  # another list: goes now
    fake.wait_for_event("exit", "b")
    assert [(c.kind, c.list_name) for c in fake.calls] == [("create", "a"), ("update", "b")]

    held.open()
    uploader.flush()
    (list_id,) = fake.lists_named("a")
    assert fake.members_of("a") == {H1, H2, H3, H4}
    first, *rest = [c.kind for c in fake.calls if c.list_name == "a"]
    # The held update is released as soon as the list has an id, while its audience is made.
    assert (first, sorted(rest)) == ("create", ["create_audience", "update"])
    counts = audience(report, "a")
    assert (counts.list_id, counts.list_created) == (list_id, True)
    assert (counts.audience_id, counts.audience_created) == (f"audience-of-{list_id}", True)
    assert uploader.list_ids() == {"a": list_id, "b": "list-b"}


def test_a_new_list_gets_no_audience_when_create_audiences_is_off(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists()
    uploader = uploaders.make(fake, create_audiences=False)
    uploader.change("a", [H1], True)
    uploader.flush()
    assert [c.kind for c in fake.calls] == ["create"]
    assert audience(report, "a").audience_id is None


def test_an_existing_list_without_an_audience_gets_one(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists({"a": ["list-a"], "b": ["list-b"]}, {"list-b": "audience-b"})
    uploader = uploaders.make(fake)
    assert uploader.resolve("a") == "list-a"
    assert uploader.resolve("b") == "list-b"
    assert [(c.kind, c.list_name) for c in fake.calls] == [("create_audience", "a")]
    assert (audience(report, "a").audience_id, audience(report, "a").audience_created) == (
        "audience-of-list-a",
        True,
    )
    assert (audience(report, "b").audience_id, audience(report, "b").audience_created) == (
        "audience-b",
        False,
    )


def test_two_lists_with_the_audience_name_stop_before_anything_is_sent(
    uploaders: Uploaders,
) -> None:
    fake = FakeLists({"a": ["list-1", "list-2"]})
    uploader = uploaders.make(fake, records_per_request=1)
    with pytest.raises(DuplicateListError, match="list-1, list-2"):
        uploader.change("a", [H1], True)
    assert fake.calls == []


def test_a_remove_before_the_list_exists_is_already_satisfied(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists()
    uploader = uploaders.make(fake)
    uploader.change("a", [H1, H2, H3], False)
    uploader.flush()
    assert fake.calls == []
    assert fake.lists_named("a") == []
    counts = audience(report, "a")
    assert (counts.already_absent, counts.removed, counts.requests, counts.failed) == (3, 0, 0, 0)
    assert uploader.list_ids() == {}


# Refused requests --------------------------------------------------------------------------


def test_a_refused_request_is_halved_until_the_refused_records_are_isolated(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    bad = {h("bad-1"), h("bad-2")}
    good = {h(f"good-{n}") for n in range(6)}
    for record in bad:
        fake.refuse(carrying(record, PinterestAPIError("invalid", status=400, code=2)))
    uploader = uploaders.make(fake, records_per_request=8)
    uploader.change("a", sorted(bad | good), True)
    uploader.flush()

    assert fake.members_of("a") == good
    sizes = [len(c.records) for c in fake.calls]
    assert sizes[0] == 8
    assert set(sizes) <= {8, 4, 2, 1}
    refused_alone = [
        next(iter(e.records)) for e in fake.timeline if e.phase == "refused" and len(e.records) == 1
    ]
    assert sorted(refused_alone) == sorted(bad)
    counts = audience(report, "a")
    assert counts.rejected_by_pinterest == {"http_400_code_2": 2}
    assert (counts.added, counts.failed) == (6, 0)


def test_a_refusal_without_a_pinterest_code_is_counted_by_status(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    fake.refuse(carrying(H1, PinterestAPIError("too large", status=413)))
    uploader = uploaders.make(fake, records_per_request=2)
    uploader.change("a", [H1, H2], True)
    uploader.flush()
    assert audience(report, "a").rejected_by_pinterest == {"http_413": 1}
    assert fake.members_of("a") == {H2}


def test_a_refused_creation_is_split_and_creates_one_list(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists()
    fake.refuse(carrying(H3, PinterestAPIError("invalid", status=400)))
    uploader = uploaders.make(fake, records_per_request=4)
    uploader.change("a", [H1, H2, H3, H4], True)
    uploader.flush()
    assert len(fake.lists_named("a")) == 1
    assert fake.members_of("a") == {H1, H2, H4}
    assert sum(c.kind == "create" and len(c.records) < 4 for c in fake.calls) >= 1
    counts = audience(report, "a")
    assert (counts.added, counts.list_created, counts.rejected_by_pinterest) == (
        3,
        True,
        {"http_400": 1},
    )


def test_too_many_records_refused_one_by_one_stop_the_run(
    uploaders: Uploaders, report: RunReport
) -> None:
    """Past MAX_INDIVIDUAL_REJECTIONS the request is at fault: stop, count the rest failed."""
    fake = existing("a")
    fake.refuse(lambda call: PinterestAPIError("invalid", status=400, code=7))
    uploader = uploaders.make(fake, records_per_request=32)
    uploader.change("a", [h(str(n)) for n in range(32)], True)
    with pytest.raises(SyncFailedError, match=f"more than {MAX_INDIVIDUAL_REJECTIONS} records"):
        uploader.flush()
    counts = audience(report, "a")
    assert counts.rejected_by_pinterest == {"http_400_code_7": MAX_INDIVIDUAL_REJECTIONS}
    assert counts.failed == 32 - MAX_INDIVIDUAL_REJECTIONS
    assert counts.added == 0


def test_payload_too_large_shrinks_later_requests(uploaders: Uploaders, report: RunReport) -> None:
    fake = existing("a")
    too_large = PinterestAPIError("payload too large", status=413)
    fake.refuse(lambda call: too_large if len(call.records) > 3 else None)
    uploader = uploaders.make(fake, records_per_request=16)
    uploader.change("a", [h(f"first-{n}") for n in range(16)], True)
    uploader.flush()
    assert len(fake.members_of("a")) == 16
    assert audience(report, "a").rejected_by_pinterest == {}

    before = len(fake.calls)
    uploader.change("a", [h(f"later-{n}") for n in range(6)], True)
    uploader.flush()
    # 16 -> 8 -> 4 were refused, 2 went through: later requests carry at most 2 records.
    assert [len(c.records) for c in fake.calls[before:]] == [2, 2, 2]
    assert len(fake.members_of("a")) == 22


# Failures are counted, never lost ----------------------------------------------------------


def test_a_failed_request_and_those_queued_behind_it_are_counted_failed(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    denied = PermissionDeniedError("denied", status=403)
    fake.refuse(lambda call: denied if call.operation == ADD else None)
    uploader = uploaders.make(fake)
    held = fake.hold(is_call("update", "a", ADD))
    uploader.change("a", [H1, H2], True)
    held.wait_arrived()
    uploader.change("a", [H1, H3], False)  # queued behind the ADD (same user H1)
    held.open()
    with pytest.raises(SyncFailedError) as raised:
        uploader.flush()
    assert raised.value.__cause__ is denied
    assert "No STATE was emitted" in str(raised.value)
    counts = audience(report, "a")
    assert (counts.failed, counts.added, counts.removed) == (4, 0, 0)
    assert [c.operation for c in fake.calls] == [ADD]  # nothing more was sent


def test_every_record_taken_is_acknowledged_rejected_or_failed(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    records = [h(str(n)) for n in range(16)]
    fake.refuse(carrying(records[3], PinterestAPIError("invalid", status=400)))
    fake.refuse(carrying(records[11], RetriesExhaustedError("still 503")))
    acknowledged: list[str] = []
    uploader = uploaders.make(
        fake,
        records_per_request=16,
        max_parallel_requests=1,
        on_acknowledged=lambda _a, _l, _o, hashes: acknowledged.extend(hashes),
    )
    uploader.change("a", records, True)
    with pytest.raises(SyncFailedError):
        uploader.flush()
    counts = audience(report, "a")
    rejected = sum(counts.rejected_by_pinterest.values())
    assert counts.added + rejected + counts.failed == 16
    assert counts.failed >= 1
    assert counts.added == len(acknowledged)
    assert fake.members_of("a") == set(acknowledged)


def test_an_unexpected_error_in_a_request_thread_fails_the_run(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = existing("a")
    fake.refuse(lambda call: RuntimeError("bug"))
    uploader = uploaders.make(fake)
    uploader.change("a", [H1, H2], True)
    with pytest.raises(SyncFailedError, match="unexpected RuntimeError"):
        uploader.flush()
    assert audience(report, "a").failed == 2


def test_after_a_failure_flush_keeps_raising(uploaders: Uploaders) -> None:
    fake = existing("a")
    fake.refuse(lambda call: PermissionDeniedError("denied", status=403))
    uploader = uploaders.make(fake)
    uploader.change("a", [H1, H2], True)
    with pytest.raises(SyncFailedError):
        uploader.flush()
    with pytest.raises(SyncFailedError):
        uploader.flush()


# Memory bound ------------------------------------------------------------------------------


def test_too_many_pending_identifiers_send_the_largest_audience(
    uploaders: Uploaders, report: RunReport
) -> None:
    uploader = uploaders.make(None, records_per_request=100, max_pending_identifiers=5)
    uploader.change("a", [H1, H2, H3], True)
    uploader.change("a", [H4], False)  # a: 3 to add, 1 to remove
    uploader.change("b", [H1], True)  # 5 pending: not over the bound yet
    assert audience(report, "a").requests == 0
    uploader.change("b", [H2], True)  # 6 pending: a, the largest, goes
    assert (audience(report, "a").added, audience(report, "a").removed) == (3, 1)
    assert audience(report, "b").requests == 0
    uploader.change("c", [H3, H4, H5], True)  # 5 pending again: nothing goes
    assert audience(report, "b").requests == audience(report, "c").requests == 0


def test_the_memory_bound_sends_real_requests(uploaders: Uploaders) -> None:
    fake = existing("a", "b")
    uploader = uploaders.make(fake, records_per_request=100, max_pending_identifiers=3)
    uploader.change("a", [H1, H2, H3], True)
    uploader.change("b", [H4], True)
    fake.wait_for_event("exit", "a")
    assert fake.members_of("a") == {H1, H2, H3}
    assert fake.members_of("b") == set()
    uploader.flush()
    assert fake.members_of("b") == {H4}


# Callbacks ---------------------------------------------------------------------------------


def test_a_request_is_acknowledged_only_after_2xx(uploaders: Uploaders) -> None:
    fake = FakeLists({"b": ["list-b"]}, {"list-b": "audience-b"})
    fake.refuse(carrying(H3, PinterestAPIError("invalid", status=400)))
    uploader = uploaders.make(
        fake,
        records_per_request=3,
        max_parallel_requests=1,
        on_acknowledged=lambda a, list_id, o, hashes: fake.note(
            Event("acknowledged", a, o, frozenset(hashes), list_id)
        ),
    )
    uploader.change("a", [H1, H2], True)  # creates list a
    uploader.flush()
    uploader.change("b", [H1, H2, H3], True)  # H3 is refused: split
    uploader.flush()

    (list_a,) = fake.lists_named("a")
    a = [e for e in fake.timeline if e.list_name == "a"]
    both = frozenset({H1, H2})
    assert a == [
        Event("enter", "a", ADD, both),
        Event("exit", "a", ADD, both, list_a),
        Event("acknowledged", "a", ADD, both, list_a),
    ]
    b = [e for e in fake.timeline if e.list_name == "b"]
    assert b[0] == Event("enter", "b", ADD, frozenset({H1, H2, H3}))
    acknowledged = [(i, e) for i, e in enumerate(b) if e.phase == "acknowledged"]
    for index, event in acknowledged:
        assert b[index - 1] == Event("exit", "b", ADD, event.records, "list-b")
    assert frozenset().union(*(e.records for _, e in acknowledged)) == both


def test_a_refused_request_is_never_acknowledged(uploaders: Uploaders) -> None:
    fake = existing("a")
    fake.refuse(lambda call: PermissionDeniedError("denied", status=403))
    acknowledged: list[str] = []
    uploader = uploaders.make(fake, on_acknowledged=lambda *_: acknowledged.append("ack"))
    uploader.change("a", [H1, H2], True)
    with pytest.raises(SyncFailedError):
        uploader.flush()
    assert fake.history(H1) != []  # the request reached Pinterest and was refused
    assert acknowledged == []


# Dry run -----------------------------------------------------------------------------------


def test_a_dry_run_counts_what_it_would_send_and_sends_nothing(
    uploaders: Uploaders, report: RunReport
) -> None:
    sent: list[str] = []
    uploader = uploaders.make(
        None,
        records_per_request=2,
        on_acknowledged=lambda *_: sent.append("acknowledged"),
    )
    uploader.change("a", [H1, H2, H3], True)
    uploader.change("a", [H4], False)
    uploader.flush()
    counts = audience(report, "a")
    assert (counts.added, counts.removed, counts.requests) == (3, 1, 3)
    assert (counts.failed, counts.already_absent, counts.list_id) == (0, 0, None)
    assert uploader.resolve("a") is None
    assert uploader.list_ids() == {}
    assert sent == []


# Removals from a list this run created -----------------------------------------------------


def test_a_list_created_this_run_gets_no_remove_for_users_never_added(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists()
    acknowledged: list[tuple[Operation, frozenset[str]]] = []
    uploader = uploaders.make(
        fake,
        records_per_request=2,
        on_acknowledged=lambda _a, _l, op, hashes: acknowledged.append((op, frozenset(hashes))),
    )
    uploader.change("new", [H4], False)  # before the list is known: dropped once it is not
    uploader.change("new", [H1, H2], True)  # a full request: creates the list
    uploader.flush()
    uploader.change("new", [H1, H5], False)  # H1 was added, H5 never was
    uploader.change("new", [H3], True)
    uploader.change("new", [H3], False)  # still pending when removed: never added either
    uploader.change("new", [H6], False)
    uploader.flush()

    removes = [c.records for c in fake.calls if c.kind == "update" and c.operation == REMOVE]
    assert removes == [frozenset({H1})]
    assert fake.members_of("new") == {H2}
    counts = audience(report, "new")
    assert (counts.added, counts.removed, counts.already_absent) == (2, 1, 4)
    assert counts.requests == 2  # the create and one REMOVE: no request for the others
    # Only what reached Pinterest is acknowledged, as for removals before a list exists.
    assert [hashes for op, hashes in acknowledged if op == REMOVE] == [frozenset({H1})]


def test_a_list_found_by_name_gets_every_remove(uploaders: Uploaders, report: RunReport) -> None:
    fake = existing("old")
    uploader = uploaders.make(fake, records_per_request=2)
    uploader.change("old", [H5, H6], False)  # maybe added by an earlier run
    uploader.flush()

    removes = [c.records for c in fake.calls if c.kind == "update" and c.operation == REMOVE]
    assert removes == [frozenset({H5, H6})]
    assert audience(report, "old").already_absent == 0


def test_changes_left_unsent_when_the_run_stops_are_counted_as_failed(
    uploaders: Uploaders, report: RunReport
) -> None:
    fake = FakeLists()
    fake.refuse(lambda call: PermissionDeniedError("no") if call.kind == "create" else None)
    uploader = uploaders.make(fake, records_per_request=2, max_parallel_requests=1)
    uploader.change("new", [H1, H2], True)  # the create that fails
    read = [H1, H2]

    def read_on_then_flush() -> None:
        for name in (H3, H4, H5, H6):
            read.append(name)  # read, whether or not the failure stops it here
            uploader.change("new", [name], True)
        uploader.flush()

    with pytest.raises(SyncFailedError):
        read_on_then_flush()
    uploader.close()

    counts = audience(report, "new")
    assert counts.added == 0
    # The refused request and everything read after it, pending ones included.
    assert counts.failed == len(read) >= 3
