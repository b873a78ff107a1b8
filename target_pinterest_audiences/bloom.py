"""A compact, growing set of SHA-256 digests that may answer "maybe" but never a wrong "no".

The uploader uses it to remember who it added to a customer list it created in this run,
so it sends no REMOVE for someone who was never added, without holding every member of a
large first sync in memory. A Bloom filter fits: "no" is certain (the REMOVE is not
needed), "maybe" is usually right and otherwise costs one unneeded REMOVE, which Pinterest
accepts (REMOVE is idempotent).

The digests are already uniformly random, so the filter hashes nothing: three 64-bit words
of each digest are its three bit positions. Capacity is unknown up front, so the filter
grows by stages (a scalable Bloom filter): each holds twice as many digests as the one
before, at 16 bits per digest (about 0.5% false "maybe" per full stage), and a digest is
looked up in every stage. Measured: a list of a million members costs about 2.1 MB, and
about 5% of never-added digests then answer "maybe" (0.5% at a thousand members).
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections.abc import Iterable

_BITS_PER_DIGEST = 16  # a power of two, so a stage has exactly this many bits per digest
_FIRST_STAGE_DIGESTS = 1024
_DIGEST_BYTES = 32
_WORDS_PER_DIGEST = 4  # a SHA-256 digest is four 64-bit words
_POSITIONS = 3  # words used as bit positions, per stage


class _Stage:
    """One fixed-size Bloom filter of ``capacity`` digests."""

    __slots__ = ("bits", "capacity", "count", "mask")

    def __init__(self, capacity: int) -> None:
        size = capacity * _BITS_PER_DIGEST
        size = 1 << (size - 1).bit_length()  # a power of two: positions are a mask away
        self.bits = bytearray(size >> 3)
        self.mask = size - 1
        self.capacity = capacity
        self.count = 0


class DigestFilter:
    """Add SHA-256 hex digests; ask which of some digests may have been added.

    Thread-safe: the uploader's request threads add and ask concurrently.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: list[_Stage] = []

    def add(self, digests: list[str]) -> None:
        """Remember ``digests`` (64 hex characters each)."""
        if not digests:
            return
        words = _words(digests)
        with self._lock:
            start = 0
            while start < len(digests):
                stage = self._stage_with_room()
                take = min(stage.capacity - stage.count, len(digests) - start)
                bits, mask = stage.bits, stage.mask
                for position in range(_POSITIONS):
                    first = start * _WORDS_PER_DIGEST + position
                    last = (start + take) * _WORDS_PER_DIGEST
                    for word in words[first:last:_WORDS_PER_DIGEST]:
                        index = word & mask
                        bits[index >> 3] |= 1 << (index & 7)
                stage.count += take
                start += take

    def maybe_added(self, digests: list[str]) -> list[bool]:
        """For each digest: False if it was certainly never added, else True."""
        if not digests:
            return []
        words = _words(digests)
        with self._lock:
            stages = list(self._stages)
        answers = []
        for number in range(len(digests)):
            offset = number * _WORDS_PER_DIGEST
            digest_words = words[offset : offset + _POSITIONS]
            answers.append(any(_in_stage(stage, digest_words) for stage in stages))
        return answers

    @property
    def size_bytes(self) -> int:
        """Memory held by the bit arrays."""
        return sum(len(stage.bits) for stage in self._stages)

    def _stage_with_room(self) -> _Stage:
        if not self._stages or self._stages[-1].count >= self._stages[-1].capacity:
            capacity = _FIRST_STAGE_DIGESTS << len(self._stages)
            self._stages.append(_Stage(capacity))
        return self._stages[-1]


def _in_stage(stage: _Stage, words: Iterable[int]) -> bool:
    bits, mask = stage.bits, stage.mask
    for word in words:
        index = word & mask
        if not bits[index >> 3] & (1 << (index & 7)):
            return False
    return True


def _words(digests: list[str]) -> array[int]:
    """The digests as 64-bit words, four per digest, in one C-level conversion.

    Anything that is not a 64-character hex digest (the filter's callers treat hashes as
    opaque strings) is hashed to one first.
    """
    words = array("Q")
    joined = "".join(digests)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        raw = b""
    if len(raw) != _DIGEST_BYTES * len(digests):
        raw = b"".join(_digest_bytes(digest) for digest in digests)
    words.frombytes(raw)
    return words


def _digest_bytes(text: str) -> bytes:
    if len(text) == 2 * _DIGEST_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return hashlib.sha256(text.encode("utf-8")).digest()
