"""Bookmark (cursor) pagination, as Pinterest's ``Paginated`` responses use it.

A bookmark is opaque to clients. The emulator encodes the collection kind, the
sort order and the id of the last item returned (base64url of a small JSON
object). Keying on the last id instead of an offset keeps paging stable when
items are created between page requests, which is what a cursor promises.
On the last page the bookmark is ``null``. A bookmark that cannot be decoded,
or that was issued for another collection or order, is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import invalid

T = TypeVar("T")

ASCENDING = "ASCENDING"
DESCENDING = "DESCENDING"


def encode_bookmark(kind: str, order: str, last_id: str) -> str:
    """Opaque cursor meaning "items after ``last_id`` in ``order``"."""
    raw = json.dumps({"k": kind, "o": order, "a": last_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_bookmark(bookmark: str, kind: str, order: str) -> int:
    """The numeric id to continue after; raises a 400 ApiError if unusable."""
    try:
        padded = bookmark + "=" * (-len(bookmark) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["k"] != kind or data["o"] != order:
            raise ValueError("bookmark of another listing")
        return int(data["a"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid("Invalid bookmark.") from None


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    *,
    kind: str,
    page_size: int,
    order: str,
    bookmark: str | None,
) -> tuple[list[T], str | None]:
    """One page of ``items`` (any order) sorted by numeric id, plus the next bookmark."""
    descending = order == DESCENDING
    ordered = sorted(items, key=lambda item: int(key(item)), reverse=descending)
    if bookmark:
        after = decode_bookmark(bookmark, kind, order)
        ordered = [
            item
            for item in ordered
            if (int(key(item)) < after if descending else int(key(item)) > after)
        ]
    page = ordered[:page_size]
    more = len(ordered) > page_size
    return page, (encode_bookmark(kind, order, key(page[-1])) if more and page else None)
