"""The target's settings: JSON schema (for Meltano and --about), defaults, and checks.

The schema is what Meltano shows users and what the SDK validates; the cross-field rules a
schema cannot express (credentials, loopback-only plain HTTP) live in
:func:`cross_field_problems`.
Error messages name the key and what is wrong, never the value: a mistyped secret must not
end up in a CI log.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import jsonschema
from singer_sdk import typing as th

from target_pinterest_audiences import rate_limits

DEFAULT_API_URL = "https://api.pinterest.com/v5"
# Braze's production Pinterest integration sends 1,900 identifiers per request; Pinterest
# documents no maximum. Fewer, larger requests spend less of the ads_write rate limit, and
# a payload-too-large answer makes the target halve its requests automatically.
DEFAULT_RECORDS_PER_REQUEST = 1900
MAX_RECORDS_PER_REQUEST = 100_000
DEFAULT_LEDGER_PATH = ".target-pinterest-audiences/ledger.sqlite3"
SYNC_MODES = ("changes", "mirror", "upsert")
LEDGER_MODES = frozenset({"mirror", "upsert"})

CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property(
        "ad_account_id",
        th.StringType(min_length=1, max_length=18, pattern=r"^\d+$"),
        required=True,
        title="Ad account ID",
        description="The Pinterest ad account that owns the customer lists (digits only).",
        examples=["549755885175"],
    ),
    th.Property(
        "access_token",
        th.StringType(min_length=1),
        secret=True,
        title="Access token",
        description=(
            "OAuth access token with scopes ads:read and ads:write. Optional when "
            "refresh_token, client_id and client_secret are set."
        ),
    ),
    th.Property(
        "refresh_token",
        th.StringType(min_length=1),
        secret=True,
        title="Refresh token",
        description="OAuth refresh token; with client_id and client_secret the target refreshes "
        "access tokens itself.",
    ),
    th.Property(
        "client_id",
        th.StringType(min_length=1),
        title="Client ID",
        description="The Pinterest app's id (used to refresh tokens).",
    ),
    th.Property(
        "client_secret",
        th.StringType(min_length=1),
        secret=True,
        title="Client secret",
        description="The Pinterest app's secret key (used to refresh tokens).",
    ),
    th.Property(
        "continuous_refresh",
        th.BooleanType,
        default=False,
        title="Continuous refresh",
        description="Send continuous_refresh=true when refreshing: needed by Pinterest apps "
        "created before 2025-09-25 to get rotating 60-day refresh tokens.",
    ),
    th.Property(
        "token_store_path",
        th.StringType(min_length=1),
        title="Token store path",
        description="File where the newest access and refresh tokens are kept (mode 0600). "
        "Pinterest rotates the refresh token on every refresh; without this file a rotated "
        "token is lost when the process ends.",
    ),
    th.Property(
        "api_url",
        th.StringType(min_length=1),
        default=DEFAULT_API_URL,
        title="API URL",
        description="Base URL of the Pinterest API v5. Plain http:// is accepted only for "
        "loopback hosts (the bundled emulator, tests).",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        title="Dry run",
        description="Read, validate, normalize, hash and count, but send nothing; log the "
        "plan per audience.",
    ),
    th.Property(
        "create_audiences",
        th.BooleanType,
        default=True,
        title="Create audiences",
        description="For each customer list the target uses, make sure a CUSTOMER_LIST "
        "audience exists on it (a list cannot be targeted without one).",
    ),
    th.Property(
        "records_per_request",
        th.IntegerType(minimum=1, maximum=MAX_RECORDS_PER_REQUEST),
        default=DEFAULT_RECORDS_PER_REQUEST,
        title="Records per request",
        description="Hashed identifiers per create/update request (default 1900, the batch "
        "size Braze's Pinterest integration uses; Pinterest documents no maximum).",
    ),
    th.Property(
        "max_parallel_requests",
        th.IntegerType(minimum=1, maximum=32),
        default=4,
        title="Parallel requests",
        description="Requests in flight at once; pacing still caps the rate.",
    ),
    th.Property(
        rate_limits.WRITE_SETTING,
        th.NumberType(exclusive_minimum=0, maximum=rate_limits.MAX_REQUESTS_PER_MINUTE),
        default=rate_limits.DEFAULT_WRITE_REQUESTS_PER_MINUTE,
        title="Max write requests per minute",
        description=rate_limits.WRITE_DESCRIPTION,
    ),
    th.Property(
        rate_limits.READ_SETTING,
        th.NumberType(exclusive_minimum=0, maximum=rate_limits.MAX_REQUESTS_PER_MINUTE),
        default=rate_limits.DEFAULT_READ_REQUESTS_PER_MINUTE,
        title="Max read requests per minute",
        description=rate_limits.READ_DESCRIPTION,
    ),
    th.Property(
        rate_limits.DEPRECATED_WRITE_SETTING,
        th.NumberType(exclusive_minimum=0, maximum=1000),
        title="Max write requests per second (deprecated)",
        description=rate_limits.DEPRECATED_WRITE_DESCRIPTION,
    ),
    th.Property(
        "max_retry_wait_seconds",
        th.NumberType(minimum=0),
        default=600,
        title="Max retry wait",
        description="Total time one request may spend waiting between retries (429, 5xx, "
        "network errors) before the run fails.",
    ),
    th.Property(
        "request_timeout_seconds",
        th.NumberType(minimum=1),
        default=120,
        title="Request timeout",
        description="Read timeout per HTTP request (connect timeout is 10 s).",
    ),
    th.Property(
        "checkpoint_interval_seconds",
        th.NumberType(minimum=1),
        default=300,
        title="Checkpoint interval",
        description="How often pending changes are sent and acknowledged, so that STATE can "
        "be emitted (the SDK's default is 5 minutes).",
    ),
    th.Property(
        "sync_mode",
        th.StringType(allowed_values=list(SYNC_MODES)),
        default="changes",
        title="Sync mode",
        description="changes: each record says add or remove. mirror: each run's records are "
        "the complete membership of the audiences they cover; the target removes whoever it "
        "sent before and is absent now, adds whoever is new, and sends nothing for the rest. "
        "upsert: each stream is a table with key_properties (CDC and incremental taps); a "
        "record replaces its key's row, _sdc_deleted_at deletes it, and an identifier stays "
        "in a list while any live row puts it there.",
    ),
    th.Property(
        "stream_sync_modes",
        th.ObjectType(additional_properties=th.StringType(allowed_values=list(SYNC_MODES))),
        title="Sync mode per stream",
        description='Overrides sync_mode for some streams, e.g. {"public-users": '
        '"upsert", "public-events": "changes"}. A stream is named as the tap sends '
        "it, or as stream_maps rename it. One audience is fed by streams of one mode.",
    ),
    th.Property(
        "ledger_path",
        th.StringType(min_length=1),
        default=DEFAULT_LEDGER_PATH,
        title="Ledger path",
        description="Mirror and upsert modes: SQLite file recording the hashed members sent "
        "to each list and, for upsert, each row's hashed identifiers (relative to the working "
        "directory).",
    ),
    th.Property(
        "ledger_url",
        th.StringType(min_length=1),
        secret=True,
        title="Ledger URL",
        description="Mirror and upsert modes: a postgresql:// URL to keep the ledger in "
        "PostgreSQL instead of a local file (for containers and CI runners). Needs the "
        "'postgres' extra.",
    ),
    th.Property(
        "max_removal_fraction",
        th.NumberType(minimum=0, maximum=1),
        default=0.5,
        title="Max removal fraction",
        description="Mirror mode: if a run would remove more than this fraction of an "
        "audience's members, apply nothing of the snapshot (no additions, no removals) and "
        "fail, so a retry fails the same way (1.0 turns the guard off).",
    ),
    th.Property(
        "report_list_status",
        th.BooleanType,
        default=True,
        title="Report list status",
        description="After the run, read each touched list and its audience back and report "
        "Pinterest's list status, the audience's matched size and, where the member count is "
        "known (mirror and upsert modes), the match rate; warn when a list is TOO_SMALL or the "
        "match rate is very low.",
    ),
    th.Property(
        "progress_interval_seconds",
        th.NumberType(minimum=0),
        default=60,
        title="Progress interval",
        description="Log a progress line (records read, identifiers sent, rate) this often; "
        "0 turns it off.",
    ),
    th.Property(
        "reject_file",
        th.StringType(min_length=1),
        title="Reject file",
        description="Optional JSONL file listing every value or record not sent (stream, "
        "record number, reason, SHA-256 of the raw identifiers; never raw values).",
    ),
    th.Property(
        "report_path",
        th.StringType(min_length=1),
        title="Report path",
        description="Optional JSON file with the end-of-run report per audience.",
    ),
).to_dict()

_REFRESH_KEYS = ("refresh_token", "client_id", "client_secret")


@dataclass(frozen=True)
class Settings:
    """The config with the schema's defaults applied, typed.

    The schema above is the one declaration of each setting: its name, type, default and
    description. A field here only gives it a Python type, under the same name;
    :meth:`from_config` reads every field by that name, null or absent meaning the schema's
    default, and converts it to the field's type (``tests/test_config.py`` checks that the
    fields and the schema's properties match).
    """

    ad_account_id: str
    access_token: str | None
    refresh_token: str | None
    client_id: str | None
    client_secret: str | None
    continuous_refresh: bool
    token_store_path: Path | None
    api_url: str
    dry_run: bool
    create_audiences: bool
    records_per_request: int
    max_parallel_requests: int
    max_write_requests_per_minute: float
    max_read_requests_per_minute: float
    max_retry_wait_seconds: float
    request_timeout_seconds: float
    checkpoint_interval_seconds: float
    sync_mode: str
    stream_sync_modes: dict[str, str]
    ledger_path: Path
    ledger_url: str | None
    max_removal_fraction: float
    report_list_status: bool
    progress_interval_seconds: float
    reject_file: Path | None
    report_path: Path | None
    warnings: tuple[str, ...] = ()
    """What the user should hear about the config (deprecated settings and the like)."""

    @classmethod
    def from_config(cls, config: dict[str, Any] | Any) -> Settings:
        """Read each setting by name from a validated config, null meaning the default."""
        properties = CONFIG_SCHEMA["properties"]
        values: dict[str, Any] = {}
        for name, kind in _SETTING_TYPES.items():
            value = config.get(name)
            if value is None:
                value = properties[name].get("default")
            values[name] = _CONVERTERS[kind](name, value)
        values["api_url"] = values["api_url"].rstrip("/")
        # Two ceilings and a deprecated setting that feeds one of them: see rate_limits.
        ceilings = rate_limits.ceilings_from_config(config)
        values[rate_limits.WRITE_SETTING] = ceilings.writes_per_minute
        values[rate_limits.READ_SETTING] = ceilings.reads_per_minute
        return cls(**values, warnings=ceilings.warnings)

    def mode_for(self, stream: str, source_stream: str | None = None) -> str:
        """The sync mode of a stream (named after stream maps, or as the tap sent it)."""
        overrides = self.stream_sync_modes
        if stream in overrides:
            return overrides[stream]
        if source_stream is not None and source_stream in overrides:
            return overrides[source_stream]
        return self.sync_mode

    @property
    def modes(self) -> frozenset[str]:
        """Every sync mode some stream may use in this run."""
        return frozenset({self.sync_mode, *self.stream_sync_modes.values()})

    @property
    def has_refresh_credentials(self) -> bool:
        """All three of refresh_token, client_id and client_secret are set."""
        return bool(self.refresh_token and self.client_id and self.client_secret)

    def secrets(self) -> list[str]:
        """Every secret value of the config, for log redaction."""
        values = [self.access_token, self.refresh_token, self.client_secret, self.ledger_url]
        if self.client_id and self.client_secret:
            # The HTTP Basic credential of a token refresh (the redactor adds its base64).
            values.append(f"{self.client_id}:{self.client_secret}")
        if self.ledger_url:
            values.append(urlsplit(self.ledger_url).password)
        return [value for value in values if value]


def _required(convert: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    def read(name: str, value: Any) -> Any:
        if value is None:
            raise KeyError(f"config['{name}'] is required")
        return convert(value)

    return read


_CONVERTERS: dict[Any, Callable[[str, Any], Any]] = {
    str: _required(str),
    bool: _required(bool),
    int: _required(int),
    float: _required(float),
    Path: _required(Path),
    dict[str, str]: lambda _name, value: {str(k): str(v) for k, v in (value or {}).items()},
    str | None: lambda _name, value: None if value is None else str(value),
    Path | None: lambda _name, value: Path(value) if value else None,
}
"""How a config value becomes a value of its field's type (by the field's annotation)."""

_SETTING_TYPES = {
    name: kind
    for name, kind in get_type_hints(Settings).items()
    if name in CONFIG_SCHEMA["properties"]
}
"""Each setting's field type, by name: every Settings field but ``warnings``."""


def schema_problems(config: dict[str, Any] | Any, schema: dict[str, Any]) -> list[str]:
    """Validate against the JSON schema; describe each error without echoing the value."""
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path)):
        key = ".".join(str(part) for part in error.path)
        problems.append(_describe(error, key))
    return problems


def _describe(error: jsonschema.ValidationError, key: str) -> str:
    rule = error.validator
    expected = error.validator_value
    if rule == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        return f"config['{missing}'] is required"
    where = f"config['{key}']"
    messages = {
        "type": f"{where} must be of type {expected}",
        "minLength": f"{where} must not be empty" if expected == 1 else f"{where} is too short",
        "maxLength": f"{where} must be at most {expected} characters",
        "pattern": f"{where} must match {expected}",
        "minimum": f"{where} must be at least {expected}",
        "maximum": f"{where} must be at most {expected}",
        "enum": f"{where} must be one of {expected}",
    }
    return messages.get(str(rule), f"{where} is invalid ({rule})")


def cross_field_problems(config: dict[str, Any] | Any) -> list[str]:
    """The rules a JSON schema cannot express."""
    problems = []
    account = config.get("ad_account_id")
    if (
        isinstance(account, str)
        and re.search(r"^\d+$", account)
        and not (account.isascii() and account.isdigit())
    ):
        # What the schema's ^\d+$ lets through under Python's re: a trailing newline, or
        # digits of other scripts.
        problems.append("config['ad_account_id'] must contain only the digits 0-9")
    # Present-but-empty values are reported by the schema (minLength); do not repeat them.
    has_access = config.get("access_token") is not None
    refresh_present = [key for key in _REFRESH_KEYS if config.get(key) is not None]
    if refresh_present and len(refresh_present) < len(_REFRESH_KEYS):
        missing = [key for key in _REFRESH_KEYS if key not in refresh_present]
        problems.append(
            f"config['{missing[0]}'] is required: refreshing tokens needs refresh_token, "
            f"client_id and client_secret together (missing: {', '.join(missing)})"
        )
    elif not has_access and not refresh_present and not config.get("dry_run"):
        problems.append(
            "config['access_token'] is required: set access_token, or refresh_token with "
            "client_id and client_secret (only a dry run needs neither)"
        )
    ledger_url = config.get("ledger_url")
    if isinstance(ledger_url, str) and ledger_url:
        if urlsplit(ledger_url).scheme not in {"postgresql", "postgres"}:
            problems.append("config['ledger_url'] must be a postgresql:// URL")
        elif importlib.util.find_spec("psycopg") is None:
            problems.append(
                "config['ledger_url'] needs the PostgreSQL driver: "
                "pip install 'target-pinterest-audiences[postgres]'"
            )
    api_url = config.get("api_url") or DEFAULT_API_URL
    if isinstance(api_url, str):
        problem = api_url_problem(api_url)
        if problem:
            problems.append(f"config['api_url'] {problem}")
    return problems


def unknown_key_warnings(config: dict[str, Any] | Any, known: Iterable[str]) -> list[str]:
    """One warning per config key the target does not read, with the likely intended key.

    A misspelled key is not an error (Meltano and older configs may carry extra keys), but
    it must not be silently ignored: ``records_per_requests`` would leave the default on.
    """
    known = sorted(known)
    warnings = []
    for key in sorted(set(config) - set(known)):
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        warnings.append(f"config['{key}'] is not a setting of this target and is ignored{hint}")
    return warnings


def api_url_problem(url: str) -> str | None:
    """Refuse anything but https, except plain http to a loopback host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        if rate_limits.is_loopback_url(url):
            return None
        return (
            "uses plain http:// for a non-loopback host; use https:// (tokens would be "
            "sent in clear text)"
        )
    return "must be an https:// URL such as " + DEFAULT_API_URL


def reference_markdown(schema: dict[str, Any] = CONFIG_SCHEMA) -> str:
    """The README's settings table, generated from the schema so the two cannot drift."""
    rows = ["| Setting | Type | Default | Description |", "|---|---|---|---|"]
    required = set(schema.get("required", []))
    for name, spec in schema["properties"].items():
        types = spec.get("type", "object")
        kinds = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
        kind = "/".join(kinds)
        if "enum" in spec:
            kind += " (" + ", ".join(f"`{value}`" for value in spec["enum"]) + ")"
        notes = []
        if name in required:
            notes.append("**required**")
        if spec.get("secret"):
            notes.append("**secret**")
        default = spec.get("default")
        shown = "" if default is None else f"`{json.dumps(default)}`"
        description = " ".join(str(spec.get("description", "")).split())
        tagged = ", ".join(notes)
        rows.append(
            f"| `{name}` | {kind}{' ' + tagged if tagged else ''} | {shown} | {description} |"
        )
    return "\n".join(rows) + "\n"
