"""The record contract: turn one input record into hashed identifiers and audience changes.

A record is one user's membership in one or more audiences. Three layouts are accepted,
tried in this order:

1. Explicit form: the record has ``audience_key`` and/or ``in_audience``. The audience is
   ``audience_key`` (without the field: the stream name; present but null: the record is
   skipped as ``audience_key_null``); ``in_audience`` (default true) says add or remove.
2. Engage form (Segment Engage identify traits): every other top-level boolean property is
   an audience flag, ``{"email": "a@b.com", "order_completed_last_30days": true}``.
3. Otherwise the record adds the user to the audience named after the stream.

Segment payloads (identify/track, nested or as warehouse rows) are first rewritten into
these fields; see :mod:`segment`.

Anything that cannot be used is reported with a reason code, never raised: a bad record
must not cost the valid records around it.
"""

from __future__ import annotations

from target_pinterest_audiences import segment
from target_pinterest_audiences.fields import (
    AUDIENCE_KEY,
    CONTRACT_FIELDS,
    IN_AUDIENCE,
)
from target_pinterest_audiences.identifiers import HASHERS, IdentifierKind, hash_email

# Pinterest documents no limit on customer list names; Ads Manager's name fields stop at
# 255 characters, so a longer key would create a list nobody can rename in the UI. We
# refuse it here, where the message can name the record, rather than fail at the API.
MAX_AUDIENCE_NAME_LENGTH = 255

# Record-level skip reasons (the whole record is not used).
NO_VALID_IDENTIFIER = "no_valid_identifier"
IN_AUDIENCE_NOT_BOOLEAN = "in_audience_not_boolean"
AUDIENCE_KEY_NOT_A_STRING = "audience_key_not_a_string"
AUDIENCE_KEY_NULL = "audience_key_null"
AUDIENCE_KEY_EMPTY = "audience_key_empty"
AUDIENCE_KEY_TOO_LONG = "audience_key_too_long"
AUDIENCE_KEY_CONTROL_CHARACTERS = "audience_key_control_characters"
DELETED_WITHOUT_IDENTIFIER = "deleted_without_identifier"
"""Changes mode: a delete (``_sdc_deleted_at`` set) naming no identifier: nothing to remove."""


class Membership:
    """What one record asks for, after hashing.

    ``changes`` pairs an audience key with True (add) or False (remove). ``rejected``
    lists the reason codes of identifier values that were not usable; the record is still
    used when at least one identifier was. ``skip_reason`` is set when the record cannot be
    used; then ``hashes`` is empty, and ``changes`` names the audiences it was meant for
    when those could be read. ``fields`` is the record in the contract's fields (a Segment
    payload after rewriting).

    A plain slotted class rather than a dataclass: one is built per record, and default
    factories would cost more than everything else it does.
    """

    __slots__ = ("changes", "fields", "hashes", "rejected", "skip_reason")

    def __init__(
        self,
        hashes: list[str] | None = None,
        changes: list[tuple[str, bool]] | None = None,
        rejected: list[str] | None = None,
        skip_reason: str | None = None,
        fields: dict[str, object] | None = None,
    ) -> None:
        self.hashes = [] if hashes is None else hashes
        self.changes = [] if changes is None else changes
        self.rejected = [] if rejected is None else rejected
        self.skip_reason = skip_reason
        self.fields = {} if fields is None else fields

    def __eq__(self, other: object) -> bool:
        """Equal when they ask for the same thing (``fields`` is not compared)."""
        if not isinstance(other, Membership):
            return NotImplemented
        return (self.hashes, self.changes, self.rejected, self.skip_reason) == (
            other.hashes,
            other.changes,
            other.rejected,
            other.skip_reason,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"Membership(hashes={self.hashes!r}, changes={self.changes!r}, "
            f"rejected={self.rejected!r}, skip_reason={self.skip_reason!r})"
        )


# Audience names repeat on every record; remember the valid ones, stripped (bounded), and
# the explicit form's change list per (key, in_audience): it is shared, never mutated.
_AUDIENCE_NAMES: dict[str, str] = {}
_EXPLICIT_CHANGES: dict[tuple[str, bool], list[tuple[str, bool]]] = {}
_AUDIENCE_NAMES_MAX = 100_000
_FIELD_HASHERS = tuple((kind.value, hasher) for kind, hasher in HASHERS.items())
_EMAIL = IdentifierKind.EMAIL.value
# The fast path of hash_identifiers checks the other kinds by name; this unpacking fails at
# import, not silently, if a kind is added.
_DEVICE_ID, _OTHER_DEVICE_ID = (kind.value for kind in HASHERS if kind is not IdentifierKind.EMAIL)


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
    get = record.get
    if get(_DEVICE_ID) is None and get(_OTHER_DEVICE_ID) is None:
        # Most records carry an email alone: a quarter of this function's time is the loop.
        value = get(_EMAIL)
        if value is None:
            return [], []
        result = hash_email(value)
        if isinstance(result, str):
            return [result], []
        return [], [result.reason]
    hashes: list[str] = []
    rejected: list[str] = []
    for name, hasher in _FIELD_HASHERS:
        value = get(name)
        if value is None:
            continue
        result = hasher(value)
        if isinstance(result, str):
            if result not in hashes:
                hashes.append(result)
        else:
            rejected.append(result.reason)
    return hashes, rejected


def audience_changes(stream_name: str, record: dict[str, object]) -> list[tuple[str, bool]] | str:
    """Read the audience changes a record asks for, or return the reason it cannot be used."""
    if AUDIENCE_KEY in record or IN_AUDIENCE in record:
        if AUDIENCE_KEY in record:
            key = record[AUDIENCE_KEY]
            if key is None:
                # A column that is there but empty names no audience: falling back to the
                # stream's name would fill a list nobody asked for (public-audience_members).
                return AUDIENCE_KEY_NULL
        else:
            key = stream_name
        member = record.get(IN_AUDIENCE)
        if member is None:
            member = True
        elif member is not True and member is not False:
            return IN_AUDIENCE_NOT_BOOLEAN
        if isinstance(key, str):
            cached = _EXPLICIT_CHANGES.get((key, member))
            if cached is not None:
                return cached
        try:
            changes = [(audience_name(key), member)]
        except ValueError as problem:
            return str(problem)
        if len(_EXPLICIT_CHANGES) < _AUDIENCE_NAMES_MAX and isinstance(key, str):
            _EXPLICIT_CHANGES[(key, member)] = changes
        return changes

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
    if segment.SEGMENT_KEYS.isdisjoint(record):
        common = _common_record(record)
        if common is not None:
            return common
    elif segment.is_segment_payload(record):
        record, extra_rejected = segment.to_contract(record)
        membership = _read_contract(stream_name, record)
        membership.rejected += extra_rejected
        return membership
    return _read_contract(stream_name, record)


def _read_contract(stream_name: str, record: dict[str, object]) -> Membership:
    hashes, rejected = hash_identifiers(record)
    changes = audience_changes(stream_name, record)
    if isinstance(changes, str):
        return Membership([], [], rejected, changes, record)
    if not hashes:
        # Keep the changes: the skip is reported against the audiences it would have hit.
        return Membership([], changes, rejected, NO_VALID_IDENTIFIER, record)
    return Membership(hashes, changes, rejected, None, record)


def _common_record(record: dict[str, object]) -> Membership | None:
    """The most common record, read in one step: explicit form, one valid email, a known
    audience. None for anything else, which takes the whole contract (:func:`_read_contract`,
    which gives the same answer for these records, a few calls slower per record).
    """
    get = record.get
    key = get(AUDIENCE_KEY)
    if key.__class__ is not str or get(_DEVICE_ID) is not None:
        return None
    if get(_OTHER_DEVICE_ID) is not None:
        return None
    member = get(IN_AUDIENCE)
    if member is None:
        member = True
    elif member is not True and member is not False:
        return None
    changes = _EXPLICIT_CHANGES.get((key, member))
    if changes is None:  # an audience key not seen and checked yet
        return None
    email = get(_EMAIL)
    if email is None:
        return None
    digest = hash_email(email)
    if not isinstance(digest, str):
        return None  # rejected: the contract counts why
    return Membership([digest], changes, [], None, record)
