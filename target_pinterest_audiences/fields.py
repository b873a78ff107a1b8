"""The record contract's field names, shared by the contract and the Segment rewriting."""

from __future__ import annotations

from target_pinterest_audiences.identifiers import IdentifierKind

AUDIENCE_KEY = "audience_key"
IN_AUDIENCE = "in_audience"
IDENTIFIER_FIELDS = tuple(kind.value for kind in IdentifierKind)
CONTRACT_FIELDS = frozenset(IDENTIFIER_FIELDS) | {AUDIENCE_KEY, IN_AUDIENCE}
DELETED_AT = "_sdc_deleted_at"
"""Singer's soft- and hard-delete marker: set (not null, not empty) means the row is gone."""
