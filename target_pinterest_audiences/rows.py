"""The record contract for keyed rows (upsert mode): one record is its key's whole row.

In upsert mode a stream is a table. Each record replaces everything its key said before:
its identifiers and the audiences it puts them in. So where the changes contract reads
"add" or "remove", this one reads a row's complete state:

- explicit form (the stream's schema has ``audience_key`` or ``in_audience``): the row is
  in ``audience_key`` (default: the stream name) when ``in_audience`` is true or absent;
  a null or empty ``audience_key`` puts it in no audience;
- Engage form (the schema has boolean columns): the row is in every audience whose column
  is true; false, null or absent means "not a member through this row";
- plain form: the row is in the audience named after the stream.

The form is decided once per stream from its SCHEMA rather than per record: a log-based
tap sends whole rows, and a row whose flags are all null must not fall back to the plain
form and join the stream's own list.

A record with ``_sdc_deleted_at`` set deletes the row; it may carry nothing but the key.
Rows are identified by a SHA-256 of the ad account, the stream and the key values, so a
key that is an email never reaches the ledger.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from target_pinterest_audiences import segment
from target_pinterest_audiences.fields import AUDIENCE_KEY, CONTRACT_FIELDS, DELETED_AT, IN_AUDIENCE
from target_pinterest_audiences.memberships import (
    IN_AUDIENCE_NOT_BOOLEAN,
    NO_VALID_IDENTIFIER,
    audience_name,
    hash_identifiers,
)

KEY_PROPERTY_NULL = "key_property_null"
"""A record whose key is null cannot be told apart from any other: skipped."""

_encode_key = msgspec.json.Encoder().encode


def is_deleted(record: Mapping[str, Any]) -> bool:
    """Whether the record deletes its row (``_sdc_deleted_at`` set, not null, not empty)."""
    value = record.get(DELETED_AT)
    return value is not None and value != ""


class Form(enum.Enum):
    """How a stream's records name their audiences (see the module docstring)."""

    EXPLICIT = "explicit"
    ENGAGE = "engage"
    PLAIN = "plain"


def _is_boolean(prop: object) -> bool:
    if not isinstance(prop, dict):
        return False
    types = prop.get("type")
    kinds = set(types) if isinstance(types, list) else {types}
    return "boolean" in kinds and kinds <= {"boolean", "null"}


class RowReader:
    """Reads the records of one upsert stream into rows.

    Built once per stream (its name after stream maps, key properties and schema), so the
    per-record work is the key hash, the identifier hashes and the audience names.
    """

    def __init__(
        self,
        ad_account_id: str,
        stream: str,
        key_properties: Sequence[str],
        schema: Mapping[str, Any],
    ) -> None:
        self.stream = stream
        self.key_properties = tuple(key_properties)
        prefix = f"{ad_account_id}\x00{stream}\x00".encode()
        self._row_hash = hashlib.sha256(prefix)
        properties = schema.get("properties") or {}
        self.flag_columns = tuple(
            name
            for name, prop in properties.items()
            if _is_boolean(prop) and name not in CONTRACT_FIELDS and not name.startswith("_sdc_")
        )
        if AUDIENCE_KEY in properties or IN_AUDIENCE in properties:
            self.form = Form.EXPLICIT
        elif self.flag_columns:
            self.form = Form.ENGAGE
        else:
            self.form = Form.PLAIN

    def row_id(self, record: Mapping[str, Any]) -> bytes | None:
        """The row's ledger key, or None when a key value is null."""
        values = [record.get(name) for name in self.key_properties]
        if None in values:
            return None
        digest = self._row_hash.copy()
        digest.update(_encode_key(values))
        return digest.digest()

    def read(self, record: dict[str, Any]) -> Row:
        """The row state ``record`` asks for (hashes and audiences), or why it cannot."""
        row_id = self.row_id(record)
        if row_id is None:
            return Row(None, skip_reason=KEY_PROPERTY_NULL, fields=record)
        if is_deleted(record):
            return Row(row_id, deleted=True, fields=record)
        rejected: list[str] = []
        if not segment.SEGMENT_KEYS.isdisjoint(record) and segment.is_segment_payload(record):
            record, rejected = segment.to_contract(record)
        hashes, bad = hash_identifiers(record)
        rejected += bad
        audiences = self._audiences(record)
        if isinstance(audiences, str):
            return Row(row_id, rejected=rejected, skip_reason=audiences, fields=record)
        if not hashes:
            # Still a row: it now holds no identifier, so whatever it held before leaves.
            return Row(row_id, (), (), rejected, NO_VALID_IDENTIFIER, record)
        return Row(row_id, tuple(hashes), audiences, rejected, None, record)

    def _audiences(self, record: dict[str, Any]) -> tuple[str, ...] | str:
        """The audiences the row is in, or the reason the record cannot be read."""
        try:
            if self.form is Form.EXPLICIT:
                member = record.get(IN_AUDIENCE)
                if member is not None and member is not True and member is not False:
                    return IN_AUDIENCE_NOT_BOOLEAN
                if member is False:
                    return ()
                key = record.get(AUDIENCE_KEY, self.stream)
                if key is None or (isinstance(key, str) and not key.strip()):
                    return ()  # in no audience
                return (audience_name(key),)
            if self.form is Form.ENGAGE:
                get = record.get
                return tuple(audience_name(name) for name in self.flag_columns if get(name) is True)
            return (audience_name(self.stream),)
        except ValueError as problem:
            return str(problem)


class Row:
    """One record read as a row: its key and complete state, or why it was skipped.

    ``row_id`` is None only when the key itself was unusable. ``skip_reason`` set with a
    row id and ``NO_VALID_IDENTIFIER``: the row is applied and holds nothing; any other
    reason: the record is skipped and the row keeps what it had.
    """

    __slots__ = ("audiences", "deleted", "fields", "hashes", "rejected", "row_id", "skip_reason")

    def __init__(
        self,
        row_id: bytes | None,
        hashes: tuple[str, ...] = (),
        audiences: tuple[str, ...] = (),
        rejected: list[str] | None = None,
        skip_reason: str | None = None,
        fields: dict[str, Any] | None = None,
        *,
        deleted: bool = False,
    ) -> None:
        self.row_id = row_id
        self.hashes = hashes
        self.audiences = audiences
        self.rejected = [] if rejected is None else rejected
        self.skip_reason = skip_reason
        self.fields = {} if fields is None else fields
        self.deleted = deleted

    @property
    def applies(self) -> bool:
        """Whether the row is written (a delete, a full row, or a row left empty)."""
        return self.row_id is not None and self.skip_reason in (None, NO_VALID_IDENTIFIER)
