"""Deterministic synthetic Singer stream of audience memberships, with its expected outcome.

The benchmark must check that a fast run is also a correct one, so the generator records,
while writing, what Pinterest should hold afterwards: per audience and user, the last
change wins. It keeps that as one byte per (audience, user) rather than a dict, so that a
10M-record file does not need gigabytes in the benchmark process.

A user's identifiers are a pure function of the user's number (not of the random stream),
so expected hashes can be recomputed at verification time without storing them. They are
computed here independently of the target's code (``hashlib`` on the canonical form), and
records carry non-canonical spellings (case, surrounding spaces) so that normalization is
exercised too.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STREAM = "audience_memberships"
STATE_EVERY = 10_000
"""A STATE message after this many records, as a tap bookmarking its progress would."""

# Audience keys and the share of records that name each (skewed, like real audiences).
AUDIENCES: tuple[tuple[str, float], ...] = (
    ("newsletter_subscribers", 0.35),
    ("cart_abandoners", 0.20),
    ("vip_customers", 0.15),
    ("order_completed_last_30days", 0.15),
    ("app_installers", 0.10),
    ("winback_churned", 0.05),
)
REMOVE_SHARE = 0.15
"""Default share of records with ``in_audience: false``."""
OMIT_IN_AUDIENCE_SHARE = 0.2
"""Share of adds that leave ``in_audience`` out (the contract defaults it to true)."""
USERS_PER_RECORD = 0.5
"""Population size relative to the record count: users recur, so last-change-wins matters."""

_DOMAINS = ("gmail.com", "yahoo.com", "example.com", "outlook.com", "icloud.com")
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC).timestamp()

# Identifier mix, in users per thousand. The last three kinds are the "few invalid values":
# two have no usable identifier (the record is skipped), one has a bad email next to a
# valid Android ID (the record is used with the Android ID only).
EMAIL, EMAIL_IDFA, IDFA, ANDROID, HASHED_EMAIL, BAD_EMAIL, ZERO_IDFA, BAD_EMAIL_ANDROID = range(8)
_KIND_PER_MILLE = (
    (EMAIL, 780),
    (EMAIL_IDFA, 50),
    (IDFA, 60),
    (ANDROID, 60),
    (HASHED_EMAIL, 40),
    (BAD_EMAIL, 4),
    (ZERO_IDFA, 3),
    (BAD_EMAIL_ANDROID, 3),
)
_KIND_TABLE = tuple(itertools.chain.from_iterable([kind] * n for kind, n in _KIND_PER_MILLE))
assert len(_KIND_TABLE) == 1000

# Marks in Expected.marks: untouched, last change was an add, last change was a remove.
_UNTOUCHED, _MEMBER, _REMOVED = 0, 1, 2


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def user_kind(user: int) -> int:
    """The identifier kind of a user (Knuth multiplicative hash: deterministic, well spread)."""
    return _KIND_TABLE[(((user * 2654435761) & 0xFFFFFFFF) * 1000) >> 32]


def _device_uuid(prefix: str, user: int) -> str:
    return str(
        uuid.UUID(bytes=hashlib.blake2b(f"{prefix}:{user}".encode(), digest_size=16).digest())
    )


def canonical_identifiers(user: int) -> dict[str, str]:
    """The user's identifier fields in canonical form (what the target should hash)."""
    kind = user_kind(user)
    email = f"customer{user}@{_DOMAINS[user % len(_DOMAINS)]}"
    if kind == EMAIL:
        return {"email": email}
    if kind == EMAIL_IDFA:
        return {"email": email, "ios_idfa": _device_uuid("idfa", user).upper()}
    if kind == IDFA:
        return {"ios_idfa": _device_uuid("idfa", user).upper()}
    if kind == ANDROID:
        return {"android_id": _device_uuid("gaid", user)}
    if kind == HASHED_EMAIL:
        return {"email": _sha256(f"prehashed{user}@example.org")}
    if kind == BAD_EMAIL:
        return {"email": f"customer{user}-at-example.com"}
    if kind == ZERO_IDFA:
        return {"ios_idfa": _ZERO_UUID}
    return {"email": f"customer{user}@localhost", "android_id": _device_uuid("gaid", user)}


def expected_hashes(user: int) -> list[str]:
    """What Pinterest should receive for this user: SHA-256 of each valid identifier."""
    kind = user_kind(user)
    ids = canonical_identifiers(user)
    if kind in (BAD_EMAIL, ZERO_IDFA):
        return []
    if kind == BAD_EMAIL_ANDROID:
        return [_sha256(ids["android_id"])]
    if kind == HASHED_EMAIL:
        return [ids["email"]]
    return [_sha256(value) for value in ids.values()]


def _spelling(field_name: str, canonical: str, rng: random.Random) -> str:
    """A non-canonical but equivalent spelling now and then (the target must normalize it)."""
    roll = rng.random()
    if roll < 0.7:
        return canonical
    if field_name == "email":
        return canonical.upper() if roll < 0.85 else f"  {canonical} "
    return canonical.swapcase()  # device IDs: the "wrong" case for their platform


@dataclass
class Expected:
    """What the generated file asks for, and what Pinterest should hold after syncing it."""

    records: int
    users: int
    lines: int = 0
    states: int = 0
    removes: int = 0
    unusable_records: int = 0
    marks: dict[str, bytearray] = field(default_factory=dict)

    def audiences(self) -> list[str]:
        """Every audience the file names, in generator order."""
        return list(self.marks)

    def members(self, audience: str) -> set[str]:
        """Hashes whose last change in ``audience`` was an add."""
        marks = self.marks[audience]
        result: set[str] = set()
        user = marks.find(_MEMBER)
        while user != -1:
            result.update(expected_hashes(user))
            user = marks.find(_MEMBER, user + 1)
        return result

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the report and the JSON output."""
        return {
            "records": self.records,
            "lines": self.lines,
            "users": self.users,
            "audiences": len(self.marks),
            "states": self.states,
            "removes": self.removes,
            "records_without_valid_identifier": self.unusable_records,
        }


def _messages(
    records: int, seed: int, remove_share: float, expected: Expected
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    names = [name for name, _ in AUDIENCES]
    cumulative = list(itertools.accumulate(share for _, share in AUDIENCES))
    yield {
        "type": "SCHEMA",
        "stream": STREAM,
        "schema": {
            "type": "object",
            "properties": {
                "user_id": {"type": "string"},
                "email": {"type": ["string", "null"]},
                "ios_idfa": {"type": ["string", "null"]},
                "android_id": {"type": ["string", "null"]},
                "audience_key": {"type": "string"},
                "in_audience": {"type": ["boolean", "null"]},
                "updated_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "key_properties": ["user_id", "audience_key"],
    }
    for number in range(1, records + 1):
        user = rng.randrange(expected.users)
        audience = names[min(bisect.bisect(cumulative, rng.random()), len(names) - 1)]
        member = rng.random() >= remove_share
        updated_at = datetime.fromtimestamp(_EPOCH + number, UTC).isoformat()
        record: dict[str, Any] = {"user_id": f"u{user}"}
        for name, canonical in canonical_identifiers(user).items():
            record[name] = _spelling(name, canonical, rng)
        record["audience_key"] = audience
        if not member or rng.random() >= OMIT_IN_AUDIENCE_SHARE:
            record["in_audience"] = member
        record["updated_at"] = updated_at
        if user_kind(user) in (BAD_EMAIL, ZERO_IDFA):
            expected.unusable_records += 1
        else:
            expected.marks[audience][user] = _MEMBER if member else _REMOVED
        expected.removes += not member
        yield {"type": "RECORD", "stream": STREAM, "record": record}
        if number % STATE_EVERY == 0 or number == records:
            expected.states += 1
            yield {
                "type": "STATE",
                "value": {"bookmarks": {STREAM: {"replication_key_value": updated_at}}},
            }


def generate(path: Path, records: int, seed: int, remove_share: float = REMOVE_SHARE) -> Expected:
    """Write ``records`` RECORD messages (plus SCHEMA and STATEs) to ``path``.

    ``remove_share=0`` gives a pure first sync (adds only), where ADD/REMOVE ordering
    never comes into play.
    """
    users = max(1000, int(records * USERS_PER_RECORD))
    expected = Expected(records=records, users=users)
    expected.marks = {name: bytearray(users) for name, _ in AUDIENCES}
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with path.open("w", encoding="utf-8", newline="\n") as out:
        batch: list[str] = []
        for message in _messages(records, seed, remove_share, expected):
            batch.append(dumps(message))
            if len(batch) >= 10_000:
                out.write("\n".join(batch) + "\n")
                expected.lines += len(batch)
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
            expected.lines += len(batch)
    return expected
