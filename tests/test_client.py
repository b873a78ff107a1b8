"""The HTTP client against the emulator (real HTTP on 127.0.0.1), with a fake clock for waits."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest

from target_pinterest_audiences.client import (
    ClientSettings,
    Pacer,
    PacingBudgetExceeded,
    PinterestClient,
    RetryPolicy,
    _server_delay,
)
from target_pinterest_audiences.emulator import Emulator
from target_pinterest_audiences.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    PermissionDeniedError,
    PinterestAPIError,
    RetriesExhaustedError,
    UnreachableError,
)
from target_pinterest_audiences.rate_limits import (
    MAX_REQUESTS_PER_MINUTE,
    UNIVERSAL_CEILING_PER_SECOND,
    UNIVERSAL_PER_SECOND,
)
from target_pinterest_audiences.tokens import OAuthApp, TokenProvider

from support import AD_ACCOUNT, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, TOKEN

LISTS = f"/ad_accounts/{AD_ACCOUNT}/customer_lists"


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(
    emulator: Emulator, *, refresh: bool = False, retry: RetryPolicy | None = None
) -> tuple[PinterestClient, Sleeps]:
    app = OAuthApp(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN) if refresh else None
    tokens = TokenProvider(token_url=f"{emulator.url}/oauth/token", access_token=TOKEN, app=app)
    sleeps = Sleeps()
    settings = ClientSettings(retry=retry or RetryPolicy(backoff_base_seconds=0.5))
    client = PinterestClient(
        emulator.url,
        tokens,
        settings=settings,
        sleep=sleeps,
        read_pacer=Pacer(None, sleep=sleeps),
        write_pacer=Pacer(None, sleep=sleeps),
        universal_pacer=Pacer(None, sleep=sleeps),
    )
    return client, sleeps


def error_rule(status: int, times: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": "customer_lists",
        "times": times,
        "action": "error",
        "status": status,
        **extra,
    }


def test_a_get_returns_the_decoded_page(emulator: Emulator) -> None:
    client, sleeps = make_client(emulator)
    page = client.get(LISTS, {"page_size": 250})
    assert page["items"] == []
    assert sleeps.calls == []


def test_retry_after_is_honoured_exactly(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(429, 2, headers={"Retry-After": "7"})]})
    client, sleeps = make_client(emulator)

    client.get(LISTS)

    assert sleeps.calls == pytest.approx([7.0, 7.0], abs=0.5)


def test_x_ratelimit_reset_is_honoured_when_there_is_no_retry_after(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(429, 1, headers={"X-RateLimit-Reset": "3"})]})
    client, sleeps = make_client(emulator)

    client.get(LISTS)

    assert sleeps.calls == pytest.approx([3.0], abs=0.5)


def test_backoff_without_a_hint_is_jittered_and_grows(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(503, 4)]})
    client, sleeps = make_client(emulator)

    client.get(LISTS)

    assert len(sleeps.calls) == 4
    for attempt, delay in enumerate(sleeps.calls):
        assert 0 <= delay <= 0.5 * 2**attempt


def test_errors_stop_after_max_attempts(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(500, None)]})
    client, sleeps = make_client(emulator, retry=RetryPolicy(max_attempts=3))

    with pytest.raises(RetriesExhaustedError, match="still failing after 3 attempts"):
        client.get(LISTS)
    assert len(sleeps.calls) == 2


def test_rate_limiting_is_bounded_by_total_wait_not_attempts(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(429, 20, headers={"Retry-After": "1"})]})
    client, sleeps = make_client(
        emulator, retry=RetryPolicy(max_attempts=3, max_total_wait_seconds=100)
    )

    client.get(LISTS)  # 20 rate limits in a row, far more than 3 attempts

    assert sleeps.calls == pytest.approx([1.0] * 20, abs=0.5)


def test_total_wait_is_bounded(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(429, None, headers={"Retry-After": "30"})]})
    client, sleeps = make_client(emulator, retry=RetryPolicy(max_total_wait_seconds=100))

    with pytest.raises(RetriesExhaustedError, match="max_retry_wait_seconds"):
        client.get(LISTS)
    assert sum(sleeps.calls) <= 100


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_other_client_errors_are_not_retried(emulator: Emulator, status: int) -> None:
    emulator.configure_faults({"rules": [error_rule(status, 1, code=77, message="nope")]})
    client, sleeps = make_client(emulator)

    with pytest.raises(PinterestAPIError) as raised:
        client.get(LISTS)

    assert raised.value.status == status
    assert raised.value.code == 77
    assert sleeps.calls == []


def test_403_says_which_roles_and_scopes_are_needed(emulator: Emulator) -> None:
    client, _ = make_client(emulator)
    with pytest.raises(PermissionDeniedError, match="audience manager role"):
        client.get("/ad_accounts/123456/customer_lists")


def test_401_refreshes_once_and_retries(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [{"method": "GET", "times": 1, "action": "expire_token"}]})
    client, _ = make_client(emulator, refresh=True)

    assert client.get(LISTS)["items"] == []
    assert emulator.counters()["requests_by_route"]["POST /oauth/token"] == 1


def test_401_without_refresh_credentials_is_final(emulator: Emulator) -> None:
    emulator.expire_tokens()
    client, sleeps = make_client(emulator)

    with pytest.raises(AuthenticationError, match="configure refresh_token"):
        client.get(LISTS)
    assert sleeps.calls == []


def test_a_lost_answer_to_a_post_is_ambiguous_not_retried(emulator: Emulator) -> None:
    emulator.configure_faults(
        {"rules": [{"method": "POST", "times": 1, "action": "drop_after_apply"}]}
    )
    client, _ = make_client(emulator)

    with pytest.raises(AmbiguousOutcomeError):
        client.request("POST", LISTS, body={"name": "x", "records": "a" * 64}, idempotent=False)
    # It was applied exactly once: the caller must look before retrying.
    assert len(emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["customer_lists"]) == 1


def test_a_lost_answer_to_an_idempotent_request_is_retried(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [{"method": "GET", "times": 2, "action": "drop"}]})
    client, sleeps = make_client(emulator)

    assert client.get(LISTS)["items"] == []
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"X-RateLimit-Reset": "9"}, 9.0),
        ({"Retry-After": "2", "X-RateLimit-Reset": "9"}, 2.0),
        ({"X-RateLimit-Reset": "soon"}, None),
        ({}, None),
    ],
)
def test_server_delay_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert _server_delay(headers) == expected


def test_server_delay_accepts_epoch_reset_and_http_dates() -> None:
    in_ten = time.time() + 10
    assert _server_delay({"X-RateLimit-Reset": str(int(in_ten))}) == pytest.approx(10, abs=1.5)
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(in_ten))
    assert _server_delay({"Retry-After": http_date}) == pytest.approx(10, abs=1.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def send_times(pacer: Pacer, fake: FakeClock, count: int) -> list[float]:
    """When each of ``count`` back-to-back requests may leave."""
    times = []
    for _ in range(count):
        pacer.acquire()
        times.append(fake.now)
    return times


def test_pacer_sends_at_most_the_ceiling_in_any_60_seconds() -> None:
    fake = FakeClock()
    pacer = Pacer(8, clock=fake.clock, sleep=fake.sleep)

    times = send_times(pacer, fake, 24)

    # A burst runs at most four times the average rate (60 / 8 / 4 = 1.875 s apart) ...
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1.875)
    # ... and no 60-second window ever holds more than 8 requests.
    for first in range(len(times) - 8):
        assert times[first + 8] - times[first] >= 60 - 1e-9
    # The window is used fully: 24 requests in a little over two minutes.
    assert times[-1] - times[0] == pytest.approx(120 + 7 * 1.875)


def test_the_universal_limit_spaces_reads_and_writes_together_evenly() -> None:
    fake = FakeClock()
    pacer = Pacer(UNIVERSAL_PER_SECOND * 60, burst_speedup=1.0, clock=fake.clock, sleep=fake.sleep)

    times = send_times(pacer, fake, 250)

    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / UNIVERSAL_PER_SECOND)  # no burst above 100 per second
    for first in range(len(times) - UNIVERSAL_PER_SECOND):
        assert times[first + UNIVERSAL_PER_SECOND] - times[first] >= 1 - 1e-9


def recording(pacer: Pacer, name: str, events: list[tuple[str, float]], fake: FakeClock) -> Pacer:
    """``pacer``, noting (name, time) each time a request passes it."""
    original = pacer.acquire

    def acquire(budget: float = math.inf) -> float:
        waited = original(budget)
        events.append((name, fake.now))
        return waited

    pacer.acquire = acquire  # type: ignore[method-assign]
    return pacer


def test_a_raised_write_ceiling_never_bursts_past_the_universal_limit(emulator: Emulator) -> None:
    fake = FakeClock()
    tokens = TokenProvider(token_url=f"{emulator.url}/oauth/token", access_token=TOKEN, app=None)
    events: list[tuple[str, float]] = []

    def pacer(per_minute: float, name: str, **options: float) -> Pacer:
        made = Pacer(per_minute, clock=fake.clock, sleep=fake.sleep, **options)
        return recording(made, name, events, fake)

    client = PinterestClient(
        emulator.url,
        tokens,
        write_pacer=pacer(MAX_REQUESTS_PER_MINUTE, "category"),
        read_pacer=pacer(MAX_REQUESTS_PER_MINUTE, "category"),
        universal_pacer=pacer(UNIVERSAL_CEILING_PER_SECOND * 60, "universal", burst_speedup=1),
    )

    for number in range(5):
        client.get(LISTS)  # reads and writes share the limit
        body = {"name": f"list {number}", "records": "a" * 64, "list_type": "EMAIL"}
        client.request("POST", LISTS, body=body, idempotent=False)

    # Every request passes its category's pacer, then the universal one.
    assert [name for name, _ in events] == ["category", "universal"] * 10
    # Each category alone would allow four times its average rate (400 per second here).
    sent = [when for name, when in events if name == "universal"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / UNIVERSAL_CEILING_PER_SECOND - 1e-9


def test_by_default_every_request_is_spaced_for_the_universal_limit(emulator: Emulator) -> None:
    tokens = TokenProvider(token_url=f"{emulator.url}/oauth/token", access_token=TOKEN, app=None)
    sleeps = Sleeps()  # the client's sleep: asked for, not slept
    client = PinterestClient(emulator.url, tokens, sleep=sleeps)  # no pacer given
    requests = 30

    started = time.monotonic()
    for _ in range(requests):
        client.get(LISTS)
    elapsed = time.monotonic() - started

    # Nothing slept, so the last request was asked to wait for the 29 turns before it,
    # less the time the requests themselves took.
    least = (requests - 1) / UNIVERSAL_CEILING_PER_SECOND - elapsed
    assert least <= 0 or max(sleeps.calls) >= least - 1e-3


def test_pacer_below_one_request_per_minute_spaces_them_out() -> None:
    fake = FakeClock()
    pacer = Pacer(0.2, clock=fake.clock, sleep=fake.sleep)  # Trial access: 300 per day

    times = send_times(pacer, fake, 3)

    assert times[1] - times[0] == pytest.approx(300)
    assert times[2] - times[1] == pytest.approx(300)


def test_pacer_pause_holds_everyone_and_slows_down_once_per_pause() -> None:
    fake = FakeClock()
    pacer = Pacer(600, clock=fake.clock, sleep=fake.sleep)
    pacer.acquire()

    for _ in range(5):  # five threads hit the same 429 at once
        pacer.pause(2.0)

    assert pacer.slowdown == pytest.approx(2)
    assert pacer.acquire() == pytest.approx(2.0, abs=0.03)  # the pause is rate-limited wait
    assert fake.slept[-1] == pytest.approx(2.0)
    for _ in range(5):
        pacer.succeeded()
    assert pacer.slowdown == pytest.approx(1)  # back at full speed after a few successes


def test_pacer_slowdown_is_bounded_and_recovers_promptly() -> None:
    fake = FakeClock()
    pacer = Pacer(360, clock=fake.clock, sleep=fake.sleep)
    start = fake.now

    for _ in range(40):  # a storm: 40 pauses, a second apart
        pacer.pause(1.0)
        fake.now += 1.0

    # Never slower than half the ceiling's rate (spacing 2 x 60/360 s, base 1/4 of it).
    assert pacer.slowdown == pytest.approx(8)
    recovered = 0
    while pacer.slowdown > 1:
        pacer.acquire()
        pacer.succeeded()
        recovered += 1
    assert recovered <= 10
    assert fake.now - start < 40 + 3  # ten requests at most 1/3 s apart


def test_a_429_storm_costs_about_its_pauses_not_minutes() -> None:
    """40 consecutive 429s (Retry-After: 1) among 30 writes at the default write ceiling."""
    fake = FakeClock()
    pacer = Pacer(360, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    refusals = 40
    done = 0
    while done < 30:
        pacer.acquire()
        if refusals:
            refusals -= 1
            pacer.pause(1.0)
        else:
            pacer.succeeded()
            done += 1

    # One thread meets every refusal in turn: 40 s of pauses, and at most a third of a
    # second of slowed spacing each, then 30 writes near full speed.
    assert fake.now - start < 40 * (1 + 1 / 3) + 30 * 1 / 6
    assert pacer.slowdown < 1.01


def test_pacer_budget_counts_rate_limited_waits_only() -> None:
    fake = FakeClock()
    pacer = Pacer(6, clock=fake.clock, sleep=fake.sleep)  # 2.5 s apart in a burst
    pacer.acquire()

    assert pacer.acquire(budget=0) == 0  # waiting for a turn under the ceiling is free
    assert fake.slept == pytest.approx([2.5])

    pacer.pause(30)
    with pytest.raises(PacingBudgetExceeded) as exceeded:
        pacer.acquire(budget=10)
    assert exceeded.value.seconds == pytest.approx(30 - 2.5, abs=0.01)
    assert fake.slept == pytest.approx([2.5])  # it did not wait, nor take a slot
    assert pacer.acquire(budget=60) == pytest.approx(30 - 2.5, abs=0.01)


def test_unpaced_pacer_never_sleeps() -> None:
    fake = FakeClock()
    pacer = Pacer(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(100):
        pacer.acquire()
    pacer.pause(0)
    pacer.acquire()
    assert fake.slept == []


def test_an_unparseable_retry_after_falls_back_to_backoff(emulator: Emulator) -> None:
    emulator.configure_faults(
        {"rules": [error_rule(503, 1, headers={"Retry-After": "in a moment"})]}
    )
    client, sleeps = make_client(emulator)

    assert client.get(LISTS)["items"] == []
    assert len(sleeps.calls) == 1
    assert 0 <= sleeps.calls[0] <= 0.5


def test_slowed_pacing_after_429s_counts_toward_the_retry_budget(emulator: Emulator) -> None:
    emulator.configure_faults({"rules": [error_rule(429, None, headers={"Retry-After": "4"})]})
    fake = FakeClock()
    tokens = TokenProvider(token_url=f"{emulator.url}/oauth/token", access_token=TOKEN, app=None)
    client = PinterestClient(
        emulator.url,
        tokens,
        settings=ClientSettings(retry=RetryPolicy(max_total_wait_seconds=10)),
        read_pacer=Pacer(60, clock=fake.clock, sleep=fake.sleep),
    )

    with pytest.raises(RetriesExhaustedError) as raised:
        client.get(LISTS)

    # 4 s pauses (plus the slower spacing after each) within 10 s: the third would not fit.
    assert sum(fake.slept) <= 10
    assert "Pinterest keeps rate limiting" in str(raised.value)
    assert "max_write_requests_per_minute" in str(raised.value)


def test_a_check_without_credentials_that_cannot_connect_says_so_without_retrying() -> None:
    tokens = TokenProvider(
        token_url="http://127.0.0.1:9/v5/oauth/token", access_token=TOKEN, app=None
    )
    sleeps = Sleeps()
    client = PinterestClient("http://127.0.0.1:9/v5", tokens, sleep=sleeps)

    with pytest.raises(UnreachableError) as raised:  # not "retries exhausted": none were made
        client.status_without_credentials(f"/ad_accounts/{AD_ACCOUNT}")

    assert not isinstance(raised.value, RetriesExhaustedError)
    assert "could not reach Pinterest at http://127.0.0.1:9/v5" in str(raised.value)
    assert sleeps.calls == []


def test_an_unreachable_api_is_reported_as_a_connection_problem_not_rate_limiting() -> None:
    tokens = TokenProvider(
        token_url="http://127.0.0.1:9/v5/oauth/token", access_token=TOKEN, app=None
    )
    sleeps = Sleeps()
    client = PinterestClient(
        "http://127.0.0.1:9/v5",  # the discard port: nothing listens there
        tokens,
        settings=ClientSettings(retry=RetryPolicy(max_attempts=2)),
        sleep=sleeps,
    )

    with pytest.raises(RetriesExhaustedError) as raised:
        client.get(LISTS)

    message = str(raised.value)
    assert "connection refused" in message
    assert "api_url" in message
    assert "http://127.0.0.1:9/v5" in message
    assert "rate" not in message
