"""``--validate-config`` and ``--check-connection``, run through the console script.

Both must read no input, print one line per finding (naming the key, never a secret) and
exit 0 or 1; ``--validate-config`` sends nothing, ``--check-connection`` only reads.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator

from support import (
    AD_ACCOUNT,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    TOKEN,
    Run,
    emulator_config,
    run_target,
    schema,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

SECRET_TOKEN = "sEcReT-access-token-7f3a9c"
SECRET_REFRESH = "sEcReT-refresh-token-41b2"
SECRET_CLIENT = "sEcReT-client-secret-9d0e"
LEDGER_PASSWORD = "sEcReT-ledger-pw-55ab"
ENV_PREFIX = "TARGET_PINTEREST_AUDIENCES_"
VALID_LINE = "OK   config is valid"


def fail_lines(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("FAIL")]


def ok_lines(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("OK")]


def api_calls(emulator: Emulator) -> list[tuple[str, str]]:
    """(method, path without /v5) of every API request the emulator saw."""
    return [(r["method"], r["path"].removeprefix("/v5")) for r in emulator.requests()]


def assert_no_secret(run: Run, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run.output, f"a secret was printed: {secret[:6]}..."


def preflight(
    tmp_path: Path,
    config: dict[str, Any],
    flag: str,
    *,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Run:
    # A RECORD on stdin that would create a list if it were ever read.
    messages: list[dict[str, Any] | str] = [
        schema("vip", "email"),
        {"type": "RECORD", "stream": "vip", "record": {"email": "a@example.com"}},
    ]
    return run_target(
        tmp_path, config, messages, args=[*(extra_args or []), flag], env=env, timeout=60
    )


# --validate-config ---------------------------------------------------------------------


def test_validate_config_accepts_a_valid_config_and_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = preflight(tmp_path, emulator_config(emulator), "--validate-config")

    assert run.returncode == 0, run.output
    assert run.stdout == VALID_LINE + "\n"
    assert emulator.counters()["total_requests"] == 0
    assert "Traceback" not in run.stderr
    assert TOKEN not in run.output


def test_validate_config_accepts_a_dry_run_without_credentials(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = {"ad_account_id": AD_ACCOUNT, "dry_run": True}

    run = preflight(tmp_path, config, "--validate-config")

    assert run.returncode == 0, run.output
    assert run.stdout == VALID_LINE + "\n"


def test_validate_config_warns_about_a_misspelled_key_and_still_passes(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = {**emulator_config(emulator), "max_removal_fractoin": 0.9}

    run = preflight(tmp_path, config, "--validate-config")

    assert run.returncode == 0, run.output
    assert run.stdout == (
        "WARN config['max_removal_fractoin'] is not a setting of this target and is ignored; "
        "did you mean 'max_removal_fraction'?\n" + VALID_LINE + "\n"
    )


@pytest.mark.parametrize("flag", ["--validate-config", "--check-connection"])
def test_preflight_does_not_read_stdin(emulator: Emulator, tmp_path: Path, flag: str) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(emulator_config(emulator)), encoding="utf-8")
    # stdin stays open and empty: a mode that read it would hang until the timeout.
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path), flag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        returncode = process.wait(timeout=20)  # before communicate(), which closes stdin
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate()

    assert returncode == 0, stdout + stderr
    assert stdout.splitlines()[0] == VALID_LINE
    routes = emulator.counters()["requests_by_route"]
    assert all(route.startswith("GET ") for route in routes), routes


@pytest.mark.parametrize(
    ("change", "key"),
    [
        pytest.param({"ad_account_id": "12ab"}, "ad_account_id", id="ad_account_not_digits"),
        pytest.param({"ad_account_id": "1" * 19}, "ad_account_id", id="ad_account_too_long"),
        pytest.param({"ad_account_id": None}, "ad_account_id", id="ad_account_missing"),
        pytest.param({"ad_account_id": 549755885175}, "ad_account_id", id="ad_account_number"),
        pytest.param({"access_token": ""}, "access_token", id="empty_token"),
        pytest.param({"access_token": None}, "access_token", id="no_credentials"),
        pytest.param(
            {"access_token": None, "refresh_token": SECRET_REFRESH, "client_id": CLIENT_ID},
            "client_secret",
            id="trio_without_client_secret",
        ),
        pytest.param(
            {"access_token": None, "client_secret": SECRET_CLIENT},
            "refresh_token",
            id="trio_with_only_client_secret",
        ),
        pytest.param(
            {"refresh_token": SECRET_REFRESH, "client_secret": SECRET_CLIENT},
            "client_id",
            id="token_plus_partial_trio",
        ),
        pytest.param(
            {"api_url": "http://api.pinterest.example.com/v5"}, "api_url", id="http_remote"
        ),
        pytest.param({"api_url": "http://10.0.0.8:8080/v5"}, "api_url", id="http_private_ip"),
        pytest.param({"api_url": "ftp://127.0.0.1/v5"}, "api_url", id="not_http"),
        pytest.param({"records_per_request": "100"}, "records_per_request", id="string_int"),
        pytest.param({"records_per_request": 0}, "records_per_request", id="int_below_min"),
        pytest.param({"dry_run": "yes"}, "dry_run", id="string_bool"),
        pytest.param({"max_requests_per_second": "fast"}, "max_requests_per_second", id="num"),
        pytest.param({"access_token": 12345678}, "access_token", id="token_number"),
        pytest.param(
            {"ledger_url": f"mysql://sync:{LEDGER_PASSWORD}@db.example.com/ledger"},
            "ledger_url",
            id="ledger_not_postgresql",
        ),
        pytest.param({"sync_mode": "full"}, "sync_mode", id="enum"),
    ],
)
def test_validate_config_reports_one_line_per_problem_naming_the_key(
    emulator: Emulator, tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    config = emulator_config(emulator, access_token=SECRET_TOKEN)
    for name, value in change.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value

    run = preflight(tmp_path, config, "--validate-config")

    assert run.returncode == 1, run.output
    assert len(fail_lines(run)) == 1, run.stdout
    assert fail_lines(run)[0].startswith(f"FAIL config['{key}'] "), run.stdout
    assert VALID_LINE not in run.stdout
    assert "Config is invalid: 1 problem(s)." in run.stdout
    assert "Traceback" not in run.output
    assert_no_secret(run, SECRET_TOKEN, SECRET_REFRESH, SECRET_CLIENT, LEDGER_PASSWORD)
    assert emulator.counters()["total_requests"] == 0


def test_validate_config_lists_every_problem_at_once(emulator: Emulator, tmp_path: Path) -> None:
    config = {
        "ad_account_id": "act_549755885175",
        "refresh_token": SECRET_REFRESH,
        "api_url": "http://pinterest.example.com/v5",
        "records_per_request": -3,
        "dry_run": "no",
        "ledger_url": f"sqlite://u:{LEDGER_PASSWORD}@x/y",
    }

    run = preflight(tmp_path, config, "--validate-config")

    assert run.returncode == 1
    keys = sorted(line.split("'")[1] for line in fail_lines(run))
    assert keys == [
        "ad_account_id",
        "api_url",
        "client_id",
        "dry_run",
        "ledger_url",
        "records_per_request",
    ], run.stdout
    assert all(line.startswith("FAIL config['") for line in fail_lines(run))
    assert "Config is invalid: 6 problem(s)." in run.stdout
    assert_no_secret(run, SECRET_REFRESH, LEDGER_PASSWORD)
    assert emulator.counters()["total_requests"] == 0


def test_validate_config_reads_env_vars_with_config_env(emulator: Emulator, tmp_path: Path) -> None:
    env = {f"{ENV_PREFIX}AD_ACCOUNT_ID": AD_ACCOUNT, f"{ENV_PREFIX}ACCESS_TOKEN": SECRET_TOKEN}

    run = preflight(
        tmp_path,
        {"api_url": emulator.url},
        "--validate-config",
        env=env,
        extra_args=["--config", "ENV"],
    )

    assert run.returncode == 0, run.output
    assert run.stdout == VALID_LINE + "\n"
    assert_no_secret(run, SECRET_TOKEN)
    assert emulator.counters()["total_requests"] == 0


def test_validate_config_without_config_env_ignores_env_vars(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = {f"{ENV_PREFIX}AD_ACCOUNT_ID": AD_ACCOUNT, f"{ENV_PREFIX}ACCESS_TOKEN": SECRET_TOKEN}

    run = preflight(tmp_path, {"api_url": emulator.url}, "--validate-config", env=env)

    assert run.returncode == 1
    keys = sorted(line.split("'")[1] for line in fail_lines(run))
    assert keys == ["access_token", "ad_account_id"], run.stdout


@pytest.mark.parametrize(
    ("env_change", "key"),
    [
        pytest.param({"ACCESS_TOKEN": ""}, "access_token", id="empty_token"),
        pytest.param({"AD_ACCOUNT_ID": "abc"}, "ad_account_id", id="bad_ad_account"),
    ],
)
def test_validate_config_with_bad_env_vars_fails_naming_the_key(
    emulator: Emulator, tmp_path: Path, env_change: dict[str, str], key: str
) -> None:
    env = {f"{ENV_PREFIX}AD_ACCOUNT_ID": AD_ACCOUNT, f"{ENV_PREFIX}ACCESS_TOKEN": SECRET_TOKEN}
    env.update({f"{ENV_PREFIX}{name}": value for name, value in env_change.items()})

    run = preflight(
        tmp_path,
        {"api_url": emulator.url},
        "--validate-config",
        env=env,
        extra_args=["--config", "ENV"],
    )

    assert run.returncode == 1, run.output
    assert len(fail_lines(run)) == 1, run.stdout
    assert fail_lines(run)[0].startswith(f"FAIL config['{key}'] "), run.stdout
    assert_no_secret(run, SECRET_TOKEN)
    assert emulator.counters()["total_requests"] == 0


@pytest.mark.parametrize("via_env", [False, True], ids=["file", "env"])
def test_validate_config_empty_ad_account_id_says_it_must_not_be_empty(
    emulator: Emulator, tmp_path: Path, via_env: bool
) -> None:
    env = {f"{ENV_PREFIX}ACCESS_TOKEN": SECRET_TOKEN, f"{ENV_PREFIX}AD_ACCOUNT_ID": ""}
    config: dict[str, Any] = {"api_url": emulator.url}
    if not via_env:
        config.update(ad_account_id="", access_token=SECRET_TOKEN)

    run = preflight(
        tmp_path,
        config,
        "--validate-config",
        env=env if via_env else None,
        extra_args=["--config", "ENV"] if via_env else None,
    )

    assert run.returncode == 1, run.output
    # An empty value breaks two schema rules (minLength, pattern); both name the key.
    lines = fail_lines(run)
    assert lines, run.stdout
    assert all(line.startswith("FAIL config['ad_account_id'] ") for line in lines), lines
    assert "FAIL config['ad_account_id'] must not be empty" in lines
    assert_no_secret(run, SECRET_TOKEN)
    assert emulator.counters()["total_requests"] == 0


# --check-connection --------------------------------------------------------------------


def test_check_connection_reads_the_account_and_one_page_of_lists(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = preflight(tmp_path, emulator_config(emulator), "--check-connection")

    assert run.returncode == 0, run.output
    assert fail_lines(run) == []
    oks = ok_lines(run)
    assert oks[0] == VALID_LINE
    assert any("token accepted" in line and AD_ACCOUNT in line for line in oks), oks
    assert any("customer lists can be read" in line for line in oks), oks
    assert api_calls(emulator) == [
        ("GET", f"/ad_accounts/{AD_ACCOUNT}"),
        ("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists"),
    ]
    assert "page_size=" in emulator.requests()[1]["query"]
    assert emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["customer_lists"] == []
    assert_no_secret(run, TOKEN)


def test_check_connection_with_config_env(emulator: Emulator, tmp_path: Path) -> None:
    env = {f"{ENV_PREFIX}AD_ACCOUNT_ID": AD_ACCOUNT, f"{ENV_PREFIX}ACCESS_TOKEN": TOKEN}

    run = preflight(
        tmp_path,
        {"api_url": emulator.url},
        "--check-connection",
        env=env,
        extra_args=["--config", "ENV"],
    )

    assert run.returncode == 0, run.output
    assert fail_lines(run) == []
    assert [method for method, _ in api_calls(emulator)] == ["GET", "GET"]
    assert_no_secret(run, TOKEN)


def test_check_connection_with_a_wrong_token_says_the_credentials_are_rejected(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = preflight(
        tmp_path, emulator_config(emulator, access_token=SECRET_TOKEN), "--check-connection"
    )

    assert run.returncode == 1
    assert ok_lines(run) == [VALID_LINE]
    (failure,) = fail_lines(run)
    assert "credentials" in failure
    assert "access token is invalid or expired" in failure
    assert_no_secret(run, SECRET_TOKEN)
    # It stops at the first failure: no customer-list read, no write.
    assert api_calls(emulator) == [("GET", f"/ad_accounts/{AD_ACCOUNT}")]
    assert "Traceback" not in run.output


def test_check_connection_to_another_ad_account_names_roles_and_scopes(
    emulator: Emulator, tmp_path: Path
) -> None:
    other = "123456789012"

    run = preflight(tmp_path, emulator_config(emulator, ad_account_id=other), "--check-connection")

    assert run.returncode == 1
    (failure,) = fail_lines(run)
    assert "owner, admin or audience manager" in failure
    assert "ads:read" in failure
    assert "ads:write" in failure
    assert other in failure
    assert api_calls(emulator) == [("GET", f"/ad_accounts/{other}")]
    assert_no_secret(run, TOKEN)


def test_check_connection_with_refresh_credentials_reports_granted_scopes(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = emulator_config(
        emulator,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_store_path=str(tmp_path / "tokens.json"),
    )
    config.pop("access_token")

    run = preflight(tmp_path, config, "--check-connection")

    assert run.returncode == 0, run.output
    assert fail_lines(run) == []
    assert "WARN" not in run.stdout
    assert "OK   the refreshed token has scopes ads:read and ads:write" in ok_lines(run)
    assert_no_secret(run, REFRESH_TOKEN, CLIENT_SECRET, "pina_")
    calls = api_calls(emulator)
    assert calls[0] == ("POST", "/oauth/token")
    assert calls[1:] == [
        ("GET", f"/ad_accounts/{AD_ACCOUNT}"),
        ("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists"),
    ]


def test_check_connection_with_a_wrong_client_secret_fails_without_printing_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = emulator_config(
        emulator,
        refresh_token=SECRET_REFRESH,
        client_id=CLIENT_ID,
        client_secret=SECRET_CLIENT,
        token_store_path=str(tmp_path / "tokens.json"),
    )
    config.pop("access_token")

    run = preflight(tmp_path, config, "--check-connection")

    assert run.returncode == 1
    (failure,) = fail_lines(run)
    assert "refused to refresh the access token" in failure
    assert_no_secret(run, SECRET_REFRESH, SECRET_CLIENT)
    assert api_calls(emulator) == [("POST", "/oauth/token")]


def test_check_connection_when_pinterest_is_unavailable_fails_in_bounded_time(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure_faults(
        {
            "rules": [
                {
                    "method": "GET",
                    "path": r"^/ad_accounts/\d+$",
                    "action": "error",
                    "status": 503,
                    "code": 0,
                    "message": "Service unavailable",
                }
            ]
        }
    )
    started = time.monotonic()

    run = preflight(tmp_path, emulator_config(emulator), "--check-connection")

    elapsed = time.monotonic() - started
    assert run.returncode == 1
    assert elapsed < 20, f"took {elapsed:.1f}s"
    (failure,) = fail_lines(run)
    assert "503" in failure
    calls = api_calls(emulator)
    assert 1 <= len(calls) <= 5, calls
    assert set(calls) == {("GET", f"/ad_accounts/{AD_ACCOUNT}")}
    assert "Traceback" not in run.output
    assert_no_secret(run, TOKEN)


# Rotating refresh tokens: a check never spends one that nothing keeps -------------------


def refresh_trio_config(emulator: Emulator, **overrides: Any) -> dict[str, Any]:
    """Refresh credentials only (the emulator rotates the refresh token, as Pinterest does)."""
    config = emulator_config(
        emulator,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        **overrides,
    )
    config.pop("access_token")
    return config


def warn_lines(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("WARN")]


def token_refreshes(emulator: Emulator) -> int:
    return int(emulator.counters()["requests_by_route"].get("POST /oauth/token", 0))


def sync_one_member(emulator: Emulator, tmp_path: Path, config: dict[str, Any]) -> Run:
    messages: list[dict[str, Any] | str] = [
        schema("vip", "email"),
        {"type": "RECORD", "stream": "vip", "record": {"email": "ann@example.com"}},
    ]
    return run_target(tmp_path, config, messages)


def test_validate_config_warns_that_refresh_tokens_without_a_store_are_lost(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = preflight(tmp_path, refresh_trio_config(emulator), "--validate-config")

    assert run.returncode == 0, run.output
    assert ok_lines(run) == [VALID_LINE]
    (warning,) = warn_lines(run)
    assert "token_store_path is not set" in warning
    assert "rotates the refresh token" in warning
    assert emulator.counters()["total_requests"] == 0
    assert_no_secret(run, REFRESH_TOKEN, CLIENT_SECRET)


def test_two_checks_and_a_sync_without_a_token_store_leave_the_refresh_token_usable(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = refresh_trio_config(emulator)

    checks = [preflight(tmp_path, config, "--check-connection") for _ in range(2)]

    for run in checks:
        assert run.returncode == 0, run.output
        assert fail_lines(run) == []
        assert any("token_store_path" in line for line in warn_lines(run))
        assert f"OK   Pinterest API at {emulator.url} answers" in run.stdout
        assert "NOT CHECKED the refresh credentials, the ad account" in run.stdout
        assert_no_secret(run, REFRESH_TOKEN, CLIENT_SECRET)
    assert token_refreshes(emulator) == 0  # the configured refresh token was not spent

    synced = sync_one_member(emulator, tmp_path, config)

    assert synced.returncode == 0, synced.stderr
    assert token_refreshes(emulator) == 1
    assert "token_store_path is not set" in synced.stderr  # the rotated token dies with it


def test_a_check_without_a_store_uses_the_access_token_and_never_refreshes(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = {**refresh_trio_config(emulator), "access_token": TOKEN}

    run = preflight(tmp_path, config, "--check-connection")

    assert run.returncode == 0, run.output
    assert any("token accepted" in line for line in ok_lines(run))
    assert "NOT CHECKED refresh_token, client_id and client_secret" in run.stdout
    emulator.expire_tokens()  # the access token dies: still no refresh from a check
    expired = preflight(tmp_path, config, "--check-connection")
    assert expired.returncode == 0, expired.output
    assert "the configured access_token was refused" in expired.stdout
    assert token_refreshes(emulator) == 0


def test_two_checks_and_a_sync_with_a_token_store_keep_rotating_safely(
    emulator: Emulator, tmp_path: Path
) -> None:
    store = tmp_path / "tokens.json"
    config = refresh_trio_config(emulator, token_store_path=str(store))

    first = preflight(tmp_path, config, "--check-connection")
    emulator.expire_tokens()  # the next check must refresh again, with the rotated token
    second = preflight(tmp_path, config, "--check-connection")

    for run in (first, second):
        assert run.returncode == 0, run.output
        assert warn_lines(run) == []
        assert "OK   the refreshed token has scopes ads:read and ads:write" in run.stdout
    assert token_refreshes(emulator) == 2
    rotated = json.loads(store.read_text(encoding="utf-8"))["refresh_token"]
    assert rotated != REFRESH_TOKEN

    emulator.expire_tokens()
    synced = sync_one_member(emulator, tmp_path, config)

    assert synced.returncode == 0, synced.stderr
    assert token_refreshes(emulator) == 3
    assert json.loads(store.read_text(encoding="utf-8"))["refresh_token"] not in {
        REFRESH_TOKEN,
        rotated,
    }
    assert_no_secret(synced, REFRESH_TOKEN, rotated)


def test_a_check_without_a_token_still_tells_an_unreachable_api_url(tmp_path: Path) -> None:
    config = {
        "ad_account_id": AD_ACCOUNT,
        "refresh_token": REFRESH_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "api_url": "http://127.0.0.1:9/v5",  # nothing listens on the discard port
    }

    run = preflight(tmp_path, config, "--check-connection")

    assert run.returncode == 1
    (failure,) = fail_lines(run)
    assert "could not reach Pinterest at http://127.0.0.1:9/v5" in failure
    assert "connection refused" in failure
    assert "check api_url" in failure
