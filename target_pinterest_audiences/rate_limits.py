"""Pinterest's published rate limits, and the request ceilings the target paces itself to.

Sources: Pinterest's rate-limits page (developers.pinterest.com/docs/reference/rate-limits/)
and the ``x-ratelimit-category`` of each operation in Pinterest's OpenAPI description. The
customer-list create and update and the audience create the target sends are ``ads_write``:
400 requests per minute per user per app on Standard access (300 per day on Trial access).
The list and get operations are ``ads_read``: 1,000 per minute. Every request also counts
toward the universal 100 per second.

The defaults stay 10% under the per-minute limits: the window Pinterest counts in starts
when a request arrives, ours when it leaves, and network jitter moves a few requests across
the edge. Both ceilings are settings, so a user with other limits (or another process
sharing the same token's quota) can change them.

``max_requests_per_second``, the single write ceiling of earlier versions, is still read:
as a deprecated alias for ``max_write_requests_per_minute`` (times 60), with a warning.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ADS_WRITE_PER_MINUTE = 400
"""Pinterest's ads_write limit, Standard access (requests per minute per user per app)."""
ADS_READ_PER_MINUTE = 1000
"""Pinterest's ads_read limit, Standard access (requests per minute per user per app)."""
UNIVERSAL_PER_SECOND = 100
"""Pinterest's universal limit, Standard access (requests per second per user per app)."""

DEFAULT_WRITE_REQUESTS_PER_MINUTE = 360
DEFAULT_READ_REQUESTS_PER_MINUTE = 900
UNIVERSAL_CEILING_PER_SECOND = 90
"""The target's own ceiling for all requests together, 10% under the universal limit."""
# No ceiling may exceed the universal limit.
MAX_REQUESTS_PER_MINUTE = UNIVERSAL_PER_SECOND * 60

WRITE_SETTING = "max_write_requests_per_minute"
READ_SETTING = "max_read_requests_per_minute"
DEPRECATED_WRITE_SETTING = "max_requests_per_second"

_SOURCES = (
    "Sources: Pinterest's rate-limits page (developers.pinterest.com/docs/reference/"
    "rate-limits/) and the x-ratelimit-category of each operation in Pinterest's OpenAPI "
    "description."
)
WRITE_DESCRIPTION = (
    "Ceiling on write requests (customer-list create and update, audience create) in any "
    "60-second window. Pinterest puts them in its ads_write category: 400 requests per "
    "minute per user per app on Standard access, 300 per day on Trial access (set 0.2). "
    "The default stays 10% under. On 429 the target also pauses and slows down by itself. "
    + _SOURCES
)
READ_DESCRIPTION = (
    "Ceiling on read requests (finding lists by name, reading them back) in any 60-second "
    "window. Pinterest puts them in its ads_read category: 1,000 requests per minute per "
    "user per app. The default stays 10% under. " + _SOURCES
)
DEPRECATED_WRITE_DESCRIPTION = (
    "Deprecated: use max_write_requests_per_minute (this value times 60). Still read when "
    "max_write_requests_per_minute is not set, with a warning."
)


@dataclass(frozen=True, slots=True)
class RequestCeilings:
    """How many requests per minute the target allows itself, per Pinterest category."""

    writes_per_minute: float
    reads_per_minute: float
    warnings: tuple[str, ...] = ()
    """What the user should hear about how these were chosen (deprecations, excess)."""


def ceilings_from_config(config: Mapping[str, Any]) -> RequestCeilings:
    """Read both ceilings, honouring the deprecated per-second setting."""
    warnings: list[str] = []
    writes = config.get(WRITE_SETTING)
    legacy = config.get(DEPRECATED_WRITE_SETTING)
    if writes is None and legacy is not None:
        writes = float(legacy) * 60
        warnings.append(
            f"config['{DEPRECATED_WRITE_SETTING}'] is deprecated: using it as "
            f"{WRITE_SETTING} = {writes:g} ({legacy:g} x 60); set {WRITE_SETTING} instead"
        )
    elif legacy is not None:
        warnings.append(
            f"config['{DEPRECATED_WRITE_SETTING}'] is deprecated and ignored: "
            f"{WRITE_SETTING} is set"
        )
    if writes is None:
        writes = DEFAULT_WRITE_REQUESTS_PER_MINUTE
    reads = config.get(READ_SETTING)
    if reads is None:
        reads = DEFAULT_READ_REQUESTS_PER_MINUTE
    writes = min(float(writes), MAX_REQUESTS_PER_MINUTE)
    reads = float(reads)
    if is_loopback_url(config.get("api_url")):
        # The bundled emulator (or a test double): its limits are whatever it was given.
        return RequestCeilings(writes, reads, tuple(warnings))
    for setting, value, limit, category in (
        (WRITE_SETTING, writes, ADS_WRITE_PER_MINUTE, "ads_write"),
        (READ_SETTING, reads, ADS_READ_PER_MINUTE, "ads_read"),
    ):
        if value > limit:
            warnings.append(
                f"{setting} = {value:g} is above Pinterest's published {category} limit of "
                f"{limit} per minute (Standard access): expect 429 answers, which slow the "
                "run down"
            )
    return RequestCeilings(writes, reads, tuple(warnings))


def is_loopback_url(url: object) -> bool:
    """Whether ``url`` names this machine (``localhost`` or a loopback address): the
    bundled emulator or a test double, whose limits are not Pinterest's and to which plain
    http carries no token over a network."""
    host = urlsplit(url).hostname if isinstance(url, str) else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
