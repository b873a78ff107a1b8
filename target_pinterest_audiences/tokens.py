"""OAuth access tokens: use the configured one, or obtain and refresh our own.

Pinterest access tokens expire (30 days) and, since continuous refresh, every refresh also
rotates the refresh token and invalidates the old one (60-day lifetime, renewed on use).
A target that forgets the rotated refresh token locks itself out after one refresh, so when
``token_store_path`` is set the newest tokens are written there atomically (mode 0600)
before they are used, and read back at the next start in preference to the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from target_pinterest_audiences.config import Settings
from target_pinterest_audiences.errors import AuthenticationError

logger = logging.getLogger(__name__)

# Refresh a little before Pinterest's stated expiry so a long request never starts with a
# token that dies mid-flight.
EXPIRY_MARGIN_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class OAuthApp:
    """The Pinterest app credentials that allow refreshing tokens."""

    client_id: str
    client_secret: str
    refresh_token: str
    continuous_refresh: bool = False


class TokenStore:
    """A JSON file holding the newest tokens, written atomically with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """Return the stored tokens, or an empty dict if the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                reason = "not UTF-8"
            else:
                reason = exc.strerror or type(exc).__name__
            msg = f"token_store_path {self.path} cannot be read ({reason}); fix or delete it"
            raise AuthenticationError(msg) from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            msg = f"token_store_path {self.path} is not valid JSON; fix or delete it"
            raise AuthenticationError(msg) from exc
        if not isinstance(data, dict):
            msg = f"token_store_path {self.path} does not hold a JSON object"
            raise AuthenticationError(msg)
        return data

    def save(self, tokens: dict[str, Any]) -> None:
        """Replace the file in one step, so a crash leaves either the old or the new tokens."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(tokens, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class TokenProvider:
    """Hands out a valid access token and refreshes it when Pinterest rejects it.

    Thread-safe: many request threads may hit a 401 at once; only the first refreshes,
    the others pick up the new token.
    """

    def __init__(
        self,
        *,
        token_url: str,
        access_token: str | None,
        app: OAuthApp | None,
        store: TokenStore | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        post: Callable[..., requests.Response] = requests.post,
        on_new_secret: Callable[[str], None] | None = None,
    ) -> None:
        self._token_url = token_url
        self._app = app
        self._store = store
        self._timeout = timeout
        self._post = post
        self._on_new_secret = on_new_secret or (lambda _secret: None)
        self._lock = threading.Lock()
        self._access_token = access_token
        self._expires_at: float | None = None
        self.granted_scopes: str | None = None
        """The scopes Pinterest reported for the last refreshed token, if any."""
        self._refresh_token = app.refresh_token if app else None
        self._unsaved: dict[str, Any] | None = None
        if store is not None:
            saved = store.load()
            configured = app.refresh_token if app else None
            if (
                configured
                and saved
                and saved.get("config_refresh_token_sha256") != _fingerprint(configured)
            ):
                # The user put a new refresh token in the config (e.g. after re-running
                # the OAuth flow): it is newer than anything in the store.
                logger.info("refresh_token in the config changed; not using the token store")
                saved = {}
            if saved.get("refresh_token"):
                self._refresh_token = str(saved["refresh_token"])
                self._on_new_secret(self._refresh_token)
            if saved.get("access_token"):
                self._access_token = str(saved["access_token"])
                self._on_new_secret(self._access_token)
                expires_at = saved.get("access_token_expires_at")
                self._expires_at = float(expires_at) if expires_at else None

    @property
    def can_refresh(self) -> bool:
        """Whether a rejected token can be replaced without a human."""
        return self._app is not None and bool(self._refresh_token)

    def current(self) -> str:
        """Return a token to send, refreshing first if it is missing or about to expire."""
        with self._lock:
            token = self._access_token
            expiring = (
                self._expires_at is not None
                and time.time() > self._expires_at - EXPIRY_MARGIN_SECONDS
            )
            if token and not expiring:
                return token
            if not self.can_refresh:
                if token:
                    return token
                msg = "no access_token configured and no refresh credentials to obtain one"
                raise AuthenticationError(msg)
            return self._refresh_locked()

    def refresh(self, rejected_token: str) -> str:
        """Replace ``rejected_token``; if another thread already did, return its token."""
        with self._lock:
            if self._access_token and self._access_token != rejected_token:
                return self._access_token
            return self._refresh_locked()

    def _refresh_locked(self) -> str:
        if self._app is None or not self._refresh_token:
            msg = "Pinterest rejected the access token and no refresh credentials are configured"
            raise AuthenticationError(msg)
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        if self._app.continuous_refresh:
            form["continuous_refresh"] = "true"
        try:
            response = self._post(
                self._token_url,
                data=form,
                auth=(self._app.client_id, self._app.client_secret),
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            msg = f"could not reach Pinterest to refresh the access token: {type(exc).__name__}"
            raise AuthenticationError(msg) from exc
        if response.status_code != 200:
            msg = (
                f"Pinterest refused to refresh the access token (HTTP {response.status_code}"
                f"{_error_suffix(response)}). Check client_id, client_secret and "
                "refresh_token; a refresh token that was rotated and not saved is no longer "
                "valid (set token_store_path to keep the newest one)."
            )
            raise AuthenticationError(msg, status=response.status_code)
        try:
            body = response.json()
            access_token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            msg = "Pinterest answered the token refresh without an access token"
            raise AuthenticationError(msg) from exc
        self.granted_scopes = str(body["scope"]) if body.get("scope") else None
        self._on_new_secret(access_token)
        new_refresh = body.get("refresh_token")
        if new_refresh:
            self._on_new_secret(str(new_refresh))
        expires_in = body.get("expires_in")
        expires_at = time.time() + float(expires_in) if expires_in else None
        if self._store is not None:
            # Persist before use: once Pinterest rotated the refresh token, the old one is
            # dead, and this file is the only place the new one survives the process.
            self._save(
                {
                    "access_token": access_token,
                    "access_token_expires_at": expires_at,
                    "refresh_token": str(new_refresh or self._refresh_token),
                    "refresh_token_expires_at": body.get("refresh_token_expires_at"),
                    "config_refresh_token_sha256": _fingerprint(self._app.refresh_token),
                    "saved_at": time.time(),
                }
            )
        if new_refresh and str(new_refresh) != self._refresh_token and self._store is None:
            logger.warning(
                "Pinterest rotated the refresh token and token_store_path is not set: the "
                "configured refresh_token no longer works, and the new one is lost when this "
                "run ends, so the next run that must refresh will fail. Set token_store_path."
            )
        if new_refresh:
            self._refresh_token = str(new_refresh)
        self._access_token = access_token
        self._expires_at = expires_at
        logger.info("Obtained a new Pinterest access token via the refresh token")
        return access_token

    def _save(self, tokens: dict[str, Any]) -> None:
        """Write the store; if that fails, keep going with the tokens in memory."""
        assert self._store is not None
        try:
            self._store.save(tokens)
        except OSError as exc:
            self._unsaved = tokens
            logger.error(
                "Could not write the rotated tokens to token_store_path %s (%s). The run "
                "continues with them in memory and retries at the end; if that fails too, "
                "the refresh token in the config is no longer valid: fix the path and re-run "
                "the OAuth flow.",
                self._store.path,
                exc.strerror or type(exc).__name__,
            )
        else:
            self._unsaved = None

    def close(self) -> None:
        """Retry saving tokens a failed write left only in memory."""
        with self._lock:
            if self._unsaved is not None:
                self._save(self._unsaved)


def token_store_warning(settings: Settings) -> str | None:
    """Why refresh credentials without ``token_store_path`` will lock the user out, if so."""
    if not settings.has_refresh_credentials or settings.token_store_path is not None:
        return None
    return (
        "token_store_path is not set: Pinterest rotates the refresh token on every refresh "
        "and the old one stops working, so after the first refresh the configured "
        "refresh_token is dead and the new one is lost when the process ends (later runs "
        "fail with 'Invalid refresh token'). Set token_store_path to a file that survives "
        "between runs."
    )


def can_refresh_safely(settings: Settings) -> bool:
    """Refreshing keeps the rotated refresh token (a store is configured)."""
    return settings.has_refresh_credentials and settings.token_store_path is not None


def provider_for(
    settings: Settings,
    on_new_secret: Callable[[str], None] | None = None,
    *,
    allow_refresh: bool = True,
) -> TokenProvider:
    """The token provider the settings describe (access token, refresh trio, store).

    ``allow_refresh=False`` leaves the refresh credentials unused: a check must not spend
    a refresh token whose rotated successor nothing would keep.
    """
    app = (
        OAuthApp(
            client_id=str(settings.client_id),
            client_secret=str(settings.client_secret),
            refresh_token=str(settings.refresh_token),
            continuous_refresh=settings.continuous_refresh,
        )
        if settings.has_refresh_credentials and allow_refresh
        else None
    )
    return TokenProvider(
        token_url=f"{settings.api_url}/oauth/token",
        access_token=settings.access_token,
        app=app,
        store=TokenStore(settings.token_store_path) if settings.token_store_path else None,
        on_new_secret=on_new_secret,
    )


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _error_suffix(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and "message" in body:
        return f", Pinterest code {body.get('code')}: {body['message']}"
    return ""
