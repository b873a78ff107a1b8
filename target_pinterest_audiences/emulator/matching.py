"""Which uploaded records "match" a Pinterest user: the emulator's model of matching.

Pinterest reports an audience's ``size`` as the Pinterest users its identifiers matched,
which is fewer than the records uploaded: people without an account, or registered with
another address, match nobody. The emulator cannot know who has an account, so it
decides per record, deterministically: a record matches when a keyed hash of its exact
text falls below ``match_rate`` (the share of records that match, 0 to 1). The same
record always gives the same answer, in every emulator and every run, so a test can
compute the expected size itself and re-runs converge on the same numbers.

Every matched record counts as one user: the emulator cannot tell that an email and an
IDFA belong to the same person, so it never merges them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Any fixed key works; it only keeps the decision independent of the record's own digest
# (records are SHA-256 digests already, so their leading bits are not a fresh coin).
_KEY = b"pinterest-api-emulator/matching"
_SCALE = float(1 << 64)


def match_score(record: str) -> float:
    """A uniform, deterministic number in [0, 1) for ``record``."""
    digest = hashlib.blake2b(record.encode("utf-8"), digest_size=8, key=_KEY).digest()
    return int.from_bytes(digest, "big") / _SCALE


class MatchModel:
    """Decides which records match; ``match_rate`` 1.0 (the default) matches every one."""

    def __init__(self, match_rate: float = 1.0) -> None:
        if not 0.0 <= match_rate <= 1.0:
            msg = f"match_rate must be between 0 and 1, not {match_rate}"
            raise ValueError(msg)
        self.match_rate = match_rate

    def matches(self, record: str) -> bool:
        """Whether ``record`` matches a Pinterest user."""
        if self.match_rate >= 1.0:
            return True
        return match_score(record) < self.match_rate

    def matched(self, records: Iterable[str]) -> set[str]:
        """The records of ``records`` that match (all of them at rate 1.0, cheaply)."""
        if self.match_rate >= 1.0:
            return set(records)
        if self.match_rate <= 0.0:
            return set()
        rate = self.match_rate
        return {record for record in records if match_score(record) < rate}
