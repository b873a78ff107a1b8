"""A user's session: pipe a Singer stream into the installed target, against the emulator.

Every test runs the real console script as a subprocess and checks what a user would check:
the exit code, what was printed, and the exact membership Pinterest (the emulator) ends up
with, computed here independently from the raw identifiers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
    state,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def test_adds_removes_duplicates_engage_form_and_invalid_identifiers(
    emulator: Emulator, tmp_path: Path
) -> None:
    stream = "buyers"
    messages = [
        schema(stream, "email", "ios_idfa", "android_id", "audience_key", "flag:in_audience"),
        record(stream, email="  Ann@Example.COM ", audience_key="vip"),
        record(stream, email="bob@example.com", audience_key="vip"),
        record(stream, email="bob@example.com", audience_key="vip"),  # duplicate
        record(stream, email="cat@example.com", audience_key="vip"),
        record(stream, email="cat@example.com", audience_key="vip", in_audience=False),  # last wins
        record(stream, ios_idfa="ab12cd34-0000-4000-8000-00000000abcd", audience_key="vip"),
        record(stream, android_id="AB12CD34-1111-4000-8000-00000000ABCD", audience_key="vip"),
        record(stream, email="not-an-email", audience_key="vip"),  # skipped: no valid identifier
        record(stream, email="dan@example", ios_idfa="nope", audience_key="vip"),  # skipped
        record(stream, email="eve@example.com", in_audience="yes"),  # skipped: not a boolean
        record(stream, email="fay@example.com"),  # no form: added to the stream's audience
        state({"bookmarks": {stream: 11}}),
        schema("engage", "email", "flag:order_completed_last_30days", "flag:cart_abandoners"),
        record(
            "engage",
            email="gus@example.com",
            order_completed_last_30days=True,
            cart_abandoners=False,
        ),
        record(
            "engage",
            email="hal@example.com",
            order_completed_last_30days=True,
            cart_abandoners=True,
        ),
        record("engage", email="hal@example.com", cart_abandoners=False),
        state({"bookmarks": {stream: 11, "engage": 3}}),
    ]

    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert run.returncode == 0, run.stderr
    # cart_abandoners only ever received removals, so no list was created for it.
    assert members_by_name(emulator) == {
        "vip": {
            sha("ann@example.com"),
            sha("bob@example.com"),
            sha("AB12CD34-0000-4000-8000-00000000ABCD"),  # IDFA: upper case
            sha("ab12cd34-1111-4000-8000-00000000abcd"),  # Android ID: lower case
        },
        "buyers": {sha("fay@example.com")},
        "order_completed_last_30days": {sha("gus@example.com"), sha("hal@example.com")},
    }
    assert "Audience 'cart_abandoners' (list not created): add 0, remove 0" in run.stderr
    assert "2 removals not needed (never added to the list)" in run.stderr
    assert_contract_kept(emulator)
    # Only STATE on stdout, and the last one the tap sent.
    assert run.state_lines[-1] == {"bookmarks": {stream: 11, "engage": 3}}
    # Each created list got its CUSTOMER_LIST audience.
    audiences = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["audiences"]
    by_list = {a["rule"]["customer_list_id"] for a in audiences}
    assert by_list == {item["id"] for item in lists_by_name(emulator).values()}
    # The summary counts what was skipped and why.
    assert "Audience 'vip'" in run.stderr
    assert "no_valid_identifier=2" in run.stderr
    assert "in_audience_not_boolean=1" in run.stderr
    assert "email_malformed=2" in run.stderr
    # Privacy: no raw email and no token anywhere in the output.
    assert not EMAIL_PATTERN.findall(run.output), EMAIL_PATTERN.findall(run.output)
    assert TOKEN not in run.output


def test_existing_list_is_found_by_name_and_updated(emulator: Emulator, tmp_path: Path) -> None:
    first = run_target(
        tmp_path,
        emulator_config(emulator),
        [schema("vip", "email"), record("vip", email="a@example.com")],
    )
    assert first.returncode == 0, first.stderr
    list_id = lists_by_name(emulator)["vip"]["id"]

    second = run_target(
        tmp_path,
        emulator_config(emulator),
        [
            schema("vip", "email", "flag:in_audience"),
            record("vip", email="b@example.com"),
            record("vip", email="a@example.com", in_audience=False),
        ],
    )

    assert second.returncode == 0, second.stderr
    assert list(lists_by_name(emulator)) == ["vip"]
    assert emulator.members(list_id) == {sha("b@example.com")}
    audiences = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["audiences"]
    assert len(audiences) == 1  # not created twice
    assert_contract_kept(emulator)


def test_two_lists_with_the_audience_name_stop_the_run_naming_both(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Pinterest allows duplicate names; someone made two lists called "twins" by hand.
    ids = [
        requests.post(
            f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/customer_lists",
            json={"name": "twins", "records": sha(f"{n}@example.com")},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()["id"]
        for n in range(2)
    ]
    before = emulator.counters()["requests_by_route"]

    run = run_target(
        tmp_path,
        emulator_config(emulator),
        [schema("s", "email"), record("s", email="z@example.com", audience_key="twins")],
    )

    assert run.returncode == 1
    assert f"ids {ids[0]}, {ids[1]}" in run.stderr
    assert "Traceback" not in run.stderr
    after = emulator.counters()["requests_by_route"]
    writes = [route for route in after if not route.startswith("GET")]
    assert all(after[route] == before.get(route) for route in writes)  # nothing was written
    assert run.state_lines == []


def test_invalid_config_names_the_key_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    secret = "sEcReT-ToKeN-123456"
    run = run_target(
        tmp_path,
        {"ad_account_id": "12ab", "access_token": secret, "api_url": emulator.url},
        [schema("vip", "email"), record("vip", email="a@example.com")],
    )

    assert run.returncode == 1
    assert "config['ad_account_id']" in run.stderr
    assert secret not in run.output
    assert emulator.counters()["total_requests"] == 0


def test_a_misspelled_setting_is_named_with_the_likely_key_and_the_run_goes_on(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = emulator_config(emulator, records_per_requests=1, totally_unknown=True)
    emails = [f"user{n}@example.com" for n in range(3)]

    run = run_target(
        tmp_path,
        config,
        [schema("vip", "email")] + [record("vip", email=email) for email in emails],
    )

    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "| WARNING" in line]
    assert any(
        line.endswith(
            "config['records_per_requests'] is not a setting of this target and is ignored; "
            "did you mean 'records_per_request'?"
        )
        for line in warnings
    ), warnings
    assert any(
        line.endswith("config['totally_unknown'] is not a setting of this target and is ignored")
        for line in warnings
    ), warnings
    assert members_by_name(emulator) == {"vip": {sha(email) for email in emails}}
    # The misspelled key was ignored: the default request size sent all three at once.
    assert [e["record_count"] for e in emulator.requests() if e["record_count"]] == [3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is not valid JSON: Expecting value at line 1, column 1"),
        (
            # The decoder's own words and column (Python 3.13: "Illegal trailing comma before
            # end of object", column 44).
            '{"ad_account_id": "1",\n  "access_token": "sEcReT-in-a-broken-file",}',
            re.compile(r"is not valid JSON: [^\n]+ at line 2, column 4[45]"),
        ),
        ('["ad_account_id"]', "must hold a JSON object of settings, not an array"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        ("directory", "is a directory, not a JSON file"),
    ],
    ids=["missing", "empty", "trailing-comma", "array", "not-utf8", "directory"],
)
@pytest.mark.parametrize("flag", [None, "--validate-config"])
def test_a_missing_or_broken_config_file_is_a_one_line_error(
    tmp_path: Path, content: str | bytes | None, message: str | re.Pattern[str], flag: str | None
) -> None:
    path = tmp_path / "config.json"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")

    completed = subprocess.run(
        [*target_command(), "--config", str(path), *([flag] if flag else [])],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 1
    lines = completed.stderr.splitlines()
    prefix = f"| ERROR    | target-pinterest-audiences     | config file {path} "
    if isinstance(message, re.Pattern):
        assert re.search(re.escape(prefix) + message.pattern + "$", lines[-1]), completed.stderr
    else:
        assert lines[-1].endswith(prefix + message), completed.stderr
    assert [line for line in lines if "| ERROR" in line] == lines[-1:]
    assert "Traceback" not in completed.stderr
    assert "sEcReT" not in completed.stderr + completed.stdout
    assert completed.stdout == ""


def test_missing_credentials_and_plain_http_to_a_remote_host_are_config_errors(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = run_target(
        tmp_path,
        {"ad_account_id": AD_ACCOUNT, "api_url": "http://pinterest.example.com/v5"},
        [],
    )

    assert run.returncode == 1
    assert "config['access_token'] is required" in run.stderr
    assert "config['api_url']" in run.stderr
    assert emulator.counters()["total_requests"] == 0


def test_empty_env_var_token_does_not_satisfy_the_requirement(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = run_target(
        tmp_path,
        {"ad_account_id": AD_ACCOUNT, "api_url": emulator.url},
        [],
        args=["--config", "ENV"],
        env={"TARGET_PINTEREST_AUDIENCES_ACCESS_TOKEN": ""},
    )

    assert run.returncode == 1
    assert "config['access_token']" in run.stderr


def test_a_failed_batch_fails_the_run_and_emits_no_state(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure_faults(
        {
            "rules": [
                {
                    "method": "POST",
                    "path": "/customer_lists$",
                    "action": "error",
                    "status": 500,
                    "code": 0,
                    "message": "boom",
                }
            ]
        }
    )
    run = run_target(
        tmp_path,
        emulator_config(emulator, max_retry_wait_seconds=1),
        [schema("vip", "email"), record("vip", email="a@example.com"), state({"b": 1})],
    )

    assert run.returncode == 1
    assert run.state_lines == []
    assert "Pinterest did not acknowledge every change" in run.stderr
    assert "Traceback" not in run.stderr


def test_dry_run_sends_nothing_and_reports_the_plan(emulator: Emulator, tmp_path: Path) -> None:
    run = run_target(
        tmp_path,
        {"ad_account_id": AD_ACCOUNT, "dry_run": True, "api_url": emulator.url},
        [
            schema("vip", "email", "flag:in_audience"),
            record("vip", email="a@example.com"),
            record("vip", email="b@example.com", in_audience=False),
            record("vip", email="bad"),
            state({"bookmark": 3}),
        ],
    )

    assert run.returncode == 0, run.stderr
    # Nothing was sent, so nothing is confirmed: an orchestrator must not store a bookmark.
    assert run.state_lines == []
    assert "Audience 'vip'" in run.stderr
    assert "would add 1" in run.stderr
    assert "would remove 1" in run.stderr
    assert emulator.counters()["total_requests"] == 0


def test_readme_stream_maps_example_reshapes_another_layout(
    emulator: Emulator, tmp_path: Path
) -> None:
    stream_maps = {
        "crm_segments": {
            "email": "user_email",
            "audience_key": "segment",
            "user_email": "__NULL__",
            "segment": "__NULL__",
        }
    }
    run = run_target(
        tmp_path,
        emulator_config(emulator, stream_maps=stream_maps),
        [
            schema("crm_segments", "user_email", "segment"),
            record("crm_segments", user_email="A@example.com", segment="loyal"),
            record("crm_segments", user_email="b@example.com", segment="lapsed"),
        ],
    )

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {
        "loyal": {sha("a@example.com")},
        "lapsed": {sha("b@example.com")},
    }
    assert_contract_kept(emulator)


def test_a_duplicate_name_found_at_the_final_flush_is_a_clean_error(
    emulator: Emulator, tmp_path: Path
) -> None:
    for n in range(2):
        requests.post(
            f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/customer_lists",
            json={"name": "twins", "records": sha(f"{n}@example.com")},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
    # One record: the list is only looked up when the final flush sends it.
    run = run_target(
        tmp_path,
        emulator_config(emulator),
        [schema("s", "email"), record("s", email="z@example.com", audience_key="twins")],
    )

    assert run.returncode == 1
    assert "customer lists are named 'twins'" in run.stderr
    assert "Traceback" not in run.stderr
    assert "RuntimeError" not in run.stderr


def test_a_failed_audience_creation_is_not_counted_as_failed_identifiers(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure_faults(
        {
            "rules": [
                {
                    "method": "POST",
                    "path": "/audiences$",
                    "action": "error",
                    "status": 400,
                    "code": 1,
                    "message": "no",
                }
            ]
        }
    )
    run = run_target(
        tmp_path,
        emulator_config(emulator),
        [schema("vip", "email"), record("vip", email="a@example.com")],
    )

    assert run.returncode == 1
    assert members_by_name(emulator) == {"vip": {sha("a@example.com")}}
    assert "add 1" in run.stderr
    assert not re.search(r"FAILED \d+ identifiers", run.stderr), run.stderr
    assert "Run FAILED (none counted as FAILED: every identifier change sent was" in run.stderr
    assert "POST /ad_accounts/549755885175/audiences failed" in run.stderr


def test_changes_mode_applies_sdc_deleted_at_as_a_removal(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A soft-deleted row (REPLICA IDENTITY FULL, or a deleted_at column) leaves the list."""
    stream = "public-members"
    messages = [
        schema(stream, "id", "email", "audience_key", key_properties=["id"]),
        record(stream, id=1, email="ann@example.com", audience_key="vip"),
        record(stream, id=2, email="bob@example.com", audience_key="vip"),
        record(
            stream,
            id=1,
            email="ann@example.com",
            audience_key="vip",
            _sdc_deleted_at="2026-12-01T10:00:00+00:00",
        ),
        record(stream, id=3, _sdc_deleted_at="2026-12-01T10:00:00+00:00"),  # key only
        record(stream, id=4, email="cy@example.com", audience_key="vip", _sdc_deleted_at=None),
    ]

    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": {sha("bob@example.com"), sha("cy@example.com")}}
    assert "5 records read, 4 used (2 deletes), skipped deleted_without_identifier=1" in run.stderr
    assert "1 deletes carried no identifier" in run.stderr
    assert "sync_mode: upsert" in run.stderr


def test_a_first_sync_sends_no_remove_for_users_it_never_added(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A Segment-style stream: exits of users this list never had, interleaved with entries.
    members = [f"member{n}@example.com" for n in range(30)]
    strangers = [f"stranger{n}@example.com" for n in range(25)]
    messages = [schema("events", "email", "audience_key", "flag:in_audience")]
    for member, stranger in zip(members, strangers + [None] * 5, strict=True):
        messages.append(record("events", email=member, audience_key="vip"))
        if stranger is not None:
            messages.append(record("events", email=stranger, audience_key="vip", in_audience=False))
    # Five members leave again after their additions were sent.
    messages += [
        record("events", email=m, audience_key="vip", in_audience=False) for m in members[:5]
    ]

    run = run_target(tmp_path, emulator_config(emulator, records_per_request=4), messages)

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": {sha(m) for m in members[5:]}}
    removes = [r for r in emulator.requests() if r["operation_type"] == "REMOVE"]
    assert sum(r["record_count"] for r in removes) == 5  # only the members who left
    (vip,) = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["customer_lists"]
    assert vip["num_removed_user_records"] == 5
    assert "remove 5" in run.stderr
    assert "25 removals not needed (never added to the list)" in run.stderr
    assert_contract_kept(emulator)
