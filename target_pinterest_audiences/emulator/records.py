"""Parsing of the ``records`` field of customer-list writes.

Pinterest takes records as ONE comma-separated string. The emulator splits on
commas and drops empty items (a trailing comma, ``a,,b``) but otherwise keeps
each item exactly as sent: no trimming, no lower-casing. Normalising would
hide client bugs; a record sent as ``" ab12..."`` is stored with its space and
is counted as non-SHA-256 by the privacy self-check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def split_records(records: str) -> list[str]:
    """The non-empty items of a comma-separated records string, in order."""
    return [item for item in records.split(",") if item]


def count_non_sha256(records: Iterable[str]) -> int:
    """How many records are not 64-character lowercase hex (SHA-256 digests).

    The target must only ever send hashed identifiers; tests assert this
    counter stays 0 to prove no raw e-mail or device id left the machine.
    """
    return sum(1 for record in records if not _SHA256_HEX.fullmatch(record))
