"""OAuth client credentials, access tokens and refresh tokens.

Choices where Pinterest's description is silent:

* Configured access tokens never expire on their own (they stand for tokens a
  user pasted into a config); tokens issued by ``/oauth/token`` expire after
  ``access_token_ttl_seconds`` (default 30 days, as Pinterest's).
* Refresh tokens live ``refresh_token_ttl_seconds`` (default 60 days, the
  continuous-refresh lifetime). With ``rotate_refresh_tokens`` (default, as
  Pinterest's continuous refresh) every refresh returns a NEW refresh token and
  the old one stops working; without it the same token is returned with its
  remaining lifetime.
* Refreshing does not revoke earlier access tokens; they run to expiry.
* The requested ``scope`` is not checked; issued tokens carry
  ``ads:read,ads:write`` and scopes are not enforced per operation.
* Issued tokens look like Pinterest's (``pina_...``/``pinr_...``) but are random.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_SCOPE = "ads:read,ads:write"


@dataclass(frozen=True)
class IssuedTokens:
    """What a successful refresh hands out."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_token_expires_in: int
    refresh_token_expires_at: int
    scope: str = DEFAULT_SCOPE


class TokenStore:
    """Validates credentials and issues tokens; thread-safe."""

    def __init__(
        self,
        *,
        access_tokens: Iterable[str],
        client_id: str,
        client_secret: str,
        refresh_token: str,
        rotate_refresh_tokens: bool = True,
        access_token_ttl_seconds: float = 30 * 86400,
        refresh_token_ttl_seconds: float = 60 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configured_access = tuple(access_tokens)
        self._client_id = client_id
        self._client_secret = client_secret
        self._configured_refresh = refresh_token
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.access_token_ttl_seconds = access_token_ttl_seconds
        self.refresh_token_ttl_seconds = refresh_token_ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # token -> unix expiry (None = never)
        self._access: dict[str, float | None] = {}
        self._refresh: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the configured tokens only (issued ones are forgotten)."""
        with self._lock:
            self._access = dict.fromkeys(self._configured_access)
            self._refresh = {
                self._configured_refresh: self._clock() + self.refresh_token_ttl_seconds
            }

    def is_valid_access_token(self, token: str) -> bool:
        """Known and not expired."""
        with self._lock:
            if token not in self._access:
                return False
            expiry = self._access[token]
            if expiry is not None and self._clock() >= expiry:
                del self._access[token]
                return False
            return True

    def revoke_access_token(self, token: str) -> None:
        """Make one access token invalid (the ``expire_token`` fault)."""
        with self._lock:
            self._access.pop(token, None)

    def revoke_all_access_tokens(self) -> int:
        """Make every current access token invalid; returns how many there were."""
        with self._lock:
            count = len(self._access)
            self._access.clear()
            return count

    def check_client(self, client_id: str, client_secret: str) -> bool:
        """Whether HTTP Basic credentials are the configured app's."""
        return hmac.compare_digest(client_id, self._client_id) & hmac.compare_digest(
            client_secret, self._client_secret
        )

    def refresh(self, refresh_token: str) -> IssuedTokens | None:
        """Exchange a refresh token for a new access token; ``None`` if unusable."""
        with self._lock:
            now = self._clock()
            expiry = self._refresh.get(refresh_token)
            if expiry is None or now >= expiry:
                self._refresh.pop(refresh_token, None)
                return None
            access_token = "pina_" + secrets.token_urlsafe(32)
            self._access[access_token] = now + self.access_token_ttl_seconds
            if self.rotate_refresh_tokens:
                del self._refresh[refresh_token]
                refresh_token = "pinr_" + secrets.token_urlsafe(32)
                expiry = now + self.refresh_token_ttl_seconds
                self._refresh[refresh_token] = expiry
            return IssuedTokens(
                access_token=access_token,
                expires_in=int(self.access_token_ttl_seconds),
                refresh_token=refresh_token,
                refresh_token_expires_in=max(0, int(expiry - now)),
                refresh_token_expires_at=int(expiry),
            )
