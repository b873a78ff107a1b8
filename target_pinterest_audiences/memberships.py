"""The record contract: turn one input record into hashed identifiers and audience changes.

A record is one user's membership in one or more audiences. Three layouts are accepted,
tried in this order:

1. Explicit form: the record has ``audience_key`` and/or ``in_audience``. The audience is
   ``audience_key`` (default: the stream name); ``in_audience`` (default true) says add or
   remove.
2. Engage form (Segment Engage identify traits): every other top-level boolean property is
   an audience flag, ``{"email": "a@b.com", "order_completed_last_30days": true}``.
3. Otherwise the record adds the user to the audience named after the stream.

Segment payloads (identify/track, nested or as warehouse rows) are first rewritten into
these fields; see :mod:`segment`.

Anything that cannot be used is reported with a reason code, never raised: a bad record
must not cost the valid records around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from target_pinterest_audiences import segment
from target_pinterest_audiences.fields import (
    AUDIENCE_KEY,
    CONTRACT_FIELDS,
    IN_AUDIENCE,
)
from target_pinterest_audiences.identifiers import HASHERS, Rejected

# Pinterest documents no limit on customer list names; Ads Manager's name fields stop at
# 255 characters, so a longer key would create a list nobody can rename in the UI. We
# refuse it here, where the message can name the record, rather than fail at the API.
MAX_AUDIENCE_NAME_LENGTH = 255

# Record-level skip reasons (the whole record is not used).
NO_VALID_IDENTIFIER = "no_valid_identifier"
IN_AUDIENCE_NOT_BOOLEAN = "in_audience_not_boolean"
AUDIENCE_KEY_NOT_A_STRING = "audience_key_not_a_string"
AUDIENCE_KEY_EMPTY = "audience_key_empty"
AUDIENCE_KEY_TOO_LONG = "audience_key_too_long"
AUDIENCE_KEY_CONTROL_CHARACTERS = "audience_key_control_characters"


@dataclass(slots=True)
class Membership:
    """What one record asks for, after hashing.

    ``changes`` pairs an audience key with True (add) or False (remove). ``rejected``
    lists the reason codes of identifier values that were not usable; the record is still
    used when at least one identifier was. ``skip_reason`` is set when the record cannot be
    used; then ``hashes`` is empty, and ``changes`` names the audiences it was meant for
    when those could be read.
    """

    hashes: list[str] = field(default_factory=list)
    changes: list[tuple[str, bool]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    fields: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    """The record in the contract's fields (a Segment payload after rewriting)."""


# Audience names repeat on every record; remember the valid ones, stripped (bounded).
_AUDIENCE_NAMES: dict[str, str] = {}
_AUDIENCE_NAMES_MAX = 100_000
_FIELD_HASHERS = tuple((kind.value, hasher) for kind, hasher in HASHERS.items())


def audience_key_problem(key: object) -> str | None:
    """Return why ``key`` cannot name a Pinterest customer list, or None if it can."""
    if isinstance(key, str) and key in _AUDIENCE_NAMES:
        return None
    return _audience_key_problem(key)


def audience_name(key: object) -> str:
    """The list name for a valid audience key (stripped); raises ValueError if invalid."""
    if isinstance(key, str):
        name = _AUDIENCE_NAMES.get(key)
        if name is not None:
            return name
    problem = _audience_key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(key, str)
    name = key.strip()
    if len(_AUDIENCE_NAMES) < _AUDIENCE_NAMES_MAX:
        _AUDIENCE_NAMES[key] = name
    return name


def _audience_key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return AUDIENCE_KEY_NOT_A_STRING
    stripped = key.strip()
    if not stripped:
        return AUDIENCE_KEY_EMPTY
    if len(stripped) > MAX_AUDIENCE_NAME_LENGTH:
        return AUDIENCE_KEY_TOO_LONG
    if not stripped.isprintable():
        return AUDIENCE_KEY_CONTROL_CHARACTERS
    return None


def hash_identifiers(record: dict[str, object]) -> tuple[list[str], list[str]]:
    """Hash every identifier present in ``record``; return (hashes, rejected reasons).

    A missing or null field is simply absent; an empty or malformed one is rejected with
    a reason. The same hash twice (e.g. a pre-hashed email equal to a raw one) is kept once.
    """
    hashes: list[str] = []
    rejected: list[str] = []
    for name, hasher in _FIELD_HASHERS:
        value = record.get(name)
        if value is None:
            continue
        result = hasher(value)
        if isinstance(result, Rejected):
            rejected.append(result.reason)
        elif result not in hashes:
            hashes.append(result)
    return hashes, rejected


def audience_changes(stream_name: str, record: dict[str, object]) -> list[tuple[str, bool]] | str:
    """Read the audience changes a record asks for, or return the reason it cannot be used."""
    if AUDIENCE_KEY in record or IN_AUDIENCE in record:
        key = record.get(AUDIENCE_KEY, stream_name)
        if key is None:
            key = stream_name
        member = record.get(IN_AUDIENCE, True)
        if member is None:
            member = True
        if not isinstance(member, bool):
            return IN_AUDIENCE_NOT_BOOLEAN
        try:
            return [(audience_name(key), member)]
        except ValueError as problem:
            return str(problem)

    flags: list[tuple[str, bool]] = []
    for name, value in record.items():
        if (value is True or value is False) and name not in CONTRACT_FIELDS:
            try:
                flags.append((audience_name(name), value))
            except ValueError as problem:
                return str(problem)
    if flags:
        return flags
    return [(stream_name, True)]


def read_membership(stream_name: str, record: dict[str, object]) -> Membership:
    """Apply the whole contract to one record (Segment payloads are rewritten first)."""
    extra_rejected: list[str] = []
    if not segment.SEGMENT_KEYS.isdisjoint(record) and segment.is_segment_payload(record):
        record, extra_rejected = segment.to_contract(record)
    hashes, rejected = hash_identifiers(record)
    if extra_rejected:
        rejected += extra_rejected
    changes = audience_changes(stream_name, record)
    if isinstance(changes, str):
        return Membership(rejected=rejected, skip_reason=changes, fields=record)
    if not hashes:
        # Keep the changes: the skip is reported against the audiences it would have hit.
        return Membership(
            changes=changes, rejected=rejected, skip_reason=NO_VALID_IDENTIFIER, fields=record
        )
    return Membership(hashes=hashes, changes=changes, rejected=rejected, fields=record)
