"""The end-of-run report: Pinterest's list status, the JSON report file, the progress line.

Each test runs the installed console script against the emulator, whose list status follows
Pinterest's rule: READY with at least 100 members, TOO_SMALL below.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from target_pinterest_audiences.emulator import Emulator

from support import (
    AD_ACCOUNT,
    TOKEN,
    assert_contract_kept,
    emulator_config,
    lists_by_name,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

PROGRESS = re.compile(
    r"Progress: (\d+) records read \((\d+)/s\), (\d+) identifiers added and (\d+) removed "
    r"\(acknowledged by Pinterest\), (\d+) requests"
)
READ_BACK_ROUTE = "GET /ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}"


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n}@example.com" for n in range(count)]


def vip_stream(emails: list[str]) -> list[dict[str, Any] | str]:
    return [schema("vip", "email"), *(record("vip", email=email) for email in emails)]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| WARNING" in line]


# Pinterest's list status --------------------------------------------------------------


def test_a_list_below_100_members_is_reported_too_small(emulator: Emulator, tmp_path: Path) -> None:
    emails = users(99)

    run = run_target(tmp_path, emulator_config(emulator), vip_stream(emails))

    assert run.returncode == 0, run.stderr
    list_id = lists_by_name(emulator)["vip"]["id"]
    assert emulator.members(list_id) == {sha(email) for email in emails}
    summary = [line for line in run.stderr.splitlines() if "Audience 'vip'" in line]
    assert len(summary) == 1, summary
    assert ", Pinterest status TOO_SMALL; audience TOO_SMALL" in summary[0], summary
    assert f"list {list_id}, created this run" in summary[0]
    too_small = [line for line in warnings(run.stderr) if "TOO_SMALL" in line]
    assert len(too_small) == 1, warnings(run.stderr)
    assert f"List 'vip' ({list_id}) is TOO_SMALL" in too_small[0]
    assert emulator.counters()["requests_by_route"][READ_BACK_ROUTE] == 1
    assert_contract_kept(emulator)


def test_a_list_of_100_members_is_reported_ready(emulator: Emulator, tmp_path: Path) -> None:
    emails = users(100)

    run = run_target(tmp_path, emulator_config(emulator), vip_stream(emails))

    assert run.returncode == 0, run.stderr
    list_id = lists_by_name(emulator)["vip"]["id"]
    assert len(emulator.members(list_id)) == 100
    assert "add 100, remove 0" in run.stderr
    assert ", Pinterest status READY" in run.stderr
    assert "TOO_SMALL" not in run.stderr
    assert not [line for line in warnings(run.stderr) if "vip" in line]
    assert emulator.counters()["requests_by_route"][READ_BACK_ROUTE] == 1


def test_status_is_read_back_for_every_touched_list(emulator: Emulator, tmp_path: Path) -> None:
    messages = [
        schema("s", "email", "audience_key"),
        *(record("s", email=email, audience_key="big") for email in users(120, "big")),
        *(record("s", email=email, audience_key="small") for email in users(3, "small")),
    ]

    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert run.returncode == 0, run.stderr
    ids = {name: item["id"] for name, item in lists_by_name(emulator).items()}
    assert re.search(r"Audience 'big' \(.*\): add 120, .*Pinterest status READY;", run.stderr, re.M)
    assert re.search(
        r"Audience 'small' \(.*\): add 3, .*Pinterest status TOO_SMALL;", run.stderr, re.M
    )
    too_small = [line for line in warnings(run.stderr) if "TOO_SMALL" in line]
    assert len(too_small) == 1
    assert f"List 'small' ({ids['small']})" in too_small[0]
    read_back = sorted(r["path"] for r in emulator.requests() if r["route"] == READ_BACK_ROUTE)
    assert read_back == sorted(
        f"/v5/ad_accounts/{AD_ACCOUNT}/customer_lists/{list_id}" for list_id in ids.values()
    )


def test_report_list_status_false_reads_no_list_back(emulator: Emulator, tmp_path: Path) -> None:
    run = run_target(
        tmp_path, emulator_config(emulator, report_list_status=False), vip_stream(users(5))
    )

    assert run.returncode == 0, run.stderr
    assert len(members_by_name(emulator)["vip"]) == 5
    assert READ_BACK_ROUTE not in emulator.counters()["requests_by_route"]
    assert not [r for r in emulator.requests() if re.search(r"/customer_lists/\d+$", r["path"])]
    assert "Pinterest status" not in run.stderr
    assert "TOO_SMALL" not in run.stderr


# The report file ----------------------------------------------------------------------


def test_report_file_has_the_exact_structure_and_numbers(
    emulator: Emulator, tmp_path: Path
) -> None:
    # "vip" already exists on Pinterest (made by hand: no audience on it yet).
    response = requests.post(
        f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/customer_lists",
        json={
            "name": "vip",
            "records": f"{sha('old1@example.com')},{sha('old2@example.com')}",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    vip_id = response.json()["id"]
    report_path = tmp_path / "out" / "report.json"
    messages = [
        schema("buyers", "email", "audience_key", "flag:in_audience"),
        record("buyers", email="a@example.com", audience_key="vip"),
        record("buyers", email=" B@Example.com ", audience_key="vip"),
        record("buyers", email="old1@example.com", audience_key="vip", in_audience=False),
        record("buyers", email="nope", audience_key="vip"),  # no valid identifier
        record("buyers", email="d@example.com", audience_key="vip", in_audience="yes"),
        schema("engage", "email", "ios_idfa", "flag:newsletter"),
        record("engage", email="e@example.com", newsletter=True),
        record(
            "engage",
            email="f@example.com",
            ios_idfa="00000000-0000-0000-0000-000000000000",  # zeroed: not sent
            newsletter=True,
        ),
    ]

    run = run_target(tmp_path, emulator_config(emulator, report_path=str(report_path)), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {
        "vip": {sha("old2@example.com"), sha("a@example.com"), sha("b@example.com")},
        "newsletter": {sha("e@example.com"), sha("f@example.com")},
    }
    newsletter_id = lists_by_name(emulator)["newsletter"]["id"]
    audiences = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["audiences"]
    audience_ids = {a["rule"]["customer_list_id"]: a["id"] for a in audiences}
    assert set(audience_ids) == {vip_id, newsletter_id}

    report = json.loads(report_path.read_text(encoding="utf-8"))

    assert set(report) == {"outcome", "error", "dry_run", "streams", "audiences"}
    assert report["outcome"] == "succeeded"
    assert report["error"] is None
    assert report["dry_run"] is False
    assert report["streams"] == [
        {
            "stream": "buyers",
            "records": 5,
            "used": 3,
            "deletes": 0,
            "skipped": {"in_audience_not_boolean": 1, "no_valid_identifier": 1},
            "identifiers_rejected": {"email_malformed": 1},
        },
        {
            "stream": "engage",
            "records": 2,
            "used": 2,
            "deletes": 0,
            "skipped": {},
            "identifiers_rejected": {"ios_idfa_zeroed": 1},
        },
    ]
    by_name = {a["audience"]: a for a in report["audiences"]}
    assert len(by_name) == len(report["audiences"]) == 2
    assert by_name["vip"] == {
        "audience": "vip",
        "list_id": vip_id,
        "list_created": False,
        "audience_id": audience_ids[vip_id],
        "audience_created": True,
        "added": 2,
        "removed": 1,
        "requests": 2,
        "failed": 0,
        "already_absent": 0,
        "skipped": {"no_valid_identifier": 1},
        "identifiers_rejected": {"email_malformed": 1},
        "rejected_by_pinterest": {},
        "pinterest_status": "TOO_SMALL",
        "pinterest_audience_size": 3,
        "pinterest_audience_status": "TOO_SMALL",
        "match_rate": None,  # changes mode: the target does not know the list's members
        "members": None,
    }
    assert by_name["newsletter"] == {
        "audience": "newsletter",
        "list_id": newsletter_id,
        "list_created": True,
        "audience_id": audience_ids[newsletter_id],
        "audience_created": True,
        "added": 2,
        "removed": 0,
        "requests": 1,
        "failed": 0,
        "already_absent": 0,
        "skipped": {},
        "identifiers_rejected": {"ios_idfa_zeroed": 1},
        "rejected_by_pinterest": {},
        "pinterest_status": "TOO_SMALL",
        "pinterest_audience_size": 2,
        "pinterest_audience_status": "TOO_SMALL",
        "match_rate": None,
        "members": None,
    }
    # The counts match what Pinterest saw.
    writes = [r for r in emulator.requests() if r["operation_type"]]
    assert sorted((r["operation_type"], r["record_count"]) for r in writes) == [
        ("ADD", 2),
        ("CREATE", 2),  # the hand-made list
        ("CREATE", 2),  # newsletter
        ("REMOVE", 1),
    ]
    # No raw identifier in the report.
    text = report_path.read_text(encoding="utf-8")
    assert "@example.com" not in text
    assert_contract_kept(emulator)


def test_dry_run_writes_the_report_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    config = {
        "ad_account_id": AD_ACCOUNT,
        "dry_run": True,
        "api_url": emulator.url,
        "report_path": str(report_path),
    }
    messages = [
        schema("vip", "email", "flag:in_audience"),
        record("vip", email="a@example.com"),
        record("vip", email="b@example.com"),
        record("vip", email="c@example.com", in_audience=False),
        record("vip", email="bad"),
    ]

    run = run_target(tmp_path, config, messages)

    assert run.returncode == 0, run.stderr
    assert emulator.counters()["total_requests"] == 0
    assert "would add 2, would remove 1" in run.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report == {
        "outcome": "succeeded",
        "error": None,
        "dry_run": True,
        "streams": [
            {
                "stream": "vip",
                "records": 4,
                "used": 3,
                "deletes": 0,
                "skipped": {"no_valid_identifier": 1},
                "identifiers_rejected": {"email_malformed": 1},
            }
        ],
        "audiences": [
            {
                "audience": "vip",
                "list_id": None,
                "list_created": False,
                "audience_id": None,
                "audience_created": False,
                "added": 2,
                "removed": 1,
                "requests": 2,
                "failed": 0,
                "already_absent": 0,
                "skipped": {"no_valid_identifier": 1},
                "identifiers_rejected": {"email_malformed": 1},
                "rejected_by_pinterest": {},
                "pinterest_status": None,
                "pinterest_audience_size": None,
                "pinterest_audience_status": None,
                "match_rate": None,
                "members": None,
            }
        ],
    }


# The progress line --------------------------------------------------------------------


def run_slowly(
    tmp_path: Path, config: dict[str, Any], chunks: list[list[dict[str, Any]]], pause: float
) -> tuple[int, str, str]:
    """Feed ``chunks`` through a pipe, pausing between them, like a slow tap."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    try:
        for chunk in chunks:
            process.stdin.write("".join(json.dumps(message) + "\n" for message in chunk))
            process.stdin.flush()
            time.sleep(pause)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def slow_chunks() -> list[list[dict[str, Any]]]:
    emails = users(12)
    return [
        [schema("vip", "email"), *(record("vip", email=e) for e in emails[:4])],
        [record("vip", email=e) for e in emails[4:8]],
        [record("vip", email=e) for e in emails[8:]],
    ]


def test_progress_line_is_logged_while_input_arrives_slowly(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = emulator_config(emulator, progress_interval_seconds=0.2)

    code, _, stderr = run_slowly(tmp_path, config, slow_chunks(), pause=0.5)

    assert code == 0, stderr
    counts = [int(match.group(1)) for match in PROGRESS.finditer(stderr)]
    assert counts, stderr
    assert all(0 <= count <= 12 for count in counts), counts
    assert counts == sorted(counts), counts  # records read never go down
    # Lines come while the input is still arriving, not only at the end.
    assert any(0 < count < 12 for count in counts), counts
    for match in PROGRESS.finditer(stderr):
        added, removed, sent = (int(match.group(i)) for i in (3, 4, 5))
        assert 0 <= added <= 12
        assert removed == 0
        assert 0 <= sent <= 1
    assert len(members_by_name(emulator)["vip"]) == 12


def test_progress_interval_zero_logs_no_progress_line(emulator: Emulator, tmp_path: Path) -> None:
    config = emulator_config(emulator, progress_interval_seconds=0)

    code, _, stderr = run_slowly(tmp_path, config, slow_chunks(), pause=0.5)

    assert code == 0, stderr
    assert "Progress:" not in stderr
    assert len(members_by_name(emulator)["vip"]) == 12


# A failed run's report -------------------------------------------------------------------


def test_an_unreachable_api_fails_the_run_and_every_change_read_is_failed(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    config = {
        "ad_account_id": AD_ACCOUNT,
        "access_token": TOKEN,
        "api_url": "http://127.0.0.1:9/v5",  # nothing listens on the discard port
        "max_retry_wait_seconds": 1,
        "report_path": str(report_path),
    }
    messages: list[dict[str, Any] | str] = [
        schema("members", "email", "audience_key", "flag:in_audience"),
        *(record("members", email=e, audience_key="vip") for e in users(20)),
        *(record("members", email=e, audience_key="churned") for e in users(7, "old")),
        record("members", email="gone@example.com", audience_key="vip", in_audience=False),
    ]

    run = run_target(tmp_path, config, messages)

    assert run.returncode != 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["outcome"] == "failed"
    assert "Could not reach Pinterest at http://127.0.0.1:9/v5" in report["error"]
    assert "check api_url" in report["error"]
    assert "max_write_requests_per_minute" not in report["error"]  # not a rate problem
    failed = {audience["audience"]: audience["failed"] for audience in report["audiences"]}
    assert failed == {"vip": 21, "churned": 7}  # every change read, none acknowledged
    assert all(a["added"] == a["removed"] == 0 for a in report["audiences"])
    assert "Run FAILED: 28 identifier changes read were not acknowledged" in run.stderr
    assert "check api_url" in run.stderr
    assert "@example.com" not in run.output


def test_a_run_that_stops_mid_way_counts_what_it_never_sent_as_failed(
    emulator: Emulator, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    emulator.configure_faults(
        {"rules": [{"method": "PATCH", "after": 2, "action": "error", "status": 404}]}
    )
    config = emulator_config(
        emulator, records_per_request=5, max_parallel_requests=1, report_path=str(report_path)
    )

    run = run_target(tmp_path, config, vip_stream(users(60)))

    assert run.returncode == 1
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["outcome"] == "failed"
    assert "HTTP 404" in report["error"]
    (stream,) = report["streams"]
    (vip,) = report["audiences"]
    # The reading stopped soon after the failure: whatever was read is either on the
    # list (acknowledged) or failed, pending changes included.
    assert vip["added"] == len(members_by_name(emulator)["vip"]) == 15  # create + 2 updates
    assert vip["added"] + vip["failed"] == stream["records"]
    assert stream["records"] < 60
    assert f"FAILED {vip['failed']} identifiers" in run.stderr
