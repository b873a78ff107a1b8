"""Pinterest customer lists and audiences of one ad account, as the target uses them.

A customer list holds the hashed identifiers; an audience of type CUSTOMER_LIST built on it
is what campaigns target. Lists are found by exact name, so the audience key a user chooses
is the list's name in Ads Manager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from target_pinterest_audiences.client import PinterestClient
from target_pinterest_audiences.errors import AmbiguousOutcomeError, DuplicateListError

logger = logging.getLogger(__name__)

PAGE_SIZE = 250
"""The largest page Pinterest allows (spec: page_size maximum 250): fewest reads."""

Operation = Literal["ADD", "REMOVE"]

# Creating is not idempotent, so it is retried only after looking; three looks at most.
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ListRef:
    """A customer list we can write to."""

    id: str
    name: str


class CustomerLists:
    """Find, create and update the customer lists of one ad account."""

    def __init__(
        self,
        client: PinterestClient,
        ad_account_id: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._base = f"/ad_accounts/{ad_account_id}"
        self.ad_account_id = ad_account_id

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        bookmark: str | None = None
        while True:
            params: dict[str, Any] = {"page_size": PAGE_SIZE}
            if bookmark:
                params["bookmark"] = bookmark
            page = self._client.get(path, params)
            items = page.get("items") or []
            yield from (item for item in items if isinstance(item, dict))
            bookmark = page.get("bookmark")
            if not bookmark:
                return

    def ids_by_name(self) -> dict[str, list[str]]:
        """Every customer list of the account, grouped by exact name (one paged read)."""
        found: dict[str, list[str]] = {}
        for item in self._pages(f"{self._base}/customer_lists"):
            name = item.get("name")
            list_id = item.get("id")
            if isinstance(name, str) and list_id is not None:
                found.setdefault(name, []).append(str(list_id))
        return found

    def create(self, name: str, records: Sequence[str]) -> ListRef:
        """Create a list seeded with ``records`` (Pinterest requires records on creation).

        If the connection drops, or Pinterest answers 5xx, the list may have been created
        anyway: look it up by name before trying again, so a retry never makes a second
        list. ``list_type`` EMAIL is Pinterest's default; its description says a list's
        records may mix emails, MAIDs and IDFAs.
        """
        body = {"name": name, "records": ",".join(records), "list_type": "EMAIL"}
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                created = self._client.request(
                    "POST", f"{self._base}/customer_lists", body=body, idempotent=False
                )
                return ListRef(id=str(created["id"]), name=name)
            except AmbiguousOutcomeError as exc:
                ids = self.ids_by_name().get(name, [])
                if len(ids) > 1:
                    raise DuplicateListError(duplicate_message(name, ids)) from None
                if ids:
                    logger.warning(
                        "Creating list '%s' lost its answer, but the list exists (id %s); "
                        "re-sending its first records to it",
                        name,
                        ids[0],
                    )
                    self.update(ids[0], "ADD", records)
                    return ListRef(id=ids[0], name=name)
                if attempt + 1 == _CREATE_ATTEMPTS:
                    raise
                logger.warning(
                    "Creating list '%s' failed (%s); no list exists, retrying", name, exc
                )
                self._sleep(2.0**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def update(self, list_id: str, operation: Operation, records: Sequence[str]) -> None:
        """Add or remove records; both are idempotent on Pinterest, so retries are safe."""
        self._client.request(
            "PATCH",
            f"{self._base}/customer_lists/{list_id}",
            body={"operation_type": operation, "records": ",".join(records)},
        )

    def get(self, list_id: str) -> dict[str, Any]:
        """Read one list back (status, counters) for the sync report."""
        return self._client.get(f"{self._base}/customer_lists/{list_id}")

    def get_audience(self, audience_id: str) -> dict[str, Any]:
        """Read one audience back (``size``: the Pinterest users matched; ``status``)."""
        return self._client.get(f"{self._base}/audiences/{audience_id}")

    def audience_ids_by_list(self) -> dict[str, str]:
        """Map customer list id -> id of an audience built on it (one paged read)."""
        found: dict[str, str] = {}
        for item in self._pages(f"{self._base}/audiences"):
            rule = item.get("rule")
            if item.get("audience_type") == "CUSTOMER_LIST" and isinstance(rule, dict):
                list_id = rule.get("customer_list_id")
                if list_id is not None and item.get("id") is not None:
                    found.setdefault(str(list_id), str(item["id"]))
        return found

    def create_audience(self, name: str, list_id: str) -> str:
        """Create the CUSTOMER_LIST audience that makes the list targetable.

        On a lost answer or a 5xx, look for an audience on this list before trying again.
        """
        body = {
            "ad_account_id": self.ad_account_id,
            "name": name,
            "audience_type": "CUSTOMER_LIST",
            "rule": {"customer_list_id": list_id},
            "description": "Created by target-pinterest-audiences",
        }
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                created = self._client.request(
                    "POST", f"{self._base}/audiences", body=body, idempotent=False
                )
                return str(created["id"])
            except AmbiguousOutcomeError:
                existing = self.audience_ids_by_list().get(list_id)
                if existing:
                    return existing
                if attempt + 1 == _CREATE_ATTEMPTS:
                    raise
                self._sleep(2.0**attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def duplicate_message(name: str, ids: Sequence[str]) -> str:
    """The error for an ambiguous name, naming every list so the user can fix it."""
    return (
        f"{len(ids)} customer lists are named '{name}' (ids {', '.join(ids)}); the target "
        "cannot tell which one to update. Rename or delete all but one in Ads Manager."
    )
