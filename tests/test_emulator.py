"""Tests of the Pinterest v5 API emulator over real HTTP on 127.0.0.1.

Most tests share one emulator (reset before each test); tests that need other
settings (latency, rate limits, clocks) start their own. Every emulator is
checked on teardown for ``response_validation_errors == 0``: the emulator's
answers must always match Pinterest's description.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig, FaultConfigError
from target_pinterest_audiences.emulator.__main__ import build_parser, config_from_args
from target_pinterest_audiences.emulator.matching import MatchModel
from target_pinterest_audiences.emulator.spec import ApiSpec

AD_ACCOUNT = "549755885175"
TOKEN = "emulator-access-token"
CLIENT = ("emulator-client-id", "emulator-client-secret")
REPO_ROOT = Path(__file__).resolve().parent.parent


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hashes(prefix: str, count: int) -> list[str]:
    return [sha(f"{prefix}{i}@example.com") for i in range(count)]


class FakeClock:
    """Wall clock the tests move by hand (for expiry and PROCESSING status)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def assert_self_check_clean(emulator: Emulator) -> None:
    counters = emulator.counters()
    problems = [e for e in emulator.requests() if e["response_problem"]]
    assert counters["response_validation_errors"] == 0, problems


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(shared_emulator: Emulator) -> Iterator[Emulator]:
    shared_emulator.reset()
    yield shared_emulator
    assert_self_check_clean(shared_emulator)


@pytest.fixture
def make_emulator() -> Iterator[Any]:
    started: list[Emulator] = []

    def make(**settings: Any) -> Emulator:
        emulator = Emulator(EmulatorConfig(**settings)).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()
        assert_self_check_clean(emulator)


def client(token: str = TOKEN) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with client() as s:
        yield s


def lists_url(emulator: Emulator, account: str = AD_ACCOUNT) -> str:
    return f"{emulator.url}/ad_accounts/{account}/customer_lists"


def create_list(
    session: requests.Session, emulator: Emulator, records: list[str], name: str = "list"
) -> dict[str, Any]:
    response = session.post(lists_url(emulator), json={"name": name, "records": ",".join(records)})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def patch_list(
    session: requests.Session, emulator: Emulator, list_id: str, op: str, records: list[str]
) -> requests.Response:
    return session.patch(
        f"{lists_url(emulator)}/{list_id}",
        json={"operation_type": op, "records": ",".join(records)},
    )


# --- basic operations ------------------------------------------------------------------


def test_get_ad_account(emulator: Emulator, session: requests.Session) -> None:
    response = session.get(f"{emulator.url}/ad_accounts/{AD_ACCOUNT}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["id"] == AD_ACCOUNT


def test_create_customer_list(emulator: Emulator, session: requests.Session) -> None:
    records = hashes("a", 3)
    response = session.post(
        lists_url(emulator),
        json={"name": "Buyers", "records": ",".join(records) + ",", "list_type": "EMAIL"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "1000000000001"
    assert body["name"] == "Buyers"
    assert body["type"] == "customerlist"
    assert body["ad_account_id"] == AD_ACCOUNT
    assert body["num_batches"] == 1
    assert body["num_uploaded_user_records"] == 3
    assert body["num_removed_user_records"] == 0
    assert body["status"] == "TOO_SMALL"
    assert body["exceptions"] == {}
    assert emulator.members(body["id"]) == set(records)

    again = session.get(f"{lists_url(emulator)}/{body['id']}")
    assert again.status_code == 200
    assert again.json() == body


def test_list_becomes_ready_at_100_members(emulator: Emulator, session: requests.Session) -> None:
    created = create_list(session, emulator, hashes("r", 99))
    assert created["status"] == "TOO_SMALL"
    response = patch_list(session, emulator, created["id"], "ADD", hashes("s", 1))
    assert response.json()["status"] == "READY"


def test_add_remove_exact_membership_and_counters(
    emulator: Emulator, session: requests.Session
) -> None:
    first, second, absent = hashes("a", 4), hashes("b", 3), hashes("z", 2)
    created = create_list(session, emulator, first)
    list_id = created["id"]

    added = patch_list(session, emulator, list_id, "ADD", [first[0], *second])
    assert added.status_code == 200, added.text
    assert added.json()["num_uploaded_user_records"] == 4 + 4  # re-upload counts too

    removed = patch_list(session, emulator, list_id, "REMOVE", [first[1], *absent])
    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["num_removed_user_records"] == 3  # absent records count too
    assert body["num_batches"] == 3
    assert emulator.members(list_id) == set(first) - {first[1]} | set(second)

    state = requests.get(f"{emulator.admin_url}/state").json()
    summary = state["ad_accounts"][AD_ACCOUNT]["customer_lists"][0]
    assert summary["member_count"] == 6
    assert summary["num_batches"] == 3
    members = requests.get(f"{emulator.admin_url}/customer_lists/{list_id}/members").json()
    assert members == {"members": sorted(emulator.members(list_id))}

    log = [e for e in emulator.requests() if e["operation"] == "customer_lists/update"]
    assert [(e["operation_type"], e["record_count"]) for e in log] == [("ADD", 4), ("REMOVE", 3)]
    assert state["counters"]["non_sha256_records"] == 0


def test_duplicate_names_are_allowed(emulator: Emulator, session: requests.Session) -> None:
    one = create_list(session, emulator, hashes("a", 1), name="Same")
    two = create_list(session, emulator, hashes("b", 1), name="Same")
    assert one["id"] != two["id"]
    assert [cl["name"] for cl in emulator.state.customer_lists(AD_ACCOUNT)] == ["Same", "Same"]


def test_unknown_customer_list_is_404(emulator: Emulator, session: requests.Session) -> None:
    response = session.get(f"{lists_url(emulator)}/999")
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"}
    assert patch_list(session, emulator, "999", "ADD", hashes("a", 1)).status_code == 404


def test_bookmark_paging(emulator: Emulator, session: requests.Session) -> None:
    created = [
        create_list(session, emulator, hashes(str(i), 1), name=f"L{i}")["id"] for i in range(5)
    ]
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"page_size": 2}
    while True:
        response = session.get(lists_url(emulator), params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen.extend(item["id"] for item in body["items"])
        if not body.get("bookmark"):
            break
        params = {"page_size": 2, "bookmark": body["bookmark"]}
    assert pages == 3
    assert seen == created

    descending = session.get(lists_url(emulator), params={"order": "DESCENDING"}).json()
    assert [item["id"] for item in descending["items"]] == created[::-1]
    assert descending["bookmark"] is None

    bad = session.get(lists_url(emulator), params={"bookmark": "not-a-bookmark"})
    assert bad.status_code == 400


def test_non_sha256_records_are_counted(emulator: Emulator, session: requests.Session) -> None:
    create_list(session, emulator, ["person@example.com", sha("x"), sha("y").upper()])
    assert emulator.counters()["non_sha256_records"] == 2
    assert emulator.state.customer_lists()[0]["non_sha256_records"] == 2


# --- audiences -----------------------------------------------------------------------


def test_audience_with_valid_and_invalid_rule(
    emulator: Emulator, session: requests.Session
) -> None:
    list_id = create_list(session, emulator, hashes("a", 120))["id"]
    url = f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/audiences"
    response = session.post(
        url,
        json={
            "name": "Buyers audience",
            "audience_type": "CUSTOMER_LIST",
            "rule": {"customer_list_id": list_id},
            "description": "synced",
        },
    )
    assert response.status_code == 200, response.text
    audience = response.json()
    assert audience["type"] == "audience"
    assert audience["rule"] == {"customer_list_id": list_id}
    assert audience["size"] == 120
    assert audience["status"] == "READY"

    missing = session.post(
        url,
        json={"name": "x", "audience_type": "CUSTOMER_LIST", "rule": {"customer_list_id": "12345"}},
    )
    assert missing.status_code == 400
    assert "12345" in missing.json()["message"]

    listed = session.get(url, params={"page_size": 10}).json()
    assert [a["id"] for a in listed["items"]] == [audience["id"]]
    assert session.get(f"{url}/{audience['id']}").json() == audience
    assert session.get(f"{url}/1").status_code == 404


# --- matching ------------------------------------------------------------------------


def create_audience(session: requests.Session, emulator: Emulator, list_id: str) -> str:
    response = session.post(
        f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/audiences",
        json={"name": "a", "audience_type": "CUSTOMER_LIST", "rule": {"customer_list_id": list_id}},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def get_audience(session: requests.Session, emulator: Emulator, audience_id: str) -> Any:
    response = session.get(f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/audiences/{audience_id}")
    assert response.status_code == 200, response.text
    return response.json()


def expected_matches(records: list[str], rate: float) -> set[str]:
    """The matching rule as --help states it, computed here independently."""
    key = b"pinterest-api-emulator/matching"
    return {
        r
        for r in records
        if int.from_bytes(hashlib.blake2b(r.encode(), digest_size=8, key=key).digest(), "big")
        / 2**64
        < rate
    }


def test_match_model_is_deterministic_and_takes_the_configured_share() -> None:
    records = hashes("m", 20_000)
    for rate in (0.0, 0.1, 0.3, 0.75, 1.0):
        matched = MatchModel(rate).matched(records)
        assert matched == MatchModel(rate).matched(records)  # same answer every time
        assert matched == expected_matches(records, rate)
        assert abs(len(matched) / len(records) - rate) < 0.015, (rate, len(matched))
        assert all(MatchModel(rate).matches(r) for r in matched)
    assert MatchModel(0.3).matched(records) < MatchModel(0.75).matched(records)  # nested
    with pytest.raises(ValueError, match="between 0 and 1"):
        MatchModel(1.5)


def test_audience_size_is_the_matched_users(make_emulator: Any) -> None:
    emulator = make_emulator(match_rate=0.6)
    records = hashes("a", 400)
    matched = expected_matches(records, 0.6)
    assert 200 < len(matched) < 280  # the records give a typical share
    with client() as s:
        created = create_list(s, emulator, records)
        assert created["status"] == "READY"
        audience_id = create_audience(s, emulator, created["id"])
        audience = get_audience(s, emulator, audience_id)
        assert audience["size"] == len(matched)
        assert audience["status"] == "READY"
        assert emulator.state.customer_list(created["id"])["matched_count"] == len(matched)
        assert emulator.state.customer_list(created["id"])["member_count"] == 400

        removed = records[:100]
        response = patch_list(s, emulator, created["id"], "REMOVE", removed)
        assert response.status_code == 200
        assert get_audience(s, emulator, audience_id)["size"] == len(matched - set(removed))
        response = patch_list(s, emulator, created["id"], "ADD", records[:10])
        remaining = (matched - set(removed)) | expected_matches(records[:10], 0.6)
        assert get_audience(s, emulator, audience_id)["size"] == len(remaining)


def test_list_status_follows_matched_users_not_records(make_emulator: Any) -> None:
    emulator = make_emulator(match_rate=0.5)
    records = hashes("b", 160)
    matched = expected_matches(records, 0.5)
    assert len(matched) < 100  # 160 records, fewer than 100 Pinterest users
    with client() as s:
        created = create_list(s, emulator, records)
        assert created["status"] == "TOO_SMALL"
        audience = get_audience(s, emulator, create_audience(s, emulator, created["id"]))
        assert (audience["size"], audience["status"]) == (len(matched), "TOO_SMALL")
        more = hashes("c", 200)
        grown = matched | expected_matches(more, 0.5)
        assert len(grown) >= 100
        response = patch_list(s, emulator, created["id"], "ADD", more)
        assert response.json()["status"] == "READY"


def test_no_record_matches_at_rate_zero(make_emulator: Any) -> None:
    emulator = make_emulator(match_rate=0.0)
    with client() as s:
        created = create_list(s, emulator, hashes("z", 300))
        assert created["status"] == "TOO_SMALL"
        audience = get_audience(s, emulator, create_audience(s, emulator, created["id"]))
        assert (audience["size"], audience["status"]) == (0, "TOO_SMALL")  # sized: 0, not null


def test_processing_delay_keeps_audiences_initializing_then_stale(make_emulator: Any) -> None:
    clock = FakeClock()
    emulator = make_emulator(clock=clock, processing_seconds=30, match_rate=0.5)
    first, second = hashes("p", 300), hashes("q", 300)
    with client() as s:
        created = create_list(s, emulator, first)
        audience_id = create_audience(s, emulator, created["id"])
        audience = get_audience(s, emulator, audience_id)
        assert (audience["size"], audience["status"]) == (None, "INITIALIZING")
        listed = s.get(
            f"{emulator.url}/ad_accounts/{AD_ACCOUNT}/audiences", params={"page_size": 10}
        )
        assert listed.json()["items"][0]["status"] == "INITIALIZING"

        clock.now += 31
        size = len(expected_matches(first, 0.5))
        audience = get_audience(s, emulator, audience_id)
        assert (audience["size"], audience["status"]) == (size, "READY")

        response = patch_list(s, emulator, created["id"], "ADD", second)
        assert response.json()["status"] == "PROCESSING"
        clock.now += 10
        assert get_audience(s, emulator, audience_id)["size"] == size  # the old size
        clock.now += 10
        patch_list(s, emulator, created["id"], "REMOVE", first[:1])  # restarts processing
        clock.now += 20
        assert get_audience(s, emulator, audience_id)["size"] == size
        clock.now += 11
        final = expected_matches(first[1:] + second, 0.5)
        assert get_audience(s, emulator, audience_id)["size"] == len(final)
        listed_list = s.get(f"{lists_url(emulator)}/{created['id']}").json()
        assert listed_list["status"] == "READY"


# --- authentication and access -------------------------------------------------------


def test_bad_or_missing_token_is_401(emulator: Emulator) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": f"Basic {TOKEN}"}):
        response = requests.get(lists_url(emulator), headers=headers)
        assert response.status_code == 401
        assert response.json() == {"code": 2, "message": "Authentication failed."}


def test_other_ad_account_is_403(emulator: Emulator, session: requests.Session) -> None:
    response = session.get(lists_url(emulator, "123456789"))
    assert response.status_code == 403
    assert "ad account" in response.json()["message"]


def refresh(emulator: Emulator, refresh_token: str, **extra: str) -> requests.Response:
    return requests.post(
        f"{emulator.url}/oauth/token",
        auth=CLIENT,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
    )


def test_oauth_refresh_rotates_refresh_tokens(emulator: Emulator) -> None:
    first = refresh(emulator, "emulator-refresh-token", continuous_refresh="true")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["token_type"] == "bearer"
    assert body["response_type"] == "refresh_token"
    assert body["scope"] == "ads:read,ads:write"
    assert body["refresh_token"] != "emulator-refresh-token"
    assert body["refresh_token_expires_at"] > time.time()
    with client(body["access_token"]) as s:
        assert s.get(lists_url(emulator)).status_code == 200

    reused = refresh(emulator, "emulator-refresh-token")
    assert reused.status_code == 400
    assert set(reused.json()) == {"code", "message"}

    second = refresh(emulator, body["refresh_token"])
    assert second.status_code == 200
    assert second.json()["access_token"] != body["access_token"]


def test_oauth_rejects_bad_client_and_bad_form(emulator: Emulator) -> None:
    url = f"{emulator.url}/oauth/token"
    form = {"grant_type": "refresh_token", "refresh_token": "emulator-refresh-token"}
    assert requests.post(url, auth=("emulator-client-id", "nope"), data=form).status_code == 401
    assert requests.post(url, data=form).status_code == 401
    no_token = requests.post(url, auth=CLIENT, data={"grant_type": "refresh_token"})
    assert no_token.status_code == 400
    as_json = requests.post(url, auth=CLIENT, json=form)
    assert as_json.status_code == 400
    assert emulator.counters()["invalid_requests"] == 2


def test_refresh_without_rotation_keeps_token(make_emulator: Any) -> None:
    emulator = make_emulator(rotate_refresh_tokens=False)
    for _ in range(2):
        response = refresh(emulator, "emulator-refresh-token")
        assert response.status_code == 200
        assert response.json()["refresh_token"] == "emulator-refresh-token"


def test_issued_access_tokens_expire(make_emulator: Any) -> None:
    clock = FakeClock()
    emulator = make_emulator(clock=clock, access_token_ttl_seconds=60)
    token = refresh(emulator, "emulator-refresh-token").json()["access_token"]
    with client(token) as s:
        assert s.get(lists_url(emulator)).status_code == 200
        clock.now += 61
        assert s.get(lists_url(emulator)).status_code == 401


def test_admin_expire_tokens(emulator: Emulator, session: requests.Session) -> None:
    assert requests.post(f"{emulator.admin_url}/expire_tokens").json() == {"expired": 1}
    assert session.get(lists_url(emulator)).status_code == 401
    token = refresh(emulator, "emulator-refresh-token").json()["access_token"]
    with client(token) as s:
        assert s.get(lists_url(emulator)).status_code == 200


# --- contract validation -------------------------------------------------------------


INVALID_REQUESTS = {
    "bad path param": ("GET", "/ad_accounts/abc/customer_lists", None, None),
    "path param too long": ("GET", "/ad_accounts/1234567890123456789/customer_lists", None, None),
    "page_size=0": ("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists?page_size=0", None, None),
    "page_size=251": ("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists?page_size=251", None, None),
    "page_size=abc": ("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists?page_size=abc", None, None),
    "bad order": ("GET", f"/ad_accounts/{AD_ACCOUNT}/audiences?order=UP", None, None),
    "missing operation_type": (
        "PATCH",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists/1000000000001",
        "application/json",
        json.dumps({"records": sha("a")}),
    ),
    "unknown operation_type": (
        "PATCH",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists/1000000000001",
        "application/json",
        json.dumps({"operation_type": "UPSERT", "records": sha("a")}),
    ),
    "records as array": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists",
        "application/json",
        json.dumps({"name": "x", "records": [sha("a"), sha("b")]}),
    ),
    "missing name": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists",
        "application/json",
        json.dumps({"records": sha("a")}),
    ),
    "wrong content type": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists",
        "text/plain",
        json.dumps({"name": "x", "records": sha("a")}),
    ),
    "form body for JSON operation": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists",
        "application/x-www-form-urlencoded",
        f"name=x&records={sha('a')}",
    ),
    "invalid JSON": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/customer_lists",
        "application/json",
        "{not json",
    ),
    "missing body": ("POST", f"/ad_accounts/{AD_ACCOUNT}/customer_lists", None, None),
    "bad audience type": (
        "POST",
        f"/ad_accounts/{AD_ACCOUNT}/audiences",
        "application/json",
        json.dumps({"name": "x", "audience_type": "NOPE", "rule": {}}),
    ),
}


@pytest.mark.parametrize("case", list(INVALID_REQUESTS), ids=list(INVALID_REQUESTS))
def test_invalid_requests_are_400(emulator: Emulator, session: requests.Session, case: str) -> None:
    create_list(session, emulator, hashes("a", 1))  # so PATCH cases hit an existing list
    method, path, content_type, body = INVALID_REQUESTS[case]
    headers = {"Content-Type": content_type} if content_type else {}
    response = session.request(method, emulator.url + path, headers=headers, data=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == 1
    assert isinstance(error["message"], str)
    entry = emulator.requests()[-1]
    assert entry["valid"] is False
    assert entry["error"] == error["message"]
    assert emulator.counters()["invalid_requests"] == 1
    assert emulator.members("1000000000001") == {sha("a0@example.com")}


def test_unknown_path_and_method(emulator: Emulator, session: requests.Session) -> None:
    response = session.get(f"{emulator.url}/pins")
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"}
    assert session.get(f"{emulator.base_url}/v4/ad_accounts/{AD_ACCOUNT}").status_code == 404
    assert session.delete(lists_url(emulator)).status_code == 405
    assert emulator.counters()["invalid_requests"] == 3


def test_empty_records_are_rejected(emulator: Emulator, session: requests.Session) -> None:
    response = session.post(lists_url(emulator), json={"name": "x", "records": ",,"})
    assert response.status_code == 400
    assert emulator.requests()[-1]["valid"] is True  # contract ok, business rule not


def test_chunked_request_body(emulator: Emulator, session: requests.Session) -> None:
    payload = json.dumps({"name": "chunked", "records": sha("a")}).encode()
    response = session.post(
        lists_url(emulator),
        data=iter([payload[:10], payload[10:]]),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_response_self_check_detects_mismatches() -> None:
    spec = ApiSpec.load()
    operation = spec.route("GET", f"/ad_accounts/{AD_ACCOUNT}/customer_lists/1").operation
    assert operation.response_problem(200, {"id": 5}) is not None
    assert operation.response_problem(404, {"code": 404}) is not None
    assert operation.response_problem(404, {"code": 404, "message": "x"}) is None


# --- faults --------------------------------------------------------------------------


def set_faults(emulator: Emulator, config: dict[str, Any]) -> None:
    response = requests.post(f"{emulator.admin_url}/faults", json=config)
    assert response.status_code == 200, response.text


def test_fault_error_is_not_applied(emulator: Emulator, session: requests.Session) -> None:
    list_id = create_list(session, emulator, hashes("a", 1))["id"]
    set_faults(
        emulator,
        {
            "rules": [
                {
                    "method": "PATCH",
                    "path": r"/customer_lists/\d+$",
                    "times": 1,
                    "action": "error",
                    "status": 503,
                    "code": 0,
                    "message": "Service unavailable",
                    "headers": {"Retry-After": "1"},
                }
            ]
        },
    )
    extra = hashes("b", 2)
    failed = patch_list(session, emulator, list_id, "ADD", extra)
    assert failed.status_code == 503
    assert failed.json() == {"code": 0, "message": "Service unavailable"}
    assert failed.headers["Retry-After"] == "1"
    assert emulator.members(list_id) == set(hashes("a", 1))

    retried = patch_list(session, emulator, list_id, "ADD", extra)
    assert retried.status_code == 200
    assert emulator.members(list_id) == set(hashes("a", 1)) | set(extra)
    rule = emulator.fault_config()["rules"][0]
    assert (rule["matched"], rule["applied"]) == (2, 1)


def test_fault_after_and_times(emulator: Emulator, session: requests.Session) -> None:
    set_faults(
        emulator,
        {
            "rules": [
                {
                    "method": "GET",
                    "path": "customer_lists",
                    "after": 1,
                    "times": 1,
                    "action": "error",
                    "status": 429,
                }
            ]
        },
    )
    statuses = [session.get(lists_url(emulator)).status_code for _ in range(3)]
    assert statuses == [200, 429, 200]
    assert emulator.requests()[1]["fault"] == "error"


def test_fault_drop_is_not_applied(emulator: Emulator, session: requests.Session) -> None:
    list_id = create_list(session, emulator, hashes("a", 1))["id"]
    set_faults(emulator, {"rules": [{"method": "PATCH", "path": "", "times": 1, "action": "drop"}]})
    with pytest.raises(requests.ConnectionError):
        patch_list(session, emulator, list_id, "ADD", hashes("b", 1))
    assert emulator.members(list_id) == set(hashes("a", 1))
    assert emulator.requests()[-1]["status"] is None
    assert patch_list(session, emulator, list_id, "ADD", hashes("b", 1)).status_code == 200


def test_fault_drop_after_apply(emulator: Emulator, session: requests.Session) -> None:
    list_id = create_list(session, emulator, hashes("a", 1))["id"]
    set_faults(
        emulator,
        {"rules": [{"method": "PATCH", "path": "", "times": 1, "action": "drop_after_apply"}]},
    )
    with pytest.raises(requests.ConnectionError):
        patch_list(session, emulator, list_id, "ADD", hashes("b", 1))
    assert emulator.members(list_id) == set(hashes("a", 1)) | set(hashes("b", 1))
    assert emulator.state.customer_list(list_id)["num_batches"] == 2


def test_fault_delay(emulator: Emulator, session: requests.Session) -> None:
    set_faults(
        emulator, {"rules": [{"method": "*", "action": "delay", "seconds": 0.2, "times": 1}]}
    )
    started = time.perf_counter()
    assert session.get(lists_url(emulator)).status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_fault_expire_token(emulator: Emulator, session: requests.Session) -> None:
    set_faults(emulator, {"rules": [{"method": "GET", "times": 1, "action": "expire_token"}]})
    first = session.get(lists_url(emulator))
    assert first.status_code == 401
    assert first.json()["code"] == 2
    assert session.get(lists_url(emulator)).status_code == 401  # the token stays invalid
    token = refresh(emulator, "emulator-refresh-token").json()["access_token"]
    with client(token) as s:
        assert s.get(lists_url(emulator)).status_code == 200


def test_max_records_per_request_and_rejected_records(
    emulator: Emulator, session: requests.Session
) -> None:
    list_id = create_list(session, emulator, hashes("a", 5))["id"]
    bad = hashes("bad", 2)
    set_faults(emulator, {"max_records_per_request": 3, "rejected_records": bad})

    too_many = patch_list(session, emulator, list_id, "ADD", hashes("b", 4))
    assert too_many.status_code == 413
    assert "too large" in too_many.json()["message"]
    too_many_create = session.post(
        lists_url(emulator), json={"name": "x", "records": ",".join(hashes("c", 4))}
    )
    assert too_many_create.status_code == 413

    rejected = patch_list(session, emulator, list_id, "ADD", [*bad, sha("good")])
    assert rejected.status_code == 400
    assert "2 of 3 records" in rejected.json()["message"]
    assert emulator.members(list_id) == set(hashes("a", 5))

    assert patch_list(session, emulator, list_id, "ADD", [sha("good")]).status_code == 200
    assert sha("good") in emulator.members(list_id)


def test_invalid_fault_configuration_is_400(emulator: Emulator) -> None:
    for config in (
        {"rules": [{"action": "explode"}]},
        {"rules": [{"action": "error"}]},
        {"rules": [{"action": "drop", "path": "("}]},
        {"unknown": 1},
    ):
        response = requests.post(f"{emulator.admin_url}/faults", json=config)
        assert response.status_code == 400, config
    with pytest.raises(FaultConfigError):
        emulator.configure_faults({"rules": [{"action": "delay"}]})


def test_faults_from_config_survive_reset(make_emulator: Any) -> None:
    emulator = make_emulator(faults=[{"method": "GET", "action": "error", "status": 500}])
    with client() as s:
        assert s.get(lists_url(emulator)).status_code == 500
        set_faults(emulator, {})
        assert s.get(lists_url(emulator)).status_code == 200
        requests.post(f"{emulator.admin_url}/reset")
        assert s.get(lists_url(emulator)).status_code == 500


# --- rate limiting and latency ---------------------------------------------------------


def test_write_rate_limit(make_emulator: Any) -> None:
    emulator = make_emulator(write_rate_limit_per_minute=2)
    with client() as s:
        statuses = [
            s.post(lists_url(emulator), json={"name": f"L{i}", "records": sha(str(i))})
            for i in range(3)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        limited = statuses[2]
        assert limited.json()["code"] == 8
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["X-RateLimit-Limit"] == "2"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Reset"]) >= 1
        assert statuses[0].headers["X-RateLimit-Remaining"] == "1"
        assert s.get(lists_url(emulator)).status_code == 200  # reads are not limited
    assert len(emulator.state.customer_lists()) == 2


def test_read_rate_limit(make_emulator: Any) -> None:
    emulator = make_emulator(read_rate_limit_per_minute=1)
    with client() as s:
        assert s.get(lists_url(emulator)).status_code == 200
        assert s.get(lists_url(emulator)).status_code == 429


def test_pinterest_published_limits_are_enforced_per_token_by_default(
    make_emulator: Any,
) -> None:
    emulator = make_emulator(access_tokens=(TOKEN, "another-users-token"))
    assert emulator.config.rate_limits() == {"ads_write": 400, "ads_read": 1000}
    with client() as s:
        list_id = create_list(s, emulator, hashes("a", 1))["id"]
        body = {"operation_type": "ADD", "records": sha("b")}
        statuses = [s.patch(f"{lists_url(emulator)}/{list_id}", json=body) for _ in range(400)]
        # The create was the first of 400 ads_write requests allowed in the minute.
        assert [r.status_code for r in statuses].count(200) == 399
        limited = statuses[-1]
        assert limited.status_code == 429
        assert limited.json() == {
            "code": 8,
            "message": "This request exceeded a rate limit. This can happen if the client "
            "exceeds one of the published rate limits within a short time window.",
        }
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert s.get(lists_url(emulator)).status_code == 200  # ads_read has its own limit
    with client("another-users-token") as other:  # another user of the app: its own minute
        assert other.patch(f"{lists_url(emulator)}/{list_id}", json=body).status_code == 200


def test_rate_limits_can_be_lifted_or_given_a_shorter_window(make_emulator: Any) -> None:
    unlimited = make_emulator(**vars(EmulatorConfig.without_rate_limits()))
    assert unlimited.config.rate_limits() == {}
    quick = make_emulator(write_rate_limit_per_minute=2, rate_limit_window_seconds=0.5)
    with client() as s:
        for emulator, expected in ((unlimited, [200] * 5), (quick, [200, 200, 429, 429, 429])):
            statuses = [
                s.post(lists_url(emulator), json={"name": f"L{i}", "records": sha(str(i))})
                for i in range(5)
            ]
            assert [r.status_code for r in statuses] == expected
        time.sleep(0.6)  # the short window has passed
        assert s.post(lists_url(quick), json={"name": "late", "records": sha("x")}).ok


def test_undeclared_query_parameters_are_ignored_and_logged(emulator: Emulator) -> None:
    with client() as s:
        response = s.get(lists_url(emulator), params={"exclude_nca": "true", "page_size": "5"})
    assert response.status_code == 200, response.text
    (entry,) = emulator.requests()
    assert entry["valid"]
    assert entry["ignored_query_parameters"] == ["exclude_nca"]
    assert emulator.counters()["requests_with_ignored_query_parameters"] == 1


def test_latency_requests_overlap(make_emulator: Any) -> None:
    emulator = make_emulator(latency_ms=300)
    results: list[int] = []

    def call() -> None:
        with client() as s:
            results.append(s.get(lists_url(emulator)).status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert results == [200, 200]
    assert 0.3 <= elapsed < 0.55


def test_processing_status(make_emulator: Any) -> None:
    clock = FakeClock()
    emulator = make_emulator(clock=clock, processing_seconds=30)
    with client() as s:
        created = create_list(s, emulator, hashes("a", 100))
        assert created["status"] == "PROCESSING"
        clock.now += 31
        assert s.get(f"{lists_url(emulator)}/{created['id']}").json()["status"] == "READY"


# --- admin API -----------------------------------------------------------------------


def test_admin_state_requests_and_reset(emulator: Emulator, session: requests.Session) -> None:
    records = hashes("a", 2000)
    create_list(session, emulator, records)
    state = requests.get(f"{emulator.admin_url}/state").json()
    assert set(state) >= {"ad_accounts", "counters", "faults"}
    assert state["counters"]["total_requests"] == 1
    assert state["counters"]["requests_by_route"] == {
        "POST /ad_accounts/{ad_account_id}/customer_lists": 1
    }
    log = requests.get(f"{emulator.admin_url}/requests").json()["requests"]
    assert log[0]["record_count"] == 2000
    assert log[0]["operation_type"] == "CREATE"
    assert len(json.dumps(log)) < 1000  # no records in the log

    assert requests.post(f"{emulator.admin_url}/reset").status_code == 200
    state = requests.get(f"{emulator.admin_url}/state").json()
    assert state["ad_accounts"][AD_ACCOUNT] == {"customer_lists": [], "audiences": []}
    assert state["counters"]["total_requests"] == 0
    assert requests.get(f"{emulator.admin_url}/customer_lists/1/members").status_code == 404
    assert requests.get(f"{emulator.admin_url}/nope").status_code == 404


# --- command line --------------------------------------------------------------------


@pytest.mark.slow
def test_cli_prints_url_and_serves() -> None:
    faults = json.dumps([{"method": "GET", "path": "/audiences", "action": "error", "status": 500}])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "target_pinterest_audiences.emulator",
            "--port",
            "0",
            "--ad-account-id",
            "42",
            "--access-token",
            "cli-token",
            "--faults-json",
            faults,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "emulator did not print its URL"
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v5")
        with client("cli-token") as s:
            assert s.get(f"{url}/ad_accounts/42").status_code == 200
            assert s.get(f"{url}/ad_accounts/42/audiences").status_code == 500
            assert s.get(f"{url}/ad_accounts/{AD_ACCOUNT}").status_code == 403
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert stdout == ""  # the URL was the only line
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_match_rate_flag_and_help_documents_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert config_from_args(build_parser().parse_args(["--match-rate", "0.25"])).match_rate == 0.25
    assert config_from_args(build_parser().parse_args([])).match_rate == 1.0
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--match-rate", bad])
    assert "--match-rate" in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert "matching model:" in help_text
    assert "READY with at least 100 matched users" in help_text
    assert "size null and status INITIALIZING" in help_text


def test_cli_enforces_pinterest_limits_unless_lifted() -> None:
    def config(*argv: str) -> EmulatorConfig:
        return config_from_args(build_parser().parse_args(list(argv)))

    assert config().rate_limits() == {"ads_write": 400, "ads_read": 1000}
    assert config("--write-rate-limit-per-minute", "30").rate_limits()["ads_write"] == 30
    assert config("--no-rate-limits").rate_limits() == {}
    assert config("--rate-limit-window-seconds", "2").rate_limit_window_seconds == 2
    with pytest.raises(SystemExit):
        config("--write-rate-limit-per-minute", "0")
