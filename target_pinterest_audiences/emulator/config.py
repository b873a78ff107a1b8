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


@dataclass
class EmulatorConfig:
    """How an :class:`~target_pinterest_audiences.emulator.Emulator` behaves.

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
    write_rate_limit_per_minute: int | None = None
    read_rate_limit_per_minute: int | None = None
    processing_seconds: float = 0.0
    match_rate: float = 1.0  # share of uploaded records that match a user
    faults: Sequence[Mapping[str, Any]] = ()
    max_records_per_request: int | None = None
    rejected_records: Sequence[str] = ()
    validate_responses: bool = True
    verbose: bool = False
    request_log_limit: int = 100_000
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def fault_config(self) -> dict[str, Any]:
        """The start-up fault configuration in the admin API's JSON shape."""
        return {
            "rules": [dict(rule) for rule in self.faults],
            "max_records_per_request": self.max_records_per_request,
            "rejected_records": list(self.rejected_records),
        }
