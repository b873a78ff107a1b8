"""In-memory Pinterest ad-account data: customer lists and audiences.

Modelled on the v5 description, with these choices where it is silent:

* Customer list ids are numeric strings from one process-wide sequence
  starting at 1000000000001, audience ids likewise from 2000000000001, so an id
  never names objects in two ad accounts. Lists and audiences cannot be
  deleted (the target never deletes).
* Duplicate list names are allowed, as on Pinterest.
* Membership is a set of the records as sent (see ``records.py``). Create
  counts as batch 1 and every PATCH adds one batch. ``num_uploaded_user_records``
  grows by every record of a create/ADD and ``num_removed_user_records`` by
  every record of a REMOVE, whether or not it changed membership (the
  description says so). Repeats inside one request count each time.
* Matching (see ``matching.py``): a configurable, deterministic share
  (``match_rate``) of a list's members match a Pinterest user; each matched
  record counts as one user.
* ``status`` is ``PROCESSING`` for ``processing_seconds`` after any change,
  then ``READY`` with at least 100 *matched* users, else ``TOO_SMALL`` (the
  description: "TOO_SMALL - the list has less than 100 Pinterest users").
* A CUSTOMER_LIST audience reports its list's matched users as ``size`` and
  ``READY``/``TOO_SMALL`` by the same 100 threshold, as of the list's last
  completed processing: while a change is processing, the audience still shows
  the size from before it, and a list that has never finished processing
  gives its audience ``size: null`` and ``status: INITIALIZING``.
* Every create/ADD/REMOVE record that is not 64-char lowercase hex is counted
  in ``non_sha256_records`` (globally and per list): the privacy self-check.

All public methods are thread-safe (one lock; each call holds it only for
set operations on at most one request's records).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import invalid, not_found
from .matching import MatchModel
from .pagination import paginate
from .records import count_non_sha256

MIN_READY_MEMBERS = 100
FIRST_CUSTOMER_LIST_ID = 1_000_000_000_001
FIRST_AUDIENCE_ID = 2_000_000_000_001


@dataclass
class CustomerList:
    """One customer list and its bookkeeping counters."""

    id: str
    ad_account_id: str
    name: str
    list_type: str
    created_time: int
    changed_at: float
    members: set[str] = field(default_factory=set)
    matched: set[str] = field(default_factory=set)
    """The members that match a Pinterest user (a subset of ``members``)."""
    published_size: int | None = None
    """Matched users as of the last completed processing, before ``changed_at``."""
    num_batches: int = 0
    num_uploaded_user_records: int = 0
    num_removed_user_records: int = 0
    non_sha256_records: int = 0

    @property
    def updated_time(self) -> int:
        """Unix seconds of the last change."""
        return int(self.changed_at)

    def processing(self, now: float, processing_seconds: float) -> bool:
        """Whether the last change is still being processed (matched)."""
        return now - self.changed_at < processing_seconds

    def status(self, now: float, processing_seconds: float) -> str:
        """PROCESSING right after a change, then READY or TOO_SMALL by matched users."""
        if self.processing(now, processing_seconds):
            return "PROCESSING"
        return "READY" if len(self.matched) >= MIN_READY_MEMBERS else "TOO_SMALL"

    def size(self, now: float, processing_seconds: float) -> int | None:
        """Matched users as Pinterest shows them now: None until first processed."""
        if self.processing(now, processing_seconds):
            return self.published_size
        return len(self.matched)

    def changed(self, now: float, processing_seconds: float) -> None:
        """Start processing a change; the size published so far stays visible meanwhile."""
        self.published_size = self.size(now, processing_seconds)
        self.changed_at = now

    def to_api(self, now: float, processing_seconds: float) -> dict[str, Any]:
        """The ``CustomerList`` schema object."""
        return {
            "ad_account_id": self.ad_account_id,
            "created_time": self.created_time,
            "exceptions": {},
            "id": self.id,
            "name": self.name,
            "num_batches": self.num_batches,
            "num_removed_user_records": self.num_removed_user_records,
            "num_uploaded_user_records": self.num_uploaded_user_records,
            "status": self.status(now, processing_seconds),
            "type": "customerlist",
            "updated_time": self.updated_time,
        }

    def summary(self, now: float, processing_seconds: float) -> dict[str, Any]:
        """Admin view: the API object plus what only the emulator knows."""
        return {
            **self.to_api(now, processing_seconds),
            "list_type": self.list_type,
            "member_count": len(self.members),
            "matched_count": len(self.matched),
            "non_sha256_records": self.non_sha256_records,
        }


@dataclass
class Audience:
    """One audience (the emulator only creates CUSTOMER_LIST audiences)."""

    id: str
    ad_account_id: str
    name: str
    audience_type: str
    rule: Mapping[str, Any]
    description: str | None
    created_time: int


class EmulatorState:
    """Customer lists and audiences of the configured ad accounts."""

    def __init__(
        self,
        ad_account_ids: Iterable[str],
        *,
        processing_seconds: float = 0.0,
        match_rate: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ad_account_ids = frozenset(ad_account_ids)
        self.processing_seconds = processing_seconds
        self.matching = MatchModel(match_rate)
        self._clock = clock
        self._lock = threading.RLock()
        self._lists: dict[str, CustomerList] = {}
        self._audiences: dict[str, Audience] = {}
        self._next_list_id = FIRST_CUSTOMER_LIST_ID
        self._next_audience_id = FIRST_AUDIENCE_ID
        self._non_sha256_records = 0

    def reset(self) -> None:
        """Forget every list and audience; ids start over."""
        with self._lock:
            self._lists.clear()
            self._audiences.clear()
            self._next_list_id = FIRST_CUSTOMER_LIST_ID
            self._next_audience_id = FIRST_AUDIENCE_ID
            self._non_sha256_records = 0

    @property
    def non_sha256_records(self) -> int:
        """Records received so far that were not SHA-256 hex digests."""
        with self._lock:
            return self._non_sha256_records

    # --- customer lists (Pinterest API) -------------------------------------------

    def create_customer_list(
        self, ad_account_id: str, name: str, list_type: str, records: Sequence[str]
    ) -> dict[str, Any]:
        """Create a list holding ``records``; returns the ``CustomerList`` object."""
        non_sha = count_non_sha256(records)
        with self._lock:
            now = self._clock()
            customer_list = CustomerList(
                id=str(self._next_list_id),
                ad_account_id=ad_account_id,
                name=name,
                list_type=list_type,
                created_time=int(now),
                changed_at=now,
                members=set(records),
                matched=self.matching.matched(records),
                num_batches=1,
                num_uploaded_user_records=len(records),
                non_sha256_records=non_sha,
            )
            self._next_list_id += 1
            self._lists[customer_list.id] = customer_list
            self._non_sha256_records += non_sha
            return customer_list.to_api(now, self.processing_seconds)

    def update_customer_list(
        self, ad_account_id: str, list_id: str, operation_type: str, records: Sequence[str]
    ) -> dict[str, Any]:
        """Apply an ADD or REMOVE batch; returns the updated ``CustomerList``."""
        non_sha = count_non_sha256(records)
        with self._lock:
            customer_list = self._customer_list(ad_account_id, list_id)
            now = self._clock()
            if operation_type not in ("ADD", "REMOVE"):
                # The spec's enum already excludes this; keep the state safe anyway.
                raise invalid(f"Unknown operation_type {operation_type!r}.")
            customer_list.changed(now, self.processing_seconds)
            if operation_type == "ADD":
                customer_list.members.update(records)
                customer_list.matched.update(self.matching.matched(records))
                customer_list.num_uploaded_user_records += len(records)
            else:
                customer_list.members.difference_update(records)
                customer_list.matched.difference_update(records)
                customer_list.num_removed_user_records += len(records)
            customer_list.num_batches += 1
            customer_list.non_sha256_records += non_sha
            self._non_sha256_records += non_sha
            return customer_list.to_api(now, self.processing_seconds)

    def get_customer_list(self, ad_account_id: str, list_id: str) -> dict[str, Any]:
        """The ``CustomerList`` object, or a 404 ApiError."""
        with self._lock:
            customer_list = self._customer_list(ad_account_id, list_id)
            return customer_list.to_api(self._clock(), self.processing_seconds)

    def list_customer_lists(
        self, ad_account_id: str, *, page_size: int, order: str, bookmark: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the ad account's lists and the next bookmark."""
        with self._lock:
            now = self._clock()
            owned = [cl for cl in self._lists.values() if cl.ad_account_id == ad_account_id]
            page, next_bookmark = paginate(
                owned,
                lambda cl: cl.id,
                kind="customer_lists",
                page_size=page_size,
                order=order,
                bookmark=bookmark,
            )
            return [cl.to_api(now, self.processing_seconds) for cl in page], next_bookmark

    def _customer_list(self, ad_account_id: str, list_id: str) -> CustomerList:
        customer_list = self._lists.get(list_id)
        if customer_list is None or customer_list.ad_account_id != ad_account_id:
            raise not_found(f"Customer list {list_id}")
        return customer_list

    def has_customer_list(self, ad_account_id: str, list_id: str) -> bool:
        """Whether ``list_id`` is a list of ``ad_account_id``."""
        with self._lock:
            customer_list = self._lists.get(list_id)
            return customer_list is not None and customer_list.ad_account_id == ad_account_id

    # --- audiences (Pinterest API) -------------------------------------------------

    def create_audience(
        self,
        ad_account_id: str,
        *,
        name: str,
        audience_type: str,
        rule: Mapping[str, Any],
        description: str | None,
    ) -> dict[str, Any]:
        """Store an audience; returns the ``Audience`` object."""
        with self._lock:
            audience = Audience(
                id=str(self._next_audience_id),
                ad_account_id=ad_account_id,
                name=name,
                audience_type=audience_type,
                rule=dict(rule),
                description=description,
                created_time=int(self._clock()),
            )
            self._next_audience_id += 1
            self._audiences[audience.id] = audience
            return self._audience_api(audience, self._clock())

    def get_audience(self, ad_account_id: str, audience_id: str) -> dict[str, Any]:
        """The ``Audience`` object, or a 404 ApiError."""
        with self._lock:
            audience = self._audiences.get(audience_id)
            if audience is None or audience.ad_account_id != ad_account_id:
                raise not_found(f"Audience {audience_id}")
            return self._audience_api(audience, self._clock())

    def list_audiences(
        self, ad_account_id: str, *, page_size: int, order: str, bookmark: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the ad account's audiences and the next bookmark."""
        with self._lock:
            now = self._clock()
            owned = [a for a in self._audiences.values() if a.ad_account_id == ad_account_id]
            page, next_bookmark = paginate(
                owned,
                lambda a: a.id,
                kind="audiences",
                page_size=page_size,
                order=order,
                bookmark=bookmark,
            )
            return [self._audience_api(a, now) for a in page], next_bookmark

    def _audience_api(self, audience: Audience, now: float) -> dict[str, Any]:
        size: int | None = None
        list_id = audience.rule.get("customer_list_id")
        customer_list = self._lists.get(str(list_id)) if list_id is not None else None
        if customer_list is not None:
            size = customer_list.size(now, self.processing_seconds)
        if size is None:
            status = "INITIALIZING"
        else:
            status = "READY" if size >= MIN_READY_MEMBERS else "TOO_SMALL"
        return {
            "ad_account_id": audience.ad_account_id,
            "audience_type": audience.audience_type,
            "created_timestamp": audience.created_time,
            "description": audience.description,
            "id": audience.id,
            "name": audience.name,
            "rule": dict(audience.rule),
            "size": size,
            "status": status,
            "type": "audience",
            "updated_timestamp": audience.created_time,
        }

    # --- introspection for tests and the admin API ----------------------------------

    def members(self, list_id: str) -> frozenset[str]:
        """The current members of a list (a copy); KeyError if there is no such list."""
        with self._lock:
            return frozenset(self._lists[list_id].members)

    def customer_list(self, list_id: str) -> dict[str, Any]:
        """Admin summary of one list; KeyError if there is no such list."""
        with self._lock:
            return self._lists[list_id].summary(self._clock(), self.processing_seconds)

    def customer_lists(self, ad_account_id: str | None = None) -> list[dict[str, Any]]:
        """Admin summaries of all lists (of one ad account if given), by id."""
        with self._lock:
            now = self._clock()
            return [
                cl.summary(now, self.processing_seconds)
                for cl in sorted(self._lists.values(), key=lambda cl: int(cl.id))
                if ad_account_id is None or cl.ad_account_id == ad_account_id
            ]

    def audiences(self, ad_account_id: str | None = None) -> list[dict[str, Any]]:
        """``Audience`` objects of all audiences (of one ad account if given), by id."""
        with self._lock:
            now = self._clock()
            return [
                self._audience_api(a, now)
                for a in sorted(self._audiences.values(), key=lambda a: int(a.id))
                if ad_account_id is None or a.ad_account_id == ad_account_id
            ]

    def snapshot(self) -> dict[str, Any]:
        """Per configured ad account: its customer lists and audiences."""
        with self._lock:
            return {
                account: {
                    "customer_lists": self.customer_lists(account),
                    "audiences": self.audiences(account),
                }
                for account in sorted(self.ad_account_ids)
            }
