"""Tests for target_pinterest_audiences.memberships (the record contract)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from target_pinterest_audiences import memberships as memberships_module
from target_pinterest_audiences.memberships import (
    AUDIENCE_KEY_CONTROL_CHARACTERS,
    AUDIENCE_KEY_EMPTY,
    AUDIENCE_KEY_NOT_A_STRING,
    AUDIENCE_KEY_TOO_LONG,
    IN_AUDIENCE_NOT_BOOLEAN,
    MAX_AUDIENCE_NAME_LENGTH,
    NO_VALID_IDENTIFIER,
    Membership,
    audience_changes,
    audience_key_problem,
    hash_identifiers,
    read_membership,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


STREAM = "newsletter_subscribers"
EMAIL = "Alice@Example.com"
EMAIL_HASH = sha("alice@example.com")
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
IDFA_HASH = sha(IDFA.upper())
ANDROID = "38400000-8CF0-11BD-B23E-10B96E40000D"
ANDROID_HASH = sha(ANDROID.lower())
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def test_reason_constants_are_stable() -> None:
    assert NO_VALID_IDENTIFIER == "no_valid_identifier"
    assert IN_AUDIENCE_NOT_BOOLEAN == "in_audience_not_boolean"
    assert AUDIENCE_KEY_NOT_A_STRING == "audience_key_not_a_string"
    assert AUDIENCE_KEY_EMPTY == "audience_key_empty"
    assert AUDIENCE_KEY_TOO_LONG == "audience_key_too_long"
    assert AUDIENCE_KEY_CONTROL_CHARACTERS == "audience_key_control_characters"
    assert MAX_AUDIENCE_NAME_LENGTH == 255


# --------------------------------------------------------------------------- audience forms


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # 1. Explicit form.
        ({"email": EMAIL, "audience_key": "vip"}, [("vip", True)]),
        ({"email": EMAIL, "audience_key": "vip", "in_audience": True}, [("vip", True)]),
        ({"email": EMAIL, "audience_key": "vip", "in_audience": False}, [("vip", False)]),
        ({"email": EMAIL, "in_audience": False}, [(STREAM, False)]),
        ({"email": EMAIL, "in_audience": True}, [(STREAM, True)]),
        ({"email": EMAIL, "audience_key": "  vip \t"}, [("vip", True)]),
        # A null in_audience falls back to its default; a missing audience_key field too.
        ({"email": EMAIL, "in_audience": None}, [(STREAM, True)]),
        ({"email": EMAIL, "audience_key": "vip", "in_audience": None}, [("vip", True)]),
        # A null audience_key names no audience: the record is skipped, not sent to the
        # stream's list.
        ({"email": EMAIL, "audience_key": None}, "audience_key_null"),
        ({"email": EMAIL, "audience_key": None, "in_audience": None}, "audience_key_null"),
        ({"email": EMAIL, "audience_key": None, "in_audience": False}, "audience_key_null"),
        # Explicit form wins over boolean flags, which are then ordinary properties.
        (
            {"email": EMAIL, "audience_key": "vip", "churned": True, "loyal": False},
            [("vip", True)],
        ),
        ({"email": EMAIL, "in_audience": False, "churned": True}, [(STREAM, False)]),
        ({"email": EMAIL, "audience_key": None, "churned": True}, "audience_key_null"),
        # 2. Engage form: every other top-level boolean is a flag; False = remove.
        (
            {"email": EMAIL, "order_completed_last_30days": True},
            [
                ("order_completed_last_30days", True),
            ],
        ),
        ({"email": EMAIL, "churned": False}, [("churned", False)]),
        (
            {"email": EMAIL, "a": True, "b": False, "c": True, "name": "Alice", "age": 3},
            [("a", True), ("b", False), ("c", True)],
        ),
        ({"email": EMAIL, " padded ": True}, [("padded", True)]),
        # Truthy non-booleans are not flags.
        (
            {"email": EMAIL, "score": 1, "zero": 0, "yes": "true", "none": None, "x": [True]},
            [(STREAM, True)],
        ),
        # 3. Plain record: add to the stream-named audience.
        ({"email": EMAIL}, [(STREAM, True)]),
        ({"email": EMAIL, "first_name": "Alice", "plan": "pro"}, [(STREAM, True)]),
        ({}, [(STREAM, True)]),
    ],
)
def test_audience_changes_forms(record: dict[str, Any], expected: list[Any]) -> None:
    assert audience_changes(STREAM, record) == expected


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"in_audience": "yes"}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": "true"}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": "false"}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": 1}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": 0}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": 1.0}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"in_audience": [True]}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"audience_key": "vip", "in_audience": "yes"}, IN_AUDIENCE_NOT_BOOLEAN),
        ({"audience_key": 42}, AUDIENCE_KEY_NOT_A_STRING),
        ({"audience_key": True}, AUDIENCE_KEY_NOT_A_STRING),
        ({"audience_key": ["vip"]}, AUDIENCE_KEY_NOT_A_STRING),
        ({"audience_key": {"name": "vip"}}, AUDIENCE_KEY_NOT_A_STRING),
        ({"audience_key": ""}, AUDIENCE_KEY_EMPTY),
        ({"audience_key": "   "}, AUDIENCE_KEY_EMPTY),
        ({"audience_key": "\t\n"}, AUDIENCE_KEY_EMPTY),
        ({"audience_key": "x" * 256}, AUDIENCE_KEY_TOO_LONG),
        ({"audience_key": "x" * 100_000}, AUDIENCE_KEY_TOO_LONG),
        ({"audience_key": "vip\nlist"}, AUDIENCE_KEY_CONTROL_CHARACTERS),
        ({"audience_key": "vip\tlist"}, AUDIENCE_KEY_CONTROL_CHARACTERS),
        ({"audience_key": "vip\x00"}, AUDIENCE_KEY_CONTROL_CHARACTERS),
        ({"audience_key": "vip\x1b[31m"}, AUDIENCE_KEY_CONTROL_CHARACTERS),
        ({"audience_key": "vip\x7f"}, AUDIENCE_KEY_CONTROL_CHARACTERS),
        # Engage flag names are audience keys too.
        ({"": True}, AUDIENCE_KEY_EMPTY),
        ({"   ": False}, AUDIENCE_KEY_EMPTY),
        ({"x" * 256: True}, AUDIENCE_KEY_TOO_LONG),
        ({"ok": True, "bad\nname": True}, AUDIENCE_KEY_CONTROL_CHARACTERS),
    ],
)
def test_audience_changes_unusable(record: dict[str, Any], reason: str) -> None:
    assert audience_changes(STREAM, {"email": EMAIL, **record}) == reason


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("vip", None),
        ("VIP customers: Q3 (ünï)", None),
        ("x" * 255, None),
        ("  " + "x" * 255 + "  ", None),  # length is measured after trimming
        ("x" * 256, AUDIENCE_KEY_TOO_LONG),
        ("", AUDIENCE_KEY_EMPTY),
        (" \t ", AUDIENCE_KEY_EMPTY),
        ("a\rb", AUDIENCE_KEY_CONTROL_CHARACTERS),
        (None, AUDIENCE_KEY_NOT_A_STRING),
        (3, AUDIENCE_KEY_NOT_A_STRING),
        (b"vip", AUDIENCE_KEY_NOT_A_STRING),
    ],
)
def test_audience_key_problem(key: object, problem: str | None) -> None:
    assert audience_key_problem(key) == problem


def test_audience_key_of_max_length_is_kept_trimmed() -> None:
    key = "k" * MAX_AUDIENCE_NAME_LENGTH
    assert audience_changes(STREAM, {"audience_key": f" {key} "}) == [(key, True)]


def test_thousand_boolean_flags_give_thousand_changes() -> None:
    record: dict[str, object] = {"email": EMAIL}
    expected = []
    for i in range(1000):
        record[f"audience_{i:04d}"] = i % 3 != 0
        expected.append((f"audience_{i:04d}", i % 3 != 0))
    membership = read_membership(STREAM, record)
    assert len(membership.changes) == 1000
    assert membership.changes == expected
    assert membership.hashes == [EMAIL_HASH]
    assert membership.skip_reason is None


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"email": "a@example.com", "ios_idfa": False, "vip": True}, [("vip", True)]),
        ({"email": "a@example.com", "android_id": True}, [(STREAM, True)]),
        ({"email": True, "ios_idfa": IDFA, "vip": False}, [("vip", False)]),
    ],
)
def test_engage_form_ignores_boolean_identifier_fields(
    record: dict[str, Any], expected: list[Any]
) -> None:
    assert audience_changes(STREAM, record) == expected


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    ("record", "hashes", "rejected"),
    [
        ({"email": EMAIL}, [EMAIL_HASH], []),
        ({"ios_idfa": IDFA}, [IDFA_HASH], []),
        ({"android_id": ANDROID}, [ANDROID_HASH], []),
        ({"email": EMAIL, "ios_idfa": IDFA}, [EMAIL_HASH, IDFA_HASH], []),
        ({"email": EMAIL, "android_id": ANDROID}, [EMAIL_HASH, ANDROID_HASH], []),
        ({"ios_idfa": IDFA, "android_id": ANDROID}, [IDFA_HASH, ANDROID_HASH], []),
        (
            {"android_id": ANDROID, "ios_idfa": IDFA, "email": EMAIL},
            [EMAIL_HASH, IDFA_HASH, ANDROID_HASH],  # always email, idfa, android order
            [],
        ),
        # Null fields are ignored, not rejected.
        ({"email": EMAIL, "ios_idfa": None, "android_id": None}, [EMAIL_HASH], []),
        ({"email": None, "ios_idfa": None, "android_id": None}, [], []),
        ({}, [], []),
        # Non-identifier fields are never hashed.
        ({"phone": "+15551234567", "name": "Alice"}, [], []),
        # Invalid values are reported while valid ones are still used.
        ({"email": "not-an-email", "ios_idfa": IDFA}, [IDFA_HASH], ["email_malformed"]),
        ({"email": EMAIL, "ios_idfa": ZERO_UUID}, [EMAIL_HASH], ["ios_idfa_zeroed"]),
        ({"email": "", "android_id": ANDROID}, [ANDROID_HASH], ["email_empty"]),
        (
            {"email": 5, "ios_idfa": "bad", "android_id": ANDROID},
            [ANDROID_HASH],
            ["email_not_a_string", "ios_idfa_malformed"],
        ),
        (
            {"email": "x", "ios_idfa": [IDFA], "android_id": ZERO_UUID},
            [],
            ["email_malformed", "ios_idfa_not_a_string", "android_id_zeroed"],
        ),
        # The same hash twice is kept once.
        ({"email": EMAIL, "ios_idfa": EMAIL_HASH}, [EMAIL_HASH], []),
        ({"email": EMAIL_HASH.upper(), "android_id": EMAIL_HASH}, [EMAIL_HASH], []),
        (
            {"email": EMAIL_HASH, "ios_idfa": EMAIL_HASH, "android_id": EMAIL_HASH},
            [EMAIL_HASH],
            [],
        ),
    ],
)
def test_hash_identifiers(record: dict[str, Any], hashes: list[str], rejected: list[str]) -> None:
    assert hash_identifiers(record) == (hashes, rejected)


def test_same_uuid_as_idfa_and_android_id_gives_two_hashes() -> None:
    hashes, rejected = hash_identifiers({"ios_idfa": IDFA, "android_id": IDFA})
    assert hashes == [sha(IDFA.upper()), sha(IDFA.lower())]
    assert rejected == []


# --------------------------------------------------------------------------- read_membership


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"email": EMAIL},
            Membership(hashes=[EMAIL_HASH], changes=[(STREAM, True)]),
        ),
        (
            {"email": EMAIL, "ios_idfa": IDFA, "audience_key": "vip", "in_audience": False},
            Membership(hashes=[EMAIL_HASH, IDFA_HASH], changes=[("vip", False)]),
        ),
        (
            {"android_id": ANDROID, "vip": True, "churned": False},
            Membership(hashes=[ANDROID_HASH], changes=[("vip", True), ("churned", False)]),
        ),
        (
            {"email": "broken", "ios_idfa": IDFA, "vip": True},
            Membership(hashes=[IDFA_HASH], changes=[("vip", True)], rejected=["email_malformed"]),
        ),
        # No valid identifier: skipped, but the targeted audiences are still reported.
        (
            {"email": "broken", "audience_key": "vip", "in_audience": False},
            Membership(
                changes=[("vip", False)],
                rejected=["email_malformed"],
                skip_reason=NO_VALID_IDENTIFIER,
            ),
        ),
        (
            {"name": "no identifiers at all"},
            Membership(changes=[(STREAM, True)], skip_reason=NO_VALID_IDENTIFIER),
        ),
        (
            {"email": None, "vip": True, "gold": False},
            Membership(changes=[("vip", True), ("gold", False)], skip_reason=NO_VALID_IDENTIFIER),
        ),
        (
            {"email": " ", "ios_idfa": ZERO_UUID},
            Membership(
                changes=[(STREAM, True)],
                rejected=["email_empty", "ios_idfa_zeroed"],
                skip_reason=NO_VALID_IDENTIFIER,
            ),
        ),
        # Unusable audience: skipped with that reason, no hashes, no changes.
        (
            {"email": EMAIL, "in_audience": "yes"},
            Membership(skip_reason=IN_AUDIENCE_NOT_BOOLEAN),
        ),
        (
            {"email": "broken", "audience_key": 7},
            Membership(rejected=["email_malformed"], skip_reason=AUDIENCE_KEY_NOT_A_STRING),
        ),
        (
            {"email": EMAIL, "audience_key": "   "},
            Membership(skip_reason=AUDIENCE_KEY_EMPTY),
        ),
    ],
)
def test_read_membership(record: dict[str, Any], expected: Membership) -> None:
    assert read_membership(STREAM, record) == expected


def test_read_membership_does_not_raise_on_odd_values() -> None:
    record = {"email": object(), "ios_idfa": 1.5, "android_id": {"x": 1}, "audience_key": b"k"}
    membership = read_membership(STREAM, record)
    assert membership.skip_reason == AUDIENCE_KEY_NOT_A_STRING
    assert membership.hashes == []
    assert membership.rejected == [
        "email_not_a_string",
        "ios_idfa_not_a_string",
        "android_id_not_a_string",
    ]


def test_read_membership_does_not_mutate_record() -> None:
    record: dict[str, object] = {"email": EMAIL, "audience_key": " vip ", "in_audience": None}
    snapshot = dict(record)
    read_membership(STREAM, record)
    assert record == snapshot


# The common record's one-step reading gives what the whole contract gives --------------

_HEX = hashlib.sha256(b"pre-hashed").hexdigest()
_COMMON_CASES = [
    {"email": "Ann@Example.com", "audience_key": "vip"},
    {"email": " ann@example.com ", "audience_key": "vip", "in_audience": False},
    {"email": "ann@example.com", "audience_key": "vip", "in_audience": None},
    {"email": "ann@example.com", "audience_key": "vip", "in_audience": "yes"},
    {"email": "ann@example.com", "audience_key": " vip "},
    {"email": "ann@example.com", "audience_key": ""},
    {"email": "ann@example.com", "audience_key": None},
    {"email": "ann@example.com", "audience_key": 7},
    {"email": "ann@example.com", "audience_key": "x" * 300},
    {"email": "ann@example.com", "audience_key": "tab\there"},
    {"email": "not an email", "audience_key": "vip"},
    {"email": "", "audience_key": "vip"},
    {"email": 42, "audience_key": "vip"},
    {"email": None, "audience_key": "vip"},
    {"audience_key": "vip"},
    {"email": _HEX.upper(), "audience_key": "vip"},
    {
        "email": "ann@example.com",
        "ios_idfa": "00000000-0000-0000-0000-000000000000",
        "audience_key": "vip",
    },
    {"email": "ann@example.com", "android_id": "not-an-id", "audience_key": "vip"},
    {"email": "ann@example.com", "in_audience": True},
    {"email": "ann@example.com", "audience_key": "vip", "order_completed": True},
    {"email": "ann@example.com", "audience_key": "vip", "traits": {"email": "b@example.com"}},
    {"type": "identify", "traits": {"email": "seg@example.com"}, "audience_key": "vip"},
]


@pytest.mark.parametrize("record", _COMMON_CASES)
def test_the_one_step_reading_agrees_with_the_whole_contract(
    record: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):  # the second time, audience keys seen before are known
        fast = read_membership("members", dict(record))
        with monkeypatch.context() as patched:
            patched.setattr(memberships_module, "_common_record", lambda record: None)
            whole = read_membership("members", dict(record))
        assert fast == whole
        assert fast.fields == whole.fields


def test_the_one_step_reading_serves_the_common_record_once_its_audience_is_known() -> None:
    record: dict[str, object] = {"email": "Ann@Example.com", "audience_key": "one-step"}
    read_membership("members", record)  # the whole contract checks and remembers the key
    common = memberships_module._common_record(record)
    assert common == read_membership("members", record)
    assert common is not None
    assert common.hashes == [sha("ann@example.com")]
