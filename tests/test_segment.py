"""Segment payloads (see ``segment``'s docstring) rewritten into the record contract.

Expected hashes are computed here with hashlib from the normalized value (``support.sha``):
emails lowercased, IDFAs upper case, Android advertising IDs lower case.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from target_pinterest_audiences import segment
from target_pinterest_audiences.emulator import Emulator
from target_pinterest_audiences.memberships import read_membership

from support import (
    AD_ACCOUNT,
    TOKEN,
    assert_contract_kept,
    emulator_config,
    lists_by_name,
    members_by_name,
    record,
    run_target,
    sha,
)

IDFA = "ab12cd34-0000-4000-8000-00000000abcd"  # as a device might report it, lower case
IDFA_HASH = sha("AB12CD34-0000-4000-8000-00000000ABCD")  # Apple's canonical form
ANDROID = "AB12CD34-1111-4000-8000-00000000ABCD"  # upper case on input
ANDROID_HASH = sha("ab12cd34-1111-4000-8000-00000000abcd")  # Android's canonical form


def identify(
    traits: dict[str, Any], device: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    """A nested identify call, as replayed from Segment's API."""
    payload: dict[str, Any] = {"type": "identify", "userId": "u-1", "traits": traits, **top}
    payload["context"] = {"device": device} if device is not None else {"library": {"name": "x"}}
    return payload


def track(
    event: str,
    properties: dict[str, Any],
    email: str | None = None,
    device: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A nested track call ("Audience Entered" / "Audience Exited")."""
    context: dict[str, Any] = {}
    if email is not None:
        context["traits"] = {"email": email}
    if device is not None:
        context["device"] = device
    return {
        "type": "track",
        "userId": "u-1",
        "event": event,
        "properties": properties,
        "context": context,
    }


# Nested identify ---------------------------------------------------------------------------


def test_identify_takes_email_and_boolean_traits_as_audience_flags() -> None:
    payload = identify({"email": "Ann@Example.com", "vip": True, "lapsed": False, "name": "Ann"})

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert contract["email"] == "Ann@Example.com"
    assert contract["vip"] is True
    assert contract["lapsed"] is False
    assert "audience_key" not in contract
    assert "in_audience" not in contract
    membership = read_membership("identifies", payload)
    assert membership.skip_reason is None
    assert membership.hashes == [sha("ann@example.com")]
    assert sorted(membership.changes) == [("lapsed", False), ("vip", True)]


@pytest.mark.parametrize("device_type", ["ios", "iOS", "IOS", " ios "])
def test_identify_ios_advertising_id_becomes_an_uppercased_idfa(device_type: str) -> None:
    payload = identify({"vip": True}, {"advertisingId": IDFA, "type": device_type})

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert contract["ios_idfa"] == IDFA
    assert "android_id" not in contract
    membership = read_membership("identifies", payload)
    assert membership.hashes == [IDFA_HASH]
    assert membership.changes == [("vip", True)]
    assert membership.rejected == []


@pytest.mark.parametrize("device_type", ["android", "Android", "ANDROID"])
def test_identify_android_advertising_id_becomes_a_lowercased_android_id(
    device_type: str,
) -> None:
    payload = identify(
        {"email": "bob@example.com", "vip": True}, {"advertisingId": ANDROID, "type": device_type}
    )

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert contract["android_id"] == ANDROID
    assert "ios_idfa" not in contract
    membership = read_membership("identifies", payload)
    assert set(membership.hashes) == {sha("bob@example.com"), ANDROID_HASH}
    assert membership.changes == [("vip", True)]


@pytest.mark.parametrize("device_type", ["windows", "tvos", "", None, 7])
def test_unknown_device_type_is_rejected_and_the_id_not_sent(device_type: object) -> None:
    payload = identify(
        {"email": "cat@example.com", "vip": True}, {"advertisingId": IDFA, "type": device_type}
    )

    contract, rejected = segment.to_contract(payload)

    assert rejected == [segment.DEVICE_TYPE_UNKNOWN] == ["device_type_unknown"]
    assert "ios_idfa" not in contract
    assert "android_id" not in contract
    membership = read_membership("identifies", payload)
    assert membership.rejected == ["device_type_unknown"]
    assert membership.hashes == [sha("cat@example.com")]  # the record is still used
    assert IDFA_HASH not in membership.hashes
    assert sha(IDFA) not in membership.hashes
    assert membership.skip_reason is None


def test_advertising_id_without_device_type_is_rejected_as_unknown() -> None:
    payload = identify({"email": "dan@example.com", "vip": True}, {"advertisingId": IDFA})

    contract, rejected = segment.to_contract(payload)

    assert rejected == ["device_type_unknown"]
    assert not {"ios_idfa", "android_id"} & contract.keys()
    assert read_membership("identifies", payload).hashes == [sha("dan@example.com")]


def test_only_an_unknown_device_id_leaves_no_valid_identifier() -> None:
    payload = identify({"vip": True}, {"advertisingId": IDFA, "type": "web"})

    membership = read_membership("identifies", payload)

    assert membership.hashes == []
    assert membership.rejected == ["device_type_unknown"]
    assert membership.skip_reason == "no_valid_identifier"
    assert membership.changes == [("vip", True)]


def test_device_type_without_advertising_id_is_not_a_rejection() -> None:
    payload = identify({"email": "eve@example.com", "vip": True}, {"type": "ios"})

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert "ios_idfa" not in contract


def test_traits_email_overrides_a_top_level_email() -> None:
    payload = identify({"email": "traits@example.com", "vip": True}, email="top@example.com")

    contract, _ = segment.to_contract(payload)

    assert contract["email"] == "traits@example.com"
    assert read_membership("identifies", payload).hashes == [sha("traits@example.com")]


def test_top_level_email_is_used_when_traits_have_none() -> None:
    payload = identify({"vip": True, "email": None}, email="Top@Example.com")

    assert read_membership("identifies", payload).hashes == [sha("top@example.com")]


def test_an_idfa_in_traits_is_kept_over_the_device_id() -> None:
    other = "11111111-2222-4333-8444-555555555555"
    payload = identify({"ios_idfa": other, "vip": True}, {"advertisingId": IDFA, "type": "ios"})

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert contract["ios_idfa"] == other
    assert read_membership("identifies", payload).hashes == [sha(other.upper())]


def test_to_contract_does_not_modify_the_input() -> None:
    payload = identify(
        {"email": "x@example.com", "vip": True}, {"advertisingId": IDFA, "type": "ios"}
    )
    before = copy.deepcopy(payload)

    segment.to_contract(payload)
    read_membership("identifies", payload)

    assert payload == before


# Nested track "Audience Entered" / "Audience Exited" ------------------------------------


@pytest.mark.parametrize(
    ("event", "flag", "expected"),
    [
        ("Audience Entered", None, True),
        ("Audience Exited", None, False),
        # The flag in properties wins over the event name.
        ("Audience Exited", True, True),
        ("Audience Entered", False, False),
        ("Audience Entered", True, True),
        ("Audience Exited", False, False),
    ],
)
def test_track_audience_event_becomes_the_explicit_form(
    event: str, flag: bool | None, expected: bool
) -> None:
    properties: dict[str, Any] = {"audience_key": "cart_abandoners"}
    if flag is not None:
        properties["cart_abandoners"] = flag
    payload = track(event, properties, email="Fay@Example.com")

    contract, rejected = segment.to_contract(payload)

    assert rejected == []
    assert contract == {
        "email": "Fay@Example.com",
        "audience_key": "cart_abandoners",
        "in_audience": expected,
    }
    membership = read_membership("tracks", payload)
    assert membership.hashes == [sha("fay@example.com")]
    assert membership.changes == [("cart_abandoners", expected)]


def test_track_flag_of_another_audience_does_not_decide() -> None:
    payload = track(
        "Audience Exited", {"audience_key": "vip", "other": True}, email="gus@example.com"
    )

    assert read_membership("tracks", payload).changes == [("vip", False)]


def test_track_with_device_id_and_email_from_context_traits() -> None:
    payload = track(
        "Audience Entered",
        {"audience_key": "vip", "vip": True},
        email="hal@example.com",
        device={"advertisingId": ANDROID, "type": "android"},
    )

    membership = read_membership("tracks", payload)

    assert set(membership.hashes) == {sha("hal@example.com"), ANDROID_HASH}
    assert membership.changes == [("vip", True)]


def test_track_with_unknown_device_type_rejects_the_id() -> None:
    payload = track(
        "Audience Exited",
        {"audience_key": "vip"},
        email="ivy@example.com",
        device={"advertisingId": IDFA, "type": "roku"},
    )

    membership = read_membership("tracks", payload)

    assert membership.hashes == [sha("ivy@example.com")]
    assert membership.rejected == ["device_type_unknown"]
    assert membership.changes == [("vip", False)]


def test_track_with_a_non_string_audience_key_is_skipped() -> None:
    payload = track("Audience Entered", {"audience_key": 42}, email="jo@example.com")

    membership = read_membership("tracks", payload)

    assert membership.skip_reason == "audience_key_not_a_string"
    assert membership.hashes == []


# Warehouse rows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_type", "field", "expected_hash"),
    [
        ("ios", "ios_idfa", IDFA_HASH),
        ("iOS", "ios_idfa", IDFA_HASH),
        ("android", "android_id", sha(IDFA.lower())),
        ("Android", "android_id", sha(IDFA.lower())),
    ],
)
def test_warehouse_row_device_columns(device_type: str, field: str, expected_hash: str) -> None:
    row = {
        "id": "msg-1",
        "user_id": "u-1",
        "email": "Kim@Example.com",
        "vip": True,
        "lapsed": False,
        "context_device_advertising_id": IDFA.upper() if field == "android_id" else IDFA,
        "context_device_type": device_type,
        "context_ip": "203.0.113.9",
        "context_library_name": "analytics.js",
    }

    contract, rejected = segment.to_contract(row)

    assert rejected == []
    assert not any(key.startswith("context_") for key in contract)
    assert contract["email"] == "Kim@Example.com"
    assert contract[field] == row["context_device_advertising_id"]
    membership = read_membership("identifies", row)
    assert set(membership.hashes) == {sha("kim@example.com"), expected_hash}
    assert sorted(membership.changes) == [("lapsed", False), ("vip", True)]


def test_warehouse_row_unknown_device_type() -> None:
    row = {
        "email": "lee@example.com",
        "vip": True,
        "context_device_advertising_id": IDFA,
        "context_device_type": "playstation",
    }

    contract, rejected = segment.to_contract(row)

    assert rejected == ["device_type_unknown"]
    assert not {"ios_idfa", "android_id"} & contract.keys()
    membership = read_membership("identifies", row)
    assert membership.hashes == [sha("lee@example.com")]
    assert membership.rejected == ["device_type_unknown"]
    assert membership.changes == [("vip", True)]


def test_warehouse_row_without_device_type_column() -> None:
    row = {"email": "max@example.com", "vip": True, "context_device_advertising_id": ANDROID}

    membership = read_membership("identifies", row)

    assert membership.rejected == ["device_type_unknown"]
    assert membership.hashes == [sha("max@example.com")]


def test_warehouse_row_with_null_advertising_id_is_not_a_rejection() -> None:
    row = {
        "email": "ned@example.com",
        "vip": True,
        "context_device_advertising_id": None,
        "context_device_type": None,
    }

    membership = read_membership("identifies", row)

    assert membership.rejected == []
    assert membership.hashes == [sha("ned@example.com")]
    assert membership.changes == [("vip", True)]


def test_warehouse_row_keeps_explicit_contract_fields() -> None:
    row = {
        "email": "oz@example.com",
        "audience_key": "vip",
        "in_audience": False,
        "context_device_advertising_id": IDFA,
        "context_device_type": "ios",
    }

    membership = read_membership("s", row)

    assert set(membership.hashes) == {sha("oz@example.com"), IDFA_HASH}
    assert membership.changes == [("vip", False)]


def test_warehouse_audience_exited_row_removes_the_user() -> None:
    row = {
        "event": "Audience Exited",
        "email": "pat@example.com",
        "audience_key": "vip",
        "vip": False,
        "context_device_advertising_id": IDFA,
        "context_device_type": "ios",
    }

    membership = read_membership("audience_exited", row)

    assert membership.changes == [("vip", False)]


# Non-Segment records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "plain",
    [
        {"email": "Quinn@Example.com", "audience_key": "vip", "in_audience": False},
        {"email": "quinn@example.com", "vip": True, "lapsed": False},
        {"email": "quinn@example.com", "ios_idfa": IDFA, "name": "Quinn"},
        {"email": "quinn@example.com", "context_ip": "203.0.113.9"},
    ],
)
def test_non_segment_records_are_untouched(plain: dict[str, Any]) -> None:
    assert not segment.is_segment_payload(plain)
    before = copy.deepcopy(plain)

    membership = read_membership("stream", plain)

    assert plain == before
    expected_hashes = {sha("quinn@example.com")}
    if "ios_idfa" in plain:
        expected_hashes.add(IDFA_HASH)
    assert set(membership.hashes) == expected_hashes
    if "audience_key" in plain:
        assert membership.changes == [("vip", False)]
    elif "vip" in plain:
        assert sorted(membership.changes) == [("lapsed", False), ("vip", True)]
    else:
        assert membership.changes == [("stream", True)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"traits": {}}, True),
        ({"properties": {}}, True),
        ({"context": {}}, True),
        ({"context_device_advertising_id": None}, True),
        ({"traits": "not a dict", "email": "a@b.co"}, False),
        ({"email": "a@b.co", "context_device_type": "ios"}, False),
    ],
)
def test_is_segment_payload(payload: dict[str, Any], expected: bool) -> None:
    assert segment.is_segment_payload(payload) is expected


# End to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_console_script_syncs_a_stream_mixing_segment_shapes(
    emulator: Emulator, tmp_path: Path
) -> None:
    # "cart" already exists on Pinterest with eve in it, so her exit is really sent.
    response = requests.post(
        f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/customer_lists",
        json={"name": "cart", "records": sha("eve@example.com")},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    idfa_2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    android_2 = "FEDCBA98-7654-4321-8FED-CBA987654321"
    ignored_idfa = "99999999-8888-4777-8666-555555555555"
    stream = "segment"
    messages: list[dict[str, Any] | str] = [
        {
            "type": "SCHEMA",
            "stream": stream,
            "schema": {
                "type": "object",
                "properties": {
                    "traits": {"type": ["object", "null"]},
                    "context": {"type": ["object", "null"]},
                    "properties": {"type": ["object", "null"]},
                    "event": {"type": ["string", "null"]},
                },
            },
            "key_properties": [],
        },
        # identify, nested: iOS (mixed-case type), boolean traits as flags.
        record(
            stream,
            type="identify",
            traits={"email": " Ann@Example.COM ", "vip": True, "lapsed": False, "plan": "pro"},
            context={"device": {"advertisingId": IDFA, "type": "iOS"}},
        ),
        # identify, nested: Android; the traits email wins over a top-level one.
        record(
            stream,
            type="identify",
            email="top@example.com",
            traits={"email": "bob@example.com", "vip": True},
            context={"device": {"advertisingId": ANDROID, "type": "android"}},
        ),
        # track, nested: entered; the email comes from context.traits.
        record(
            stream,
            type="track",
            event="Audience Entered",
            properties={"audience_key": "cart", "cart": True},
            context={"traits": {"email": "Cat@Example.com"}},
        ),
        # track "Audience Exited" whose flag says true: the flag wins.
        record(
            stream,
            type="track",
            event="Audience Exited",
            properties={"audience_key": "cart", "cart": True},
            context={"traits": {"email": "dan@example.com"}},
        ),
        # track "Audience Exited" without a flag: a removal.
        record(
            stream,
            type="track",
            event="Audience Exited",
            properties={"audience_key": "cart"},
            context={"traits": {"email": "EVE@example.com"}},
        ),
        # warehouse rows (identifies table).
        record(
            stream,
            email="fay@example.com",
            vip=True,
            context_device_advertising_id=idfa_2,
            context_device_type="ios",
            context_ip="203.0.113.9",
        ),
        record(
            stream,
            email="gus@example.com",
            newsletter=True,
            context_device_advertising_id=android_2,
            context_device_type="Android",
        ),
        # Unknown device type: the id is reported and not sent; the email is.
        record(
            stream,
            type="identify",
            traits={"email": "hal@example.com", "vip": True},
            context={"device": {"advertisingId": ignored_idfa, "type": "windows"}},
        ),
        # Not a Segment payload at all.
        record(stream, email="ivy@example.com", audience_key="vip"),
    ]

    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {
        "vip": {
            sha("ann@example.com"),
            IDFA_HASH,
            sha("bob@example.com"),
            ANDROID_HASH,
            sha("fay@example.com"),
            sha(idfa_2.upper()),
            sha("hal@example.com"),
            sha("ivy@example.com"),
        },
        "cart": {sha("cat@example.com"), sha("dan@example.com")},
        "newsletter": {sha("gus@example.com"), sha(android_2.lower())},
    }
    assert "lapsed" not in lists_by_name(emulator)  # only ever removals
    assert "Stream 'segment': 9 records read, 9 used" in run.stderr
    assert "device_type_unknown=1" in run.stderr
    assert "Audience 'lapsed' (list not created): add 0, remove 0" in run.stderr
    assert "2 removals not needed (never added to the list)" in run.stderr  # ann's email and IDFA
    assert re.search(r"Audience 'cart' \(list \d+\): add 2, remove 1, send 2 requests", run.stderr)
    assert_contract_kept(emulator)
    # The unknown-platform ID went nowhere, in either casing.
    everything = set().union(*members_by_name(emulator).values())
    assert not {sha(ignored_idfa), sha(ignored_idfa.upper())} & everything
    assert "top@example.com" not in run.stderr
    assert sha("top@example.com") not in everything


def test_warehouse_track_row_takes_the_email_from_context_traits_email() -> None:
    row = {
        "event": "Audience Entered",
        "audience_key": "vip",
        "vip": True,
        "context_traits_email": " Tracked@Example.com",
    }

    membership = read_membership("tracks", row)

    assert membership.hashes == [sha("tracked@example.com")]
    assert membership.changes == [("vip", True)]


def test_nested_identify_keeps_a_top_level_audience_key() -> None:
    payload = {"traits": {"email": "k@example.com"}, "audience_key": "vip", "in_audience": False}

    membership = read_membership("identifies", payload)

    assert membership.changes == [("vip", False)]
