"""The record contract for keyed rows (upsert mode), in process."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from target_pinterest_audiences.memberships import NO_VALID_IDENTIFIER
from target_pinterest_audiences.rows import KEY_PROPERTY_NULL, Form, RowReader, is_deleted

ACCOUNT = "549755885175"


def props(*names: str) -> dict[str, Any]:
    """A schema: 'flag:x' is a nullable boolean, anything else a nullable string."""
    properties = {}
    for name in names:
        if name.startswith("flag:"):
            properties[name[5:]] = {"type": ["boolean", "null"]}
        else:
            properties[name] = {"type": ["string", "null"]}
    return {"properties": properties}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "deleted"),
    [
        (None, False),
        ("", False),
        ("2026-12-01T10:00:00+00:00", True),
        ("2026-12-01", True),
    ],
)
def test_sdc_deleted_at_set_means_deleted(value: object, deleted: bool) -> None:
    assert is_deleted({"_sdc_deleted_at": value}) is deleted
    assert is_deleted({}) is False


def test_the_form_is_read_from_the_schema() -> None:
    assert (
        RowReader(ACCOUNT, "s", ["id"], props("id", "email", "audience_key")).form is Form.EXPLICIT
    )
    assert (
        RowReader(ACCOUNT, "s", ["id"], props("id", "email", "flag:in_audience")).form
        is Form.EXPLICIT
    )
    engage = RowReader(ACCOUNT, "s", ["id"], props("id", "email", "flag:vip", "flag:lapsed"))
    assert engage.form is Form.ENGAGE
    assert engage.flag_columns == ("vip", "lapsed")
    assert RowReader(ACCOUNT, "s", ["id"], props("id", "email")).form is Form.PLAIN


def test_explicit_rows() -> None:
    reader = RowReader(
        ACCOUNT, "users", ["id"], props("id", "email", "audience_key", "flag:in_audience")
    )

    row = reader.read({"id": "1", "email": " Ann@Example.com", "audience_key": " vip "})
    assert (row.hashes, row.audiences, row.skip_reason) == (
        (sha("ann@example.com"),),
        ("vip",),
        None,
    )
    assert (
        reader.read(
            {"id": "1", "email": "a@b.co", "audience_key": "vip", "in_audience": False}
        ).audiences
        == ()
    )
    assert reader.read({"id": "1", "email": "a@b.co", "audience_key": None}).audiences == ()
    assert reader.read({"id": "1", "email": "a@b.co", "audience_key": "  "}).audiences == ()
    assert reader.read({"id": "1", "email": "a@b.co"}).audiences == ("users",)
    bad = reader.read({"id": "1", "email": "a@b.co", "audience_key": "vip", "in_audience": "yes"})
    assert bad.skip_reason == "in_audience_not_boolean"
    assert not bad.applies  # the row keeps what it had


def test_engage_rows_only_true_flags_count() -> None:
    reader = RowReader(
        ACCOUNT, "traits", ["id"], props("id", "email", "flag:vip", "flag:lapsed", "flag:new")
    )

    row = reader.read({"id": 1, "email": "a@b.co", "vip": True, "lapsed": False, "new": None})

    assert row.audiences == ("vip",)
    assert reader.read({"id": 1, "email": "a@b.co"}).audiences == ()  # never the stream's list


def test_a_delete_needs_only_the_key() -> None:
    reader = RowReader(ACCOUNT, "users", ["id"], props("id", "email", "audience_key"))

    row = reader.read({"id": 7, "_sdc_deleted_at": "2026-12-01T10:00:00Z"})

    assert row.deleted
    assert row.applies
    assert (row.hashes, row.audiences) == ((), ())
    assert row.row_id == reader.read({"id": 7, "email": "a@b.co"}).row_id


def test_a_row_without_a_valid_identifier_still_replaces_the_row() -> None:
    reader = RowReader(ACCOUNT, "users", ["id"], props("id", "email", "audience_key"))

    row = reader.read({"id": 7, "email": "not-an-email", "audience_key": "vip"})

    assert row.applies
    assert row.skip_reason == NO_VALID_IDENTIFIER
    assert row.hashes == ()
    assert row.rejected == ["email_malformed"]


def test_row_ids_depend_on_account_stream_and_every_key_value_and_hide_them() -> None:
    reader = RowReader(ACCOUNT, "users", ["tenant", "email"], props("tenant", "email"))
    record = {"tenant": "t1", "email": "key@example.com"}
    row_id = reader.row_id(record)

    assert row_id is not None
    assert len(row_id) == 32
    assert b"key@example.com" not in row_id
    assert reader.row_id({"tenant": "t2", "email": "key@example.com"}) != row_id
    assert RowReader(ACCOUNT, "other", ["tenant", "email"], props()).row_id(record) != row_id
    assert RowReader("1", "users", ["tenant", "email"], props()).row_id(record) != row_id
    assert reader.row_id({"tenant": "t1", "email": "key@example.com", "x": 1}) == row_id
    # 1 and "1" are different keys, as they are in the source table's types.
    numbers = RowReader(ACCOUNT, "users", ["id"], props())
    assert numbers.row_id({"id": 1}) != numbers.row_id({"id": "1"})


def test_a_null_key_is_skipped() -> None:
    reader = RowReader(ACCOUNT, "users", ["id"], props("id", "email"))

    row = reader.read({"id": None, "email": "a@b.co"})

    assert row.skip_reason == KEY_PROPERTY_NULL
    assert not row.applies
