"""Records spilled to a temporary file, read back one prefix range at a time.

Upsert mode merges up to a million rows or more with the row ledger in one pass, more than
it can hold in memory. Its keys are SHA-256 values, spread evenly over their first byte, so
instead of sorting everything the records are spilled in blocks, each block ordered by one
byte of the record (the *prefix*, for example a row id's first byte), with the offset where
each prefix value starts. Reading the range of prefix values ``[low, high)`` is then one
contiguous read per block, and a pass handles one range after another: a fraction of the
records in memory at a time, and the ledger's B-tree walked in key order, each page once.

Records with the same prefix value come back in the order they were added (blocks are read
in order, and the sort by prefix within a block is stable), so a consumer that keeps a
key's last record keeps its latest.

The file is an unnamed temporary file: it disappears when it is closed or the process dies,
however it dies, so a killed run leaves nothing behind.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from typing import IO

from target_pinterest_audiences import scratch
from target_pinterest_audiences.snapshot import PREFIXES as PREFIXES  # re-exported
from target_pinterest_audiences.snapshot import prefix_groups

_LENGTH = struct.Struct(">I")
ROWS = "upsert mode's rows waiting for their merge (about 70 bytes each)"
"""What a spill holds, for the message when it cannot be written (see ``what``)."""


class PrefixSpill:
    """Byte records on disk, grouped by the value of their byte at ``prefix_at``.

    ``record_bytes`` fixes every record's length (no length is stored then); ``None``
    allows records of any length of at least ``prefix_at + 1`` bytes.
    """

    def __init__(
        self,
        *,
        prefix_at: int,
        record_bytes: int | None = None,
        block_records: int = 100_000,
        what: str = ROWS,
    ) -> None:
        self._what = what
        self._prefix_at = prefix_at
        self._record_bytes = record_bytes
        self._block_records = block_records
        self._buffer: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._size = 0
        self._blocks: list[list[int]] = []
        """Per block written: the file offset where each prefix value starts, and its end."""
        self.records = 0
        """Records added so far (in blocks and in the buffer)."""

    def add(self, record: bytes) -> None:
        """Append one record (written to disk with the next full block)."""
        self._buffer.append(record)
        self.records += 1
        if len(self._buffer) >= self._block_records:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as one block."""
        buffer = self._buffer
        if not buffer:
            return
        self._buffer = []
        at = self._prefix_at
        buffer.sort(key=lambda record: record[at])  # stable: arrival order within a prefix
        overhead = 0 if self._record_bytes is not None else _LENGTH.size
        sizes = [0] * PREFIXES
        for record in buffer:
            sizes[record[at]] += len(record) + overhead
        offsets = [self._size]
        for value in range(PREFIXES):
            offsets.append(offsets[-1] + sizes[value])
        if overhead:
            length = _LENGTH.pack
            data = b"".join(part for record in buffer for part in (length(len(record)), record))
        else:
            data = b"".join(buffer)
        with scratch.writing(self._what):
            if self._file is None:
                # Scratch data, rebuilt from the input by any re-run: never synced.
                self._file = tempfile.TemporaryFile(prefix="target-pinterest-audiences-spill-")  # noqa: SIM115
            self._file.seek(self._size)
            self._file.write(data)
            self._file.flush()  # a full disk says so here, not in a later read
        self._size += len(data)
        self._blocks.append(offsets)

    def read(self, low: int, high: int) -> Iterator[bytes]:
        """Every record whose prefix byte is in ``[low, high)``.

        Those with the same prefix value come in the order they were added.
        """
        self.flush()
        if self._file is None:
            return
        size = self._record_bytes
        for offsets in self._blocks:
            start, end = offsets[low], offsets[high]
            if start == end:
                continue
            self._file.seek(start)
            data = self._file.read(end - start)
            if size is not None:
                for position in range(0, len(data), size):
                    yield data[position : position + size]
                continue
            position = 0
            while position < len(data):
                (length,) = _LENGTH.unpack_from(data, position)
                position += _LENGTH.size
                yield data[position : position + length]
                position += length

    def clear(self) -> None:
        """Forget every record (the file is reused, from its start)."""
        self._buffer = []
        self._blocks = []
        self._size = 0
        self.records = 0
        if self._file is not None:
            try:
                self._file.truncate(0)
            except OSError:  # its buffer holds a failed write's bytes: the next gets a new file
                scratch.close_quietly(self._file)
                self._file = None

    def close(self) -> None:
        """Delete the file."""
        if self._file is not None:
            scratch.close_quietly(self._file)
            self._file = None
        self.clear()


def prefix_ranges(records: int, per_range: int) -> list[tuple[int, int]]:
    """The fewest equal ranges of prefix values (at most 256) of about ``per_range`` records.

    Prefixes of hashes are spread evenly, so equal ranges hold about equal records.
    """
    step = PREFIXES // prefix_groups(records, per_range)  # mirror's snapshot splits the same way
    return [(low, low + step) for low in range(0, PREFIXES, step)]
