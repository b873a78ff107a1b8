"""The optional reject file: one JSON line per value or record that was not sent.

It lets a data engineer find the rows to fix upstream without the file itself becoming a
copy of the PII: identifiers appear only as the SHA-256 of the raw value as it arrived
(before normalization), which the engineer can compute on their side to match rows.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any

from target_pinterest_audiences.fields import IDENTIFIER_FIELDS
from target_pinterest_audiences.identifiers import sha256_hex


def fingerprint(value: object) -> str:
    """SHA-256 of a raw value as received (strings as-is, anything else as JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return sha256_hex(text)


class RejectFile:
    """Appends reject lines to ``path``; does nothing when no path is configured."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()
        self.lines_written = 0

    def write(self, stream: str, record_number: int, reason: str, record: dict[str, Any]) -> None:
        """Record that ``record`` (or one of its identifiers) was not sent, and why."""
        if self.path is None:
            return
        identifiers = {
            name: fingerprint(record[name])
            for name in sorted(IDENTIFIER_FIELDS)
            if record.get(name) is not None
        }
        line = json.dumps(
            {
                "stream": stream,
                "record_number": record_number,
                "reason": reason,
                "identifiers_sha256": identifiers,
            },
            separators=(",", ":"),
        )
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(line + "\n")
            self.lines_written += 1

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
