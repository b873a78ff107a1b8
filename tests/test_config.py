"""Tests for target_pinterest_audiences.config (schema, cross-field rules, defaults)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from target_pinterest_audiences.config import (
    CONFIG_SCHEMA,
    DEFAULT_API_URL,
    DEFAULT_RECORDS_PER_REQUEST,
    Settings,
    api_url_problem,
    cross_field_problems,
    schema_problems,
    unknown_key_warnings,
)

# Distinctive values that must never be echoed back in a message.
SECRET_TOKEN = "pina_ZZsecretTOKENvalue_7f3a9c"
SECRET_REFRESH = "pinr_ZZsecretREFRESHvalue_1b2c3d"
SECRET_CLIENT = "ZZsecretCLIENTvalue_44e5f6"
SECRET_ACCOUNT = "ZZsecretAC1"  # short enough that only the pattern fails
VALID = {"ad_account_id": "549755885175", "access_token": SECRET_TOKEN}


def test_default_constants() -> None:
    assert DEFAULT_API_URL == "https://api.pinterest.com/v5"
    assert DEFAULT_RECORDS_PER_REQUEST == 1900


def test_schema_marks_secrets_and_requires_ad_account() -> None:
    properties = CONFIG_SCHEMA["properties"]
    assert CONFIG_SCHEMA["required"] == ["ad_account_id"]
    for key in ("access_token", "refresh_token", "client_secret"):
        assert properties[key].get("secret") is True
    assert properties["api_url"]["default"] == DEFAULT_API_URL


# --------------------------------------------------------------------------- schema_problems


@pytest.mark.parametrize(
    "config",
    [
        VALID,
        {"ad_account_id": "1", "dry_run": True},
        {
            "ad_account_id": "123456789012345678",  # 18 digits: the maximum
            "refresh_token": SECRET_REFRESH,
            "client_id": "1234",
            "client_secret": SECRET_CLIENT,
            "records_per_request": 100_000,
            "max_parallel_requests": 32,
            "max_write_requests_per_minute": 0.2,  # Trial access: 300 per day
            "max_read_requests_per_minute": 6000,
            "max_requests_per_second": 0.01,  # deprecated, still accepted
            "max_retry_wait_seconds": 0,
            "request_timeout_seconds": 1,
            "checkpoint_interval_seconds": 1.5,
            "api_url": "http://127.0.0.1:8080/v5",
            "reject_file": "out/rejects.jsonl",
            "report_path": "out/report.json",
            "token_store_path": "tokens.json",
            "continuous_refresh": True,
            "create_audiences": False,
        },
        {**VALID, "access_token": None, "dry_run": None},  # null optionals are fine
    ],
)
def test_schema_accepts_valid_configs(config: dict[str, Any]) -> None:
    assert schema_problems(config, CONFIG_SCHEMA) == []


@pytest.mark.parametrize(
    ("config", "key", "expected"),
    [
        (
            {"access_token": SECRET_TOKEN},
            "ad_account_id",
            "config['ad_account_id'] is required",
        ),
        (
            {"ad_account_id": SECRET_ACCOUNT, "access_token": SECRET_TOKEN},
            "ad_account_id",
            "config['ad_account_id'] must match ^\\d+$",
        ),
        (
            {"ad_account_id": "12 34", "access_token": SECRET_TOKEN},
            "ad_account_id",
            "config['ad_account_id'] must match ^\\d+$",
        ),
        (
            {"ad_account_id": "9" * 19, "access_token": SECRET_TOKEN},
            "ad_account_id",
            "config['ad_account_id'] must be at most 18 characters",
        ),
        (
            {"ad_account_id": 549755885175, "access_token": SECRET_TOKEN},
            "ad_account_id",
            "config['ad_account_id'] must be of type ['string']",
        ),
        (
            {"ad_account_id": "1", "access_token": ""},
            "access_token",
            "config['access_token'] must not be empty",
        ),
        (
            {"ad_account_id": "1", "access_token": [SECRET_TOKEN]},
            "access_token",
            "config['access_token'] must be of type ['string', 'null']",
        ),
        (
            {"ad_account_id": "1", "access_token": {"token": SECRET_TOKEN}},
            "access_token",
            "config['access_token'] must be of type ['string', 'null']",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "client_secret": 123456789},
            "client_secret",
            "config['client_secret'] must be of type ['string', 'null']",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "records_per_request": "1900"},
            "records_per_request",
            "config['records_per_request'] must be of type ['integer', 'null']",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "records_per_request": 0},
            "records_per_request",
            "config['records_per_request'] must be at least 1",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "max_parallel_requests": 33},
            "max_parallel_requests",
            "config['max_parallel_requests'] must be at most 32",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "dry_run": "yes"},
            "dry_run",
            "config['dry_run'] must be of type ['boolean', 'null']",
        ),
        (
            {"ad_account_id": "1", "access_token": "x", "max_requests_per_second": "fast"},
            "max_requests_per_second",
            "config['max_requests_per_second'] must be of type ['number', 'null']",
        ),
    ],
)
def test_schema_problem_messages(config: dict[str, Any], key: str, expected: str) -> None:
    problems = schema_problems(config, CONFIG_SCHEMA)
    assert problems == [expected]
    assert f"config['{key}']" in problems[0]


@pytest.mark.parametrize(
    "config",
    [
        {"ad_account_id": SECRET_ACCOUNT},
        {"ad_account_id": SECRET_ACCOUNT * 3},  # too long and not digits
        {"ad_account_id": "1", "access_token": [SECRET_TOKEN]},
        {"ad_account_id": "1", "access_token": {SECRET_TOKEN: SECRET_TOKEN}},
        {"ad_account_id": "1", "refresh_token": 12345678987654321},
        {"ad_account_id": "1", "client_secret": [SECRET_CLIENT, SECRET_REFRESH]},
        {"ad_account_id": "1", "api_url": [SECRET_TOKEN]},
        {"ad_account_id": "1", "records_per_request": SECRET_TOKEN},
        {"ad_account_id": "1", "max_retry_wait_seconds": -424242.5},
        {"ad_account_id": "1", "max_parallel_requests": 987654321},
        {"ad_account_id": "1", "reject_file": 31337.125},
    ],
)
def test_schema_problems_never_echo_values(config: dict[str, Any]) -> None:
    problems = schema_problems(config, CONFIG_SCHEMA)
    assert problems, "expected at least one problem"
    text = "\n".join(problems)
    for secret in (SECRET_TOKEN, SECRET_REFRESH, SECRET_CLIENT, SECRET_ACCOUNT, "ZZsecret"):
        assert secret not in text
    for number in ("12345678987654321", "424242", "987654321", "31337"):
        assert number not in text
    for problem in problems:
        assert problem.startswith("config['")


def test_schema_problems_reports_every_problem_sorted_by_key() -> None:
    config = {
        "ad_account_id": SECRET_ACCOUNT,
        "access_token": "",
        "max_parallel_requests": 0,
    }
    problems = schema_problems(config, CONFIG_SCHEMA)
    assert problems == [
        "config['access_token'] must not be empty",
        "config['ad_account_id'] must match ^\\d+$",
        "config['max_parallel_requests'] must be at least 1",
    ]


def test_schema_problems_accepts_a_mapping_like_object() -> None:
    class Mapping(dict[str, Any]):
        pass

    assert schema_problems(Mapping(VALID), CONFIG_SCHEMA) == []


# --------------------------------------------------------------------------- cross_field_problems


NO_CREDENTIALS = (
    "config['access_token'] is required: set access_token, or refresh_token with "
    "client_id and client_secret (only a dry run needs neither)"
)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"ad_account_id": "1", "access_token": SECRET_TOKEN}, []),
        (
            {
                "ad_account_id": "1",
                "refresh_token": SECRET_REFRESH,
                "client_id": "app",
                "client_secret": SECRET_CLIENT,
            },
            [],
        ),
        (
            {
                "ad_account_id": "1",
                "access_token": SECRET_TOKEN,
                "refresh_token": SECRET_REFRESH,
                "client_id": "app",
                "client_secret": SECRET_CLIENT,
            },
            [],
        ),
        ({"ad_account_id": "1", "dry_run": True}, []),
        ({"ad_account_id": "1"}, [NO_CREDENTIALS]),
        ({"ad_account_id": "1", "dry_run": False}, [NO_CREDENTIALS]),
        ({"ad_account_id": "1", "access_token": None}, [NO_CREDENTIALS]),
        # Empty but present is the schema's job (minLength), not repeated here.
        ({"ad_account_id": "1", "access_token": ""}, []),
    ],
)
def test_cross_field_credentials(config: dict[str, Any], expected: list[str]) -> None:
    assert cross_field_problems(config) == expected


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({"refresh_token": SECRET_REFRESH}, ["client_id", "client_secret"]),
        ({"client_id": "app"}, ["refresh_token", "client_secret"]),
        ({"client_secret": SECRET_CLIENT}, ["refresh_token", "client_id"]),
        ({"refresh_token": SECRET_REFRESH, "client_id": "app"}, ["client_secret"]),
        ({"refresh_token": SECRET_REFRESH, "client_secret": SECRET_CLIENT}, ["client_id"]),
        ({"client_id": "app", "client_secret": SECRET_CLIENT}, ["refresh_token"]),
    ],
)
@pytest.mark.parametrize(
    "extra",
    [{}, {"access_token": SECRET_TOKEN}, {"dry_run": True}],
    ids=["alone", "with-access-token", "dry-run"],
)
def test_cross_field_partial_refresh_trio(
    present: dict[str, Any], missing: list[str], extra: dict[str, Any]
) -> None:
    problems = cross_field_problems({"ad_account_id": "1", **present, **extra})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.startswith(f"config['{missing[0]}'] is required")
    assert problem.endswith(f"(missing: {', '.join(missing)})")
    for key in ("refresh_token", "client_id", "client_secret"):
        assert key in problem  # the message explains the trio
    for secret in (SECRET_TOKEN, SECRET_REFRESH, SECRET_CLIENT):
        assert secret not in problem


@pytest.mark.parametrize(
    ("api_url", "problem"),
    [
        (None, None),
        ("", None),  # falls back to the default
        ("https://api.pinterest.com/v5", None),
        ("http://127.0.0.1:8080/v5", None),
        ("http://example.com/v5", "uses plain http://"),
        ("ftp://api.pinterest.com/v5", "must be an https:// URL"),
        (12345, None),  # wrong type is the schema's job
    ],
)
def test_cross_field_api_url(api_url: object, problem: str | None) -> None:
    config: dict[str, object] = {"ad_account_id": "1", "access_token": SECRET_TOKEN}
    if api_url is not None:
        config["api_url"] = api_url
    problems = cross_field_problems(config)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("config['api_url'] ")
        assert problem in problems[0]


def test_cross_field_reports_credentials_and_api_url_together() -> None:
    problems = cross_field_problems({"ad_account_id": "1", "api_url": "http://10.0.0.1/v5"})
    assert problems[0] == NO_CREDENTIALS
    assert problems[1].startswith("config['api_url'] uses plain http://")
    assert len(problems) == 2


# --------------------------------------------------------------------------- api_url_problem


@pytest.mark.parametrize(
    "url",
    [
        "https://api.pinterest.com/v5",
        "https://api.pinterest.com/v5/",
        "HTTPS://API.PINTEREST.COM/v5",
        "https://proxy.internal:8443/pinterest/v5",
        "https://10.0.0.1/v5",
        "http://127.0.0.1:8080/v5",
        "http://127.0.0.1",
        "http://127.5.5.5",
        "http://127.255.255.254:9/v5",
        "http://localhost/v5",
        "http://localhost:8080",
        "http://LOCALHOST:8080/v5",
        "http://[::1]:1/v5",
        "http://[::1]/v5",
    ],
)
def test_api_url_accepted(url: str) -> None:
    assert api_url_problem(url) is None


PLAIN_HTTP = (
    "uses plain http:// for a non-loopback host; use https:// (tokens would be sent in clear text)"
)
NOT_HTTPS = "must be an https:// URL such as https://api.pinterest.com/v5"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com", PLAIN_HTTP),
        ("http://example.com/v5", PLAIN_HTTP),
        ("http://api.pinterest.com/v5", PLAIN_HTTP),
        ("http://10.0.0.1", PLAIN_HTTP),
        ("http://192.168.1.10:8080/v5", PLAIN_HTTP),
        ("http://0.0.0.0:8080/v5", PLAIN_HTTP),
        ("http://[::2]/v5", PLAIN_HTTP),
        ("http://localhost.evil.example/v5", PLAIN_HTTP),
        ("http://127.0.0.1.nip.io/v5", PLAIN_HTTP),
        ("http://notlocalhost/v5", PLAIN_HTTP),
        ("ftp://api.pinterest.com/v5", NOT_HTTPS),
        ("ws://127.0.0.1/v5", NOT_HTTPS),
        ("file:///etc/passwd", NOT_HTTPS),
        ("not a url", NOT_HTTPS),
        ("", NOT_HTTPS),
        ("api.pinterest.com/v5", NOT_HTTPS),
        ("//api.pinterest.com/v5", NOT_HTTPS),
        ("https://", NOT_HTTPS),
        ("https:///v5", NOT_HTTPS),
        ("http://", NOT_HTTPS),
    ],
)
def test_api_url_refused(url: str, expected: str) -> None:
    assert api_url_problem(url) == expected


def test_api_url_problem_does_not_echo_credentials_in_url() -> None:
    problem = api_url_problem("http://user:ZZsecretPASSWORD@example.com/v5")
    assert problem is not None
    assert "ZZsecretPASSWORD" not in problem
    assert "example.com" not in problem


# --------------------------------------------------------------------------- Settings


def test_request_ceiling_defaults_stay_under_pinterest_published_limits() -> None:
    settings = Settings.from_config({"ad_account_id": "1"})
    # ads_write: 400 per minute per user per app; ads_read: 1,000 (Standard access).
    assert settings.max_write_requests_per_minute < 400
    assert settings.max_read_requests_per_minute < 1000
    assert settings.warnings == ()
    for key in ("max_write_requests_per_minute", "max_read_requests_per_minute"):
        description = CONFIG_SCHEMA["properties"][key]["description"]
        assert "developers.pinterest.com/docs/reference/rate-limits/" in description
        assert "x-ratelimit-category" in description


def test_the_deprecated_per_second_setting_still_sets_the_write_ceiling() -> None:
    legacy = Settings.from_config({"ad_account_id": "1", "max_requests_per_second": 5})
    assert legacy.max_write_requests_per_minute == 300.0
    (warning,) = legacy.warnings
    assert "max_requests_per_second" in warning
    assert "deprecated" in warning
    assert "max_write_requests_per_minute" in warning

    both = Settings.from_config(
        {"ad_account_id": "1", "max_requests_per_second": 5, "max_write_requests_per_minute": 60}
    )
    assert both.max_write_requests_per_minute == 60.0
    assert any("ignored" in warning for warning in both.warnings)

    # The old default (10 per second) is above the ads_write limit: say so.
    above = Settings.from_config({"ad_account_id": "1", "max_requests_per_second": 10})
    assert above.max_write_requests_per_minute == 600.0
    assert any("above Pinterest's published ads_write limit" in w for w in above.warnings)


def test_settings_defaults() -> None:
    settings = Settings.from_config({"ad_account_id": "549755885175"})
    assert settings == Settings(
        ad_account_id="549755885175",
        access_token=None,
        refresh_token=None,
        client_id=None,
        client_secret=None,
        continuous_refresh=False,
        token_store_path=None,
        api_url="https://api.pinterest.com/v5",
        dry_run=False,
        create_audiences=True,
        records_per_request=1900,
        max_parallel_requests=4,
        max_write_requests_per_minute=360.0,
        max_read_requests_per_minute=900.0,
        max_retry_wait_seconds=600.0,
        request_timeout_seconds=120.0,
        checkpoint_interval_seconds=300.0,
        sync_mode="changes",
        stream_sync_modes={},
        ledger_path=Path(".target-pinterest-audiences/ledger.sqlite3"),
        ledger_url=None,
        max_removal_fraction=0.5,
        report_list_status=True,
        progress_interval_seconds=60.0,
        reject_file=None,
        report_path=None,
    )
    assert settings.has_refresh_credentials is False
    assert settings.secrets() == []


def test_every_setting_is_declared_once_in_the_schema_and_typed_once_in_settings() -> None:
    """A Settings field per schema property, by name: from_config reads them by name."""
    fields = {item.name for item in dataclasses.fields(Settings)}
    properties = set(CONFIG_SCHEMA["properties"])
    assert fields - properties == {"warnings"}  # not a setting: what from_config found
    assert properties - fields == {"max_requests_per_second"}  # deprecated, read by rate_limits


def test_every_default_comes_from_the_schema_with_the_fields_type() -> None:
    settings = Settings.from_config({"ad_account_id": "1"})
    hints = get_type_hints(Settings)
    for name, spec in CONFIG_SCHEMA["properties"].items():
        if name not in hints:
            continue
        value = getattr(settings, name)
        hint = hints[name]
        kinds = get_args(hint) if isinstance(hint, UnionType) else (get_origin(hint) or hint,)
        assert isinstance(value, kinds), (name, value)
        if "default" in spec:
            expected = Path(spec["default"]) if isinstance(value, Path) else spec["default"]
            assert value == expected, name


def test_a_missing_required_setting_is_named() -> None:
    with pytest.raises(KeyError, match="ad_account_id"):
        Settings.from_config({})


def test_settings_read_an_empty_path_as_unset_and_keep_other_strings() -> None:
    settings = Settings.from_config({"ad_account_id": "1", "reject_file": "", "client_id": ""})
    assert settings.reject_file is None
    assert settings.client_id == ""


@pytest.mark.parametrize(
    "key",
    [
        "continuous_refresh",
        "api_url",
        "dry_run",
        "create_audiences",
        "records_per_request",
        "max_parallel_requests",
        "max_write_requests_per_minute",
        "max_read_requests_per_minute",
        "max_retry_wait_seconds",
        "request_timeout_seconds",
        "checkpoint_interval_seconds",
    ],
)
def test_settings_null_means_default(key: str) -> None:
    explicit_null = Settings.from_config({"ad_account_id": "1", key: None})
    absent = Settings.from_config({"ad_account_id": "1"})
    assert getattr(explicit_null, key) == getattr(absent, key)
    assert getattr(absent, key) == CONFIG_SCHEMA["properties"][key]["default"]


def test_settings_explicit_values_win() -> None:
    settings = Settings.from_config(
        {
            "ad_account_id": 42,
            "access_token": SECRET_TOKEN,
            "refresh_token": SECRET_REFRESH,
            "client_id": "app",
            "client_secret": SECRET_CLIENT,
            "continuous_refresh": True,
            "token_store_path": "state/tokens.json",
            "api_url": "http://127.0.0.1:8080/v5//",
            "dry_run": True,
            "create_audiences": False,
            "records_per_request": 500,
            "max_parallel_requests": 1,
            "max_write_requests_per_minute": 120,
            "max_read_requests_per_minute": 600,
            "max_retry_wait_seconds": 0,
            "request_timeout_seconds": 5,
            "checkpoint_interval_seconds": 60,
            "reject_file": "out/rejects.jsonl",
            "report_path": "out/report.json",
        }
    )
    assert settings.ad_account_id == "42"
    assert settings.api_url == "http://127.0.0.1:8080/v5"
    assert settings.continuous_refresh is True
    assert settings.dry_run is True
    assert settings.create_audiences is False  # False is not "missing"
    assert settings.records_per_request == 500
    assert settings.max_parallel_requests == 1
    assert settings.max_write_requests_per_minute == 120.0
    assert isinstance(settings.max_write_requests_per_minute, float)
    assert settings.max_read_requests_per_minute == 600.0
    assert settings.warnings == ()
    assert settings.max_retry_wait_seconds == 0.0  # 0 is not "missing"
    assert settings.request_timeout_seconds == 5.0
    assert settings.checkpoint_interval_seconds == 60.0
    assert settings.token_store_path == Path("state/tokens.json")
    assert settings.reject_file == Path("out/rejects.jsonl")
    assert settings.report_path == Path("out/report.json")
    assert settings.has_refresh_credentials is True
    assert settings.secrets() == [
        SECRET_TOKEN,
        SECRET_REFRESH,
        SECRET_CLIENT,
        f"app:{SECRET_CLIENT}",
    ]


@pytest.mark.parametrize(
    ("config", "has_refresh"),
    [
        ({"refresh_token": "r", "client_id": "c", "client_secret": "s"}, True),
        ({"refresh_token": "r", "client_id": "c"}, False),
        ({"refresh_token": "r", "client_secret": "s"}, False),
        ({"client_id": "c", "client_secret": "s"}, False),
        ({"refresh_token": "", "client_id": "c", "client_secret": "s"}, False),
    ],
)
def test_settings_has_refresh_credentials(config: dict[str, Any], has_refresh: bool) -> None:
    settings = Settings.from_config({"ad_account_id": "1", **config})
    assert settings.has_refresh_credentials is has_refresh


def test_settings_secrets_skip_missing_and_client_id() -> None:
    settings = Settings.from_config(
        {"ad_account_id": "1", "client_id": "public-app-id", "client_secret": SECRET_CLIENT}
    )
    # client_id alone is public; paired with the secret it is the HTTP Basic credential.
    assert settings.secrets() == [SECRET_CLIENT, f"public-app-id:{SECRET_CLIENT}"]


def test_settings_empty_paths_are_none() -> None:
    settings = Settings.from_config(
        {"ad_account_id": "1", "reject_file": "", "report_path": None, "token_store_path": ""}
    )
    assert settings.reject_file is None
    assert settings.report_path is None
    assert settings.token_store_path is None


# Unknown keys ---------------------------------------------------------------------------

KNOWN = [*CONFIG_SCHEMA["properties"], "stream_maps", "stream_map_config", "faker_config"]


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("records_per_requests", "records_per_request"),
        ("acess_token", "access_token"),
        ("max_removal_fractoin", "max_removal_fraction"),
        ("ledger-path", "ledger_path"),
        ("stream_map", "stream_maps"),
        ("Sync_Mode", None),  # keys are case-sensitive; too far to guess
        ("batch_size_rows", None),  # an SDK setting this target does not offer
        ("colour", None),
    ],
)
def test_an_unknown_key_is_named_with_the_closest_known_key(
    key: str, suggestion: str | None
) -> None:
    (warning,) = unknown_key_warnings({**VALID, key: SECRET_TOKEN}, KNOWN)
    expected = f"config['{key}'] is not a setting of this target and is ignored"
    if suggestion:
        expected += f"; did you mean '{suggestion}'?"
    assert warning == expected
    assert SECRET_TOKEN not in warning


def test_known_keys_get_no_warning() -> None:
    config = dict.fromkeys(KNOWN, None)
    assert unknown_key_warnings(config, KNOWN) == []


def test_every_unknown_key_gets_a_warning_in_order() -> None:
    warnings = unknown_key_warnings({"zeta": 1, "alpha": 2, **VALID}, KNOWN)
    assert [w.split("'")[1] for w in warnings] == ["alpha", "zeta"]
