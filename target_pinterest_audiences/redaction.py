"""Keep raw identifiers and secrets out of every log line, whoever wrote it and wherever it goes.

Our own code never logs a raw value, but libraries do: the SDK prints whole records when
validation fails and whole lines when JSON does not parse, Pinterest's error messages may
quote what they were sent, and exceptions carry their arguments into tracebacks. Every log
record is rewritten (message, traceback and stack text, string ``extra`` fields), replacing

- the configured secrets (and tokens obtained at run time) with ``[secret]``, also in their
  base64 and percent-encoded forms (an HTTP Basic ``client_id:client_secret`` credential
  echoed in an ``oauth/token`` error, a token inside a base64 blob at any offset),
- anything shaped like an email address with ``[email]``,
- anything shaped like a device advertising ID (a UUID) with ``[device-id]``.

SHA-256 hashes are left alone: they are what Pinterest receives anyway.

Where the scrubbing happens, and why there: a logging config (``SINGER_SDK_LOG_CONFIG``)
can attach handlers to any logger, with ``propagate: false``, and a library can add its own
handler at any time, so a filter on the root logger's handlers sees only part of the
records. The record is therefore scrubbed **when it is created**, by a log-record factory
(:func:`logging.setLogRecordFactory`), before any logger or handler sees it: that covers
every handler, present or added later. As a second layer, for records that do not come
from the factory (``logging.makeLogRecord``, or a library that installs a factory of its
own without chaining to ours), a filter is attached to every handler of every logger
present at :func:`install` time. Uncaught exceptions printed by the interpreter (main or
other threads) are scrubbed too.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote

_EMAIL = re.compile(
    r"[^\s@\"'<>(),;:\[\]{}\\]+@[^\s@\"'<>(),;:\[\]{}\\]+\.[^\s@\"'<>(),;:\[\]{}\\]+"
)
# Hex lookarounds rather than \b, which would let "idfa_<uuid>" through ("_" is a word char).
_UUID = re.compile(
    r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![0-9a-fA-F])"
)
_METRIC_FORMAT = "METRIC: %s"
# Secrets shorter than this are not worth scrubbing (and would mangle ordinary words).
_MIN_SECRET_LENGTH = 6
# The shortest piece of a base64 encoding that is scrubbed: shorter ones could match
# innocent text.
_MIN_ENCODED_LENGTH = 8
# The attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


def encoded_forms(secret: str) -> set[str]:
    """The text a secret can take in a log line besides itself.

    Base64 (standard and URL-safe): the whole encoding, and for each of the three byte
    offsets at which the secret can sit inside a longer encoded value (an HTTP Basic
    credential ``client_id:client_secret``, a JSON blob), the characters that depend on the
    secret's bytes alone. Percent-encoding, as in a form body or a query string.
    """
    data = secret.encode("utf-8")
    forms = {quote(secret, safe="")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        if offset == 0:
            forms.add(encoded)
            forms.add(encoded.rstrip("="))
        # Character i encodes bits 6i..6i+6; keep those inside the secret's bits.
        start = -(-8 * offset // 6)
        end = 8 * (offset + len(data)) // 6
        forms.add(encoded[start:end])
    forms |= {form.replace("+", "-").replace("/", "_") for form in forms}
    return {form for form in forms if len(form) >= _MIN_ENCODED_LENGTH and form != secret}


class Redactor:
    """Scrubs text; knows the secrets of this run, including ones obtained later."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        """Scrub ``secret`` (and its encoded forms) from now on, e.g. a refreshed token."""
        if not secret or len(secret) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret in self._secrets:
                return
            known = {*self._secrets, secret, *encoded_forms(secret)}
            # Longest first, so a secret that contains another is replaced whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """Return ``text`` without secrets, emails or device IDs."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[secret]")
        if "@" in text:
            text = _EMAIL.sub("[email]", text)
        if "-" in text:
            text = _UUID.sub("[device-id]", text)
        return text


def scrub_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Rewrite ``record`` in place so that no formatter can print a raw value.

    The message is formatted once and replaced by its scrubbed text (``args`` dropped);
    exception information becomes scrubbed ``exc_text`` (``exc_info`` dropped, since
    formatters that render it themselves would print it unscrubbed). Idempotent.
    """
    if record.msg == _METRIC_FORMAT:
        # The SDK's metric points carry only stream names and counts, and its structured
        # formatter needs them unformatted.
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed log call must not hide the record
        message = str(record.msg)
    record.msg = redactor.scrub(message)
    record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redactor.scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.scrub(record.stack_info)
    for key, value in list(vars(record).items()):
        if isinstance(value, str) and key not in _STANDARD_ATTRIBUTES:
            setattr(record, key, redactor.scrub(value))


class RedactingFilter(logging.Filter):
    """Scrubs a log record in place so that every handler prints the scrubbed text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub the message, traceback and extras; never drops a record."""
        scrub_record(record, self.redactor)
        return True


class _RedactingRecordFactory:
    """Wraps the log-record factory: every record is scrubbed as soon as it exists."""

    def __init__(self, wrapped: Callable[..., logging.LogRecord], redactor: Redactor) -> None:
        self.wrapped = wrapped
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.wrapped(*args, **kwargs)
        scrub_record(record, self.redactor)
        return record


def _every_handler() -> list[logging.Handler]:
    loggers = [logging.getLogger()]
    loggers += [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    return [handler for logger in loggers for handler in logger.handlers]


def _install_excepthooks(redactor: Redactor) -> None:
    """Scrub tracebacks the interpreter prints for uncaught exceptions."""

    def print_scrubbed(
        exc_type: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(exc_type, value, tb))
        sys.stderr.write(redactor.scrub(text))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        sys.stderr.write(f"Exception in thread {name}:\n")
        print_scrubbed(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = print_scrubbed
    threading.excepthook = thread_hook


def install(redactor: Redactor) -> RedactingFilter:
    """Scrub every log record of this process with ``redactor`` (idempotent).

    Installs (or re-targets) the record factory, attaches one filter to every handler of
    every logger that exists now (replacing an earlier one), and scrubs uncaught
    exceptions. Returns the filter.
    """
    factory = logging.getLogRecordFactory()
    if isinstance(factory, _RedactingRecordFactory):
        factory.redactor = redactor
    else:
        logging.setLogRecordFactory(_RedactingRecordFactory(factory, redactor))
    log_filter = RedactingFilter(redactor)
    for handler in _every_handler():
        for existing in list(handler.filters):
            if isinstance(existing, RedactingFilter):
                handler.removeFilter(existing)
        handler.addFilter(log_filter)
    _install_excepthooks(redactor)
    return log_filter


def uninstall() -> None:
    """Undo :func:`install` (for tests): the original factory and interpreter hooks."""
    factory = logging.getLogRecordFactory()
    if isinstance(factory, _RedactingRecordFactory):
        logging.setLogRecordFactory(factory.wrapped)
    for handler in _every_handler():
        for existing in list(handler.filters):
            if isinstance(existing, RedactingFilter):
                handler.removeFilter(existing)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__
