"""Settings of one emulator instance (all optional; defaults suit tests).

The defaults describe one app (client id/secret, refresh token), one user
token and one ad account, so a target configured with the same values works
against a fresh emulator without further set-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_AD_ACCOUNT_ID = "549755885175"
DEFAULT_ACCESS_TOKEN = "emulator-access-token"  # noqa: S105 - a well-known test value
DEFAULT_CLIENT_ID = "emulator-client-id"
DEFAULT_CLIENT_SECRET = "emulator-client-secret"  # noqa: S105 - a well-known test value
DEFAULT_REFRESH_TOKEN = "emulator-refresh-token"  # noqa: S105 - a well-known test value
DAY_SECONDS = 86400
# Pinterest's published per-category limits (Standard access, requests per minute per user
# per app; developers.pinterest.com/docs/reference/rate-limits/). The category of each
# operation is its x-ratelimit-category in the OpenAPI description.
ADS_WRITE_PER_MINUTE = 400
ADS_READ_PER_MINUTE = 1000
RATE_LIMIT_WINDOW_SECONDS = 60.0


@dataclass
class EmulatorConfig:
    """How an :class:`~target_pinterest_audiences.emulator.Emulator` behaves.

    Rate limits are Pinterest's by default (``ads_write`` 400 and ``ads_read`` 1,000
    requests per sliding minute, per access token); ``None`` lifts one, and
    :meth:`without_rate_limits` lifts both, for tests that need speed rather than
    realism. ``rate_limit_window_seconds`` shortens the window for tests that need a
    limit to be hit quickly.

    ``faults``, ``max_records_per_request`` and ``rejected_records`` are the
    start-up fault configuration (see ``faults.py`` for the rule shape); the
    admin API can replace it at run time and ``reset`` restores it.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0: let the OS pick a free port
    ad_account_ids: Sequence[str] = (DEFAULT_AD_ACCOUNT_ID,)
    access_tokens: Sequence[str] = (DEFAULT_ACCESS_TOKEN,)
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    refresh_token: str = DEFAULT_REFRESH_TOKEN
    rotate_refresh_tokens: bool = True
    access_token_ttl_seconds: float = 30 * DAY_SECONDS
    refresh_token_ttl_seconds: float = 60 * DAY_SECONDS
    latency_ms: float = 0.0
    write_rate_limit_per_minute: int | None = ADS_WRITE_PER_MINUTE
    read_rate_limit_per_minute: int | None = ADS_READ_PER_MINUTE
    rate_limit_window_seconds: float = RATE_LIMIT_WINDOW_SECONDS
    processing_seconds: float = 0.0
    match_rate: float = 1.0  # share of uploaded records that match a user
    faults: Sequence[Mapping[str, Any]] = ()
    max_records_per_request: int | None = None
    rejected_records: Sequence[str] = ()
    validate_responses: bool = True
    verbose: bool = False
    request_log_limit: int = 100_000
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def without_rate_limits(cls, **settings: Any) -> EmulatorConfig:
        """A configuration with both rate limits lifted (and any other ``settings``)."""
        return cls(
            **{"write_rate_limit_per_minute": None, "read_rate_limit_per_minute": None, **settings}
        )

    def rate_limits(self) -> dict[str, int]:
        """Requests allowed per window, by ``x-ratelimit-category`` (lifted ones absent)."""
        limits = {
            "ads_write": self.write_rate_limit_per_minute,
            "ads_read": self.read_rate_limit_per_minute,
        }
        return {category: limit for category, limit in limits.items() if limit}

    def fault_config(self) -> dict[str, Any]:
        """The start-up fault configuration in the admin API's JSON shape."""
        return {
            "rules": [dict(rule) for rule in self.faults],
            "max_records_per_request": self.max_records_per_request,
            "rejected_records": list(self.rejected_records),
        }
