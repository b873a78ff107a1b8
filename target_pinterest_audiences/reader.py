"""Read Singer messages fast, number the lines, and never echo a line's content.

The SDK's readers put the offending line into the exception and the log when a line is not
valid JSON or lacks a key; our input lines hold raw email addresses, so those messages name
the line number instead. Parsing uses msgspec (the SDK's ``MsgSpecReader``), several times
faster than the standard library on record-sized lines.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import IO, Any

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_pinterest_audiences.errors import InputError, TerminationRequestedError

_decoder = msgspec.json.Decoder()


class NumberedSingerReader(MsgSpecReader):
    """A msgspec reader that knows which input line it is on.

    Standard input is read as bytes: msgspec decodes UTF-8 JSON bytes directly (no text
    layer, no copy), and invalid UTF-8 then surfaces on its own line, where it can be
    reported by number, instead of as a decoding error somewhere in an 8 KB chunk.
    """

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.waiting_for_input = False
        """True while blocked on the next line: a safe point to stop at."""
        self.stop_signal: int | None = None
        """Set by a signal handler; the reader stops after the current line."""

    @property
    def default_input(self) -> IO[bytes]:  # type: ignore[override]
        """Standard input, as bytes."""
        return sys.stdin.buffer

    def deserialize_json(self, line: str | bytes) -> dict[str, Any]:
        """Decode one line; the error names the line number, not its content."""
        try:
            message = _decoder.decode(line)
        except UnicodeDecodeError:
            msg = (
                f"input line {self.line_number} is not valid UTF-8; Singer messages are UTF-8 "
                "JSON; stopping"
            )
            raise InputError(msg) from None
        except msgspec.DecodeError as exc:
            msg = f"input line {self.line_number} is not valid JSON ({exc}); stopping"
            raise InputError(msg) from None
        if not isinstance(message, dict):
            msg = f"input line {self.line_number} is JSON but not a Singer message object"
            raise InputError(msg)
        return message

    def assert_line_requires(self, line_dict: dict[str, Any], requires: set[str]) -> None:  # type: ignore[override]
        """Check required keys; the error lists the missing keys, never the values."""
        missing = requires.difference(line_dict)
        if missing:
            msg = (
                f"input line {self.line_number}: message is missing required key(s) "
                f"{', '.join(sorted(missing))}"
            )
            raise InvalidInputLine(msg)

    def _unknown_type(self, message_type: object) -> str:
        if not isinstance(message_type, str):
            return f"input line {self.line_number}: message has no 'type'"
        return f"input line {self.line_number}: unknown Singer message type '{message_type}'"

    def process_lines(
        self,
        file_input: IO[str] | IO[bytes] | None,
        callbacks: dict[str, Callable[[dict[str, Any]], None]],
    ) -> Counter[str]:
        """Dispatch each message to its callback, skipping blank lines."""
        stats: dict[str, int] = defaultdict(int)
        lines: Iterable[str | bytes] = file_input or self.default_input
        decode = _decoder.decode
        self.waiting_for_input = True
        try:
            for line in lines:
                self.waiting_for_input = False
                self.line_number += 1
                if self.stop_signal is not None:  # arrived while the last line was processed
                    raise TerminationRequestedError(self.stop_signal)
                try:
                    message = decode(line)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    if not line.strip():  # blank lines are allowed (checked only here: rare)
                        self.waiting_for_input = True
                        continue
                    message = self.deserialize_json(line)  # raises the error with a message
                if message.__class__ is not dict:
                    message = self.deserialize_json(line)  # raises: not a message object
                message_type = message.get("type")
                callback = callbacks.get(message_type) if isinstance(message_type, str) else None
                if callback is None:
                    raise InvalidInputLine(self._unknown_type(message_type))
                callback(message)
                stats[message_type] += 1
                if self.stop_signal is not None:
                    raise TerminationRequestedError(self.stop_signal)
                self.waiting_for_input = True
        except UnicodeDecodeError as exc:  # text input (--input): the decoder found it
            msg = (
                f"input line {self.line_number + 1} is not valid UTF-8 (byte {exc.start}); "
                "Singer messages are UTF-8 JSON; stopping"
            )
            raise InputError(msg) from None
        finally:
            self.waiting_for_input = False
        return Counter(stats)
