"""Customer lists and audiences, in process, against a fake PinterestClient.

The fake records every request and answers from a script per (method, path), so each test
states exactly what Pinterest said and checks exactly what was asked of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest

from target_pinterest_audiences.client import PinterestClient
from target_pinterest_audiences.customer_lists import (
    PAGE_SIZE,
    CustomerLists,
    ListRef,
    duplicate_message,
)
from target_pinterest_audiences.errors import (
    AmbiguousOutcomeError,
    DuplicateListError,
    PinterestAPIError,
)

ACCOUNT = "549755885175"
LISTS = f"/ad_accounts/{ACCOUNT}/customer_lists"
AUDIENCES = f"/ad_accounts/{ACCOUNT}/audiences"

Answer = dict[str, Any] | Exception


@dataclass(frozen=True)
class Request:
    """One request the code under test made."""

    method: str
    path: str
    params: dict[str, Any] | None
    body: dict[str, Any] | None
    idempotent: bool


class FakeClient:
    """Stands in for PinterestClient: records requests, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: dict[tuple[str, str], deque[Answer]] = {}

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        self._script.setdefault((method, path), deque()).extend(answers)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        self.requests.append(
            Request(
                method,
                path,
                dict(params) if params is not None else None,
                dict(body) if body is not None else None,
                idempotent,
            )
        )
        answers = self._script.get((method, path))
        assert answers, f"unscripted request {method} {path}"
        answer = answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def asked(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def unused(self) -> list[tuple[str, str]]:
        return [key for key, answers in self._script.items() if answers]


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def lists(client: FakeClient, sleeps: Sleeps) -> CustomerLists:
    # The fake has the two methods CustomerLists uses, without HTTP underneath.
    return CustomerLists(cast(PinterestClient, client), ACCOUNT, sleep=sleeps)


def page(*items: dict[str, Any], bookmark: str | None = None) -> dict[str, Any]:
    return {"items": list(items), "bookmark": bookmark}


def lost(what: str = "POST") -> AmbiguousOutcomeError:
    return AmbiguousOutcomeError(f"{what}: ConnectionError; the request may have been applied")


# Reading lists -----------------------------------------------------------------------------


def test_every_page_is_read_with_the_largest_page_size_and_the_bookmark(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer(
        "GET",
        LISTS,
        page({"id": "1", "name": "a"}, bookmark="first"),
        page({"id": "2", "name": "b"}, bookmark="second"),
        page({"id": "3", "name": "c"}, bookmark=None),
    )
    assert lists.ids_by_name() == {"a": ["1"], "b": ["2"], "c": ["3"]}
    assert PAGE_SIZE == 250  # the spec's maximum page_size for these endpoints
    assert [r.params for r in client.requests] == [
        {"page_size": 250},
        {"page_size": 250, "bookmark": "first"},
        {"page_size": 250, "bookmark": "second"},
    ]
    assert client.unused() == []


def test_an_empty_bookmark_or_a_page_without_items_ends_the_read(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer("GET", LISTS, {"bookmark": "next"}, page({"id": "1", "name": "a"}, bookmark=""))
    assert lists.ids_by_name() == {"a": ["1"]}
    assert len(client.requests) == 2


def test_lists_are_grouped_by_exact_name_and_odd_items_are_skipped(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer(
        "GET",
        LISTS,
        page(
            {"id": 11, "name": "vip"},  # a numeric id is read as its string
            {"id": "12", "name": "vip"},
            {"id": "13", "name": "VIP"},  # another name: case matters
            {"id": "14"},  # no name
            {"name": "no id"},
            {"id": "15", "name": 7},  # not a name
        ),
    )
    found = lists.ids_by_name()
    assert found == {"vip": ["11", "12"], "VIP": ["13"]}


def test_items_that_are_not_objects_are_skipped(client: FakeClient, lists: CustomerLists) -> None:
    answer: dict[str, Any] = {"items": ["junk", None, {"id": "1", "name": "a"}]}
    client.answer("GET", LISTS, answer)
    assert lists.ids_by_name() == {"a": ["1"]}


def test_get_reads_one_list(client: FakeClient, lists: CustomerLists) -> None:
    client.answer("GET", f"{LISTS}/77", {"id": "77", "status": "READY"})
    assert lists.get("77") == {"id": "77", "status": "READY"}


# Writing lists -----------------------------------------------------------------------------


def test_create_sends_the_name_the_records_and_the_list_type(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer("POST", LISTS, {"id": 901, "name": "vip"})
    assert lists.create("vip", ["h1", "h2", "h3"]) == ListRef(id="901", name="vip")
    (request,) = client.requests
    assert request.body == {"name": "vip", "records": "h1,h2,h3", "list_type": "EMAIL"}
    assert request.idempotent is False  # creating twice would make two lists


def test_update_sends_the_operation_and_the_records(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer("PATCH", f"{LISTS}/901", {"id": "901"}, {"id": "901"})
    lists.update("901", "ADD", ["h1", "h2"])
    lists.update("901", "REMOVE", ["h3"])
    assert [r.body for r in client.requests] == [
        {"operation_type": "ADD", "records": "h1,h2"},
        {"operation_type": "REMOVE", "records": "h3"},
    ]
    assert all(r.idempotent for r in client.requests)  # ADD and REMOVE may be retried


def test_a_lost_answer_on_create_finds_the_list_and_never_creates_twice(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    client.answer("POST", LISTS, lost())
    client.answer("GET", LISTS, page({"id": "901", "name": "vip"}, {"id": "5", "name": "other"}))
    client.answer("PATCH", f"{LISTS}/901", {"id": "901"})
    assert lists.create("vip", ["h1", "h2"]) == ListRef(id="901", name="vip")
    assert client.asked() == [("POST", LISTS), ("GET", LISTS), ("PATCH", f"{LISTS}/901")]
    # The records the lost request carried are sent again, to the list that exists.
    assert client.requests[-1].body == {"operation_type": "ADD", "records": "h1,h2"}
    assert sleeps.calls == []


def test_a_lost_answer_on_create_with_no_list_found_retries_after_a_pause(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    client.answer("POST", LISTS, lost(), {"id": "902"})
    client.answer("GET", LISTS, page({"id": "5", "name": "other"}))
    assert lists.create("vip", ["h1"]) == ListRef(id="902", name="vip")
    assert client.asked() == [("POST", LISTS), ("GET", LISTS), ("POST", LISTS)]
    assert sleeps.calls == [1.0]


def test_creating_gives_up_after_three_lost_answers(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    final = lost("third")
    client.answer("POST", LISTS, lost(), lost(), final)
    client.answer("GET", LISTS, page(), page(), page())
    with pytest.raises(AmbiguousOutcomeError) as raised:
        lists.create("vip", ["h1"])
    assert raised.value is final
    assert client.asked() == [("POST", LISTS), ("GET", LISTS)] * 3
    assert sleeps.calls == [1.0, 2.0]


def test_a_lost_answer_that_left_two_lists_names_every_id(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer("POST", LISTS, lost())
    client.answer("GET", LISTS, page({"id": "901", "name": "vip"}, {"id": "902", "name": "vip"}))
    with pytest.raises(DuplicateListError) as raised:
        lists.create("vip", ["h1"])
    assert "901" in str(raised.value)
    assert "902" in str(raised.value)
    assert "2 customer lists are named 'vip'" in str(raised.value)
    assert client.asked() == [("POST", LISTS), ("GET", LISTS)]  # no second POST, no PATCH


def test_a_plain_refusal_on_create_is_not_retried(client: FakeClient, lists: CustomerLists) -> None:
    refused = PinterestAPIError("POST failed: HTTP 400", status=400)
    client.answer("POST", LISTS, refused)
    with pytest.raises(PinterestAPIError) as raised:
        lists.create("vip", ["h1"])
    assert raised.value is refused
    assert client.asked() == [("POST", LISTS)]  # nothing to look up: Pinterest said no


def test_the_duplicate_message_names_every_list_and_the_fix() -> None:
    message = duplicate_message("vip", ["1", "2", "3"])
    assert "3 customer lists are named 'vip' (ids 1, 2, 3)" in message
    assert "Rename or delete all but one" in message


# Audiences ---------------------------------------------------------------------------------


def audience(
    audience_id: str, list_id: str, audience_type: str = "CUSTOMER_LIST"
) -> dict[str, Any]:
    return {
        "id": audience_id,
        "audience_type": audience_type,
        "rule": {"customer_list_id": list_id},
    }


def test_audiences_are_mapped_by_their_customer_list(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer(
        "GET",
        AUDIENCES,
        page(audience("a1", "901"), audience("a2", "902"), bookmark="more"),
        page(
            audience("a3", "901"),  # a second audience on 901: the first one found is kept
            audience("v1", "903", audience_type="VISITOR"),
            {"id": "a4", "audience_type": "CUSTOMER_LIST"},  # no rule
            {"audience_type": "CUSTOMER_LIST", "rule": {"customer_list_id": "904"}},  # no id
            {"id": "a5", "audience_type": "CUSTOMER_LIST", "rule": "not an object"},
        ),
    )
    assert lists.audience_ids_by_list() == {"901": "a1", "902": "a2"}
    assert [r.params for r in client.requests] == [
        {"page_size": 250},
        {"page_size": 250, "bookmark": "more"},
    ]


def test_create_audience_builds_a_customer_list_audience_on_the_list(
    client: FakeClient, lists: CustomerLists
) -> None:
    client.answer("POST", AUDIENCES, {"id": 3001})
    assert lists.create_audience("vip", "901") == "3001"
    (request,) = client.requests
    assert request.idempotent is False
    assert request.body == {
        "ad_account_id": ACCOUNT,
        "name": "vip",
        "audience_type": "CUSTOMER_LIST",
        "rule": {"customer_list_id": "901"},
        "description": "Created by target-pinterest-audiences",
    }


def test_a_lost_answer_on_create_audience_finds_the_audience(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    client.answer("POST", AUDIENCES, lost())
    client.answer("GET", AUDIENCES, page(audience("a9", "800"), audience("a1", "901")))
    assert lists.create_audience("vip", "901") == "a1"
    assert client.asked() == [("POST", AUDIENCES), ("GET", AUDIENCES)]
    assert sleeps.calls == []


def test_a_lost_answer_on_create_audience_with_none_found_retries(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    client.answer("POST", AUDIENCES, lost(), lost(), {"id": "3002"})
    client.answer("GET", AUDIENCES, page(audience("a9", "800")), page())
    assert lists.create_audience("vip", "901") == "3002"
    assert client.asked() == [("POST", AUDIENCES), ("GET", AUDIENCES)] * 2 + [("POST", AUDIENCES)]
    assert sleeps.calls == [1.0, 2.0]


def test_create_audience_gives_up_after_three_lost_answers(
    client: FakeClient, lists: CustomerLists, sleeps: Sleeps
) -> None:
    client.answer("POST", AUDIENCES, lost(), lost(), lost())
    client.answer("GET", AUDIENCES, page(), page(), page())
    with pytest.raises(AmbiguousOutcomeError):
        lists.create_audience("vip", "901")
    assert sum(r.method == "POST" for r in client.requests) == 3
    assert sleeps.calls == [1.0, 2.0]
