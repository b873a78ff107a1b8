"""Tests for target_pinterest_audiences.redaction (log scrubbing).

Everything goes through a real ``logging.Logger`` whose records reach handlers on the root
logger or on named loggers, after ``redaction.install`` as the target does; the end-to-end
test drives the console script with a logging config of file handlers on several loggers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import metrics

from target_pinterest_audiences import redaction
from target_pinterest_audiences.emulator import Emulator
from target_pinterest_audiences.redaction import RedactingFilter, Redactor

import support

EMAIL = "alice.smith+promo@example.com"
IDN_EMAIL = "JOSÉ@Exämple.com"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ANDROID = "38400000-8cf0-11bd-b23e-10b96e40000d"
ACCESS_TOKEN = "pina_AEAQWQQXAAAAAXYZsecretACCESS0123456789"
REFRESH_TOKEN = "pinr_REFRESHsecretTOKEN9876543210abcdef"
CLIENT_SECRET = "c0ffee5ecretC1ientValue"
SHA = hashlib.sha256(b"alice.smith+promo@example.com").hexdigest()
RAW_VALUES = (EMAIL, IDN_EMAIL, IDFA, ANDROID, ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET)


class RecordingHandler(logging.StreamHandler[io.StringIO]):
    """Writes to a StringIO and keeps the LogRecords it emitted."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        super().emit(record)

    @property
    def text(self) -> str:
        stream = self.stream
        assert isinstance(stream, io.StringIO)
        return stream.getvalue()


@dataclass
class Setup:
    logger: logging.Logger
    handler: RecordingHandler
    redactor: Redactor
    log_filter: RedactingFilter

    @property
    def text(self) -> str:
        return self.handler.text


@pytest.fixture(autouse=True)
def _no_redaction_left_behind() -> Iterator[None]:
    """``install`` changes process-wide logging; undo it after every test."""
    yield
    redaction.uninstall()


@pytest.fixture
def root_handler() -> Iterator[RecordingHandler]:
    """Replace the root logger's handlers with one recording handler; restore afterwards."""
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    saved_level = root.level
    handler = RecordingHandler()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@pytest.fixture
def setup(root_handler: RecordingHandler) -> Setup:
    redactor = Redactor([ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET])
    log_filter = redaction.install(redactor)
    logger = logging.getLogger("tests.redaction.library")
    logger.setLevel(logging.DEBUG)
    logger.propagate = True
    return Setup(logger, root_handler, redactor, log_filter)


def assert_clean(text: str) -> None:
    for raw in RAW_VALUES:
        assert raw not in text
    assert "alice" not in text.lower()


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (f"user {EMAIL} signed up", "user [email] signed up"),
        (f"{IDN_EMAIL}", "[email]"),
        ("TEST@EXAMPLE.COM and test@example.co.uk", "[email] and [email]"),
        (f"<{EMAIL}>", "<[email]>"),
        (f"mailto:{EMAIL}", "mailto:[email]"),
        (f"idfa {IDFA} seen", "idfa [device-id] seen"),
        (f"android={ANDROID}", "android=[device-id]"),
        (f"ids: {IDFA.lower()},{ANDROID.upper()}", "ids: [device-id],[device-id]"),
        (
            f"{{'email': '{EMAIL}', 'ios_idfa': '{IDFA}', 'n': 1}}",
            "{'email': '[email]', 'ios_idfa': '[device-id]', 'n': 1}",
        ),
        (
            f'{{"email":"{EMAIL}","android_id":"{ANDROID}"}}',
            '{"email":"[email]","android_id":"[device-id]"}',
        ),
        (f"Authorization: Bearer {ACCESS_TOKEN}", "Authorization: Bearer [secret]"),
        (f"refresh_token={REFRESH_TOKEN}&x=1", "refresh_token=[secret]&x=1"),
        (f"{CLIENT_SECRET}{CLIENT_SECRET}", "[secret][secret]"),
        # SHA-256 hashes are what Pinterest receives: they stay.
        (f"sent {SHA}", f"sent {SHA}"),
        (f"sent {SHA.upper()}", f"sent {SHA.upper()}"),
        ("nothing to hide here - 42 records", "nothing to hide here - 42 records"),
        ("user@localhost has no dot", "user@localhost has no dot"),
    ],
)
def test_message_is_scrubbed(setup: Setup, message: str, expected: str) -> None:
    setup.logger.warning(message)
    assert setup.text == f"WARNING tests.redaction.library: {expected}\n"


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("bad record %s", ({"email": EMAIL},), "bad record {'email': '[email]'}"),
        ("%s / %s", (IDFA, ANDROID), "[device-id] / [device-id]"),
        ("token %s expired", (ACCESS_TOKEN,), "token [secret] expired"),
        ("%r", ([REFRESH_TOKEN, CLIENT_SECRET],), "['[secret]', '[secret]']"),
        ("%(who)s -> %(hash)s", ({"who": EMAIL, "hash": SHA},), f"[email] -> {SHA}"),
        ("%d records", (3,), "3 records"),
    ],
)
def test_percent_args_are_scrubbed(
    setup: Setup, fmt: str, args: tuple[object, ...], expected: str
) -> None:
    setup.logger.info(fmt, *args)
    assert setup.text == f"INFO tests.redaction.library: {expected}\n"
    (record,) = setup.handler.records
    assert record.args is None or record.args == ()


def test_message_with_literal_percent_after_scrubbing(setup: Setup) -> None:
    setup.logger.info("%s is 100%% done", EMAIL)
    assert setup.text.endswith(": [email] is 100% done\n")


def test_malformed_log_call_does_not_raise_or_leak(setup: Setup) -> None:
    setup.logger.info("token %s and %s", ACCESS_TOKEN)  # one argument missing
    assert ACCESS_TOKEN not in setup.text
    assert "token %s and %s" in setup.text


def _fail_with(message: str) -> None:
    raise ValueError(message)


def test_exception_traceback_is_scrubbed(setup: Setup) -> None:
    try:
        _fail_with(f"bad row {EMAIL} / {IDFA} with token {ACCESS_TOKEN}")
    except ValueError:
        setup.logger.exception("could not send %s", ANDROID)
    text = setup.text
    assert "ERROR tests.redaction.library: could not send [device-id]" in text
    assert "Traceback (most recent call last):" in text
    assert "ValueError: bad row [email] / [device-id] with token [secret]" in text
    assert_clean(text)
    (record,) = setup.handler.records
    assert record.exc_info is None  # no formatter can render it unscrubbed later


def test_chained_exception_is_scrubbed(setup: Setup) -> None:
    try:
        try:
            _fail_with(f"inner {REFRESH_TOKEN}")
        except ValueError as inner:
            raise RuntimeError(f"outer {EMAIL}") from inner
    except RuntimeError:
        setup.logger.exception("failed")
    text = setup.text
    assert "ValueError: inner [secret]" in text
    assert "RuntimeError: outer [email]" in text
    assert_clean(text)


def test_exc_info_on_other_levels_is_scrubbed(setup: Setup) -> None:
    try:
        _fail_with(CLIENT_SECRET)
    except ValueError as error:
        setup.logger.warning("retrying", exc_info=error)
    assert "ValueError: [secret]" in setup.text
    assert_clean(setup.text)


def test_traceback_scrubbed_with_a_custom_formatter(setup: Setup) -> None:
    # A formatter that formats exceptions itself sees exc_info=None and uses exc_text.
    setup.handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        _fail_with(EMAIL)
    except ValueError:
        setup.logger.exception("x")
    assert setup.text.startswith("x\nTraceback")
    assert setup.text.rstrip().endswith("ValueError: [email]")


def test_stack_info_is_scrubbed(setup: Setup) -> None:
    setup.logger.info("checkpoint", stack_info=True)  # owner alice.smith+promo@example.com
    text = setup.text
    assert "Stack (most recent call last):" in text
    assert "# owner [email]" in text
    assert_clean(text)


@pytest.mark.parametrize(
    "text",
    [
        SHA,
        SHA.upper(),
        f"hashes=[{SHA}, {SHA}]",
        f"{SHA[:32]}-{SHA[32:]}",  # dash inside a 64-hex value is not a UUID shape
    ],
)
def test_sha256_hashes_are_not_scrubbed(setup: Setup, text: str) -> None:
    setup.logger.info("%s", text)
    assert setup.text == f"INFO tests.redaction.library: {text}\n"


def test_uuid_inside_longer_hex_run_is_not_a_device_id() -> None:
    text = f"ab{IDFA}cd"
    assert Redactor().scrub(text) == text


@pytest.mark.parametrize("template", ["idfa_{}", "{}_retry"])
def test_uuid_next_to_underscore_is_scrubbed(template: str) -> None:
    assert Redactor().scrub(template.format(IDFA)) == template.format("[device-id]")


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("secret", "scrubbed"),
    [
        ("", False),
        ("a", False),
        ("abc12", False),  # 5 characters: below the minimum
        ("abc123", True),  # 6 characters: the minimum
        ("abcdefghij", True),
    ],
)
def test_secret_minimum_length(secret: str, scrubbed: bool) -> None:
    redactor = Redactor([secret])
    text = f"value {secret} end" if secret else "value  end"
    result = redactor.scrub(text)
    if scrubbed:
        assert result == "value [secret] end"
    else:
        assert result == text


def test_none_and_empty_secrets_are_ignored() -> None:
    redactor = Redactor()
    redactor.add_secret(None)
    redactor.add_secret("")
    assert redactor.scrub("plain text") == "plain text"


def test_short_secret_does_not_mangle_words(setup: Setup) -> None:
    setup.redactor.add_secret("the")
    setup.logger.info("the quick brown fox")
    assert setup.text.endswith(": the quick brown fox\n")


def test_longest_secret_replaced_whole() -> None:
    redactor = Redactor(["abcdef", "abcdef-and-more"])
    assert redactor.scrub("x abcdef-and-more y abcdef") == "x [secret] y [secret]"


def test_secret_added_later_is_scrubbed_from_then_on(setup: Setup) -> None:
    new_token = "pina_FRESHLYrefreshedTOKEN000111222"
    setup.logger.info("before %s", new_token)
    setup.redactor.add_secret(new_token)
    setup.logger.info("after %s", new_token)
    lines = setup.text.splitlines()
    assert lines == [
        f"INFO tests.redaction.library: before {new_token}",
        "INFO tests.redaction.library: after [secret]",
    ]


def test_adding_the_same_secret_twice_is_harmless() -> None:
    redactor = Redactor([ACCESS_TOKEN, ACCESS_TOKEN])
    redactor.add_secret(ACCESS_TOKEN)
    assert redactor.scrub(ACCESS_TOKEN) == "[secret]"


def test_secret_that_looks_like_an_email_is_a_secret() -> None:
    secret = "svc-account@example.com"
    assert Redactor([secret]).scrub(f"as {secret}") == "as [secret]"


# --------------------------------------------------------------------------- metrics


def _point(tags: dict[str, Any]) -> metrics.Point[int]:
    return metrics.Point("counter", metrics.Metric.RECORD_COUNT, 42, tags)


@pytest.mark.parametrize(
    "tags",
    [
        {"stream": "users"},
        {"stream": "users", "context": {"partition": "2024-01-01"}},
        {},
    ],
)
def test_sdk_metric_lines_pass_through_unchanged(setup: Setup, tags: dict[str, Any]) -> None:
    point = _point(tags)
    metrics.log(setup.logger, point)
    (record,) = setup.handler.records
    assert record.msg == "METRIC: %s"
    assert record.args == (point,)
    assert record.args[0] is point
    assert setup.text == f"INFO tests.redaction.library: METRIC: {point}\n"


def test_metric_logger_of_the_sdk_is_left_alone(setup: Setup) -> None:
    point = _point({"stream": "email_audience"})
    sdk_logger = logging.getLogger(metrics.METRICS_LOGGER_NAME)
    saved_level = sdk_logger.level
    sdk_logger.setLevel(logging.INFO)
    try:
        metrics.log(sdk_logger, point)
    finally:
        sdk_logger.setLevel(saved_level)
    (record,) = setup.handler.records
    assert record.args == (point,)
    assert str(point) in setup.text


def test_other_messages_that_mention_metric_are_scrubbed(setup: Setup) -> None:
    setup.logger.info("METRIC: %s for %s", "x", EMAIL)
    assert setup.text.endswith(": METRIC: x for [email]\n")


# --------------------------------------------------------------------------- install


def test_install_attaches_to_every_root_handler(root_handler: RecordingHandler) -> None:
    second = RecordingHandler()
    logging.getLogger().addHandler(second)
    log_filter = redaction.install(Redactor([ACCESS_TOKEN]))
    assert log_filter in root_handler.filters
    assert log_filter in second.filters
    logging.getLogger("tests.redaction.other").warning("%s %s", EMAIL, ACCESS_TOKEN)
    assert root_handler.text.endswith(": [email] [secret]\n")
    assert second.text.endswith(": [email] [secret]\n")


def test_install_is_idempotent_per_handler(root_handler: RecordingHandler) -> None:
    first = redaction.install(Redactor())
    second = redaction.install(Redactor([CLIENT_SECRET]))
    redacting = [f for f in root_handler.filters if isinstance(f, RedactingFilter)]
    assert redacting == [second]
    assert first is not second
    logging.getLogger("tests.redaction.other").warning(CLIENT_SECRET)
    assert root_handler.text.endswith(": [secret]\n")


def test_install_keeps_other_filters(root_handler: RecordingHandler) -> None:
    other = logging.Filter("tests")
    root_handler.addFilter(other)
    redaction.install(Redactor())
    assert other in root_handler.filters


def test_filter_never_drops_records(setup: Setup) -> None:
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        setup.logger.log(level, "%s", EMAIL)
    assert len(setup.handler.records) == 4
    assert setup.text.count("[email]") == 4
    assert_clean(setup.text)


def test_filter_on_a_bare_record() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "sending %s to %s", (IDFA, EMAIL), None
    )
    assert RedactingFilter(Redactor()).filter(record) is True
    assert record.getMessage() == "sending [device-id] to [email]"


# --------------------------------------------------------------------------- every handler


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, RecordingHandler]]:
    """A named logger with a handler of its own that does not propagate to the root."""
    logger = logging.getLogger("tests.redaction.isolated")
    handler = RecordingHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_named_logger_that_does_not_propagate_is_scrubbed(
    own_logger: tuple[logging.Logger, RecordingHandler],
) -> None:
    logger, handler = own_logger
    redaction.install(Redactor([ACCESS_TOKEN]))
    logger.error("HTTP 503: upstream saw %s for %s", ACCESS_TOKEN, EMAIL)
    assert (
        handler.text
        == "ERROR tests.redaction.isolated: HTTP 503: upstream saw [secret] for [email]\n"
    )


def test_a_handler_added_after_install_is_scrubbed(
    own_logger: tuple[logging.Logger, RecordingHandler],
) -> None:
    logger, _ = own_logger
    redaction.install(Redactor([ACCESS_TOKEN]))
    late = RecordingHandler()  # e.g. a library configuring its own logging mid-run
    logger.addHandler(late)
    try:
        logger.warning("token %s", ACCESS_TOKEN)
    finally:
        logger.removeHandler(late)
    assert late.text.endswith(": token [secret]\n")
    assert not late.filters  # scrubbed at the source, not by a filter on this handler


def test_records_not_made_by_the_factory_are_scrubbed_by_the_handler_filter(
    root_handler: RecordingHandler,
) -> None:
    redaction.install(Redactor([ACCESS_TOKEN]))
    record = logging.makeLogRecord({"msg": "token %s", "args": (ACCESS_TOKEN,), "levelno": 20})
    root_handler.handle(record)
    assert root_handler.text.endswith(": token [secret]\n")


def test_install_filters_handlers_of_named_loggers(
    own_logger: tuple[logging.Logger, RecordingHandler],
) -> None:
    _, handler = own_logger
    log_filter = redaction.install(Redactor())
    assert log_filter in handler.filters


def test_string_extras_are_scrubbed(own_logger: tuple[logging.Logger, RecordingHandler]) -> None:
    logger, handler = own_logger
    redaction.install(Redactor([ACCESS_TOKEN]))
    logger.info("request failed", extra={"body": f"Bearer {ACCESS_TOKEN} {EMAIL}", "n": 3})
    (record,) = handler.records
    assert record.__dict__["body"] == "Bearer [secret] [email]"
    assert record.__dict__["n"] == 3


def test_uninstall_restores_plain_records() -> None:
    redaction.install(Redactor([ACCESS_TOKEN]))
    redaction.uninstall()
    record = logging.getLogger("x").makeRecord("x", 20, "f", 1, "%s", (ACCESS_TOKEN,), None)
    assert record.getMessage() == ACCESS_TOKEN


def test_uncaught_exceptions_are_printed_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    redaction.install(Redactor([ACCESS_TOKEN]))
    try:
        _fail_with(f"{ACCESS_TOKEN} {EMAIL}")
    except ValueError as error:
        sys.excepthook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err
    assert "ValueError: [secret] [email]" in err
    assert_clean(err)


# --------------------------------------------------------------------------- encoded secrets

CLIENT_ID_VALUE = "1484233"


@pytest.mark.parametrize(
    "encode",
    [base64.b64encode, base64.urlsafe_b64encode],
    ids=["standard", "urlsafe"],
)
def test_an_http_basic_credential_is_scrubbed(encode: object) -> None:
    assert callable(encode)
    pair = f"{CLIENT_ID_VALUE}:{CLIENT_SECRET}"
    basic = encode(pair.encode()).decode()
    redactor = Redactor([CLIENT_SECRET, pair])
    assert redactor.scrub(f"refused Basic {basic}") == "refused Basic [secret]"


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", "client-id-1:"])
def test_a_secret_inside_a_base64_blob_is_scrubbed_at_any_offset(prefix: str) -> None:
    blob = base64.b64encode(f"{prefix}{REFRESH_TOKEN}&scope=ads".encode()).decode()
    scrubbed = Redactor([REFRESH_TOKEN]).scrub(f"body={blob}")
    assert "[secret]" in scrubbed
    # What is left of the blob cannot give back more than the two characters at each edge.
    left = scrubbed.removeprefix("body=").replace("[secret]", "")
    assert len(left) <= len(blob) - len(base64.b64encode(REFRESH_TOKEN.encode())) + 6


def test_the_base64_of_a_secret_without_padding_is_scrubbed() -> None:
    encoded = base64.b64encode(ACCESS_TOKEN.encode()).decode().rstrip("=")
    assert Redactor([ACCESS_TOKEN]).scrub(f"x {encoded} y") == "x [secret] y"


def test_a_percent_encoded_secret_is_scrubbed() -> None:
    secret = "pinr_with/slash+plus=eq"
    assert Redactor([secret]).scrub("refresh_token=pinr_with%2Fslash%2Bplus%3Deq&x=1") == (
        "refresh_token=[secret]&x=1"
    )


def test_encoded_forms_of_short_secrets_are_not_scrubbed() -> None:
    # A 6-character secret's base64 pieces are too short to be told from ordinary text.
    assert all(len(form) >= 8 for form in redaction.encoded_forms("abc123"))
    assert Redactor(["abc123"]).scrub("YWJj MTIz") == "YWJj MTIz"


# --------------------------------------------------------------------------- end to end

# Named loggers a logging config may give handlers of their own (propagate: false), so the
# root logger's handlers never see their records.
NAMED_LOGGERS = (
    "target_pinterest_audiences",
    "target_pinterest_audiences.client",
    "target-pinterest-audiences",  # the SDK's plugin logger
    "singer_sdk",
    "urllib3",
)


def _log_config(directory: Path) -> Path:
    """A SINGER_SDK_LOG_CONFIG with a file handler on the root and on every named logger."""
    handlers: dict[str, dict[str, str]] = {
        "root_file": {
            "class": "logging.FileHandler",
            "filename": str(directory / "root.log"),
            "formatter": "plain",
        }
    }
    loggers = {}
    for name in NAMED_LOGGERS:
        handlers[name] = {
            "class": "logging.FileHandler",
            "filename": str(directory / f"{name}.log"),
            "formatter": "plain",
        }
        loggers[name] = {"level": "DEBUG", "handlers": [name], "propagate": False}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": handlers,
        "loggers": loggers,
        "root": {"level": "DEBUG", "handlers": ["root_file"]},
    }
    path = directory / "logging.json"  # JSON is YAML, which the SDK reads
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.slow  # runs the console script
def test_every_handler_of_a_logging_config_gets_scrubbed_text(
    emulator: Emulator, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"SINGER_SDK_LOG_CONFIG": str(_log_config(logs))}
    token, refresh_token = support.TOKEN, support.REFRESH_TOKEN
    client_secret = support.CLIENT_SECRET
    basic = base64.b64encode(f"{support.CLIENT_ID}:{client_secret}".encode()).decode()
    user = "quoted.user@example.com"
    messages = [support.schema("s", "email"), support.record("s", email=user)]

    # A 5xx whose message quotes the token, the refresh token and a user: retried, then OK.
    emulator.configure_faults(
        {
            "rules": [
                {
                    "path": "/customer_lists",
                    "times": 1,
                    "action": "error",
                    "status": 503,
                    "message": f"saw Bearer {token} for {user} ({refresh_token})",
                }
            ]
        }
    )
    config = support.emulator_config(
        emulator, refresh_token=support.REFRESH_TOKEN, client_id=support.CLIENT_ID
    )
    config["client_secret"] = support.CLIENT_SECRET
    first = support.run_target(tmp_path, config, messages, env=env)
    # An oauth/token error that echoes the HTTP Basic credential (client_id:client_secret).
    emulator.configure_faults(
        {
            "rules": [
                {
                    "path": "/oauth/token",
                    "action": "error",
                    "status": 400,
                    "message": f"bad client credentials Basic {basic} ({client_secret})",
                }
            ]
        }
    )
    config.pop("access_token")  # the run must refresh first
    second = support.run_target(tmp_path, config, messages, env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    texts = {path.name: path.read_text(encoding="utf-8") for path in logs.glob("*.log")}
    assert set(texts) == {"root.log", *(f"{name}.log" for name in NAMED_LOGGERS)}
    assert "HTTP 503" in texts["target_pinterest_audiences.client.log"]
    assert "refused to refresh" in texts["target-pinterest-audiences.log"]
    assert "Starting new HTTP connection" in texts["urllib3.log"]
    for where, text in {**texts, "stderr": first.stderr + second.stderr}.items():
        for raw in (token, refresh_token, client_secret, basic, user):
            assert raw not in text, f"{raw!r} appears in {where}"
    assert "[secret]" in texts["target_pinterest_audiences.client.log"]
    assert "[secret]" in texts["target-pinterest-audiences.log"]
