"""Checks a CI pipeline runs before a deploy: ``--validate-config`` and ``--check-connection``.

``--validate-config`` reads no input and sends nothing: it validates the config against
the schema and the cross-field rules and prints one line per problem, naming the key.
``--check-connection`` also calls Pinterest (reads the ad account and one page of customer
lists) and says whether the token, its scopes and the ad account work, without ever spending
a refresh token whose rotated successor nothing would keep. Both print warnings (``WARN``)
for settings that are valid but will hurt, and exit 0 when nothing failed and 1 otherwise,
so they can gate a deploy.
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
from target_pinterest_audiences.tokens import (
    can_refresh_safely,
    provider_for,
    token_store_warning,
)

# A connection check should answer quickly, not wait out a rate limit for ten minutes.
_CHECK_RETRY = RetryPolicy(max_attempts=3, max_total_wait_seconds=30)
HTTP_UNAUTHORIZED = 401


@dataclass(frozen=True)
class Check:
    """One line of the connection report.

    ``label`` marks lines that are neither a pass nor a failure: a warning, or something
    the check could not look at (``NOT CHECKED``). They do not fail the check.
    """

    ok: bool
    what: str
    label: str | None = None

    @property
    def passed(self) -> bool:
        """Checked and fine (not a warning, not skipped)."""
        return self.ok and self.label is None

    def __str__(self) -> str:
        label = self.label or ("OK" if self.ok else "FAIL")
        return f"{label:<4} {self.what}"


def config_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Everything wrong with ``config``, one message per problem, values never shown."""
    return schema_problems(config, schema) + cross_field_problems(config)


def config_warnings(settings: Settings) -> list[Check]:
    """What is valid but will hurt (a lost rotated refresh token, deprecated settings)."""
    warnings = [*settings.warnings, token_store_warning(settings)]
    return [Check(True, warning, "WARN") for warning in warnings if warning]


def check_connection(settings: Settings) -> list[Check]:
    """Talk to Pinterest with ``settings`` and report what works and what does not.

    Refresh credentials are used only with a token store: Pinterest rotates the refresh
    token on every refresh, and a check that threw the new one away would break every
    later run. Without a store the check uses the access token if there is one, and
    otherwise only asks whether ``api_url`` answers, saying what it did not check.
    """
    safe_refresh = can_refresh_safely(settings)
    tokens = provider_for(settings, allow_refresh=safe_refresh)
    client = PinterestClient(settings.api_url, tokens, settings=ClientSettings(retry=_CHECK_RETRY))
    account = f"/ad_accounts/{settings.ad_account_id}"
    refresh_unused = settings.has_refresh_credentials and not safe_refresh
    try:
        if refresh_unused and settings.access_token is None:
            return [
                _reachable(client, account),
                Check(True, _NOT_CHECKED_WITHOUT_ACCESS, "NOT CHECKED"),
            ]
        checks = [
            _attempt(
                lambda: client.get(account),
                lambda body: (
                    f"token accepted; ad account {settings.ad_account_id} "
                    f"({body.get('name') or 'unnamed'}) is reachable"
                ),
                refresh_unused=refresh_unused,
            )
        ]
        if checks[-1].passed:
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
        elif all(check.passed for check in checks):
            checks.append(
                Check(
                    True,
                    "scope ads:write not checked: it cannot be tested without writing; the "
                    "first run will say so clearly if it is missing",
                )
            )
        if refresh_unused and all(check.passed for check in checks):
            checks.append(Check(True, _NOT_CHECKED_REFRESH, "NOT CHECKED"))
    finally:
        client.close()
    return checks


_NOT_CHECKED_WITHOUT_ACCESS = (
    "the refresh credentials, the ad account, customer lists and scopes: checking "
    "them needs an access token, and getting one would spend the configured refresh_token "
    "(Pinterest rotates it, and without token_store_path the new one would be lost). Set "
    "token_store_path, or also access_token, to check them."
)
_NOT_CHECKED_REFRESH = (
    "refresh_token, client_id and client_secret (refreshing without "
    "token_store_path would spend the configured refresh_token)."
)


def _reachable(client: PinterestClient, account: str) -> Check:
    """Whether ``api_url`` answers like Pinterest (401 without a token), spending nothing."""
    try:
        status = client.status_without_credentials(account)
    except TargetError as exc:
        return Check(False, str(exc))
    if status == HTTP_UNAUTHORIZED:
        return Check(True, f"Pinterest API at {client.api_url} answers (HTTP 401 without a token)")
    return Check(
        False,
        f"{client.api_url} answered HTTP {status} where Pinterest's API answers 401 without a "
        "token: check api_url (it ends in /v5)",
    )


def _attempt(
    call: Callable[[], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    *,
    refresh_unused: bool = False,
) -> Check:
    try:
        body = call()
    except AuthenticationError as exc:
        if refresh_unused:
            return Check(
                True,
                "the ad account and customer lists: the configured access_token was "
                "refused (expired or revoked); a run would refresh it with refresh_token, "
                "which this check does not do without token_store_path (it would spend the "
                "configured refresh_token).",
                "NOT CHECKED",
            )
        return Check(False, str(exc))
    except PermissionDeniedError as exc:
        return Check(False, str(exc))
    except TargetError as exc:
        return Check(False, f"Pinterest could not be reached or refused: {exc}")
    return Check(True, describe(body))
