"""Bad input, fed to the installed console script against the emulator.

Every case is framed the same way: SCHEMA, a valid record BEFORE, the bad input, a valid
record AFTER, a STATE. Then:

- record-level problems are skipped and counted with a reason: exit 0, both valid records
  reach Pinterest, the summary counts the reason, the reject file has a line for the bad
  record (stream, record number, reason; fingerprints only) and the last STATE is emitted;
- stream-level problems stop the run: exit 1, a message naming the stream and record number
  (the input line number for lines that cannot be attributed to a stream), no traceback, no
  STATE, and the record BEFORE the bad line was still delivered while the one AFTER was not
  read.

In every case all requests kept Pinterest's contract (SHA-256 only) and neither the output
nor the reject file carries a raw identifier or the access token. ``docs/bad-input.md`` lists
the outcomes these tests pin down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator

from support import (
    TOKEN,
    Run,
    assert_contract_kept,
    emulator_config,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    state,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

STREAM = "s"
BEFORE = "before@example.com"
AFTER = "after@example.com"
FINAL_STATE = {"bookmarks": {STREAM: "end"}}
IDENTIFIER_FIELDS = ("email", "ios_idfa", "android_id")
FIELDS = ("email", "ios_idfa", "android_id", "audience_key", "flag:in_audience")
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
TEN_MB_EMAIL = "tenmb-" + "x" * 10_000_000 + "@example.com"
# Long raw values are also searched for by their start, so a truncated echo is caught too.
PREFIX_LENGTH = 40
# Shorter raw values (like "   " or "x@y") would match innocent text; they are not searched.
MIN_SEARCHED_LENGTH = 6


# Helpers ------------------------------------------------------------------------------


def framed(bad: Sequence[dict[str, Any] | str], *, head: dict[str, Any] | None = None) -> list[Any]:
    """SCHEMA, BEFORE, the bad input, AFTER, STATE."""
    return [
        head or schema(STREAM, *FIELDS),
        record(STREAM, email=BEFORE),
        *bad,
        record(STREAM, email=AFTER),
        state(FINAL_STATE),
    ]


def raw_strings(value: object) -> list[str]:
    """Every string inside ``value`` (identifier values may be lists or objects)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in raw_strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in raw_strings(item)]
    return []


def searchable(raw: str) -> list[str]:
    """The pieces of ``raw`` that must not appear anywhere in the output."""
    pieces = [raw, raw[:PREFIX_LENGTH]]
    # A raw value with control characters could leak as its printable runs only.
    run = ""
    for char in raw + "\x00":
        if char.isprintable() and not char.isspace():
            run += char
        else:
            pieces.append(run)
            run = ""
    return [piece for piece in pieces if len(piece.strip()) >= MIN_SEARCHED_LENGTH]


def assert_no_leak(run: Run, raws: list[str], reject_text: str = "") -> None:
    """No raw identifier (nor its printable runs or prefix) and no token in any output."""
    texts = {"output": run.output, "reject file": reject_text}
    for raw in [BEFORE, AFTER, *raws]:
        for piece in searchable(raw):
            for where, text in texts.items():
                assert piece not in text, f"raw value {piece[:60]!r} appears in the {where}"
    assert TOKEN not in run.output


def run_bytes(
    tmp_path: Path, config: dict[str, Any], data: bytes, env: dict[str, str] | None = None
) -> Run:
    """Like ``support.run_target`` but with raw bytes on stdin (bad UTF-8, no final newline)."""
    config_path = tmp_path / "config-bytes.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    completed = subprocess.run(
        [*target_command(), "--config", str(config_path)],
        input=data,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Run(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


def line(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def read_rejects(path: Path) -> tuple[str, list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return text, [json.loads(item) for item in text.splitlines()]


def assert_stopped(
    run: Run,
    emulator: Emulator,
    *,
    names: list[str],
    delivered: set[str] | None = None,
    state: list[dict[str, Any]] | None = None,
) -> None:
    """Exit 1 with a clean message, BEFORE delivered, AFTER not read.

    Only a STATE the tap sent before the bad line may be confirmed (``state``); the
    framed inputs send theirs at the end, so normally none is.
    """
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    errors = [text for text in run.stderr.splitlines() if "| ERROR" in text]
    assert errors, run.stderr
    for name in names:
        assert name in errors[-1], errors
    assert run.state_lines == (state or [])
    assert members_by_name(emulator) == {STREAM: delivered or {sha(BEFORE)}}
    assert_contract_kept(emulator)


# Record-level problems: skipped and counted -------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A bad record (record 2 of the stream) and how it must be counted."""

    id: str
    fields: dict[str, Any]
    skip: str | None = None  # the record's skip reason; None when the record is still used
    rejected: tuple[str, ...] = ()  # identifier reasons, in field order
    added: dict[str, frozenset[str]] = field(default_factory=dict)  # extra membership


def bad_email(case_id: str, email: object, reason: str = "email_malformed") -> Skip:
    return Skip(case_id, {"email": email}, "no_valid_identifier", (reason,))


def bad_device(case_id: str, kind: str, value: object, problem: str) -> Skip:
    return Skip(case_id, {kind: value}, "no_valid_identifier", (f"{kind}_{problem}",))


def bad_audience(case_id: str, reason: str, **fields: Any) -> Skip:
    return Skip(case_id, {"email": "skipped.user@example.com", **fields}, reason)


SKIPS = [
    # Membership
    bad_audience("in_audience-string-yes", "in_audience_not_boolean", in_audience="yes"),
    bad_audience("in_audience-integer-1", "in_audience_not_boolean", in_audience=1),
    # Identifiers of the wrong JSON type
    bad_email("email-number", 42, "email_not_a_string"),
    bad_email("email-true", True, "email_not_a_string"),
    bad_email("email-object", {"address": "in.object@example.com"}, "email_not_a_string"),
    bad_email("email-list", ["in.list@example.com"], "email_not_a_string"),
    bad_device("ios_idfa-number", "ios_idfa", 12345, "not_a_string"),
    # NaN and Infinity (Python's json writes them) where the target reads a value
    bad_email("email-NaN", float("nan"), "email_not_a_string"),
    bad_device("android_id-Infinity", "android_id", float("inf"), "not_a_string"),
    bad_audience("in_audience-NaN", "in_audience_not_boolean", in_audience=float("nan")),
    # Nothing to identify the user by
    Skip("no-identifier-at-all", {}, "no_valid_identifier"),
    Skip("identifiers-all-null", dict.fromkeys(IDENTIFIER_FIELDS), "no_valid_identifier"),
    Skip("only-an-unknown-field", {"user_id": "u-123456"}, "no_valid_identifier"),
    bad_email("email-empty-string", "", "email_empty"),
    bad_email("email-whitespace-only", " \t  ", "email_empty"),
    bad_device("ios_idfa-empty-string", "ios_idfa", "", "empty"),
    bad_device("android_id-whitespace-only", "android_id", "   ", "empty"),
    Skip(
        "all-three-invalid",
        {"email": "", "ios_idfa": "nope", "android_id": ZERO_UUID},
        "no_valid_identifier",
        ("email_empty", "ios_idfa_malformed", "android_id_zeroed"),
    ),
    # Invalid emails, several shapes
    bad_email("email-no-at", "plainaddress.example.com"),
    bad_email("email-no-domain", "missing-domain@"),
    bad_email("email-no-local-part", "@missing-local.example.com"),
    bad_email("email-two-ats", "two@@example.com"),
    bad_email("email-dotless-domain", "dotless@localhost"),
    bad_email("email-trailing-dot", "trailing-dot@example.com."),
    bad_email("email-inner-space", "inner space@example.com"),
    bad_email("email-comma", "comma,inside@example.com"),
    bad_email("email-255-chars", "l" * 243 + "@example.com", "email_too_long"),
    bad_email("email-10MB", TEN_MB_EMAIL, "email_too_long"),
    # Control characters in an email
    bad_email("email-NUL", "nul\x00inside@example.com"),
    bad_email("email-BEL", "bell\x07inside@example.com"),
    bad_email("email-ESC", "escape\x1b[31m@example.com"),
    bad_email("email-DEL", "delete\x7finside@example.com"),
    bad_email("email-tab", "tab\tinside@example.com"),
    bad_email("email-newline", "newline\ninside@example.com"),
    bad_email("email-C1-NEL", "next\x85line@example.com"),
    bad_email("email-zero-width-space", "zero\u200bwidth@example.com"),
    bad_email("email-bidi-override", "bidi\u202eoverride@example.com"),
    # Device IDs
    bad_device("ios_idfa-not-uuid", "ios_idfa", "not-a-device-id", "malformed"),
    bad_device("ios_idfa-non-hex", "ios_idfa", "ab12cd34-0000-4000-8000-00000000abcg", "malformed"),
    bad_device(
        "ios_idfa-braces", "ios_idfa", "{ab12cd34-0000-4000-8000-00000000abcd}", "malformed"
    ),
    bad_device("android_id-short", "android_id", "ab12cd34-0000-4000-8000", "malformed"),
    bad_device("ios_idfa-all-zero", "ios_idfa", ZERO_UUID, "zeroed"),
    bad_device("android_id-all-zero", "android_id", ZERO_UUID, "zeroed"),
    bad_device("ios_idfa-all-zero-prehashed", "ios_idfa", sha(ZERO_UUID), "zeroed"),
    # One bad identifier next to a good one: the record is used, the bad value counted.
    Skip(
        "valid-email-with-bad-idfa",
        {"email": "Mixed.User@Example.com", "ios_idfa": "not-a-device-id"},
        None,
        ("ios_idfa_malformed",),
        {STREAM: frozenset({sha("mixed.user@example.com")})},
    ),
    # A boolean in an identifier field is a bad identifier, not an audience flag.
    Skip(
        "ios_idfa-false-is-not-a-flag",
        {"email": "flagless@example.com", "ios_idfa": False},
        None,
        ("ios_idfa_not_a_string",),
        {STREAM: frozenset({sha("flagless@example.com")})},
    ),
    Skip(
        "android_id-true-is-not-a-flag",
        {"email": "flagless2@example.com", "android_id": True},
        None,
        ("android_id_not_a_string",),
        {STREAM: frozenset({sha("flagless2@example.com")})},
    ),
    # Audience names Pinterest would not take: explicit form...
    bad_audience("audience_key-null", "audience_key_null", audience_key=None),
    bad_audience(
        "audience_key-null-in_audience-null",
        "audience_key_null",
        audience_key=None,
        in_audience=None,
    ),
    bad_audience("audience_key-empty", "audience_key_empty", audience_key=""),
    bad_audience("audience_key-whitespace", "audience_key_empty", audience_key=" \t "),
    bad_audience("audience_key-256-chars", "audience_key_too_long", audience_key="k" * 256),
    bad_audience("audience_key-NUL", "audience_key_control_characters", audience_key="v\x00ip"),
    bad_audience("audience_key-C1", "audience_key_control_characters", audience_key="vip\x9b"),
    bad_audience("audience_key-number", "audience_key_not_a_string", audience_key=42),
    bad_audience("audience_key-true", "audience_key_not_a_string", audience_key=True),
    bad_audience("audience_key-list", "audience_key_not_a_string", audience_key=["vip"]),
    # ...and Engage form (the flag's name is the audience name).
    bad_audience("engage-flag-empty-name", "audience_key_empty", **{"": True}),
    bad_audience("engage-flag-256-chars", "audience_key_too_long", **{"f" * 256: True}),
    bad_audience(
        "engage-flag-control-chars", "audience_key_control_characters", **{"a\x07b": True}
    ),
]


@pytest.mark.parametrize("case", SKIPS, ids=[case.id for case in SKIPS])
def test_record_level_problem_is_skipped_and_counted(
    case: Skip, emulator: Emulator, tmp_path: Path
) -> None:
    reject_file = tmp_path / "rejects.jsonl"
    run = run_target(
        tmp_path,
        emulator_config(emulator, reject_file=str(reject_file)),
        framed([record(STREAM, **case.fields)]),
    )

    assert run.returncode == 0, run.stderr
    expected = {STREAM: frozenset({sha(BEFORE), sha(AFTER)})}
    for audience, hashes in case.added.items():
        expected[audience] = expected.get(audience, frozenset()) | hashes
    assert members_by_name(emulator) == expected
    assert run.state_lines[-1] == FINAL_STATE

    # The summary line of the stream counts the skipped record and the rejected values.
    summary = f"Stream '{STREAM}': 3 records read, {2 if case.skip else 3} used"
    if case.skip:
        summary += f", skipped {case.skip}=1"
    if case.rejected:
        counts = ", ".join(f"{reason}=1" for reason in sorted(case.rejected))
        summary += f"; identifiers not sent {counts}"
    assert f"| {summary}\n" in run.stderr, run.stderr

    # One reject line per value not sent, then one for the record; only fingerprints.
    reject_text, rejects = read_rejects(reject_file)
    reasons = [*case.rejected, *([case.skip] if case.skip else [])]
    assert [(r["stream"], r["record_number"], r["reason"]) for r in rejects] == [
        (STREAM, 2, reason) for reason in reasons
    ]
    for reject in rejects:
        fingerprints = reject["identifiers_sha256"]
        assert set(fingerprints) == {
            name for name in IDENTIFIER_FIELDS if case.fields.get(name) is not None
        }
        for name, digest in fingerprints.items():
            raw = case.fields[name]
            # Strings are fingerprinted as received; other JSON values in some JSON form.
            assert digest == sha(raw) if isinstance(raw, str) else len(digest) == 64

    assert_contract_kept(emulator)
    raws = [text for name in IDENTIFIER_FIELDS for text in raw_strings(case.fields.get(name))]
    assert_no_leak(run, raws, reject_text)


# Unusual but valid input: must be added ------------------------------------------------


@dataclass(frozen=True)
class Valid:
    id: str
    bad: list[dict[str, Any] | str]
    added: dict[str, frozenset[str]]


def raw_line(message: dict[str, Any]) -> str:
    """A message serialized with raw (unescaped) UTF-8 characters."""
    return json.dumps(message, ensure_ascii=False)


VALIDS = [
    Valid(
        "unicode-email-escaped",
        [record(STREAM, email="Zoë.Ünïcode@Exämple.COM")],
        {STREAM: frozenset({sha("zoë.ünïcode@exämple.com")})},
    ),
    Valid(
        "unicode-email-raw-utf8",
        [raw_line(record(STREAM, email="Jörg.Straße@Bücher.Example"))],
        {STREAM: frozenset({sha("jörg.straße@bücher.example")})},
    ),
    Valid(
        "idn-email-cjk",
        [raw_line(record(STREAM, email="用户@例子.广告"))],
        {STREAM: frozenset({sha("用户@例子.广告")})},
    ),
    Valid(
        "idn-email-greek-uppercase",
        [record(STREAM, email="ΑΝΝΑ@ΠΑΡΆΔΕΙΓΜΑ.ΔΟΚΙΜΉ")],  # noqa: RUF001
        {STREAM: frozenset({sha("αννα@παράδειγμα.δοκιμή")})},  # noqa: RUF001
    ),
    Valid(
        "idn-email-punycode-domain",
        [record(STREAM, email="Puny@XN--BCHER-KVA.Example")],
        {STREAM: frozenset({sha("puny@xn--bcher-kva.example")})},
    ),
    Valid(
        "email-254-chars",
        [record(STREAM, email="m" * 242 + "@example.com")],
        {STREAM: frozenset({sha("m" * 242 + "@example.com")})},
    ),
    Valid(
        "prehashed-email-uppercase-hex",
        [record(STREAM, email=sha("hashed@example.com").upper())],
        {STREAM: frozenset({sha("hashed@example.com")})},
    ),
    Valid(
        "blank-lines-between-messages",
        ["", "   ", "\t", record(STREAM, email="between@example.com"), "", ""],
        {STREAM: frozenset({sha("between@example.com")})},
    ),
    Valid(
        "audience_key-255-chars",
        [record(STREAM, email="long.name@example.com", audience_key="n" * 255)],
        {"n" * 255: frozenset({sha("long.name@example.com")})},
    ),
    Valid(
        "audience_key-padded-is-trimmed",
        [record(STREAM, email="padded@example.com", audience_key="  vip  ")],
        {"vip": frozenset({sha("padded@example.com")})},
    ),
    Valid(
        "in_audience-without-audience_key-means-stream",
        [record(STREAM, email="nokey@example.com", in_audience=None)],
        {STREAM: frozenset({sha("nokey@example.com")})},
    ),
    # Values a Python tap writes (or a database holds) in a column the target never reads.
    *(
        Valid(
            f"unread-field-{case_id}",
            [
                f'{{"type": "RECORD", "stream": "s", "record": {{"email": "{case_id}@example.com",'
                f' "score": {value}, "scores": [1, {value}]}}}}'
            ],
            {STREAM: frozenset({sha(f"{case_id}@example.com".lower())})},
        )
        for case_id, value in [
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("minus-Infinity", "-Infinity"),
            ("1e999", "1e999"),
            ("400-digit-integer", "9" * 400),
            ("400-digit-decimal", "1" * 400 + ".5"),
            ("5000-digit-integer", "7" * 5000),
        ]
    ),
    Valid(
        "unread-field-nested-500-deep",
        [
            '{"type": "RECORD", "stream": "s", "record": {"email": "deep500@example.com",'
            f' "tree": {"[" * 500}{"]" * 500}}}}}'
        ],
        {STREAM: frozenset({sha("deep500@example.com")})},
    ),
]


@pytest.mark.parametrize("case", VALIDS, ids=[case.id for case in VALIDS])
def test_unusual_but_valid_input_is_added(case: Valid, emulator: Emulator, tmp_path: Path) -> None:
    reject_file = tmp_path / "rejects.jsonl"
    run = run_target(
        tmp_path, emulator_config(emulator, reject_file=str(reject_file)), framed(case.bad)
    )

    assert run.returncode == 0, run.stderr
    expected = {STREAM: frozenset({sha(BEFORE), sha(AFTER)})}
    for audience, hashes in case.added.items():
        expected[audience] = expected.get(audience, frozenset()) | hashes
    assert members_by_name(emulator) == expected
    assert run.state_lines[-1] == FINAL_STATE
    assert f"Stream '{STREAM}': 3 records read, 3 used\n" in run.stderr
    assert not reject_file.exists() or not reject_file.read_text(encoding="utf-8")
    assert_contract_kept(emulator)
    raws = [
        text
        for message in case.bad
        if isinstance(message, dict)
        for text in raw_strings(message.get("record", {}).get("email"))
    ]
    assert_no_leak(run, raws)


def test_duplicate_users_are_sent_once(emulator: Emulator, tmp_path: Path) -> None:
    duplicates = [
        record(STREAM, email="dup@example.com"),
        record(STREAM, email="  DUP@Example.com "),
        record(STREAM, email="dup@example.com", in_audience=True),
        record(STREAM, email=sha("dup@example.com")),
        record(STREAM, email=BEFORE),
        record(STREAM, email=AFTER),
    ]
    run = run_target(tmp_path, emulator_config(emulator), framed(duplicates))

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {STREAM: {sha(BEFORE), sha(AFTER), sha("dup@example.com")}}
    writes = [entry for entry in emulator.requests() if entry["record_count"] is not None]
    assert sum(entry["record_count"] for entry in writes) == 3, writes
    assert run.state_lines[-1] == FINAL_STATE
    assert_contract_kept(emulator)
    assert_no_leak(run, ["dup@example.com", "  DUP@Example.com "])


def test_one_thousand_audiences_in_one_stream(emulator: Emulator, tmp_path: Path) -> None:
    """Engage form (one record, 1,000 flags) and explicit form (1,000 audience_key values)."""
    names = [f"audience_{n:04d}" for n in range(1000)]
    engage = record(STREAM, email="engage@example.com", **dict.fromkeys(names, True))
    explicit = [record(STREAM, email="explicit@example.com", audience_key=n) for n in names]
    config = emulator_config(emulator, create_audiences=False, max_parallel_requests=8)

    run = run_target(tmp_path, config, framed([engage, *explicit]))

    assert run.returncode == 0, run.stderr
    both = frozenset({sha("engage@example.com"), sha("explicit@example.com")})
    assert members_by_name(emulator) == {
        STREAM: {sha(BEFORE), sha(AFTER)},
        **dict.fromkeys(names, both),
    }
    assert run.state_lines[-1] == FINAL_STATE
    assert f"Stream '{STREAM}': 1003 records read, 1003 used\n" in run.stderr
    assert_contract_kept(emulator)
    assert_no_leak(run, ["engage@example.com", "explicit@example.com"])


# Inputs with nothing to send -----------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "states"),
    [
        pytest.param([], [], id="empty-input"),
        pytest.param(["", "  ", ""], [], id="blank-lines-only"),
        pytest.param([schema(STREAM, "email")], [], id="only-a-schema"),
        pytest.param([state(FINAL_STATE)], [FINAL_STATE], id="state-only"),
        pytest.param(
            [schema(STREAM, "email"), state({"a": 1}), state(FINAL_STATE)],
            [FINAL_STATE],
            id="schema-and-states-only",
        ),
    ],
)
def test_input_without_records_sends_nothing(
    messages: list[Any], states: list[Any], emulator: Emulator, tmp_path: Path
) -> None:
    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert run.returncode == 0, run.stderr
    assert emulator.counters()["total_requests"] == 0
    assert run.state_lines[-1:] == states
    assert "Traceback" not in run.stderr
    assert TOKEN not in run.output


# Stream-level problems: the run stops --------------------------------------------------


@dataclass(frozen=True)
class Stop:
    """A bad line (input line 3) that must stop the run with a message naming ``names``."""

    id: str
    bad: list[dict[str, Any] | str]
    names: tuple[str, ...]
    head: dict[str, Any] | None = None
    raws: tuple[str, ...] = ()


STOPS = [
    Stop(
        "malformed-json-unclosed",
        ['{"type": "RECORD", "stream": "s", "record": {"email": "unclosed@example.com"}'],
        ("input line 3 is not valid JSON",),
        raws=("unclosed@example.com",),
    ),
    Stop(
        "malformed-json-trailing-comma",
        ['{"type": "RECORD", "stream": "s", "record": {"email": "comma@example.com"},}'],
        ("input line 3 is not valid JSON",),
        raws=("comma@example.com",),
    ),
    Stop(
        "not-json-plain-text",
        ["plain text with an email: plain.text@example.com"],
        ("input line 3 is not valid JSON",),
        raws=("plain.text@example.com",),
    ),
    Stop("json-array", ["[1, 2]"], ("input line 3 is JSON but not a Singer message object",)),
    Stop("json-number", ["42"], ("input line 3 is JSON but not a Singer message object",)),
    Stop("json-null", ["null"], ("input line 3 is JSON but not a Singer message object",)),
    Stop(
        "message-without-type",
        [{"stream": STREAM, "record": {"email": "notype@example.com"}}],
        ("input line 3: message has no 'type'",),
        raws=("notype@example.com",),
    ),
    Stop(
        "unknown-message-type",
        [{"type": "RECORDS", "stream": STREAM, "record": {"email": "unknown@example.com"}}],
        ("input line 3: unknown Singer message type 'RECORDS'",),
        raws=("unknown@example.com",),
    ),
    Stop(
        "lowercase-message-type",
        [{"type": "record", "stream": STREAM, "record": {"email": "lower@example.com"}}],
        ("input line 3: unknown Singer message type 'record'",),
    ),
    Stop(
        "record-before-its-schema",
        [record("late", email="late@example.com"), schema("late", "email")],
        ("stream 'late', record 1 (input line 3)", "before the stream's SCHEMA"),
        raws=("late@example.com",),
    ),
    Stop(
        "record-for-unknown-stream",
        [record("ghost", email="ghost@example.com")],
        ("stream 'ghost', record 1 (input line 3)", "before the stream's SCHEMA"),
        raws=("ghost@example.com",),
    ),
    Stop(
        "record-without-record",
        [{"type": "RECORD", "stream": STREAM}],
        ("stream 's', record 2 (input line 3)", "'record' object"),
    ),
    Stop(
        "record-is-a-list",
        [{"type": "RECORD", "stream": STREAM, "record": ["list@example.com"]}],
        ("stream 's', record 2 (input line 3)", "'record' object"),
        raws=("list@example.com",),
    ),
    Stop(
        "record-is-null",
        [{"type": "RECORD", "stream": STREAM, "record": None}],
        ("stream 's', record 2 (input line 3)", "'record' object"),
    ),
    Stop(
        "record-without-stream",
        [{"type": "RECORD", "record": {"email": "nostream@example.com"}}],
        ("input line 3", "'stream' string"),
        raws=("nostream@example.com",),
    ),
    Stop(
        "schema-without-properties",
        [{"type": "SCHEMA", "stream": "t", "schema": {"type": "object"}, "key_properties": []}],
        ("stream 't' (input line 3): the SCHEMA message has no 'schema' object",),
    ),
    Stop(
        "schema-without-schema",
        [{"type": "SCHEMA", "stream": "t", "key_properties": []}],
        ("stream 't' (input line 3): the SCHEMA message has no 'schema' object",),
    ),
    Stop(
        "record-nested-10000-deep",
        [
            '{"type": "RECORD", "stream": "s", "record": {"email": "deep@example.com",'
            f' "tree": {"[" * 10_000}{"]" * 10_000}}}}}'
        ],
        ("input line 3 is nested too deeply to read",),
        raws=("deep@example.com",),
    ),
    Stop(
        "record-objects-nested-10000-deep",
        ['{"type": "RECORD", "stream": "s", "record": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001],
        ("input line 3 is nested too deeply to read",),
    ),
    Stop(
        "bom-not-at-the-start",
        ["\ufeff" + json.dumps(record(STREAM, email="bom.inside@example.com"))],
        ("input line 3 is not valid JSON",),
        raws=("bom.inside@example.com",),
    ),
    Stop(
        "schema-with-an-empty-stream-name",
        [schema("", "email"), record("", email="empty.stream@example.com")],
        ("input line 3: the SCHEMA message's 'stream' name is empty",),
        raws=("empty.stream@example.com",),
    ),
    Stop(
        "schema-with-a-blank-stream-name",
        [schema("  ", "email")],
        ("input line 3: the SCHEMA message's 'stream' name is empty",),
    ),
    Stop(
        "schema-with-a-numeric-stream-name",
        [{**schema(STREAM, "email"), "stream": 42}],
        ("input line 3: the SCHEMA message's 'stream' must be a string",),
    ),
    Stop(
        "record-with-an-empty-stream-name",
        [record("", email="empty.record@example.com")],
        ("input line 3: a RECORD needs a non-empty 'stream' string",),
        raws=("empty.record@example.com",),
    ),
    Stop(
        "key_properties-a-string",
        [{**schema("t", "user_id", "email"), "key_properties": "user_id"}],
        (
            "stream 't' (input line 3): key_properties must be a list of property names, not a "
            'string (write ["user_id"] for one key)',
        ),
    ),
    Stop(
        "key_properties-non-string-items",
        [{**schema("t", "user_id", "email"), "key_properties": ["user_id", 7, None]}],
        (
            "stream 't' (input line 3): key_properties must be a list of strings; it contains "
            "NoneType, int",
        ),
    ),
    Stop(
        "key_properties-an-object",
        [{**schema("t", "user_id", "email"), "key_properties": {"user_id": True}}],
        ("stream 't' (input line 3): key_properties must be a list of property names, not dict",),
    ),
    Stop(
        "record-missing-its-key-property",
        [record(STREAM, email="nokey@example.com")],
        ("stream 's', record 2 (input line 3) lacks key properties ['user_id']",),
        head=schema(STREAM, "user_id", "email", key_properties=["user_id"]),
        raws=("nokey@example.com",),
    ),
]


@pytest.mark.parametrize("case", STOPS, ids=[case.id for case in STOPS])
def test_stream_level_problem_stops_the_run_after_delivering_what_was_read(
    case: Stop, emulator: Emulator, tmp_path: Path
) -> None:
    reject_file = tmp_path / "rejects.jsonl"
    messages = framed(case.bad, head=case.head)
    if case.head is not None:  # the valid records carry the declared key property
        messages[1]["record"]["user_id"] = "u1"
        messages[-2]["record"]["user_id"] = "u2"
    run = run_target(tmp_path, emulator_config(emulator, reject_file=str(reject_file)), messages)

    assert_stopped(run, emulator, names=list(case.names))
    reject_text, rejects = read_rejects(reject_file)
    assert rejects == []
    assert_no_leak(run, list(case.raws), reject_text)


def test_truncated_last_line_stops_confirming_only_the_state_before_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The tap died mid-write: the input ends inside a RECORD, without a newline. What was
    # read before is delivered, so the STATE sent before the bad line can be confirmed.
    data = (
        line(schema(STREAM, "email"))
        + line(record(STREAM, email=BEFORE))
        + line(state(FINAL_STATE))
        + b'{"type": "RECORD", "stream": "s", "record": {"email": "truncated@exa'
    )
    run = run_bytes(tmp_path, emulator_config(emulator), data)

    assert_stopped(run, emulator, names=["input line 4 is not valid JSON"], state=[FINAL_STATE])
    assert_no_leak(run, ["truncated@exa"])


def test_last_line_without_newline_is_still_read(emulator: Emulator, tmp_path: Path) -> None:
    data = (
        line(schema(STREAM, "email"))
        + line(record(STREAM, email=BEFORE))
        + line(record(STREAM, email=AFTER))
        + json.dumps(state(FINAL_STATE)).encode()
    )
    run = run_bytes(tmp_path, emulator_config(emulator), data)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {STREAM: {sha(BEFORE), sha(AFTER)}}
    assert run.state_lines[-1] == FINAL_STATE
    assert_contract_kept(emulator)


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
def test_a_leading_utf8_bom_is_ignored(errors: str, emulator: Emulator, tmp_path: Path) -> None:
    # Windows tools (PowerShell's Out-File, Notepad) start files with a byte-order mark.
    data = (
        b"\xef\xbb\xbf"
        + line(schema(STREAM, "email"))
        + line(record(STREAM, email=BEFORE))
        + line(record(STREAM, email=AFTER))
        + line(state(FINAL_STATE))
    )
    run = run_bytes(
        tmp_path, emulator_config(emulator), data, env={"PYTHONIOENCODING": f"utf-8:{errors}"}
    )

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {STREAM: {sha(BEFORE), sha(AFTER)}}
    assert run.state_lines[-1] == FINAL_STATE
    assert_contract_kept(emulator)


BAD_UTF8_IN_STRING = (
    b'{"type": "RECORD", "stream": "s", "record": {"email": "bad\xff\xfeutf8@example.com"}}\n'
)
# Over 8 KB of valid records before the bad line, so it does not sit in the first read chunk.
PADDING = 300


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
@pytest.mark.parametrize("padding", [0, PADDING], ids=["bad-line-3", "bad-line-303"])
def test_invalid_utf8_stops_naming_the_input_line(
    errors: str, padding: int, emulator: Emulator, tmp_path: Path
) -> None:
    # Whatever the locale makes of standard input (surrogateescape under C/C.UTF-8, strict
    # elsewhere), the bad bytes must be reported on their own line, after BEFORE was sent.
    pads = [f"pad.{n:04d}@example.com" for n in range(padding)]
    data = (
        line(schema(STREAM, "email"))
        + b"".join(line(record(STREAM, email=pad)) for pad in pads)
        + line(record(STREAM, email=BEFORE))
        + BAD_UTF8_IN_STRING
        + line(record(STREAM, email=AFTER))
        + line(state(FINAL_STATE))
    )
    run = run_bytes(
        tmp_path, emulator_config(emulator), data, env={"PYTHONIOENCODING": f"utf-8:{errors}"}
    )

    assert_no_leak(run, ["utf8@example.com", *pads])
    assert_stopped(
        run,
        emulator,
        names=[f"input line {3 + padding}", "UTF-8"],
        delivered={sha(BEFORE), *map(sha, pads)},
    )


def test_invalid_utf8_outside_a_string_stops_naming_the_input_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    data = (
        line(schema(STREAM, "email"))
        + line(record(STREAM, email=BEFORE))
        + b'{"type": "RECORD", "stream": "s", \xc3\x28 "record": {}}\n'
        + line(record(STREAM, email=AFTER))
        + line(state(FINAL_STATE))
    )
    run = run_bytes(tmp_path, emulator_config(emulator), data)

    assert_stopped(run, emulator, names=["input line 3 is not valid JSON"])


# An identifier nested just under the decoder's limit -----------------------------------

NESTED_EMAIL = "nested.deep@example.com"
NESTED_990_DEEP = (
    '{"type": "RECORD", "stream": "s", "record": {"email":'
    f' {"[" * 990}"{NESTED_EMAIL}"{"]" * 990}}}}}'
)


def test_an_identifier_nested_990_deep_stops_or_is_rejected_never_silently(
    emulator: Emulator, tmp_path: Path
) -> None:
    """msgspec decodes it; what happens next depends on the interpreter's recursion limit.

    Python 3.11 counts the frames of C code (the JSON encoder that fingerprints the value
    for the reject file) against its limit of about 1,000, so reading the value overflows
    it: the run stops naming the line, as for a line nested too deeply to decode. Python
    3.12 and later track C recursion apart: the value is read, is not a string, and the
    record is skipped and counted like any other email of the wrong type.
    """
    reject_file = tmp_path / "rejects.jsonl"
    run = run_target(
        tmp_path, emulator_config(emulator, reject_file=str(reject_file)), framed([NESTED_990_DEEP])
    )
    reject_text, rejects = read_rejects(reject_file)

    if sys.version_info < (3, 12):
        assert_stopped(run, emulator, names=["input line 3 is nested too deeply"])
        assert rejects == []
    else:
        assert run.returncode == 0, run.stderr
        assert members_by_name(emulator) == {STREAM: frozenset({sha(BEFORE), sha(AFTER)})}
        assert run.state_lines[-1] == FINAL_STATE
        summary = (
            f"Stream '{STREAM}': 3 records read, 2 used, skipped no_valid_identifier=1; "
            "identifiers not sent email_not_a_string=1"
        )
        assert f"| {summary}\n" in run.stderr, run.stderr
        assert [(r["stream"], r["record_number"], r["reason"]) for r in rejects] == [
            (STREAM, 2, "email_not_a_string"),
            (STREAM, 2, "no_valid_identifier"),
        ]
        assert_contract_kept(emulator)
    assert_no_leak(run, [NESTED_EMAIL], reject_text)
