"""Read Singer messages fast, number the lines, and never echo a line's content.

The SDK's readers put the offending line into the exception and the log when a line is not
valid JSON or lacks a key; our input lines hold raw email addresses, so those messages name
the line number instead. Parsing uses msgspec (the SDK's ``MsgSpecReader``), several times
faster than the standard library on record-sized lines.

No line can poison the stream. A line msgspec refuses gets a second, tolerant reading
(:func:`decode_tolerantly`) before it stops the run: Python taps write ``NaN`` and
``Infinity`` by default (``json.dumps(allow_nan=True)``), and numbers beyond a float's range
or a 4,300-digit integer sit in columns the target never reads, so they must not cost the
record. A UTF-8 byte-order mark before the first line is dropped. Whatever still cannot be
read (malformed JSON, nesting too deep for the decoder, a line too large for memory) stops
the run with the line's number, never a traceback, after what came before was delivered.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import IO, Any

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_pinterest_audiences.errors import InputError, TerminationRequestedError

_decoder = msgspec.json.Decoder()
_UTF8_BOM = b"\xef\xbb\xbf"
# Python refuses to convert integers longer than this to int (CVE-2020-10735); a longer
# one becomes a float (inf), which only matters if the target read it, and it does not.
_MAX_INT_DIGITS = 4000


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def decode_tolerantly(text: str) -> Any:
    """Decode JSON the way Python's own encoder writes it: NaN, Infinity, any number.

    Raises ``ValueError`` for text that is not JSON even so, ``RecursionError`` for nesting
    deeper than the interpreter allows. Numbers a float cannot hold become ``inf``.
    """
    return json.loads(text, parse_int=_parse_int)


def depth_problem(where: str) -> str:
    """The message for a line or file line whose values are nested too deeply."""
    return (
        f"{where} is nested too deeply to read (the limit is about "
        f"{sys.getrecursionlimit()} levels of objects and arrays); stopping"
    )


class UnreadableLineError(ValueError):
    """A JSON line that cannot be read even tolerantly; the message names it, not its content."""


def decode_line(line: str | bytes, where: str) -> Any:
    """Decode one JSON line: msgspec first, then the tolerant reading (NaN, huge numbers).

    For standard input's lines and for the lines of BATCH files alike. Raises
    :class:`UnreadableLineError` naming ``where`` for a line that is not JSON, not UTF-8,
    nested too deeply, or too large to hold.
    """
    try:
        try:
            return _decoder.decode(line)
        except msgspec.DecodeError as exc:
            first_error = exc
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            return decode_tolerantly(text)
        except ValueError:  # UnicodeDecodeError too: msgspec's message is more precise
            msg = f"{where} is not valid JSON ({first_error}); stopping"
            raise UnreadableLineError(msg) from None
    except UnicodeDecodeError:
        msg = f"{where} is not valid UTF-8; Singer messages are UTF-8 JSON; stopping"
        raise UnreadableLineError(msg) from None
    except RecursionError:
        raise UnreadableLineError(depth_problem(where)) from None
    except MemoryError:
        msg = f"{where} is too large to read ({len(line):,} bytes); stopping"
        raise UnreadableLineError(msg) from None


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
        message = self.decode_slowly(line)
        if not isinstance(message, dict):
            msg = f"input line {self.line_number} is JSON but not a Singer message object"
            raise InputError(msg)
        return message

    def decode_slowly(self, line: str | bytes) -> Any:
        """The path for lines msgspec refused: BOM, NaN and huge numbers, clear errors.

        Returns None for a blank line. Raises :class:`InputError` naming the line number
        (never its content) for anything that still cannot be read.
        """
        if self.line_number == 1:  # a byte-order mark some Windows tools write
            line = (
                line.removeprefix(_UTF8_BOM)
                if isinstance(line, bytes)
                else line.removeprefix("\ufeff")
            )
        if not line.strip():
            return None
        try:
            return decode_line(line, f"input line {self.line_number}")
        except UnreadableLineError as exc:
            raise InputError(str(exc)) from None

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
        # Nearly every line is a RECORD: its callback is looked up once and its count kept
        # in a local, added to the others at the end.
        on_record = callbacks.get("RECORD")
        records = 0
        self.waiting_for_input = True
        try:
            for line in lines:
                self.waiting_for_input = False
                self.line_number += 1
                if self.stop_signal is not None:  # arrived while the last line was processed
                    raise TerminationRequestedError(self.stop_signal)
                try:
                    message = decode(line)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError):
                    # Rare: blank lines, a BOM, NaN, huge numbers, or an error to report.
                    message = self.decode_slowly(line)
                    if message is None:  # a blank line
                        self.waiting_for_input = True
                        continue
                if message.__class__ is not dict:
                    message = self.deserialize_json(line)  # raises: not a message object
                message_type = message.get("type")
                if message_type == "RECORD" and on_record is not None:
                    callback = on_record
                    records += 1
                else:
                    other = callbacks.get(message_type) if isinstance(message_type, str) else None
                    if other is None:
                        raise InvalidInputLine(self._unknown_type(message_type))
                    callback = other
                    stats[message_type] += 1
                try:
                    callback(message)
                except RecursionError:
                    # Decoded, but too deep for the code that reads it (a fingerprint of a
                    # nested identifier, a stream map): still this line's problem.
                    raise InputError(depth_problem(f"input line {self.line_number}")) from None
                except MemoryError:
                    msg = f"input line {self.line_number}: out of memory processing it; stopping"
                    raise InputError(msg) from None
                if self.stop_signal is not None:
                    raise TerminationRequestedError(self.stop_signal)
                self.waiting_for_input = True
        except UnicodeDecodeError as exc:  # text input (--input): the decoder found it
            msg = (
                f"input line {self.line_number + 1} is not valid UTF-8 (byte {exc.start}); "
                "Singer messages are UTF-8 JSON; stopping"
            )
            raise InputError(msg) from None
        except MemoryError:  # reading the next line: too large to hold
            msg = f"input line {self.line_number + 1} is too large to read; stopping"
            raise InputError(msg) from None
        finally:
            self.waiting_for_input = False
        if records:
            stats["RECORD"] += records
        return Counter(stats)
