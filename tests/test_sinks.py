"""The sinks, in process, against a small fake of the target's sink context.

A sink reads one stream's records through the record contract and hands each on to its
mode's way out: changes mode to the uploader, mirror mode to the run's snapshot, upsert
mode to the row ledger's next batch. Those three are fakes that record every call; the
run report, the reject file and the audience claims are the real, small objects, so the
tests read the counts a user would see. The contract itself (which record means what) is
pinned by ``test_memberships.py`` and ``test_rows.py``; here it is what the sinks do with
the result: what they pass on, what they count and where, what they write to the reject
file, and which sync mode each audience is claimed for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.errors import InputError
from target_pinterest_audiences.memberships import DELETED_WITHOUT_IDENTIFIER, NO_VALID_IDENTIFIER
from target_pinterest_audiences.rejects import RejectFile
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.rows import KEY_PROPERTY_NULL
from target_pinterest_audiences.sinks import (
    AudienceSink,
    ChangesSink,
    MirrorSink,
    SinkContext,
    UpsertSink,
)
from target_pinterest_audiences.sync_modes import CHANGES, MIRROR, UPSERT, AudienceModes

from support import sha

AD_ACCOUNT = "549755885175"
ALICE, BOB = "alice@example.com", "bob@example.com"
DELETED_AT = "2024-05-01T12:00:00+00:00"


# The fakes ---------------------------------------------------------------------------------


@dataclass
class FakeUploader:
    """Changes mode's way out: every change, in order."""

    changes: list[tuple[str, tuple[str, ...], bool]] = field(default_factory=list)

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        self.changes.append((audience, tuple(hashes), member))


@dataclass
class FakeSnapshot:
    """Mirror mode's way out: every snapshot row, in order."""

    rows: list[tuple[str, tuple[str, ...], bool]] = field(default_factory=list)
    covered: list[tuple[str, str]] = field(default_factory=list)

    def covers(self, stream: str, audience: str) -> None:
        self.covered.append((stream, audience))

    def record(self, audience: str, hashes: list[str], present: bool) -> None:
        self.rows.append((audience, tuple(hashes), present))


@dataclass(frozen=True)
class UpsertCall:
    row_id: bytes
    audiences: tuple[str, ...]
    hashes: tuple[str, ...]
    deleted: bool


@dataclass
class FakeRows:
    """Upsert mode's way out: every row state, in order."""

    calls: list[UpsertCall] = field(default_factory=list)

    def record(
        self, row_id: bytes, audiences: Sequence[str], hashes: Sequence[str], *, deleted: bool
    ) -> None:
        self.calls.append(UpsertCall(row_id, tuple(audiences), tuple(hashes), deleted))


LOGGER = logging.getLogger("tests.sinks")


@dataclass
class FakeTarget:
    """What a sink reads off the target: the SDK's three attributes and the context."""

    sink_context: SinkContext
    config: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = LOGGER
    initialized_at: int = 0


@dataclass
class Run:
    """One run's sink context, with fakes for the ways out and real counters."""

    tmp_path: Path
    uploader: FakeUploader = field(default_factory=FakeUploader)
    snapshot: FakeSnapshot = field(default_factory=FakeSnapshot)
    rows: FakeRows = field(default_factory=FakeRows)
    report: RunReport = field(default_factory=RunReport)

    def __post_init__(self) -> None:
        self.rejects = RejectFile(self.tmp_path / "rejects.jsonl")
        self.modes = AudienceModes(None, None)
        self.target = FakeTarget(
            SinkContext(
                ad_account_id=AD_ACCOUNT,
                uploader=self.uploader,
                report=self.report,
                rejects=self.rejects,
                modes=self.modes,
                mirror=self.snapshot,
                upsert=self.rows,
            )
        )

    def sink(
        self,
        sink_class: type[AudienceSink],
        stream: str,
        *properties: str,
        key_properties: list[str] | None = None,
    ) -> AudienceSink:
        """A sink as the SDK makes one on a SCHEMA: built, then set up."""
        schema = {"properties": {name: {"type": ["string", "null"]} for name in properties}}
        sink = sink_class(
            target=self.target,
            stream_name=stream,
            schema=schema,
            key_properties=key_properties,
        )
        sink.setup()
        return sink

    def feed(self, sink: AudienceSink, *records: dict[str, Any]) -> None:
        """Records as the target's record path passes them: counted, numbered from 1."""
        stream_report = self.report.stream(sink.stream_name)
        for record in records:
            stream_report.records += 1
            sink.accept(record, stream_report, stream_report.records)

    def reject_lines(self) -> list[dict[str, Any]]:
        self.rejects.close()
        path = self.tmp_path / "rejects.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


EXPLICIT = ("email", "ios_idfa", "audience_key", "in_audience", "_sdc_deleted_at")


# Changes mode ------------------------------------------------------------------------------


def test_changes_sends_each_record_as_an_add_or_a_remove(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", *EXPLICIT)

    run.feed(
        sink,
        {"email": " Alice@Example.com ", "audience_key": "vip", "in_audience": True},
        {"email": BOB, "audience_key": "vip", "in_audience": False},
        {"email": BOB, "audience_key": "churned"},  # in_audience defaults to true
    )

    assert run.uploader.changes == [
        ("vip", (sha(ALICE),), True),
        ("vip", (sha(BOB),), False),
        ("churned", (sha(BOB),), True),
    ]
    stream = run.report.stream("members")
    assert (stream.records, stream.used, stream.deletes) == (3, 3, 0)
    assert not stream.skipped
    assert not stream.identifiers_rejected
    assert run.reject_lines() == []


def test_a_plain_record_joins_the_audience_named_after_its_stream(run: Run) -> None:
    sink = run.sink(ChangesSink, "newsletter", "email")

    run.feed(sink, {"email": ALICE})

    assert run.uploader.changes == [("newsletter", (sha(ALICE),), True)]


def test_a_delete_in_changes_mode_removes_even_a_member(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", *EXPLICIT)

    run.feed(
        sink,
        {"email": ALICE, "audience_key": "vip", "in_audience": True, "_sdc_deleted_at": DELETED_AT},
        {"email": BOB, "audience_key": "vip", "_sdc_deleted_at": ""},  # empty: not a delete
    )

    assert run.uploader.changes == [("vip", (sha(ALICE),), False), ("vip", (sha(BOB),), True)]
    stream = run.report.stream("members")
    assert (stream.records, stream.used, stream.deletes) == (2, 2, 1)


def test_a_delete_without_identifier_is_skipped_and_charged_to_no_audience(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", *EXPLICIT)

    run.feed(sink, {"audience_key": "vip", "_sdc_deleted_at": DELETED_AT})

    assert run.uploader.changes == []
    stream = run.report.stream("members")
    assert (stream.records, stream.used, stream.deletes) == (1, 0, 1)
    assert stream.skipped == {DELETED_WITHOUT_IDENTIFIER: 1}
    # It cannot say which audiences the row was in, so no audience counts it.
    assert all(not report.skipped for report in run.report.audiences.values())
    assert [line["reason"] for line in run.reject_lines()] == [DELETED_WITHOUT_IDENTIFIER]
    assert run.modes.mode("vip") is None


def test_a_rejected_identifier_is_counted_while_the_good_one_is_sent(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", *EXPLICIT)

    run.feed(sink, {"email": ALICE, "ios_idfa": "not-an-idfa", "audience_key": "vip"})

    assert run.uploader.changes == [("vip", (sha(ALICE),), True)]
    stream = run.report.stream("members")
    assert stream.used == 1
    assert stream.identifiers_rejected == {"ios_idfa_malformed": 1}
    assert run.report.audience("vip").identifiers_rejected == {"ios_idfa_malformed": 1}
    (line,) = run.reject_lines()
    assert (line["stream"], line["record_number"], line["reason"]) == (
        "members",
        1,
        "ios_idfa_malformed",
    )
    # The reject file names values by the SHA-256 of what arrived, never the value.
    assert line["identifiers_sha256"] == {"email": sha(ALICE), "ios_idfa": sha("not-an-idfa")}


def test_a_record_without_a_valid_identifier_is_skipped_per_stream_and_audience(
    run: Run,
) -> None:
    sink = run.sink(ChangesSink, "members", *EXPLICIT)

    run.feed(
        sink,
        {"email": ALICE, "audience_key": "vip"},
        {"email": "not an email", "audience_key": "vip"},
    )

    assert run.uploader.changes == [("vip", (sha(ALICE),), True)]
    stream = run.report.stream("members")
    assert (stream.records, stream.used) == (2, 1)
    assert stream.skipped == {NO_VALID_IDENTIFIER: 1}
    assert stream.identifiers_rejected == {"email_malformed": 1}
    vip = run.report.audience("vip")
    assert vip.skipped == {NO_VALID_IDENTIFIER: 1}
    assert vip.identifiers_rejected == {"email_malformed": 1}
    lines = run.reject_lines()
    assert [(line["record_number"], line["reason"]) for line in lines] == [
        (2, "email_malformed"),
        (2, NO_VALID_IDENTIFIER),
    ]


def test_a_skipped_record_claims_no_audience(run: Run) -> None:
    changes = run.sink(ChangesSink, "events", *EXPLICIT)
    upsert = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(changes, {"email": "not an email", "audience_key": "vip"})
    run.feed(upsert, {"id": 1, "email": ALICE, "audience_key": "vip"})

    assert run.modes.mode("vip") == UPSERT


def test_records_reach_the_sdk_metric_in_batches(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", "email")
    metric = sink.record_counter_metric

    run.feed(sink, {"email": ALICE}, {"email": BOB}, {"email": "not an email"})
    assert metric.value == 0  # the record path counts; the metric waits for the next tick

    sink.count_records()
    assert metric.value == 3
    sink.count_records()
    assert metric.value == 3


def test_the_sdk_record_entry_point_counts_the_record_in_its_stream(run: Run) -> None:
    sink = run.sink(ChangesSink, "members", "email")

    sink.process_record({"email": ALICE}, {})
    sink.process_record({"email": BOB}, {})

    assert run.report.stream("members").records == 2
    assert run.uploader.changes == [
        ("members", (sha(ALICE),), True),
        ("members", (sha(BOB),), True),
    ]


# Mirror mode -------------------------------------------------------------------------------


def test_mirror_gathers_the_snapshot_and_sends_nothing_itself(run: Run) -> None:
    sink = run.sink(MirrorSink, "segments", *EXPLICIT)

    run.feed(
        sink,
        {"email": ALICE, "audience_key": "vip"},
        {"email": BOB, "audience_key": "vip", "in_audience": False},
        {"email": BOB, "audience_key": "lapsed", "_sdc_deleted_at": DELETED_AT},
        {"email": "not an email", "audience_key": "vip"},
    )

    assert run.snapshot.rows == [
        ("vip", (sha(ALICE),), True),
        ("vip", (sha(BOB),), False),
        ("lapsed", (sha(BOB),), False),
    ]
    assert run.snapshot.covered == [("segments", "vip"), ("segments", "lapsed")]  # once each
    assert run.uploader.changes == []
    stream = run.report.stream("segments")
    assert (stream.records, stream.used, stream.deletes) == (4, 3, 1)
    assert stream.skipped == {NO_VALID_IDENTIFIER: 1}
    assert run.modes.mode("vip") == MIRROR
    assert run.modes.mode("lapsed") == MIRROR


# Upsert mode -------------------------------------------------------------------------------


def test_upsert_puts_each_row_in_the_next_batch_under_its_key(run: Run) -> None:
    sink = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(
        sink,
        {"id": 1, "email": ALICE, "audience_key": "vip"},
        {"id": 2, "email": BOB, "audience_key": "vip", "in_audience": False},
        {"id": 1, "email": BOB, "audience_key": "vip"},  # row 1 changed its email
    )

    first, second, third = run.rows.calls
    assert (first.audiences, first.hashes, first.deleted) == (("vip",), (sha(ALICE),), False)
    assert (second.audiences, second.deleted) == ((), False)  # in no audience now
    assert (third.audiences, third.hashes) == (("vip",), (sha(BOB),))
    assert first.row_id == third.row_id != second.row_id
    # The key never reaches the ledger as it arrived (it may be an email).
    assert all(len(call.row_id) == 32 for call in run.rows.calls)
    assert run.uploader.changes == []
    stream = run.report.stream("users")
    assert (stream.records, stream.used, stream.deletes) == (3, 3, 0)
    assert run.modes.mode("vip") == UPSERT


def test_upsert_row_ids_depend_on_stream_and_key_not_on_the_record(run: Run) -> None:
    users = run.sink(UpsertSink, "users", "id", "email", key_properties=["id"])
    admins = run.sink(UpsertSink, "admins", "id", "email", key_properties=["id"])

    run.feed(users, {"id": 7, "email": ALICE})
    run.feed(admins, {"id": 7, "email": ALICE})
    run.feed(users, {"id": "7", "email": ALICE})  # a string key is another key

    ids = [call.row_id for call in run.rows.calls]
    assert len(set(ids)) == 3


def test_a_key_only_delete_deletes_its_row(run: Run) -> None:
    sink = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(sink, {"id": 1, "email": ALICE, "audience_key": "vip"})
    run.feed(sink, {"id": 1, "_sdc_deleted_at": DELETED_AT})

    added, deleted = run.rows.calls
    assert deleted == UpsertCall(added.row_id, (), (), deleted=True)
    stream = run.report.stream("users")
    assert (stream.records, stream.used, stream.deletes) == (2, 2, 1)
    assert not stream.skipped
    assert run.reject_lines() == []


def test_a_row_left_without_identifiers_is_applied_empty(run: Run) -> None:
    sink = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(sink, {"id": 1, "email": None, "audience_key": "vip"})

    (call,) = run.rows.calls
    assert (call.audiences, call.hashes, call.deleted) == ((), (), False)
    assert run.report.stream("users").used == 1


def test_a_row_with_a_null_key_is_skipped_and_kept_out_of_the_ledger(run: Run) -> None:
    sink = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(sink, {"id": None, "email": ALICE, "audience_key": "vip"})

    assert run.rows.calls == []
    stream = run.report.stream("users")
    assert (stream.records, stream.used) == (1, 0)
    assert stream.skipped == {KEY_PROPERTY_NULL: 1}
    assert [line["reason"] for line in run.reject_lines()] == [KEY_PROPERTY_NULL]
    assert run.modes.mode("vip") is None


def test_a_rejected_identifier_in_a_row_is_counted_and_the_row_still_applies(run: Run) -> None:
    sink = run.sink(UpsertSink, "users", "id", *EXPLICIT, key_properties=["id"])

    run.feed(sink, {"id": 1, "email": ALICE, "ios_idfa": "not-an-idfa", "audience_key": "vip"})

    (call,) = run.rows.calls
    assert call.hashes == (sha(ALICE),)
    stream = run.report.stream("users")
    assert stream.identifiers_rejected == {"ios_idfa_malformed": 1}
    assert run.report.audience("vip").identifiers_rejected == {"ios_idfa_malformed": 1}
    assert [line["reason"] for line in run.reject_lines()] == ["ios_idfa_malformed"]


# Audience claims across modes --------------------------------------------------------------

SinkFactory = Callable[[Run, str], AudienceSink]


def _changes(run: Run, stream: str) -> AudienceSink:
    return run.sink(ChangesSink, stream, *EXPLICIT)


def _mirror(run: Run, stream: str) -> AudienceSink:
    return run.sink(MirrorSink, stream, *EXPLICIT)


def _upsert(run: Run, stream: str) -> AudienceSink:
    return run.sink(UpsertSink, stream, "id", *EXPLICIT, key_properties=["id"])


MODES: dict[str, SinkFactory] = {CHANGES: _changes, MIRROR: _mirror, UPSERT: _upsert}


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for a in MODES for b in MODES if a != b],
)
def test_one_audience_fed_by_two_modes_stops_the_run_naming_both(
    run: Run, first: str, second: str
) -> None:
    run.feed(MODES[first](run, "one"), {"id": 1, "email": ALICE, "audience_key": "vip"})
    other = MODES[second](run, "two")

    with pytest.raises(InputError) as raised:
        run.feed(other, {"id": 2, "email": BOB, "audience_key": "vip"})

    assert str(raised.value).startswith(
        f"audience 'vip' is fed by stream 'one' in {first} mode and by stream 'two' in "
        f"{second} mode"
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_two_streams_of_one_mode_may_feed_one_audience(run: Run, mode: str) -> None:
    run.feed(MODES[mode](run, "one"), {"id": 1, "email": ALICE, "audience_key": "vip"})
    run.feed(MODES[mode](run, "two"), {"id": 2, "email": BOB, "audience_key": "vip"})

    assert run.modes.mode("vip") == mode
    assert run.report.stream("one").used == run.report.stream("two").used == 1
