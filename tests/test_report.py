"""Tests for target_pinterest_audiences.report (run counters) and .rejects (reject file)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import pytest

from target_pinterest_audiences.rejects import RejectFile, fingerprint
from target_pinterest_audiences.report import (
    AudienceCounts,
    AudienceReport,
    ReasonCounter,
    RunReport,
    StreamReport,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- counters


def test_audience_and_stream_are_created_once() -> None:
    report = RunReport()
    first = report.audience("vip")
    first.added += 3
    assert report.audience("vip") is first
    assert report.audience("vip").added == 3
    assert report.audience("other") is not first
    assert list(report.audiences) == ["vip", "other"]

    stream = report.stream("users")
    stream.records += 2
    assert report.stream("users") is stream
    assert list(report.streams) == ["users"]


def test_new_reports_start_at_zero() -> None:
    audience = AudienceReport("vip")
    assert (audience.added, audience.removed, audience.requests, audience.failed) == (0, 0, 0, 0)
    assert audience.already_absent == 0
    assert audience.skipped == Counter()
    assert audience.list_id is None
    assert audience.list_created is False
    stream = StreamReport("users")
    assert (stream.records, stream.used) == (0, 0)
    assert stream.skipped == Counter()


def test_counters_are_not_shared_between_instances() -> None:
    a, b = AudienceReport("a"), AudienceReport("b")
    a.skipped["x"] += 1
    assert b.skipped == Counter()
    s, t = StreamReport("s"), StreamReport("t")
    s.identifiers_rejected["email_malformed"] += 1
    assert t.identifiers_rejected == Counter()


def test_count_adds_what_one_event_changes() -> None:
    report = RunReport()
    report.count("vip", requests=1, added=1900)
    report.count("vip", requests=1, removed=3)
    report.count("vip", failed=2, already_absent=5)
    report.count("new")  # only puts the audience in the report

    vip = report.audience("vip")
    assert (vip.requests, vip.added, vip.removed, vip.failed, vip.already_absent) == (
        2,
        1900,
        3,
        2,
        5,
    )
    assert list(report.audiences) == ["vip", "new"]
    assert report.audience("new") == AudienceReport("new")


def test_count_reason_adds_to_one_reason() -> None:
    report = RunReport()
    report.count_reason("vip", "skipped", "no_valid_identifier")
    report.count_reason("vip", "skipped", "no_valid_identifier", 2)
    report.count_reason("vip", "identifiers_rejected", "email_malformed")
    report.count_reason("vip", "rejected_by_pinterest", "http_400")

    vip = report.audience("vip")
    assert vip.skipped == {"no_valid_identifier": 3}
    assert vip.identifiers_rejected == {"email_malformed": 1}
    assert vip.rejected_by_pinterest == {"http_400": 1}


def test_the_counting_names_are_the_audience_reports_own() -> None:
    """AudienceCounts and ReasonCounter name AudienceReport fields of the right kind."""
    fresh = AudienceReport("a")
    for name in AudienceCounts.__annotations__:
        assert type(getattr(fresh, name)) is int, name
    for name in get_args(ReasonCounter):
        assert isinstance(getattr(fresh, name), Counter), name


def test_updating_holds_the_lock_while_the_entry_is_written() -> None:
    report = RunReport()
    with report.updating("vip") as entry:
        assert report.lock.locked()
        entry.list_id = "123"
    assert not report.lock.locked()
    assert report.audience("vip").list_id == "123"


def test_counts_from_many_threads_add_up_exactly() -> None:
    report = RunReport()

    def work() -> None:
        for _ in range(2000):
            report.count("vip", requests=1, added=2)
            report.count_reason("vip", "rejected_by_pinterest", "http_400")

    threads = [threading.Thread(target=work) for _ in range(8)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads all the time: an unlocked add loses counts
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)

    vip = report.audience("vip")
    assert (vip.requests, vip.added) == (16_000, 32_000)
    assert vip.rejected_by_pinterest == {"http_400": 16_000}


# --------------------------------------------------------------------------- summary lines


def test_summary_without_records() -> None:
    assert RunReport().summary_lines() == ["No records were read."]
    assert RunReport(dry_run=True).summary_lines() == ["No records were read."]


def _filled(report: RunReport) -> RunReport:
    stream = report.stream("users")
    stream.records = 10
    stream.used = 7
    stream.skipped.update({"no_valid_identifier": 2, "audience_key_empty": 1})
    stream.identifiers_rejected.update({"email_malformed": 3, "ios_idfa_zeroed": 1})
    vip = report.audience("vip")
    vip.list_id = "654321"
    vip.list_created = True
    vip.added = 5
    vip.removed = 2
    vip.requests = 3
    vip.skipped.update({"email_malformed": 3})
    churned = report.audience("churned")
    churned.removed = 4
    churned.already_absent = 4
    churned.requests = 0
    return report


def test_summary_lines_live_run() -> None:
    report = _filled(RunReport())
    assert report.summary_lines() == [
        "Stream 'users': 10 records read, 7 used, skipped audience_key_empty=1, "
        "no_valid_identifier=2; identifiers not sent email_malformed=3, ios_idfa_zeroed=1",
        "Audience 'vip' (list 654321, created this run): add 5, remove 2, send 3 requests, "
        "skipped email_malformed=3",
        "Audience 'churned' (list not created): add 0, remove 4, send 0 requests, "
        "4 removals not needed (never added to the list)",
    ]


def test_summary_lines_dry_run_says_would() -> None:
    report = _filled(RunReport(dry_run=True))
    lines = report.summary_lines()
    assert lines[0].startswith("Stream 'users': 10 records read, 7 used")
    assert lines[1] == (
        "Audience 'vip' (list found by name, or created, on a real run): would add 5, "
        "would remove 2, would send 3 requests, skipped email_malformed=3"
    )
    assert lines[2].startswith(
        "Audience 'churned' (list found by name, or created, on a real run): would add 0, "
        "would remove 4, would send 0 requests"
    )
    for line in lines[1:]:
        assert " add " not in line.replace("would add ", "")


def test_summary_live_run_never_says_would() -> None:
    lines = _filled(RunReport()).summary_lines()
    assert not any("would" in line for line in lines)


def test_summary_existing_list_not_created_this_run() -> None:
    report = RunReport()
    report.audience("vip").list_id = "111"
    assert report.summary_lines() == [
        "Audience 'vip' (list 111): add 0, remove 0, send 0 requests",
    ]


@pytest.mark.parametrize(
    ("field", "value", "suffix"),
    [
        (
            "rejected_by_pinterest",
            Counter({"INVALID": 2, "DUPLICATE": 1}),
            ", rejected by Pinterest DUPLICATE=1, INVALID=2",
        ),
        ("failed", 17, ", FAILED 17 identifiers"),
        ("pinterest_status", "TOO_SMALL", ", Pinterest status TOO_SMALL"),
        (
            "mirror",
            {"before": 5, "added": 2, "removed": 1, "unchanged": 4, "after": 6},
            "; mirror: 5 members before, 2 added, 1 removed, 4 unchanged, 6 after",
        ),
        ("already_absent", 3, ", 3 removals not needed (never added to the list)"),
        ("skipped", Counter({"z": 1, "a": 9}), ", skipped a=9, z=1"),
    ],
)
def test_summary_optional_parts(field: str, value: object, suffix: str) -> None:
    report = RunReport()
    audience = report.audience("vip")
    audience.list_id = "9"
    setattr(audience, field, value)
    assert report.summary_lines() == [
        "Audience 'vip' (list 9): add 0, remove 0, send 0 requests" + suffix
    ]


def test_log_summary_logs_each_line(caplog: pytest.LogCaptureFixture) -> None:
    report = _filled(RunReport(dry_run=True))
    with caplog.at_level(logging.INFO, logger="target_pinterest_audiences.report"):
        report.log_summary()
    assert [r.getMessage() for r in caplog.records] == report.summary_lines()


# --------------------------------------------------------------------------- to_dict / JSON


def test_to_dict() -> None:
    report = _filled(RunReport())
    report.audience("vip").mirror = {"before": 5}
    report.audience("vip").rejected_by_pinterest["INVALID"] += 1
    assert report.to_dict() == {
        "outcome": "succeeded",
        "error": None,
        "dry_run": False,
        "streams": [
            {
                "stream": "users",
                "records": 10,
                "used": 7,
                "deletes": 0,
                "skipped": {"audience_key_empty": 1, "no_valid_identifier": 2},
                "identifiers_rejected": {"email_malformed": 3, "ios_idfa_zeroed": 1},
            }
        ],
        "audiences": [
            {
                "audience": "vip",
                "list_id": "654321",
                "list_created": True,
                "audience_id": None,
                "audience_created": False,
                "added": 5,
                "removed": 2,
                "requests": 3,
                "failed": 0,
                "already_absent": 0,
                "skipped": {"email_malformed": 3},
                "identifiers_rejected": {},
                "rejected_by_pinterest": {"INVALID": 1},
                "pinterest_status": None,
                "mirror": {"before": 5},
                "pinterest_audience_size": None,
                "pinterest_audience_status": None,
                "match_rate": None,
                "members": None,
            },
            {
                "audience": "churned",
                "list_id": None,
                "list_created": False,
                "audience_id": None,
                "audience_created": False,
                "added": 0,
                "removed": 4,
                "requests": 0,
                "failed": 0,
                "already_absent": 4,
                "skipped": {},
                "identifiers_rejected": {},
                "rejected_by_pinterest": {},
                "pinterest_status": None,
                "pinterest_audience_size": None,
                "pinterest_audience_status": None,
                "match_rate": None,
                "members": None,
            },
        ],
    }


# --------------------------------------------------------------------------- match rate


def _matched(size: int | None, status: str | None, members: int | None) -> AudienceReport:
    audience = AudienceReport("vip", list_id="9")
    audience.pinterest_audience_size = size
    audience.pinterest_audience_status = status
    audience.ledger_members = members
    return audience


@pytest.mark.parametrize(
    ("size", "members", "rate"),
    [(303, 400, 303 / 400), (0, 1000, 0.0), (120, 100, 1.2), (5, 0, None), (None, 400, None)],
)
def test_match_rate_is_size_over_members_where_both_are_known(
    size: int | None, members: int, rate: float | None
) -> None:
    audience = _matched(size, "READY", members)
    assert audience.match_rate == rate
    data = audience.to_dict()
    assert data["match_rate"] == rate
    assert data["members"] == members
    assert data["pinterest_audience_size"] == size  # None stays None, never 0


def test_match_rate_is_none_without_a_member_count() -> None:
    audience = _matched(303, "READY", None)  # changes mode
    assert audience.match_rate is None
    assert (audience.to_dict()["match_rate"], audience.to_dict()["members"]) == (None, None)


@pytest.mark.parametrize(
    ("size", "status", "members", "suffix"),
    [
        (
            303,
            "READY",
            400,
            "; audience READY: Pinterest matched 303 of 400 members (76%) as of now; "
            "matching can lag uploads by up to 24-48 hours",
        ),
        (
            4,
            "TOO_SMALL",
            1000,
            "; audience TOO_SMALL: Pinterest matched 4 of 1000 members (0.4%) as of now; "
            "matching can lag uploads by up to 24-48 hours",
        ),
        (
            303,
            "READY",
            None,
            "; audience READY: Pinterest matched 303 users as of now; "
            "matching can lag uploads by up to 24-48 hours",
        ),
        (
            None,
            "INITIALIZING",
            400,
            "; audience INITIALIZING: Pinterest has not sized it yet; "
            "matching can lag uploads by up to 24-48 hours",
        ),
        (None, None, 400, ""),  # the audience was not read back: nothing to say
    ],
)
def test_summary_says_what_pinterest_matched(
    size: int | None, status: str | None, members: int | None, suffix: str
) -> None:
    report = RunReport()
    report.audiences["vip"] = _matched(size, status, members)
    assert report.summary_lines() == [
        "Audience 'vip' (list 9): add 0, remove 0, send 0 requests" + suffix
    ]


def test_to_dict_sorts_counter_keys() -> None:
    stream = StreamReport("s")
    stream.skipped.update({"zeta": 1, "alpha": 2, "mid": 3})
    assert list(stream.to_dict()["skipped"]) == ["alpha", "mid", "zeta"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_write_json_round_trip(tmp_path: Path, dry_run: bool) -> None:
    report = _filled(RunReport(dry_run=dry_run))
    path = tmp_path / "nested" / "dir" / "report.json"
    report.write_json(path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert json.loads(text) == report.to_dict()
    assert json.loads(text)["dry_run"] is dry_run


def test_write_json_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    report = RunReport()
    report.write_json(path)
    assert json.loads(path.read_text()) == {
        "outcome": "succeeded",
        "error": None,
        "dry_run": False,
        "streams": [],
        "audiences": [],
    }
    report.audience("a").added = 1
    report.write_json(path)
    assert json.loads(path.read_text())["audiences"][0]["added"] == 1


# --------------------------------------------------------------------------- rejects


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Test@Example.com ", sha("Test@Example.com ")),  # raw, not normalized
        ("", sha("")),
        ("JOSÉ@Exämple.com", sha("JOSÉ@Exämple.com")),
        (12345, sha("12345")),
        (1.5, sha("1.5")),
        (True, sha("true")),
        (["a", 1], sha('["a", 1]')),
        ({"b": 1, "a": 2}, sha('{"a": 2, "b": 1}')),  # sorted keys
    ],
)
def test_fingerprint(value: object, expected: str) -> None:
    assert fingerprint(value) == expected


def test_fingerprint_known_vector() -> None:
    assert (
        fingerprint("test@example.com")
        == "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    )


RAW_EMAIL = "  Bad..Email@@Example.COM "
RAW_IDFA = "00000000-0000-0000-0000-000000000000"
RAW_ANDROID = "not-a-real-android-id-ZZ42"
RAW_NAME = "Alice Quux-Zebrafish"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_reject_sink_writes_jsonl_with_fingerprints_only(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rejects.jsonl"
    sink = RejectFile(path)
    record = {
        "email": RAW_EMAIL,
        "ios_idfa": RAW_IDFA,
        "android_id": RAW_ANDROID,
        "name": RAW_NAME,
        "audience_key": "vip",
    }
    sink.write("users", 7, "email_malformed", record)
    sink.write("users", 7, "ios_idfa_zeroed", record)
    sink.write("other", 12, "no_valid_identifier", {"email": None, "ios_idfa": 5})
    sink.close()

    assert sink.lines_written == 3
    text = path.read_text(encoding="utf-8")
    for raw in (RAW_EMAIL, RAW_EMAIL.strip(), RAW_IDFA, RAW_ANDROID, RAW_NAME, "Example.COM"):
        assert raw not in text
    assert "vip" not in text  # non-identifier fields are not copied either
    assert text.count("\n") == 3

    lines = _read_lines(path)
    assert lines == [
        {
            "stream": "users",
            "record_number": 7,
            "reason": "email_malformed",
            "identifiers_sha256": {
                "android_id": sha(RAW_ANDROID),
                "email": sha(RAW_EMAIL),
                "ios_idfa": sha(RAW_IDFA),
            },
        },
        {
            "stream": "users",
            "record_number": 7,
            "reason": "ios_idfa_zeroed",
            "identifiers_sha256": {
                "android_id": sha(RAW_ANDROID),
                "email": sha(RAW_EMAIL),
                "ios_idfa": sha(RAW_IDFA),
            },
        },
        {
            "stream": "other",
            "record_number": 12,
            "reason": "no_valid_identifier",
            "identifiers_sha256": {"ios_idfa": sha("5")},
        },
    ]
    # Keys appear in a stable order, one compact JSON object per line.
    first = text.splitlines()[0]
    assert first.startswith('{"stream":"users","record_number":7,"reason":"email_malformed",')
    assert list(lines[0]["identifiers_sha256"]) == ["android_id", "email", "ios_idfa"]


def test_reject_sink_fingerprint_is_of_the_raw_value_not_the_normalized_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rejects.jsonl"
    sink = RejectFile(path)
    sink.write("s", 1, "r", {"email": " TEST@example.com"})
    sink.close()
    (line,) = _read_lines(path)
    assert line["identifiers_sha256"]["email"] == sha(" TEST@example.com")
    assert line["identifiers_sha256"]["email"] != sha("test@example.com")


def test_reject_sink_without_path_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sink = RejectFile(None)
    sink.write("users", 1, "email_malformed", {"email": RAW_EMAIL})
    sink.close()
    assert sink.lines_written == 0
    assert list(tmp_path.iterdir()) == []


def test_reject_sink_creates_no_file_until_first_write(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "rejects.jsonl"
    sink = RejectFile(path)
    sink.close()
    assert not path.exists()
    assert not path.parent.exists()


def test_reject_sink_appends_across_instances_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    first = RejectFile(path)
    first.write("s", 1, "a", {})
    first.close()
    first.close()  # closing twice is harmless
    first.write("s", 2, "b", {})  # reopens in append mode
    first.close()
    second = RejectFile(path)
    second.write("s", 3, "c", {"email": "x"})
    second.close()
    lines = _read_lines(path)
    assert [(line["record_number"], line["reason"]) for line in lines] == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]
    assert lines[0]["identifiers_sha256"] == {}
    assert first.lines_written == 2
    assert second.lines_written == 1


# --------------------------------------------------------------------------- outcome


def test_a_failed_run_says_so_in_the_summary_and_the_json() -> None:
    report = RunReport()
    audience = report.audience("vip")
    audience.list_id = "9"
    audience.failed = 12
    report.failed("GET /x still failing: could not reach Pinterest; check api_url")
    report.failed("a later, consequential error")  # the first reason is the one kept

    assert report.outcome == "failed"
    assert report.summary_lines() == [
        "Audience 'vip' (list 9): add 0, remove 0, send 0 requests, FAILED 12 identifiers",
        "Run FAILED: 12 identifier changes read were not acknowledged by Pinterest (counted "
        "as FAILED above): GET /x still failing: could not reach Pinterest; check api_url",
    ]
    data = report.to_dict()
    assert data["outcome"] == "failed"
    assert data["error"] == "GET /x still failing: could not reach Pinterest; check api_url"
