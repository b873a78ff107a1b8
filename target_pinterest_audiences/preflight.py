"""Checks a CI pipeline runs before a deploy: ``--validate-config`` and ``--check-connection``.

``--validate-config`` reads no input and sends nothing: it validates the config against
the schema and the cross-field rules and prints one line per problem, naming the key.
``--check-connection`` also calls Pinterest (reads the ad account and one page of customer
lists) and says whether the token, its scopes and the ad account work. Both exit 0 when
everything is fine and 1 otherwise, so they can gate a deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from target_pinterest_audiences.client import ClientSettings, PinterestClient, RetryPolicy
from target_pinterest_audiences.config import Settings, cross_field_problems, schema_problems
from target_pinterest_audiences.errors import (
    AuthenticationError,
    PermissionDeniedError,
    TargetError,
)
from target_pinterest_audiences.tokens import provider_for

# A connection check should answer quickly, not wait out a rate limit for ten minutes.
_CHECK_RETRY = RetryPolicy(max_attempts=3, max_total_wait_seconds=30)


@dataclass(frozen=True)
class Check:
    """One line of the connection report."""

    ok: bool
    what: str

    def __str__(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.what}"


def config_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Everything wrong with ``config``, one message per problem, values never shown."""
    return schema_problems(config, schema) + cross_field_problems(config)


def check_connection(settings: Settings) -> list[Check]:
    """Talk to Pinterest with ``settings`` and report what works and what does not."""
    tokens = provider_for(settings)
    client = PinterestClient(settings.api_url, tokens, settings=ClientSettings(retry=_CHECK_RETRY))
    account = f"/ad_accounts/{settings.ad_account_id}"
    checks: list[Check] = []
    try:
        checks.append(
            _attempt(
                lambda: client.get(account),
                lambda body: (
                    f"token accepted; ad account {settings.ad_account_id} "
                    f"({body.get('name') or 'unnamed'}) is reachable"
                ),
            )
        )
        if checks[-1].ok:
            checks.append(
                _attempt(
                    lambda: client.get(f"{account}/customer_lists", {"page_size": 1}),
                    lambda _body: "customer lists can be read (scope ads:read)",
                )
            )
        if tokens.granted_scopes is not None:
            granted = set(tokens.granted_scopes.replace(",", " ").split())
            missing = {"ads:read", "ads:write"} - granted
            checks.append(
                Check(
                    not missing,
                    "the refreshed token has scopes ads:read and ads:write"
                    if not missing
                    else f"the refreshed token lacks scope(s) {', '.join(sorted(missing))}",
                )
            )
        elif all(check.ok for check in checks):
            checks.append(
                Check(
                    True,
                    "scope ads:write not checked: it cannot be tested without writing; the "
                    "first run will say so clearly if it is missing",
                )
            )
    finally:
        client.close()
    return checks


def _attempt(
    call: Callable[[], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
) -> Check:
    try:
        body = call()
    except (AuthenticationError, PermissionDeniedError) as exc:
        return Check(False, str(exc))
    except TargetError as exc:
        return Check(False, f"Pinterest could not be reached or refused: {exc}")
    return Check(True, describe(body))
