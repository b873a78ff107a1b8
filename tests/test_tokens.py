"""The token store and provider, in process: atomic private writes, rotation, precedence.

The token endpoint is a fake ``post`` that records the form it was sent and answers from a
script; the store is a real file in a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_pinterest_audiences.errors import AuthenticationError, TargetError
from target_pinterest_audiences.tokens import OAuthApp, TokenProvider, TokenStore

TOKEN_URL = "https://pinterest.invalid/v5/oauth/token"
APP = OAuthApp(client_id="client-id", client_secret="client-secret", refresh_token="refresh-1")


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def response(status: int, body: object) -> requests.Response:
    """A real requests.Response carrying ``body`` as JSON (the one private attribute used)."""
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body).encode()
    return answer


class TokenEndpoint:
    """A fake ``requests.post`` for the token URL: records each form, answers in turn."""

    def __init__(self, *answers: requests.Response) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []
        self.auths: list[tuple[str, str]] = []

    def __call__(
        self, url: str, *, data: dict[str, str], auth: tuple[str, str], timeout: object
    ) -> requests.Response:
        assert url == TOKEN_URL
        self.forms.append(dict(data))
        self.auths.append(auth)
        assert self.answers, "unexpected token refresh"
        return self.answers.pop(0)

    @property
    def refresh_tokens_sent(self) -> list[str]:
        return [form["refresh_token"] for form in self.forms]


def rotated(access: str, refresh: str | None, **extra: object) -> requests.Response:
    body: dict[str, object] = {"access_token": access, "expires_in": 3600, **extra}
    if refresh is not None:
        body["refresh_token"] = refresh
    return response(200, body)


def provider(
    endpoint: TokenEndpoint,
    store: TokenStore | None,
    *,
    app: OAuthApp | None = APP,
    access_token: str | None = None,
    secrets: list[str] | None = None,
) -> TokenProvider:
    return TokenProvider(
        token_url=TOKEN_URL,
        access_token=access_token,
        app=app,
        store=store,
        post=endpoint,
        on_new_secret=secrets.append if secrets is not None else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens" / "store.json")


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# The store file ----------------------------------------------------------------------------


def test_saved_tokens_load_back_and_missing_directories_are_made(store: TokenStore) -> None:
    assert store.load() == {}  # no file yet: nothing stored, not an error
    store.save({"access_token": "access-1", "refresh_token": "refresh-2"})
    assert store.load() == {"access_token": "access-1", "refresh_token": "refresh-2"}


@pytest.mark.usefixtures("permissive_umask")
def test_the_store_is_private_even_under_a_permissive_umask(store: TokenStore) -> None:
    store.save({"access_token": "access-1"})
    assert mode(store.path) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_a_world_readable_store_becomes_private_when_rewritten(store: TokenStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{}", encoding="utf-8")
    store.path.chmod(0o644)
    store.save({"access_token": "access-1"})
    assert mode(store.path) == 0o600


def test_the_new_file_is_written_in_full_beside_the_store_then_renamed_over_it(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save({"access_token": "old"})
    real_replace = os.replace
    seen: list[tuple[Path, Path, int, str, str]] = []

    def observed_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        source, target = Path(source), Path(target)
        # At the moment of the rename: the new file is complete and private, the old intact.
        seen.append(
            (source, target, mode(source), source.read_text("utf-8"), target.read_text("utf-8"))
        )
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", observed_replace)
    store.save({"access_token": "new"})
    ((source, target, source_mode, new_text, old_text),) = seen
    assert target == store.path
    assert source.parent == store.path.parent  # same directory: the rename is atomic
    assert source != store.path
    assert source_mode == 0o600
    assert json.loads(new_text) == {"access_token": "new"}
    assert json.loads(old_text) == {"access_token": "old"}
    assert store.load() == {"access_token": "new"}
    assert sorted(p.name for p in store.path.parent.iterdir()) == [store.path.name]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_crash_mid_write_leaves_the_old_tokens_and_no_temporary_file(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store.save({"access_token": "old", "refresh_token": "refresh-old"})

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(OSError, match="No space left"):
        store.save({"access_token": "new", "refresh_token": "refresh-new"})
    monkeypatch.undo()
    assert store.load() == {"access_token": "old", "refresh_token": "refresh-old"}
    assert sorted(p.name for p in store.path.parent.iterdir()) == [store.path.name]


def test_a_corrupt_store_is_a_clear_error_that_does_not_echo_it(store: TokenStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"access_token": "secret-access-token", ', encoding="utf-8")
    with pytest.raises(TargetError) as raised:
        store.load()
    message = str(raised.value)
    assert str(store.path) in message
    assert "not valid JSON; fix or delete it" in message
    assert "secret-access-token" not in message


def test_a_store_that_is_not_an_object_is_a_clear_error(store: TokenStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text('["secret-access-token"]', encoding="utf-8")
    with pytest.raises(TargetError, match="does not hold a JSON object") as raised:
        store.load()
    assert "secret-access-token" not in str(raised.value)


def test_an_unreadable_store_is_a_clear_error(store: TokenStore) -> None:
    store.path.mkdir(parents=True)  # a directory where the file should be: cannot be read
    with pytest.raises(TargetError, match=str(store.path)):
        store.load()


def test_a_store_that_is_not_utf8_is_a_clear_error(store: TokenStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(TargetError, match=str(store.path)):
        store.load()


# Refreshing and rotation -------------------------------------------------------------------


def test_a_refresh_saves_the_rotated_tokens_before_handing_out_the_new_one(
    store: TokenStore,
) -> None:
    endpoint = TokenEndpoint(
        rotated("access-2", "refresh-2", refresh_token_expires_at=1_900_000_000, scope="ads:read")
    )
    tokens = provider(endpoint, store)
    before = time.time()
    assert tokens.current() == "access-2"
    after = time.time()

    assert endpoint.forms == [{"grant_type": "refresh_token", "refresh_token": "refresh-1"}]
    assert endpoint.auths == [("client-id", "client-secret")]
    saved = store.load()
    assert saved["access_token"] == "access-2"
    assert saved["refresh_token"] == "refresh-2"
    assert saved["refresh_token_expires_at"] == 1_900_000_000
    assert saved["config_refresh_token_sha256"] == fingerprint("refresh-1")
    assert before + 3600 <= saved["access_token_expires_at"] <= after + 3600
    assert "refresh-1" not in store.path.read_text("utf-8")  # only its fingerprint is kept
    assert tokens.granted_scopes == "ads:read"


def test_the_next_run_uses_the_stored_tokens_and_the_rotated_refresh_token(
    store: TokenStore,
) -> None:
    provider(TokenEndpoint(rotated("access-2", "refresh-2")), store).current()

    endpoint = TokenEndpoint(rotated("access-3", "refresh-3"))
    tokens = provider(endpoint, store, access_token="configured-access")
    assert tokens.current() == "access-2"  # still valid: no refresh, store over config
    assert endpoint.forms == []
    assert tokens.refresh("access-2") == "access-3"
    assert endpoint.refresh_tokens_sent == ["refresh-2"]  # the old one is dead
    assert store.load()["refresh_token"] == "refresh-3"
    assert store.load()["config_refresh_token_sha256"] == fingerprint("refresh-1")


def test_a_new_refresh_token_in_the_config_takes_precedence_over_the_store(
    store: TokenStore,
) -> None:
    provider(TokenEndpoint(rotated("access-2", "refresh-2")), store).current()

    endpoint = TokenEndpoint(rotated("access-9", "refresh-10"))
    reauthorized = OAuthApp("client-id", "client-secret", refresh_token="refresh-9")
    tokens = provider(endpoint, store, app=reauthorized)
    assert tokens.current() == "access-9"  # the stored access-2 is not used either
    assert endpoint.refresh_tokens_sent == ["refresh-9"]
    assert store.load()["config_refresh_token_sha256"] == fingerprint("refresh-9")
    assert store.load()["refresh_token"] == "refresh-10"


def test_a_stored_token_about_to_expire_is_refreshed_first(store: TokenStore) -> None:
    store.save(
        {
            "access_token": "access-old",
            "access_token_expires_at": time.time() + 10,  # inside the safety margin
            "refresh_token": "refresh-2",
            "config_refresh_token_sha256": fingerprint("refresh-1"),
        }
    )
    endpoint = TokenEndpoint(rotated("access-3", "refresh-3"))
    assert provider(endpoint, store).current() == "access-3"
    assert endpoint.refresh_tokens_sent == ["refresh-2"]


def test_a_second_refresh_in_the_same_run_spends_the_rotated_refresh_token() -> None:
    endpoint = TokenEndpoint(rotated("access-2", "refresh-2"), rotated("access-3", "refresh-3"))
    tokens = provider(endpoint, None)  # no store: the rotated token lives in memory only
    assert tokens.current() == "access-2"
    assert tokens.refresh("access-2") == "access-3"
    assert endpoint.refresh_tokens_sent == ["refresh-1", "refresh-2"]


def test_without_rotation_the_store_keeps_the_refresh_token_in_use(store: TokenStore) -> None:
    endpoint = TokenEndpoint(rotated("access-2", None), rotated("access-3", None))
    tokens = provider(endpoint, store)
    tokens.current()
    tokens.refresh("access-2")
    assert endpoint.refresh_tokens_sent == ["refresh-1", "refresh-1"]
    assert store.load()["refresh_token"] == "refresh-1"


def test_continuous_refresh_is_asked_for_when_configured(store: TokenStore) -> None:
    endpoint = TokenEndpoint(rotated("access-2", "refresh-2"))
    app = OAuthApp("client-id", "client-secret", "refresh-1", continuous_refresh=True)
    provider(endpoint, store, app=app).current()
    assert endpoint.forms[0]["continuous_refresh"] == "true"


def test_many_threads_rejected_at_once_refresh_once(store: TokenStore) -> None:
    endpoint = TokenEndpoint(rotated("access-2", "refresh-2"))
    tokens = provider(endpoint, store, access_token="access-1")
    start = threading.Barrier(8)
    results: list[str] = []

    def rejected() -> None:
        start.wait(timeout=10)
        results.append(tokens.refresh("access-1"))

    threads = [threading.Thread(target=rejected) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == ["access-2"] * 8
    assert len(endpoint.forms) == 1


def test_every_token_becomes_a_secret_for_redaction(store: TokenStore) -> None:
    secrets: list[str] = []
    provider(TokenEndpoint(rotated("access-2", "refresh-2")), store, secrets=secrets).current()
    assert secrets == ["access-2", "refresh-2"]
    loaded: list[str] = []
    provider(TokenEndpoint(), store, secrets=loaded)
    assert sorted(loaded) == ["access-2", "refresh-2"]


def test_a_refused_refresh_names_what_to_check_and_leaves_the_store(store: TokenStore) -> None:
    store.save(
        {"refresh_token": "refresh-2", "config_refresh_token_sha256": fingerprint("refresh-1")}
    )
    endpoint = TokenEndpoint(response(400, {"code": 1, "message": "invalid refresh token"}))
    with pytest.raises(AuthenticationError) as raised:
        provider(endpoint, store).current()
    message = str(raised.value)
    assert "HTTP 400" in message
    assert "token_store_path" in message
    assert "refresh-2" not in message
    assert "client-secret" not in message
    assert store.load()["refresh_token"] == "refresh-2"


def test_an_answer_without_an_access_token_is_a_clear_error(store: TokenStore) -> None:
    endpoint = TokenEndpoint(response(200, {"refresh_token": "refresh-2"}))
    with pytest.raises(AuthenticationError, match="without an access token"):
        provider(endpoint, store).current()


class FlakyStore(TokenStore):
    """A store whose first write fails, as a full disk would."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures_left = 1

    def save(self, tokens: dict[str, Any]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise OSError(28, "No space left on device")
        super().save(tokens)


def test_a_failed_write_keeps_the_run_going_and_is_retried_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(tmp_path / "store.json")
    tokens = provider(TokenEndpoint(rotated("access-2", "refresh-2")), flaky)
    with caplog.at_level(logging.ERROR):
        assert tokens.current() == "access-2"
    assert not flaky.path.exists()
    assert "No space left on device" in caplog.text
    assert "access-2" not in caplog.text
    assert "refresh-2" not in caplog.text
    tokens.close()
    assert flaky.load()["refresh_token"] == "refresh-2"
