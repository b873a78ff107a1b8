"""After a run: Pinterest's own view of every touched list and its audience, in the report.

Our counts say what Pinterest acknowledged; what a marketer needs is how many of those
people Pinterest can reach. Pinterest matches uploads to its users asynchronously and
shows the result on the CUSTOMER_LIST audience (``size``: the matched users; ``status``:
READY, INITIALIZING, TOO_SMALL) and on the list (``status``). So for every list the run
touched this reads the list and its audience (``ads_read`` requests, paced by the
client's read pacer) and puts status and size next to the counts. Where the target knows
how many members the list holds (the mirror and upsert ledgers, ``ledger_members``), the
report also gives the match rate, and a very low one gets a warning naming the usual
causes, because a sync that "succeeded" into an audience nobody is in helps no one.

A list below 100 matched users (TOO_SMALL) cannot be targeted; users should hear that
from the sync, not from a campaign that never delivers.

Read-back failures are warnings: everything was already sent and acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from target_pinterest_audiences.customer_lists import CustomerLists
from target_pinterest_audiences.errors import TargetError
from target_pinterest_audiences.report import MATCHING_LAG, RunReport, percent

logger = logging.getLogger(__name__)

LOW_MATCH_RATE = 0.10
"""Below this share of members matched, the list is probably not what Pinterest expects."""
LOW_MATCH_MIN_MEMBERS = 1_000
"""Small lists vary too much to call their rate low (a few dozen test users, say)."""
# While the list is still being processed its audience size is provisional.
_PROVISIONAL_LIST_STATUSES = frozenset({"PROCESSING", "UPLOADING"})


def read_back(lists: CustomerLists, list_ids: Mapping[str, str], report: RunReport) -> None:
    """Read each list in ``list_ids`` (audience name -> list id) and its audience back."""
    audience_ids = _audience_ids(lists, list_ids, report)
    for audience, list_id in list_ids.items():
        _read_list(lists, audience, list_id, report)
        audience_id = audience_ids.get(audience)
        if audience_id is None:
            logger.info(
                "List '%s' (%s) has no CUSTOMER_LIST audience, so Pinterest reports no matched "
                "size and campaigns cannot target it; create_audiences: true makes one",
                audience,
                list_id,
            )
            continue
        _read_audience(lists, audience, audience_id, report)
        _warn_if_low_match_rate(audience, report)


def _audience_ids(
    lists: CustomerLists, list_ids: Mapping[str, str], report: RunReport
) -> dict[str, str]:
    """Audience name -> audience id; one paged read only if this run did not learn one."""
    with report.lock:
        known = {
            name: audience_id
            for name in list_ids
            if (audience_id := report.audience(name).audience_id) is not None
        }
    if len(known) == len(list_ids):
        return known
    try:
        by_list = lists.audience_ids_by_list()
    except TargetError as exc:
        logger.warning("Could not look up the audiences of the touched lists: %s", exc)
        return known
    found = {
        name: by_list[list_id]
        for name, list_id in list_ids.items()
        if name not in known and list_id in by_list
    }
    for name, audience_id in found.items():
        with report.updating(name) as entry:
            entry.audience_id = audience_id
    return known | found


def _read_list(lists: CustomerLists, audience: str, list_id: str, report: RunReport) -> None:
    try:
        status = lists.get(list_id).get("status")
    except TargetError as exc:
        logger.warning("Could not read back list %s: %s", list_id, exc)
        return
    with report.updating(audience) as entry:
        entry.pinterest_status = status
    if status == "TOO_SMALL":
        logger.warning(
            "List '%s' (%s) is TOO_SMALL: it has fewer than 100 matched Pinterest "
            "users and cannot be targeted until it grows",
            audience,
            list_id,
        )


def _read_audience(
    lists: CustomerLists, audience: str, audience_id: str, report: RunReport
) -> None:
    try:
        found = lists.get_audience(audience_id)
    except TargetError as exc:
        logger.warning(
            "Could not read back audience %s of list '%s': %s", audience_id, audience, exc
        )
        return
    size = found.get("size")
    status = found.get("status")
    with report.updating(audience) as entry:
        # bool is an int in Python; neither it nor a float is a size.
        entry.pinterest_audience_size = size if type(size) is int else None
        entry.pinterest_audience_status = status if isinstance(status, str) else None


def _warn_if_low_match_rate(audience: str, report: RunReport) -> None:
    with report.lock:
        entry = report.audience(audience)
        rate = entry.match_rate
        members = entry.ledger_members or 0
        size = entry.pinterest_audience_size
        provisional = entry.pinterest_status in _PROVISIONAL_LIST_STATUSES
    if rate is None or members < LOW_MATCH_MIN_MEMBERS or rate >= LOW_MATCH_RATE or provisional:
        return
    logger.warning(
        "Audience '%s': Pinterest matched only %d of %d members (%s). The usual causes are "
        "identifiers normalized differently from what Pinterest expects (values hashed "
        "upstream without trimming and lower-casing the email first, for example), or "
        "device ids of an app that Pinterest users do not use. As %s, look again after "
        "the next run before acting (README, Troubleshooting: match rates)",
        audience,
        size,
        members,
        percent(rate),
        MATCHING_LAG,
    )
