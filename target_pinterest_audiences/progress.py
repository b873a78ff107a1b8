"""A progress line in the logs on long runs (a target's stdout belongs to Singer).

A background thread wakes up at a steady interval and logs records read, identifiers
Pinterest acknowledged, requests sent and the recent read rate, from the run's counters.
The record path pays nothing for it.
"""

from __future__ import annotations

import logging
import threading
import time

from target_pinterest_audiences.report import RunReport

logger = logging.getLogger(__name__)


class ProgressLogger:
    """Logs the run's progress every ``interval`` seconds until stopped."""

    def __init__(self, report: RunReport, interval: float) -> None:
        self._report = report
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> None:
        """Begin logging (no-op for a zero interval)."""
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop logging."""
        self._stop.set()

    def _run(self) -> None:
        last_records, last_time = 0, time.monotonic()
        while not self._stop.wait(self._interval):
            records, added, removed, requests = self.totals()
            now = time.monotonic()
            rate = (records - last_records) / max(now - last_time, 1e-9)
            logger.info(
                "Progress: %d records read (%.0f/s), %d identifiers added and %d removed "
                "(acknowledged by Pinterest), %d requests",
                records,
                rate,
                added,
                removed,
                requests,
            )
            last_records, last_time = records, now

    def totals(self) -> tuple[int, int, int, int]:
        """(records read, identifiers added, identifiers removed, requests) so far."""
        with self._report.lock:
            records = sum(stream.records for stream in list(self._report.streams.values()))
            audiences = list(self._report.audiences.values())
            added = sum(a.added for a in audiences)
            removed = sum(a.removed for a in audiences)
            requests = sum(a.requests for a in audiences)
        return records, added, removed, requests
