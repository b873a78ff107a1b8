"""Counters for one run, per audience and per stream, and the end-of-run summary.

Counts are exact: "added" is the number of identifiers Pinterest acknowledged in ADD
requests (including the records a new list was created with), not the number read. Every
value that was read and not sent is counted under a reason, so the numbers add up.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from target_pinterest_audiences.memberships import DELETED_WITHOUT_IDENTIFIER

logger = logging.getLogger(__name__)


@dataclass
class AudienceReport:
    """What happened to one audience (one customer list) in this run."""

    name: str
    list_id: str | None = None
    list_created: bool = False
    audience_id: str | None = None
    audience_created: bool = False
    added: int = 0
    removed: int = 0
    requests: int = 0
    failed: int = 0
    already_absent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Records meant for this audience that were not used, by reason."""
    identifiers_rejected: Counter[str] = field(default_factory=Counter)
    """Identifier values not sent, by reason (their records may still have been used)."""
    rejected_by_pinterest: Counter[str] = field(default_factory=Counter)
    pinterest_status: str | None = None
    mirror: dict[str, int] | None = None
    ledger_members: int | None = None
    """Members the target knows the list holds after the run (from the mirror or upsert
    ledger); None where it cannot know (changes mode, dry runs)."""
    pinterest_audience_size: int | None = None
    """The CUSTOMER_LIST audience's ``size`` (Pinterest users matched); None until sized."""
    pinterest_audience_status: str | None = None
    upsert: dict[str, int] | None = None
    """Upsert mode: live_rows and members after the run; rows_deleted: rows a delete took
    out of this audience during it (one inserted and deleted within a batch never was in)."""

    @property
    def match_rate(self) -> float | None:
        """Matched users per member, where both are known (and there are members)."""
        if self.pinterest_audience_size is None or not self.ledger_members:
            return None
        return self.pinterest_audience_size / self.ledger_members

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the report file."""
        data: dict[str, Any] = {
            "audience": self.name,
            "list_id": self.list_id,
            "list_created": self.list_created,
            "audience_id": self.audience_id,
            "audience_created": self.audience_created,
            "added": self.added,
            "removed": self.removed,
            "requests": self.requests,
            "failed": self.failed,
            "already_absent": self.already_absent,
            "skipped": dict(sorted(self.skipped.items())),
            "identifiers_rejected": dict(sorted(self.identifiers_rejected.items())),
            "rejected_by_pinterest": dict(sorted(self.rejected_by_pinterest.items())),
            "pinterest_status": self.pinterest_status,
        }
        if self.mirror is not None:
            data["mirror"] = dict(self.mirror)
        data["pinterest_audience_size"] = self.pinterest_audience_size
        data["pinterest_audience_status"] = self.pinterest_audience_status
        data["match_rate"] = self.match_rate
        data["members"] = self.ledger_members
        if self.upsert is not None:
            data["upsert"] = dict(self.upsert)
        return data


@dataclass
class StreamReport:
    """What was read from one input stream."""

    name: str
    records: int = 0
    used: int = 0
    deletes: int = 0
    """Records that deleted their row (``_sdc_deleted_at`` set)."""
    skipped: Counter[str] = field(default_factory=Counter)
    identifiers_rejected: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the report file."""
        return {
            "stream": self.name,
            "records": self.records,
            "used": self.used,
            "deletes": self.deletes,
            "skipped": dict(sorted(self.skipped.items())),
            "identifiers_rejected": dict(sorted(self.identifiers_rejected.items())),
        }


class AudienceCounts(TypedDict, total=False):
    """The counters of an :class:`AudienceReport` that :meth:`RunReport.count` adds to."""

    added: int
    removed: int
    requests: int
    failed: int
    already_absent: int


ReasonCounter = Literal["skipped", "identifiers_rejected", "rejected_by_pinterest"]
"""The counters of an :class:`AudienceReport` kept per reason."""


class RunReport:
    """All counters of a run.

    The request threads and the main thread both write audiences' counters, so every write
    goes through :meth:`count`, :meth:`count_reason` or :meth:`updating`, which hold
    :attr:`lock`; readers that need a consistent view hold it too.
    """

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.lock = threading.Lock()
        self.audiences: dict[str, AudienceReport] = {}
        self.streams: dict[str, StreamReport] = {}
        self.error: str | None = None
        """Why the run failed (redacted), or None while it has not."""

    @property
    def outcome(self) -> str:
        """``succeeded`` or ``failed``: a failed run's counts never read as a success."""
        return "failed" if self.error is not None else "succeeded"

    def failed(self, message: str) -> None:
        """Mark the run failed, keeping the first reason (later ones follow from it)."""
        if self.error is None:
            self.error = message

    def audience(self, name: str) -> AudienceReport:
        """The counters of ``name``, created on first use."""
        report = self.audiences.get(name)
        if report is None:
            report = self.audiences[name] = AudienceReport(name)
        return report

    def count(self, audience: str, **counts: Unpack[AudienceCounts]) -> None:
        """Add ``counts`` to ``audience``'s counters, from any thread.

        ``count("vip", requests=1, added=1900)``: what one event changes is added under
        one hold of the lock. Without counts, it only puts the audience in the report.
        """
        with self.lock:
            report = self.audience(audience)
            for name, amount in counts.items():
                setattr(report, name, getattr(report, name) + amount)

    def count_reason(
        self, audience: str, counter: ReasonCounter, reason: str, amount: int = 1
    ) -> None:
        """Add ``amount`` to ``reason`` in one of ``audience``'s per-reason counters."""
        with self.lock:
            reasons: Counter[str] = getattr(self.audience(audience), counter)
            reasons[reason] += amount

    @contextmanager
    def updating(self, audience: str) -> Iterator[AudienceReport]:
        """``audience``'s entry under the lock, for what is not a count (ids, statuses)."""
        with self.lock:
            yield self.audience(audience)

    def stream(self, name: str) -> StreamReport:
        """The counters of stream ``name``, created on first use."""
        report = self.streams.get(name)
        if report is None:
            report = self.streams[name] = StreamReport(name)
        return report

    def summary_lines(self) -> list[str]:
        """One human-readable line per stream and per audience."""
        verb = "would " if self.dry_run else ""
        lines = []
        for stream in self.streams.values():
            line = f"Stream '{stream.name}': {stream.records} records read, {stream.used} used"
            if stream.deletes:
                line += f" ({stream.deletes} deletes)"
            if stream.skipped:
                line += f", skipped {_counts(stream.skipped)}"
            if stream.identifiers_rejected:
                line += f"; identifiers not sent {_counts(stream.identifiers_rejected)}"
            lines.append(line)
        for audience in self.audiences.values():
            if self.dry_run:
                where = "list found by name, or created, on a real run"
            else:
                created = ", created this run" if audience.list_created else ""
                where = f"list {audience.list_id or 'not created'}{created}"
            line = (
                f"Audience '{audience.name}' ({where}): {verb}add {audience.added}, "
                f"{verb}remove {audience.removed}, {verb}send {audience.requests} requests"
            )
            if audience.already_absent:
                line += f", {audience.already_absent} removals not needed (never added to the list)"
            if audience.skipped:
                line += f", skipped {_counts(audience.skipped)}"
            if audience.identifiers_rejected:
                line += f", identifiers not sent {_counts(audience.identifiers_rejected)}"
            if audience.rejected_by_pinterest:
                line += f", rejected by Pinterest {_counts(audience.rejected_by_pinterest)}"
            if audience.failed:
                line += f", FAILED {audience.failed} identifiers"
            if audience.pinterest_status:
                line += f", Pinterest status {audience.pinterest_status}"
            if audience.mirror:
                m = audience.mirror
                line += (
                    f"; mirror: {m['before']} members before, {m['added']} added, "
                    f"{m['removed']} removed, {m['unchanged']} unchanged, {m['after']} after"
                )
            if audience.upsert:
                u = audience.upsert
                line += (
                    f"; upsert: {u['live_rows']} live rows ({u['rows_deleted']} deleted this "
                    f"run), {u['members']} members"
                )
            if audience.pinterest_audience_status or audience.pinterest_audience_size is not None:
                line += f"; {match_words(audience)}"
            lines.append(line)
        lines.extend(self._advice())
        if not lines:
            lines.append("No records were read.")
        if self.error is not None:
            unacknowledged = sum(audience.failed for audience in self.audiences.values())
            lines.append(
                f"Run FAILED: {unacknowledged} identifier changes read were not acknowledged "
                f"by Pinterest (counted as FAILED above): {self.error}"
                if unacknowledged
                else "Run FAILED (none counted as FAILED: every identifier change sent was "
                f"acknowledged by Pinterest): {self.error}"
            )
        return lines

    def _advice(self) -> list[str]:
        """What the counts above suggest doing."""
        keyless = sum(
            stream.skipped[DELETED_WITHOUT_IDENTIFIER] for stream in self.streams.values()
        )
        if not keyless:
            return []
        return [
            f"{keyless} deletes carried no identifier (a log-based tap sends only the row's "
            "key): in changes mode they cannot be applied. sync_mode: upsert (or "
            "stream_sync_modes) keeps each row's identifiers by key and removes them when "
            "the row is deleted."
        ]

    def log_summary(self) -> None:
        """Log the summary to stderr (stdout belongs to Singer)."""
        for line in self.summary_lines():
            logger.info("%s", line)

    def to_dict(self) -> dict[str, Any]:
        """The whole report, JSON-ready."""
        return {
            "outcome": self.outcome,
            "error": self.error,
            "dry_run": self.dry_run,
            "streams": [stream.to_dict() for stream in self.streams.values()],
            "audiences": [audience.to_dict() for audience in self.audiences.values()],
        }

    def write_json(self, path: Path) -> None:
        """Write the report for orchestrators (``report_path``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


MATCHING_LAG = "matching can lag uploads by up to 24-48 hours"


def match_words(audience: AudienceReport) -> str:
    """What Pinterest matched, in words, with the caveat that it is a moving number."""
    size = audience.pinterest_audience_size
    status = audience.pinterest_audience_status or "unknown"
    rate = audience.match_rate
    if size is None:
        return f"audience {status}: Pinterest has not sized it yet; {MATCHING_LAG}"
    if rate is None:
        return f"audience {status}: Pinterest matched {size} users as of now; {MATCHING_LAG}"
    return (
        f"audience {status}: Pinterest matched {size} of {audience.ledger_members} members "
        f"({percent(rate)}) as of now; {MATCHING_LAG}"
    )


def percent(rate: float) -> str:
    """A rate as a whole percentage, keeping one decimal below 1% so it never reads 0%."""
    return f"{rate:.1%}" if 0 < rate < 0.01 else f"{rate:.0%}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(counter.items()))
