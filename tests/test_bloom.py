"""The digest filter: never a wrong "no", rarely a wrong "maybe", small and growing."""

from __future__ import annotations

import hashlib
import threading

import pytest

from target_pinterest_audiences import bloom
from target_pinterest_audiences.bloom import DigestFilter


def digests(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{n}".encode()).hexdigest() for n in range(count)]


def test_an_empty_filter_says_no_to_everything() -> None:
    assert DigestFilter().maybe_added(digests("a", 5)) == [False] * 5
    assert DigestFilter().maybe_added([]) == []


def test_everything_added_is_maybe_added_across_many_stages() -> None:
    added = digests("member", 100_000)  # far past the first stages
    bloom = DigestFilter()
    for start in range(0, len(added), 1900):
        bloom.add(added[start : start + 1900])

    assert all(bloom.maybe_added(added))


def test_few_never_added_digests_are_mistaken_for_added() -> None:
    bloom = DigestFilter()
    bloom.add(digests("member", 100_000))

    mistaken = sum(bloom.maybe_added(digests("stranger", 20_000)))

    # About 1.4% per full stage, summed over the stages a lookup visits.
    assert mistaken / 20_000 < 0.08


def test_memory_grows_with_what_was_added_not_ahead_of_it() -> None:
    small = DigestFilter()
    small.add(digests("a", 2))
    big = DigestFilter()
    big.add(digests("b", 100_000))

    assert small.size_bytes <= 2048
    # 16 bits per digest in stages that grow fourfold: under 8 bytes per digest here, and
    # under 4 past a quarter of a million, where stages only double.
    assert big.size_bytes < 8 * 100_000


def test_concurrent_adds_lose_nothing() -> None:
    bloom = DigestFilter()
    batches = [digests(f"thread{n}-", 5000) for n in range(4)]
    threads = [threading.Thread(target=bloom.add, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(all(bloom.maybe_added(batch)) for batch in batches)


def test_values_that_are_not_hex_digests_still_work() -> None:
    bloom = DigestFilter()
    bloom.add(["hash-1", "hash-2", "A" * 64])

    assert bloom.maybe_added(["hash-1", "hash-2", "a" * 64]) == [True, True, True]
    assert bloom.maybe_added(["hash-3"]) == [False]


def test_one_digest_at_a_time_answers_as_the_batch_does() -> None:
    bloom = DigestFilter()
    added = digests("member", 5000)
    bloom.add(added)
    asked = added[:50] + digests("stranger", 500) + ["hash-1", "A" * 64]

    assert [bloom.maybe_added_one(d) for d in asked] == bloom.maybe_added(asked)
    assert all(bloom.maybe_added_one(d) for d in added)


def test_past_its_largest_stage_the_filter_stops_growing_and_still_never_says_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bloom, "_MAX_STAGE_DIGESTS", 4096)
    added = digests("member", 60_000)  # fifteen times what the largest stage is sized for
    capped = DigestFilter()
    for start in range(0, len(added), 1900):
        capped.add(added[start : start + 1900])

    assert capped.size_bytes == 2048 + 8192  # a 1,024 and a 4,096 stage, nothing more
    assert all(capped.maybe_added(added))
    assert all(capped.maybe_added_one(digest) for digest in added[::7])
