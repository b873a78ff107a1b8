"""The Sinks: one per input stream; each turns records into work for its sync mode.

Records are not buffered here. Each record is read through the record contract and goes
straight on: in changes mode to the shared :class:`Uploader`, which merges changes per
audience (two streams may feed one audience) and sends full requests as soon as they fill;
in mirror mode into this run's snapshot; in upsert mode into the row ledger's next batch.
The SDK's own batch (``process_batch``) therefore has nothing to do; acknowledgement and
STATE are handled by the target, which flushes everything before emitting state.

One class per mode, chosen per stream by the target (``sync_mode``, ``stream_sync_modes``);
what they share (counting, rejects, audience claims) lives in :class:`AudienceSink`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from singer_sdk.sinks import Sink

from target_pinterest_audiences.memberships import (
    DELETED_WITHOUT_IDENTIFIER,
    NO_VALID_IDENTIFIER,
    read_membership,
)
from target_pinterest_audiences.rows import Row, RowReader, is_deleted
from target_pinterest_audiences.sync_modes import CHANGES, MIRROR, UPSERT, AudienceModes

if TYPE_CHECKING:
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_pinterest_audiences.rejects import RejectFile
    from target_pinterest_audiences.report import RunReport, StreamReport


class ChangeQueue(Protocol):
    """Changes mode's way out: the :class:`~target_pinterest_audiences.uploader.Uploader`."""

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        """The users ``hashes`` should (not) be in ``audience``."""


class SnapshotRecorder(Protocol):
    """Mirror mode's way out: the run's :class:`~target_pinterest_audiences.snapshot.Snapshot`."""

    def covers(self, stream: str, audience: str) -> None:
        """``stream`` named ``audience`` in this run (said once per stream and audience)."""

    def record(self, audience: str, hashes: list[str], present: bool) -> None:
        """A snapshot row: the users ``hashes`` are (not) in ``audience``."""


class RowRecorder(Protocol):
    """Upsert mode's way out: :class:`~target_pinterest_audiences.upsert.UpsertSync`."""

    def record(
        self, row_id: bytes, audiences: Sequence[str], hashes: Sequence[str], *, deleted: bool
    ) -> None:
        """The row ``row_id`` now holds ``hashes`` in ``audiences`` (nothing if deleted)."""


@dataclass(frozen=True)
class SinkContext:
    """What every sink needs from the target, typed, built once per run.

    The ways out are protocols: a sink depends only on the one call it makes, and the
    sinks' unit tests pass small fakes of them.
    """

    ad_account_id: str
    uploader: ChangeQueue
    report: RunReport
    rejects: RejectFile
    modes: AudienceModes
    mirror: SnapshotRecorder | None
    upsert: RowRecorder | None


class _HasSinkContext(Protocol):
    sink_context: SinkContext


class AudienceSink(Sink):
    """Reads the membership records of one stream; subclasses send them per mode."""

    mode: ClassVar[str]

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        self.context = cast("_HasSinkContext", target).sink_context
        self._uncounted = 0
        self._claimed: set[str] = set()
        super().__init__(target, *args, **kwargs)

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """No generic JSON-schema validation per record.

        The fields the target uses are checked by the record contract, which skips and
        counts a bad record instead of failing the run, and never echoes its values (the
        SDK's validator logs whole records, raw emails included). Other fields are not
        used, so a tap's schema for them is not our business.
        """
        return None

    @property
    def include_sdc_metadata_properties(self) -> bool:
        """Tell the SDK not to warn about ``_sdc_*`` columns on each ACTIVATE_VERSION.

        The target never adds metadata columns to records (it keeps no table); this only
        declares that ``_sdc_deleted_at`` is understood, which it is.
        """
        return True

    def activate_version(self, new_version: int) -> None:
        """ACTIVATE_VERSION needs no action in any mode (see the README's sync modes)."""

    def accept(
        self, record: dict[str, Any], stream_report: StreamReport, record_number: int
    ) -> None:
        """Read one record (numbered from 1 in its input stream) and pass it on."""
        raise NotImplementedError

    def claim(self, audiences: Any) -> None:
        """Claim ``audiences`` for this stream's mode (cheap after the first time)."""
        claimed = self._claimed
        for audience in audiences:
            if audience not in claimed:
                self.context.modes.claim(audience, self.mode, self.stream_name)
                claimed.add(audience)

    def count_problems(
        self,
        stream_report: StreamReport,
        record_number: int,
        *,
        rejected: list[str],
        skip_reason: str | None,
        audiences: Any,
        fields: dict[str, Any],
    ) -> None:
        """Count what was not used, per stream and per audience, and write reject lines."""
        rejects = self.context.rejects
        source_stream = stream_report.name
        for reason in rejected:
            stream_report.identifiers_rejected[reason] += 1
            rejects.write(source_stream, record_number, reason, fields)
        if skip_reason is not None:
            stream_report.skipped[skip_reason] += 1
            rejects.write(source_stream, record_number, skip_reason, fields)
        else:
            stream_report.used += 1
        count_reason = self.context.report.count_reason
        for audience in audiences:
            for reason in rejected:
                count_reason(audience, "identifiers_rejected", reason)
            if skip_reason is not None:
                count_reason(audience, "skipped", skip_reason)

    def count_records(self) -> None:
        """Report records read to the SDK's record-count metric (batched: it reads the clock)."""
        if self._uncounted:
            self.record_counter_metric.increment(self._uncounted)
            self._uncounted = 0

    def clean_up(self) -> None:
        """Flush the record count, then let the SDK log the final metric."""
        self.count_records()
        super().clean_up()

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """SDK entry point (used by its batch-file path); the target calls :meth:`accept`."""
        report = self.context.report.stream(self.stream_name)
        report.records += 1
        self.accept(record, report, report.records)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing is buffered in the sink; see the module docstring."""


class _MembershipSink(AudienceSink):
    """Changes and mirror modes: each record is a membership (add or remove).

    The two differ only in where a membership goes (:meth:`way_out`), so one :meth:`accept`
    serves both: it is the hot path of a run, one call per record.
    """

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self._send = self.way_out()

    def way_out(self) -> Callable[[str, list[str], bool], None]:
        """Where a record's changes go: ``send(audience, hashes, member)``."""
        raise NotImplementedError

    def accept(
        self, record: dict[str, Any], stream_report: StreamReport, record_number: int
    ) -> None:
        """Apply the contract (a delete turns every change into a removal), pass it on."""
        self._uncounted += 1
        membership = read_membership(self.stream_name, record)
        if is_deleted(record):
            stream_report.deletes += 1
            if membership.skip_reason == NO_VALID_IDENTIFIER:
                membership.skip_reason = DELETED_WITHOUT_IDENTIFIER
            membership.changes = [(audience, False) for audience, _ in membership.changes]
        if membership.rejected or membership.skip_reason is not None:
            # A delete naming no identifier cannot say which audiences the row was in.
            keyless = membership.skip_reason == DELETED_WITHOUT_IDENTIFIER
            self.count_problems(
                stream_report,
                record_number,
                rejected=membership.rejected,
                skip_reason=membership.skip_reason,
                audiences=[] if keyless else [audience for audience, _ in membership.changes],
                fields=membership.fields,
            )
        else:
            stream_report.used += 1
        hashes = membership.hashes
        if hashes:
            changes = membership.changes
            claimed = self._claimed
            for audience, _ in changes:  # all first: a refused claim must stop before sending
                if audience not in claimed:  # once per audience: a set lookup per record
                    self.claim((audience,))
            send = self._send
            for audience, member in changes:
                send(audience, hashes, member)


class ChangesSink(_MembershipSink):
    """Changes mode: each record says add or remove; the uploader sends exactly that."""

    mode = CHANGES

    def way_out(self) -> Callable[[str, list[str], bool], None]:
        """The uploader, which merges the changes per audience and sends them."""
        return self.context.uploader.change


class MirrorSink(_MembershipSink):
    """Mirror mode: the run's records are the complete membership; gather the snapshot."""

    mode = MIRROR

    def way_out(self) -> Callable[[str, list[str], bool], None]:
        """This run's snapshot, compared with the ledger once the run has read everything."""
        mirror = self.context.mirror
        assert mirror is not None
        return mirror.record

    def claim(self, audiences: Any) -> None:
        """Claim the audiences, and tell the snapshot that this stream covers them."""
        mirror = self.context.mirror
        assert mirror is not None
        for audience in audiences:
            if audience not in self._claimed:
                super().claim((audience,))
                mirror.covers(self.stream_name, audience)


class UpsertSink(AudienceSink):
    """Upsert mode: each record is its key's whole row; the row ledger works out changes."""

    mode = UPSERT

    def setup(self) -> None:
        """Read the stream's form (explicit, Engage, plain) from its schema, once."""
        super().setup()
        self.rows = RowReader(
            self.context.ad_account_id, self.stream_name, self.key_properties, self.schema
        )

    def accept(
        self, record: dict[str, Any], stream_report: StreamReport, record_number: int
    ) -> None:
        """Put the row's new state into the next ledger batch."""
        self._uncounted += 1
        row: Row = self.rows.read(record)
        if row.deleted:
            stream_report.deletes += 1
        if row.rejected or not row.applies:
            self.count_problems(
                stream_report,
                record_number,
                rejected=row.rejected,
                skip_reason=None if row.applies else row.skip_reason,
                audiences=row.audiences,
                fields=row.fields,
            )
        else:
            stream_report.used += 1
        if not row.applies:
            return
        assert row.row_id is not None
        upsert = self.context.upsert
        assert upsert is not None
        self.claim(row.audiences)
        upsert.record(row.row_id, row.audiences, row.hashes, deleted=row.deleted)


SINK_CLASSES: dict[str, type[AudienceSink]] = {
    CHANGES: ChangesSink,
    MIRROR: MirrorSink,
    UPSERT: UpsertSink,
}
