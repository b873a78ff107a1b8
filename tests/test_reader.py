"""Tests for target_pinterest_audiences.reader: numbered lines that cannot poison the stream.

The reader is driven in process with byte and text inputs and plain callbacks; what each
callback saw shows what was delivered before a line stopped the run.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from target_pinterest_audiences import reader as reader_module
from target_pinterest_audiences.errors import InputError
from target_pinterest_audiences.reader import NumberedSingerReader, decode_tolerantly

EMAIL = "reader.user@example.com"


def record_line(**fields: Any) -> str:
    return json.dumps({"type": "RECORD", "stream": "s", "record": {"email": EMAIL, **fields}})


def read(
    lines: list[str] | bytes, *, text: bool = False, on_record: Callable[..., None] | None = None
) -> tuple[list[dict[str, Any]], NumberedSingerReader]:
    """Feed ``lines`` to a fresh reader; return the RECORD messages its callback received."""
    seen: list[dict[str, Any]] = []

    def record(message: dict[str, Any]) -> None:
        if on_record is not None:
            on_record(message)
        seen.append(message)

    data = lines if isinstance(lines, bytes) else "".join(f"{x}\n" for x in lines).encode()
    source: io.BytesIO | io.StringIO = (
        io.StringIO(data.decode("utf-8", "surrogateescape")) if text else io.BytesIO(data)
    )
    reader = NumberedSingerReader()
    reader.process_lines(source, {"RECORD": record, "STATE": lambda _: None})
    return seen, reader


def read_error(lines: list[str] | bytes, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
    """The message of the InputError the reader stops with, and what was delivered first."""
    delivered: list[dict[str, Any]] = []
    with pytest.raises(InputError) as stopped:
        read(lines, on_record=delivered.append, **kwargs)
    message = str(stopped.value)
    assert EMAIL not in message
    return message, delivered


# Values in fields the target does not read ----------------------------------------------


@pytest.mark.parametrize(
    ("literal", "check"),
    [
        ("NaN", math.isnan),
        ("Infinity", lambda v: v == math.inf),
        ("-Infinity", lambda v: v == -math.inf),
        ("1e999", lambda v: v == math.inf),
        ("-1e999", lambda v: v == -math.inf),
        ("9" * 400, lambda v: v == int("9" * 400)),
        ("1" * 400 + ".5", lambda v: v == math.inf),
        ("7" * 5000, lambda v: v == math.inf),  # past Python's int conversion limit
        ("1e-999", lambda v: v == 0.0),
    ],
    ids=[
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "400-digits",
        "400-digit-float",
        "5000-digits",
        "1e-999",
    ],
)
@pytest.mark.parametrize("text", [False, True], ids=["bytes", "text"])
def test_numbers_python_taps_write_are_read(
    literal: str, check: Callable[[Any], bool], text: bool
) -> None:
    line = f'{{"type": "RECORD", "stream": "s", "record": {{"email": "{EMAIL}", "x": {literal}}}}}'
    seen, _ = read([record_line(), line, record_line()], text=text)
    assert len(seen) == 3
    assert seen[1]["record"]["email"] == EMAIL
    assert check(seen[1]["record"]["x"])


def test_decode_tolerantly_still_refuses_what_is_not_json() -> None:
    for text in ["{", "{'a': 1}", "nan", "{} {}", '{"a": 1,}']:
        with pytest.raises(ValueError):
            decode_tolerantly(text)


# Byte-order mark ------------------------------------------------------------------------


@pytest.mark.parametrize("text", [False, True], ids=["bytes", "text"])
def test_a_leading_bom_is_ignored(text: bool) -> None:
    data = b"\xef\xbb\xbf" + f"{record_line()}\n{record_line()}\n".encode()
    seen, reader = read(data, text=text)
    assert len(seen) == 2
    assert reader.line_number == 2


def test_a_bom_alone_on_the_first_line_is_a_blank_line() -> None:
    seen, _ = read(b"\xef\xbb\xbf\n" + record_line().encode() + b"\n")
    assert len(seen) == 1


def test_a_bom_on_a_later_line_is_not_json() -> None:
    message, delivered = read_error(
        b"".join([record_line().encode() + b"\n", b"\xef\xbb\xbf", record_line().encode(), b"\n"])
    )
    assert message.startswith("input line 2 is not valid JSON")
    assert len(delivered) == 1


# Lines the decoder cannot take ------------------------------------------------------------


@pytest.mark.parametrize(
    "deep",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a": ' * 10_000 + "1" + "}" * 10_000,
        "[" * 100_000,  # unclosed as well
    ],
    ids=["arrays", "objects", "unclosed"],
)
@pytest.mark.parametrize("text", [False, True], ids=["bytes", "text"])
def test_nesting_too_deep_stops_naming_the_line_after_delivering_the_lines_before(
    deep: str, text: bool
) -> None:
    line = f'{{"type": "RECORD", "stream": "s", "record": {{"email": "{EMAIL}", "t": {deep}}}}}'
    message, delivered = read_error([record_line(), record_line(), line, record_line()], text=text)
    assert message.startswith("input line 3 is nested too deeply to read")
    assert "stopping" in message
    assert len(delivered) == 2


def test_a_callback_that_recurses_too_deep_stops_naming_the_line() -> None:
    def too_deep(message: dict[str, Any]) -> None:
        if message["record"].get("n") == 2:
            raise RecursionError

    with pytest.raises(InputError, match=r"^input line 2 is nested too deeply"):
        read([record_line(n=1), record_line(n=2), record_line(n=3)], on_record=too_deep)


class _OutOfMemoryDecoder:
    """msgspec's decoder as it behaves when a line does not fit in memory."""

    def decode(self, line: bytes | str) -> Any:
        if b"huge" in (line if isinstance(line, bytes) else line.encode()):
            raise MemoryError
        return json.loads(line)


def test_a_line_too_large_for_memory_stops_naming_the_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader_module, "_decoder", _OutOfMemoryDecoder())
    message, delivered = read_error([record_line(), record_line(x="huge"), record_line()])
    assert message.startswith("input line 2 is too large to read")
    assert len(delivered) == 1


def test_running_out_of_memory_in_a_callback_stops_naming_the_line() -> None:
    def out_of_memory(message: dict[str, Any]) -> None:
        if message["record"].get("n") == 3:
            raise MemoryError

    with pytest.raises(InputError, match=r"^input line 3: out of memory processing it"):
        read([record_line(n=1), record_line(n=2), record_line(n=3)], on_record=out_of_memory)


# What still stops the run -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "RECORD", "stream": "s"', "input line 2 is not valid JSON (Input data was"),
        (f"plain {EMAIL}", "input line 2 is not valid JSON (JSON is malformed"),
        ("[1, NaN]", "input line 2 is JSON but not a Singer message object"),
        ("NaN", "input line 2 is JSON but not a Singer message object"),
    ],
)
def test_lines_that_are_not_messages_stop_naming_the_line(line: str, expected: str) -> None:
    message, delivered = read_error([record_line(), line, record_line()])
    assert message.startswith(expected)
    assert len(delivered) == 1


def test_invalid_utf8_stops_naming_the_line() -> None:
    data = record_line().encode() + b"\n" + b'{"type": "RECORD", "x": "\xff"}\n'
    message, delivered = read_error(data)
    # msgspec reports it as bad JSON or bad UTF-8 depending on where the bytes sit.
    assert message.startswith("input line 2 is not valid")
    assert "UTF-8" in message
    assert len(delivered) == 1


def test_blank_lines_are_skipped_and_counted_as_lines() -> None:
    seen, reader = read(["", record_line(), "  \t", record_line(), ""])
    assert len(seen) == 2
    assert reader.line_number == 5


def test_the_fast_path_is_used_for_ordinary_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(NumberedSingerReader, "decode_slowly", lambda self, line: calls.append(1))
    seen, _ = read([record_line(), record_line()])
    assert len(seen) == 2
    assert calls == []
