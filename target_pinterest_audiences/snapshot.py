"""Mirror mode's snapshot: this run's membership per audience, spilled to disk by digest prefix.

Mirror mode compares the run's records with the ledger at the end of the run, and a
10M-member snapshot must not be held in memory. Both sides are therefore read in ranges of
the digests' first byte (a *prefix group*): the ledger answers a range query, the snapshot
keeps its entries on disk already split by prefix, and each range is compared with set
differences in memory (see :func:`target_pinterest_audiences.mirror.diff`).

Why prefixes and not sorted order: digests are SHA-256 values, spread evenly over the first
byte, so splitting by it is one pass over the entries, while sorting them costs more: on 1M
digests, Python's sort took about 0.6 µs per entry, and SQLite (this module's first design:
insert every entry, then ``ORDER BY``) about 2.5 µs. Nothing downstream needs digest order,
only ranges.

How the entries get there: :meth:`Snapshot.record` appends each digest (32 raw bytes) and
its flag (1 in the audience, 0 not) to the audience's in-memory buffer. When all buffers
together hold :data:`SPILL_ENTRIES`, each audience's buffer is split by prefix into chunks
appended to one scratch file, and the chunks' places are kept in a small index. An audience
with few entries in a spill gets few, coarse chunks (at least :data:`CHUNK_ENTRIES` each), so
thousands of small audiences cost a few index entries each, not 256.

A user's last record in the run decides. Entries keep arrival order within a chunk, chunks
are read in the order they were written, and the reader keeps the last flag per digest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import IO

from target_pinterest_audiences import scratch

SNAPSHOT_FOLDER_PREFIX = "target-pinterest-audiences-snapshot-"
"""Snapshot folders in the temp directory are named ``<prefix><pid>-<random>``."""
_WHAT = "mirror mode's snapshot (33 bytes per identifier)"

SPILL_ENTRIES = 200_000
"""Entries buffered in memory (about 15 MB) before they are written to the scratch file."""

CHUNK_ENTRIES = 512
"""A spill writes an audience's entries in chunks of at least this many (or all of them)."""

DIGEST_BYTES = 32
_DIGESTS = struct.Struct(f"{DIGEST_BYTES}s")
PREFIXES = 256
"""Values of a digest's first byte: prefix groups split ``range(PREFIXES)`` evenly."""


def prefix_groups(entries: int, per_group: int) -> int:
    """The fewest groups (a power of two, at most 256) with about ``per_group`` entries each."""
    groups = 1
    while groups < PREFIXES and entries > groups * per_group:
        groups *= 2
    return groups


def _spill_groups(entries: int) -> int:
    """The most groups (a power of two, at most 256) of at least CHUNK_ENTRIES entries each."""
    groups = 1
    while groups * 2 * CHUNK_ENTRIES <= entries and groups < PREFIXES:
        groups *= 2
    return groups


def group_shift(groups: int) -> int:
    """How far to shift a first byte right to get its group's number (``groups`` = 2**k)."""
    return 8 - (groups.bit_length() - 1)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One spill's entries of one audience whose first byte is in ``[low, high)``."""

    low: int
    high: int
    offset: int
    entries: int
    leaves: bool
    """Some entry says "not in the audience" (most snapshots have none: a cheaper read)."""


class Snapshot:
    """This run's membership per audience, on disk; the last record for a user wins."""

    def __init__(self) -> None:
        # Folders of runs that were killed (SIGKILL, OOM) go first; see ``scratch``.
        scratch.remove_stale(SNAPSHOT_FOLDER_PREFIX)
        with scratch.writing(_WHAT):
            self._directory = scratch.ScratchDirectory(SNAPSHOT_FOLDER_PREFIX)
            # Scratch data, rebuilt from the input on any re-run: never synced.
            self._file: IO[bytes] = open(self._directory.path / "snapshot.bin", "w+b")  # noqa: SIM115
        self._size = 0
        self._pending: dict[str, tuple[list[bytes], bytearray]] = {}
        self._pending_entries = 0
        self._chunks: dict[str, list[_Chunk]] = {}
        self._entries: dict[str, int] = {}
        self.streams: dict[str, set[str]] = {}
        """Each stream that took part, with the audiences its records named."""

    def observe_stream(self, stream: str) -> None:
        """A stream took part in this run (it sent a SCHEMA), even if it has no records."""
        self.streams.setdefault(stream, set())

    def covers(self, stream: str, audience: str) -> None:
        """``stream`` named ``audience`` in this run: the stream covers it from now on."""
        self.streams.setdefault(stream, set()).add(audience)

    def record(self, audience: str, hashes: list[str], present: bool) -> None:
        """Note that the users ``hashes`` (hex SHA-256) are (not) in ``audience``.

        The stream that said so is told apart by :meth:`covers`, once per audience, not here
        on every record.
        """
        pending = self._pending.get(audience)
        if pending is None:
            pending = self._pending[audience] = ([], bytearray())
        digests, flags = pending
        flag = 1 if present else 0
        for value in hashes:
            digests.append(bytes.fromhex(value))
            flags.append(flag)
        self._pending_entries += len(hashes)
        if self._pending_entries >= SPILL_ENTRIES:
            self._spill()

    def entries(self, audience: str) -> int:
        """How many entries this run noted for ``audience`` (a user's repeats included)."""
        pending = self._pending.get(audience)
        return self._entries.get(audience, 0) + (len(pending[0]) if pending else 0)

    def _spill(self) -> None:
        """Write every buffer to the scratch file, split by prefix, and empty the buffers."""
        with scratch.writing(_WHAT):
            self._spill_buffers()

    def _spill_buffers(self) -> None:
        for audience, (digests, flags) in self._pending.items():
            count = len(digests)
            if not count:
                continue
            chunks = self._chunks.setdefault(audience, [])
            groups = _spill_groups(count)
            if groups == 1:
                self._append(chunks, 0, PREFIXES, digests, flags)
            else:
                shift = group_shift(groups)
                parts: list[list[bytes]] = [[] for _ in range(groups)]
                part_flags = [bytearray() for _ in range(groups)]
                if 0 in flags:
                    for digest, flag in zip(digests, flags, strict=True):
                        group = digest[0] >> shift
                        parts[group].append(digest)
                        part_flags[group].append(flag)
                else:  # everyone in (the common case): only the digests need splitting
                    for digest in digests:
                        parts[digest[0] >> shift].append(digest)
                    for part, part_flag in zip(parts, part_flags, strict=True):
                        part_flag.extend(b"\x01" * len(part))
                for group, part in enumerate(parts):
                    if part:
                        low = group << shift
                        self._append(chunks, low, low + (1 << shift), part, part_flags[group])
            self._entries[audience] = self._entries.get(audience, 0) + count
        self._pending.clear()
        self._pending_entries = 0

    def _append(
        self, chunks: list[_Chunk], low: int, high: int, digests: list[bytes], flags: bytearray
    ) -> None:
        data = b"".join(digests)
        self._file.write(data)
        self._file.write(flags)
        chunks.append(_Chunk(low, high, self._size, len(digests), 0 in flags))
        self._size += len(data) + len(flags)

    def _read(self, chunk: _Chunk) -> tuple[list[bytes], bytes]:
        """A chunk's digests and flags, in the order they were recorded."""
        self._file.seek(chunk.offset)
        size = chunk.entries * DIGEST_BYTES
        data = self._file.read(size + chunk.entries)
        return list(map(itemgetter(0), _DIGESTS.iter_unpack(data[:size]))), data[size:]

    def members(self, audience: str, groups: int) -> Iterator[tuple[int, int, set[bytes]]]:
        """The members of ``audience`` in this run, in ``groups`` prefix groups, in order.

        Yields ``(low, high, digests)``: the users whose digest's first byte is in
        ``[low, high)`` and whose last record in the run put them in the audience. Every
        group is yielded, empty ones too, so that the caller can walk the ledger alongside.
        ``groups`` is a power of two up to 256 (see :func:`prefix_groups`).
        """
        if self._pending:
            self._spill()
        with scratch.writing(_WHAT):
            self._file.flush()
        shift = group_shift(groups)
        chunks = self._chunks.get(audience, [])
        by_group: list[list[int]] = [[] for _ in range(groups)]
        for index, chunk in enumerate(chunks):
            for group in range(chunk.low >> shift, ((chunk.high - 1) >> shift) + 1):
                by_group[group].append(index)
        # A chunk wider than a group (few entries in its spill) is read and split once; its
        # other groups' parts wait here until their turn.
        split: dict[int, list[tuple[list[bytes], bytearray]]] = {}
        for group, indexes in enumerate(by_group):
            low = group << shift
            high = low + (1 << shift)
            pieces = [self._piece(chunks[index], index, group, shift, split) for index in indexes]
            if not any(chunks[index].leaves for index in indexes):
                # Everyone named is in: the last record cannot say otherwise.
                present: set[bytes] = set()
                for digests, _ in pieces:
                    present.update(digests)
                yield low, high, present
                continue
            latest: dict[bytes, int] = {}
            for digests, flags in pieces:  # in the order written: a later record wins
                latest.update(zip(digests, flags, strict=True))
            yield low, high, {digest for digest, flag in latest.items() if flag}

    def _piece(
        self,
        chunk: _Chunk,
        index: int,
        group: int,
        shift: int,
        split: dict[int, list[tuple[list[bytes], bytearray]]],
    ) -> tuple[list[bytes], bytes | bytearray]:
        """The entries of ``chunk`` (number ``index``) that fall in ``group``."""
        first = chunk.low >> shift
        last = (chunk.high - 1) >> shift
        if first == last:  # the chunk lies within the group
            return self._read(chunk)
        parts = split.get(index)
        if parts is None:
            parts = split[index] = [([], bytearray()) for _ in range(last - first + 1)]
            digests, flags = self._read(chunk)
            for digest, flag in zip(digests, flags, strict=True):
                part_digests, part_flags = parts[(digest[0] >> shift) - first]
                part_digests.append(digest)
                part_flags.append(flag)
        if group == last:
            del split[index]
        return parts[group - first]

    def close(self) -> None:
        """Delete the scratch file and its folder."""
        scratch.close_quietly(self._file)
        self._directory.close()
