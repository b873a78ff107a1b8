"""The prefix spill: records on disk, read back by ranges of one byte, in the order added."""

from __future__ import annotations

import errno
import io
import random
import tempfile

import pytest

from target_pinterest_audiences.errors import ScratchSpaceError
from target_pinterest_audiences.prefix_spill import PREFIXES, PrefixSpill, prefix_ranges


def records(count: int, *, seed: int, fixed: int | None = None) -> list[bytes]:
    chooser = random.Random(seed)
    return [
        bytes([chooser.randrange(PREFIXES)])
        + chooser.randbytes(fixed - 1 if fixed else chooser.randrange(0, 80))
        for _ in range(count)
    ]


@pytest.mark.parametrize("fixed", [None, 37])
def test_each_range_returns_its_records_a_prefixs_in_the_order_added(fixed: int | None) -> None:
    added = records(1000, seed=1, fixed=fixed)
    spill = PrefixSpill(prefix_at=0, record_bytes=fixed, block_records=64)  # 16 blocks
    for record in added:
        spill.add(record)
    assert spill.records == len(added)

    ranges = prefix_ranges(len(added), 100)
    read = {low: list(spill.read(low, high)) for low, high in ranges}
    for low, high in ranges:
        assert sorted(read[low]) == sorted(record for record in added if low <= record[0] < high)
        for value in range(low, high):  # a key's records keep their order: the last one wins
            assert [r for r in read[low] if r[0] == value] == [r for r in added if r[0] == value]
    assert sum(len(found) for found in read.values()) == len(added)
    spill.close()


def test_the_prefix_may_be_any_byte_of_the_record() -> None:
    spill = PrefixSpill(prefix_at=2, record_bytes=3, block_records=2)
    for record in (b"ab\x05", b"cd\x01", b"ef\x05", b"gh\xff"):
        spill.add(record)
    assert list(spill.read(0, 5)) == [b"cd\x01"]
    assert list(spill.read(5, 6)) == [b"ab\x05", b"ef\x05"]
    assert list(spill.read(0, PREFIXES)) == [b"cd\x01", b"ab\x05", b"ef\x05", b"gh\xff"]


def test_records_still_in_memory_are_read_too_and_clear_starts_over() -> None:
    spill = PrefixSpill(prefix_at=0, block_records=1000)
    spill.add(b"\x01one")
    assert list(spill.read(0, PREFIXES)) == [b"\x01one"]
    spill.add(b"\x01two")
    assert list(spill.read(0, PREFIXES)) == [b"\x01one", b"\x01two"]

    spill.clear()
    assert spill.records == 0
    assert list(spill.read(0, PREFIXES)) == []
    spill.add(b"\x02three")
    assert list(spill.read(0, PREFIXES)) == [b"\x02three"]
    spill.close()
    assert list(spill.read(0, PREFIXES)) == []


def test_an_empty_spill_writes_no_file() -> None:
    spill = PrefixSpill(prefix_at=0)
    assert list(spill.read(0, PREFIXES)) == []
    assert spill._file is None  # nothing on disk for a pass that had no rows


@pytest.mark.parametrize(
    ("count", "per_range", "expected"), [(0, 10, 1), (10, 10, 1), (11, 10, 2), (10**9, 10, 256)]
)
def test_ranges_cover_every_prefix_once(count: int, per_range: int, expected: int) -> None:
    ranges = prefix_ranges(count, per_range)
    assert len(ranges) == expected
    assert [value for low, high in ranges for value in range(low, high)] == list(range(PREFIXES))


class FullDisk(io.RawIOBase):
    """A file on a disk with room for ``room`` bytes: a write past them fails, as on ENOSPC."""

    def __init__(self, room: int) -> None:
        self._data = bytearray()
        self._position = 0
        self._room = room

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}
        self._position = base[whence] + offset
        return self._position

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        if self._position + len(chunk) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._data[self._position : self._position + len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def readinto(self, buffer: object) -> int:
        view = memoryview(buffer)  # type: ignore[arg-type]
        chunk = self._data[self._position : self._position + len(view)]
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def truncate(self, size: int | None = None) -> int:
        del self._data[size or 0 :]
        return len(self._data)


def test_a_full_disk_is_a_clear_error_and_the_spill_can_still_be_cleared_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disks: list[FullDisk] = []

    def temporary_file(**_: object) -> io.BufferedRandom:
        disks.append(FullDisk(room=1000))
        return io.BufferedRandom(disks[-1])  # the failed block stays in its buffer

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)  # as prefix_spill calls it
    spill = PrefixSpill(prefix_at=0, record_bytes=40, block_records=10)  # 400-byte blocks
    for record in records(26, seed=3, fixed=40):  # two blocks fit, not the 6 records more
        spill.add(record)
    with pytest.raises(ScratchSpaceError) as raised:
        spill.flush()
    message = str(raised.value)
    assert (
        f"in the temporary directory {tempfile.gettempdir()} (No space left on device)" in message
    )
    assert "set TMPDIR" in message
    assert isinstance(raised.value.__cause__, OSError)

    spill.clear()  # what a failed pass does: no second error from the unwritten bytes
    kept = records(5, seed=4, fixed=40)
    for record in kept:
        spill.add(record)
    assert sorted(spill.read(0, PREFIXES)) == sorted(kept)
    assert len(disks) == 2  # the cleared spill started a new file
    spill.close()
