"""Keep raw identifiers and secrets out of every log line, whoever wrote it.

Our own code never logs a raw value, but libraries do: the SDK prints whole records when
validation fails and whole lines when JSON does not parse, and exceptions carry their
arguments into tracebacks. A filter on every root handler rewrites each log record
(message and traceback text) before it is formatted, replacing

- the configured secrets (and tokens obtained at run time) with ``[secret]``,
- anything shaped like an email address with ``[email]``,
- anything shaped like a device advertising ID (a UUID) with ``[device-id]``.

SHA-256 hashes are left alone: they are what Pinterest receives anyway.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

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


class Redactor:
    """Scrubs text; knows the secrets of this run, including ones obtained later."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        """Scrub ``secret`` from now on (e.g. a freshly refreshed access token)."""
        if not secret or len(secret) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret not in self._secrets:
                # Longest first, so a secret that contains another is replaced whole.
                self._secrets = tuple(sorted((*self._secrets, secret), key=len, reverse=True))

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


class RedactingFilter(logging.Filter):
    """Rewrites a log record in place so that every handler prints the scrubbed text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub the message and any traceback; never drops a record."""
        if record.msg == _METRIC_FORMAT:
            # The SDK's metric points carry only stream names and counts, and its
            # structured formatter needs them unformatted.
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not hide the record
            message = str(record.msg)
        record.msg = self.redactor.scrub(message)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            # Formatters that render exc_info themselves would print it unscrubbed.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.scrub(record.stack_info)
        return True


def install(redactor: Redactor) -> RedactingFilter:
    """Attach one filter to every handler of the root logger (idempotent per handler)."""
    log_filter = RedactingFilter(redactor)
    for handler in logging.getLogger().handlers:
        for existing in list(handler.filters):
            if isinstance(existing, RedactingFilter):
                handler.removeFilter(existing)
        handler.addFilter(log_filter)
    return log_filter
