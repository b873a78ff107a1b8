"""The mirror snapshot: entries spilled by digest prefix, read back per group, last wins."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from target_pinterest_audiences import snapshot
from target_pinterest_audiences.snapshot import Snapshot, group_shift, prefix_groups


def h(n: int) -> str:
    return hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()


@pytest.fixture
def snap() -> Iterator[Snapshot]:
    opened = Snapshot()
    yield opened
    opened.close()


def members(snap: Snapshot, audience: str, groups: int) -> list[str]:
    """Every member, checking that each group holds only digests of its prefix range."""
    found: list[str] = []
    previous_high = 0
    for low, high, digests in snap.members(audience, groups):
        assert low == previous_high  # every group, in order, none left out
        previous_high = high
        assert all(low <= digest[0] < high for digest in digests)
        found.extend(digest.hex() for digest in digests)
    assert previous_high == 256
    return sorted(found)


def test_prefix_groups_are_powers_of_two_sized_for_the_entries() -> None:
    assert prefix_groups(0, 1000) == 1
    assert prefix_groups(1000, 1000) == 1
    assert prefix_groups(1001, 1000) == 2
    assert prefix_groups(10**9, 1000) == 256
    assert [group_shift(groups) for groups in (1, 2, 16, 256)] == [8, 7, 4, 0]


def test_the_last_record_for_a_user_wins_and_streams_are_remembered(snap: Snapshot) -> None:
    snap.record("vip", [h(3), h(1)], True)
    snap.record("vip", [h(2)], True)
    snap.record("vip", [h(3)], False)  # left again later in the same run
    snap.record("vip", [h(4)], False)
    snap.record("vip", [h(4)], True)  # and one who came back
    snap.record("other", [h(9)], True)
    snap.covers("s", "vip")
    snap.covers("t", "other")
    snap.covers("t", "other")  # said again: no harm
    snap.observe_stream("u")

    assert members(snap, "vip", 1) == sorted([h(1), h(2), h(4)])
    assert members(snap, "vip", 256) == sorted([h(1), h(2), h(4)])
    assert members(snap, "other", 4) == [h(9)]
    assert members(snap, "unknown", 2) == []
    assert snap.entries("vip") == 6
    assert snap.streams == {"s": {"vip"}, "t": {"other"}, "u": set()}


@pytest.mark.parametrize("groups", [1, 8, 256])
def test_spills_keep_the_last_record_across_chunks_of_any_size(
    monkeypatch: pytest.MonkeyPatch, snap: Snapshot, groups: int
) -> None:
    # Tiny spills: "big" gets fine chunks (many prefixes), "small" one coarse chunk each time.
    monkeypatch.setattr(snapshot, "SPILL_ENTRIES", 3_000)
    monkeypatch.setattr(snapshot, "CHUNK_ENTRIES", 64)
    expected: dict[str, bool] = {}
    for n in range(20_000):
        present = n % 7 != 0
        snap.record("big", [h(n % 9_000)], present)  # users recur across spills
        expected[h(n % 9_000)] = present
        if n % 100 == 0:
            snap.record("small", [h(n)], True)
        snap.record("joined", [h(n % 5_000)], True)  # nobody leaves: the cheaper read

    assert members(snap, "big", groups) == sorted(v for v, present in expected.items() if present)
    assert members(snap, "small", groups) == sorted(h(n) for n in range(0, 20_000, 100))
    assert members(snap, "joined", groups) == sorted(h(n) for n in range(5_000))
    assert snap.entries("big") == 20_000


def test_close_removes_the_scratch_folder(snap: Snapshot) -> None:
    snap.record("vip", [h(1)], True)
    folder = snap._directory.path
    assert folder.exists()
    snap.close()
    assert not folder.exists()
