"""What Pinterest matched: each run reads the touched audiences back and reports size and rate.

The console script runs against an emulator that matches a fixed, deterministic share of
the uploaded identifiers to "Pinterest users" (``EmulatorConfig.match_rate``), so every
expected size is computed here from the emulator's matching rule and the hashes sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig
from target_pinterest_audiences.emulator.matching import MatchModel

from support import (
    AD_ACCOUNT,
    TOKEN,
    Run,
    assert_contract_kept,
    emulator_config,
    lists_by_name,
    record,
    run_target,
    schema,
    sha,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

AUDIENCE_ROUTE = "GET /ad_accounts/{ad_account_id}/audiences/{audience_id}"
AUDIENCES_ROUTE = "GET /ad_accounts/{ad_account_id}/audiences"
LAG = "matching can lag uploads by up to 24-48 hours"
LOW_MATCH = "Pinterest matched only"


@pytest.fixture
def matching() -> Iterator[Emulator]:
    """An emulator on which 60% of the uploaded identifiers match a Pinterest user."""
    with Emulator(EmulatorConfig(match_rate=0.6)) as running:
        yield running


def users(count: int, prefix: str = "member") -> list[str]:
    return [f"{prefix}{n:05d}@example.com" for n in range(count)]


def matched(emulator: Emulator, emails: list[str]) -> int:
    """How many of ``emails`` the emulator's rule matches (their hashes, as sent)."""
    return len(MatchModel(emulator.config.match_rate).matched(sha(e) for e in emails))


def segment_stream(audiences: dict[str, list[str]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [schema("segments", "email", "audience_key")]
    for audience, emails in audiences.items():
        messages += [record("segments", email=e, audience_key=audience) for e in emails]
    return messages


def sync(
    emulator: Emulator, tmp_path: Path, audiences: dict[str, list[str]], **config: Any
) -> tuple[Run, dict[str, dict[str, Any]]]:
    """One run; returns it and the JSON report's audiences by name."""
    report_path = tmp_path / "report.json"
    settings = {
        "ledger_path": str(tmp_path / "ledger.sqlite3"),
        "report_path": str(report_path),
        **config,
    }
    run = run_target(tmp_path, emulator_config(emulator, **settings), segment_stream(audiences))
    assert run.returncode == 0, run.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return run, {entry["audience"]: entry for entry in report["audiences"]}


def summary(run: Run, audience: str) -> str:
    lines = [line for line in run.stderr.splitlines() if f"| Audience '{audience}'" in line]
    assert len(lines) == 1, run.stderr
    return lines[0]


def audience_of(emulator: Emulator, list_id: str) -> dict[str, Any]:
    audiences = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["audiences"]
    found = [a for a in audiences if a["rule"]["customer_list_id"] == list_id]
    assert len(found) == 1, audiences
    audience: dict[str, Any] = found[0]
    return audience


def test_mirror_reports_what_pinterest_matched_and_the_rate(
    matching: Emulator, tmp_path: Path
) -> None:
    first = {"vip": users(400), "trial": users(150, "trial")}

    run, report = sync(matching, tmp_path, first, sync_mode="mirror")

    lists = lists_by_name(matching)
    for name, emails in first.items():
        size = matched(matching, emails)
        assert 0 < size < len(emails)  # some, not all, matched
        assert audience_of(matching, lists[name]["id"])["size"] == size
        assert report[name]["pinterest_audience_size"] == size
        assert report[name]["members"] == len(emails)
        assert report[name]["match_rate"] == size / len(emails)
        assert report[name]["pinterest_audience_status"] == (
            "READY" if size >= 100 else "TOO_SMALL"
        )
        rate = f"{size / len(emails):.0%}"
        assert (
            f"Pinterest matched {size} of {len(emails)} members ({rate}) as of now; {LAG}"
            in summary(run, name)
        )
    assert LOW_MATCH not in run.stderr
    # One audience read per touched audience; the ids were learned while creating them.
    counts = matching.counters()["requests_by_route"]
    assert counts[AUDIENCE_ROUTE] == 2
    assert AUDIENCES_ROUTE not in counts
    assert_contract_kept(matching)

    # The next snapshot drops 100 members and brings 50 new ones: the rate follows.
    second = {"vip": users(400)[100:] + users(50, "new"), "trial": users(150, "trial")}

    run, report = sync(matching, tmp_path, second, sync_mode="mirror")

    size = matched(matching, second["vip"])
    assert report["vip"]["mirror"]["after"] == report["vip"]["members"] == 350
    assert report["vip"]["pinterest_audience_size"] == size
    assert report["vip"]["match_rate"] == size / 350
    assert report["trial"]["members"] == 150
    assert f"Pinterest matched {size} of 350 members" in summary(run, "vip")


def test_upsert_reports_the_rate_against_its_live_members(
    matching: Emulator, tmp_path: Path
) -> None:
    users_schema = schema("public-users", "id", "email", "audience_key", key_properties=["id"])
    emails = users(300)
    rows = [
        record("public-users", id=n, email=email, audience_key="vip")
        for n, email in enumerate(emails)
    ]
    rows.append(record("public-users", id=1000, email=emails[0], audience_key="vip"))  # shared
    config = {
        "sync_mode": "upsert",
        "ledger_path": str(tmp_path / "ledger.sqlite3"),
        "report_path": str(tmp_path / "report.json"),
    }
    run = run_target(tmp_path, emulator_config(matching, **config), [users_schema, *rows])
    assert run.returncode == 0, run.stderr
    report = {
        entry["audience"]: entry
        for entry in json.loads((tmp_path / "report.json").read_text())["audiences"]
    }

    size = matched(matching, emails)
    assert report["vip"]["upsert"] == {"live_rows": 301, "rows_deleted": 0, "members": 300}
    assert report["vip"]["members"] == 300  # identifiers, not rows
    assert report["vip"]["pinterest_audience_size"] == size
    assert report["vip"]["match_rate"] == size / 300
    assert f"Pinterest matched {size} of 300 members" in summary(run, "vip")


def test_changes_mode_reports_the_size_and_no_rate(matching: Emulator, tmp_path: Path) -> None:
    emails = users(300)

    run, report = sync(matching, tmp_path, {"vip": emails})

    size = matched(matching, emails)
    assert report["vip"]["pinterest_audience_size"] == size
    assert report["vip"]["pinterest_audience_status"] == "READY"
    assert report["vip"]["match_rate"] is None
    assert report["vip"]["members"] is None  # changes mode cannot know the list's members
    assert f"audience READY: Pinterest matched {size} users as of now; {LAG}" in summary(run, "vip")


def test_an_audience_pinterest_has_not_sized_yet_reports_null(tmp_path: Path) -> None:
    with Emulator(EmulatorConfig(match_rate=0.6, processing_seconds=3600)) as emulator:
        run, report = sync(emulator, tmp_path, {"vip": users(1200)}, sync_mode="mirror")

    assert report["vip"]["pinterest_status"] == "PROCESSING"
    assert report["vip"]["pinterest_audience_status"] == "INITIALIZING"
    assert report["vip"]["pinterest_audience_size"] is None  # not sized: null, not 0
    assert report["vip"]["match_rate"] is None
    assert report["vip"]["members"] == 1200
    assert f"audience INITIALIZING: Pinterest has not sized it yet; {LAG}" in summary(run, "vip")
    assert LOW_MATCH not in run.stderr


def test_a_very_low_match_rate_warns_with_the_usual_causes(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    with Emulator(EmulatorConfig(match_rate=0.03)) as emulator:
        emails = users(1000)
        run, report = sync(emulator, tmp_path / "big", {"vip": emails}, sync_mode="mirror")
        small, _ = sync(
            emulator, tmp_path / "small", {"few": users(999, "few")}, sync_mode="mirror"
        )
        size = matched(emulator, emails)

    assert report["vip"]["match_rate"] == size / 1000 < 0.1
    low = [line for line in run.stderr.splitlines() if LOW_MATCH in line]
    assert len(low) == 1, run.stderr
    assert "| WARNING" in low[0]
    assert f"Audience 'vip': Pinterest matched only {size} of 1000 members" in low[0]
    assert "normalized differently from what Pinterest expects" in low[0]
    assert "device ids of an app that Pinterest users do not use" in low[0]
    assert LOW_MATCH not in small.stderr  # 999 members: too few to judge


def test_an_existing_audience_is_found_when_the_run_creates_none(
    matching: Emulator, tmp_path: Path
) -> None:
    emails = users(200)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{matching.url}/ad_accounts/{AD_ACCOUNT}"
    made = requests.post(
        f"{base}/customer_lists",
        json={"name": "vip", "records": ",".join(sha(e) for e in emails[:100])},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 200, made.text
    requests.post(
        f"{base}/customer_lists",
        json={"name": "bare", "records": sha("x@example.com")},
        headers=headers,
        timeout=10,
    ).raise_for_status()
    audience = requests.post(
        f"{base}/audiences",
        json={
            "name": "vip",
            "audience_type": "CUSTOMER_LIST",
            "rule": {"customer_list_id": made.json()["id"]},
        },
        headers=headers,
        timeout=10,
    )
    assert audience.status_code == 200, audience.text

    run, report = sync(
        matching,
        tmp_path,
        {"vip": emails, "bare": ["y@example.com"]},
        create_audiences=False,
    )

    assert report["vip"]["audience_id"] == audience.json()["id"]
    assert report["vip"]["pinterest_audience_size"] == matched(matching, emails)
    assert report["bare"]["pinterest_audience_size"] is None
    assert report["bare"]["pinterest_audience_status"] is None
    no_audience = [line for line in run.stderr.splitlines() if "has no CUSTOMER_LIST" in line]
    assert len(no_audience) == 1, run.stderr
    assert "List 'bare'" in no_audience[0]
    counts = matching.counters()["requests_by_route"]
    assert counts[AUDIENCES_ROUTE] == 1  # one paged look-up for both
    assert counts[AUDIENCE_ROUTE] == 1


def test_a_failed_audience_read_is_a_warning_not_a_failure(
    matching: Emulator, tmp_path: Path
) -> None:
    matching.configure_faults(
        {"rules": [{"method": "GET", "path": r"/audiences/\d+$", "action": "error", "status": 404}]}
    )

    emails = users(120)

    run, report = sync(matching, tmp_path, {"vip": emails}, sync_mode="mirror")

    assert matching.members(lists_by_name(matching)["vip"]["id"]) == {sha(e) for e in emails}
    assert report["vip"]["pinterest_audience_size"] is None
    assert report["vip"]["match_rate"] is None
    assert report["vip"]["members"] == 120
    warnings = [line for line in run.stderr.splitlines() if "Could not read back audience" in line]
    assert len(warnings) == 1, run.stderr
    assert "| WARNING" in warnings[0]


def test_report_list_status_false_reads_no_audience(matching: Emulator, tmp_path: Path) -> None:
    run, report = sync(matching, tmp_path, {"vip": users(120)}, report_list_status=False)

    assert AUDIENCE_ROUTE not in matching.counters()["requests_by_route"]
    assert report["vip"]["pinterest_audience_size"] is None
    assert "Pinterest matched" not in run.stderr
