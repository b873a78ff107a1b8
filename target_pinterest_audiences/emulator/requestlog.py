"""Compact log of API requests plus the counters tests assert on.

Entries never hold request bodies or records (a 1M-identifier sync must keep
the log small): only method, path, query string, status, operation, whether
the request matched the contract, the error text, the fault applied, the query
parameters ignored because the description does not declare them, and for
customer-list writes the operation type (``CREATE``/``ADD``/``REMOVE``) and
record count. The log keeps the newest ``limit`` entries (default 100,000);
counters are never truncated. Admin (``/_emulator/``) requests are not logged.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LogEntry:
    """One API request as the emulator saw and answered it."""

    seq: int
    time: float
    method: str
    path: str
    query: str
    route: str | None = None
    operation: str | None = None
    status: int | None = None  # None when the connection was dropped unanswered
    valid: bool = True
    error: str | None = None
    fault: str | None = None
    operation_type: str | None = None
    record_count: int | None = None
    duration_ms: float = 0.0
    response_problem: str | None = None
    ignored_query_parameters: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object."""
        return asdict(self)


class RequestLog:
    """Thread-safe request log and counters."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LogEntry] = deque(maxlen=limit)
        self._seq = 0
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._invalid = 0
        self._response_errors = 0
        self._faults = 0
        self._ignored_query = 0

    def next_seq(self) -> int:
        """A number that orders requests by arrival."""
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, entry: LogEntry) -> None:
        """Record a finished request and update the counters."""
        with self._lock:
            self._entries.append(entry)
            self._by_route[entry.route or f"{entry.method} <unknown>"] += 1
            self._by_status["dropped" if entry.status is None else str(entry.status)] += 1
            self._invalid += not entry.valid
            self._response_errors += entry.response_problem is not None
            self._faults += entry.fault is not None
            self._ignored_query += bool(entry.ignored_query_parameters)

    def entries(self) -> list[dict[str, Any]]:
        """All kept entries, oldest first."""
        with self._lock:
            return [entry.to_json() for entry in self._entries]

    def counters(self) -> dict[str, Any]:
        """Totals since start or the last reset."""
        with self._lock:
            return {
                "total_requests": sum(self._by_route.values()),
                "requests_by_route": dict(sorted(self._by_route.items())),
                "requests_by_status": dict(sorted(self._by_status.items())),
                "invalid_requests": self._invalid,
                "response_validation_errors": self._response_errors,
                "faults_applied": self._faults,
                "requests_with_ignored_query_parameters": self._ignored_query,
            }

    @property
    def response_validation_errors(self) -> int:
        """Responses the emulator sent that did not match the description."""
        with self._lock:
            return self._response_errors

    def reset(self) -> None:
        """Forget entries and counters."""
        with self._lock:
            self._entries.clear()
            self._seq = 0
            self._by_route.clear()
            self._by_status.clear()
            self._invalid = 0
            self._response_errors = 0
            self._faults = 0
            self._ignored_query = 0
