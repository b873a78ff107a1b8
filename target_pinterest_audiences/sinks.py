"""The Sink: one per input stream; turns each record into changes for the uploader.

Records are not buffered here. Each record is read through the contract (``memberships``)
and its changes go straight to the target's shared :class:`Uploader`, which merges them per
audience (two streams may feed one audience) and sends full requests as soon as they fill.
The SDK's own batch (``process_batch``) therefore has nothing to do; acknowledgement and
STATE are handled by the target, which flushes the uploader before emitting state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import Sink

from target_pinterest_audiences.memberships import Membership, read_membership
from target_pinterest_audiences.rejects import RejectFile

if TYPE_CHECKING:
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_pinterest_audiences.mirror import MirrorSync
    from target_pinterest_audiences.report import RunReport, StreamReport
    from target_pinterest_audiences.uploader import Uploader


class AudienceSink(Sink):
    """Reads membership records of one stream."""

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """No generic JSON-schema validation per record.

        The fields the target uses are checked by the record contract, which skips and
        counts a bad record instead of failing the run, and never echoes its values (the
        SDK's validator logs whole records, raw emails included). Other fields are not
        used, so a tap's schema for them is not our business.
        """
        return None

    def setup(self) -> None:
        """Bind to the target's shared uploader, report and reject file."""
        super().setup()
        target: Any = self._target_ref
        self.uploader: Uploader = target.uploader
        self.run_report: RunReport = target.run_report
        self.rejects: RejectFile = target.rejects
        self.mirror: MirrorSync | None = target.mirror

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        self._target_ref = target
        self._uncounted = 0
        super().__init__(target, *args, **kwargs)

    def accept(
        self, record: dict[str, Any], stream_report: StreamReport, record_number: int
    ) -> None:
        """Read one record (numbered from 1 in its input stream) into audience changes."""
        self._uncounted += 1
        membership = read_membership(self.stream_name, record)
        hashes = membership.hashes
        if membership.rejected or membership.skip_reason is not None:
            self._count_problems(membership, stream_report, record_number)
        else:
            stream_report.used += 1
        if not hashes:
            return
        if self.mirror is not None:
            for audience, member in membership.changes:
                self.mirror.record(self.stream_name, audience, hashes, member)
        else:
            change = self.uploader.change
            for audience, member in membership.changes:
                change(audience, hashes, member)

    def _count_problems(
        self, membership: Membership, stream_report: StreamReport, record_number: int
    ) -> None:
        """Count what was not used, per stream and per audience, and write reject lines."""
        source_stream = stream_report.name
        for reason in membership.rejected:
            stream_report.identifiers_rejected[reason] += 1
            self.rejects.write(source_stream, record_number, reason, membership.fields)
        if membership.skip_reason is not None:
            stream_report.skipped[membership.skip_reason] += 1
            self.rejects.write(
                source_stream, record_number, membership.skip_reason, membership.fields
            )
        else:
            stream_report.used += 1
        for audience, _ in membership.changes:
            report = self.run_report.audience(audience)
            for reason in membership.rejected:
                report.identifiers_rejected[reason] += 1
            if membership.skip_reason is not None:
                report.skipped[membership.skip_reason] += 1

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
        report = self.run_report.stream(self.stream_name)
        report.records += 1
        self.accept(record, report, report.records)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing is buffered in the sink; see the module docstring."""
